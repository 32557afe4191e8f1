"""Rich renderables for people at a terminal. Nothing here prints: the CLI prints them to stderr."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from bastion.core.findings import Finding
from bastion.core.report import Report, ReportFinding
from bastion.core.results import CheckResult
from bastion.core.scanning import ScanResult, Verdict
from bastion.core.severity import Severity
from bastion.report._common import (
    SEVERITIES_DESC,
    asset_views,
    fmt_interval,
    fmt_location,
    fmt_num,
    gate,
    severity_counts,
    sort_findings,
    top_finding,
)

#: Rich style per severity.
SEVERITY_STYLES: dict[Severity, str] = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}

#: Rich style per scan verdict.
VERDICT_STYLES: dict[Verdict, str] = {
    Verdict.MALICIOUS: "bold white on red",
    Verdict.SUSPICIOUS: "bold yellow",
    Verdict.SAFE: "green",
    Verdict.ERROR: "bold magenta",
    Verdict.SKIPPED: "dim",
}

_STATUS_STYLES = {"ok": "green", "skipped": "dim", "error": "bold magenta"}

#: How many metrics per asset :func:`assessment_summary` shows.
MAX_METRICS = 8


def printable(text: str) -> str:
    """``text`` with control characters (ESC, newlines …) shown as escapes, safe for a terminal.

    Every piece of data in these renderables (names, titles, locations, paths) goes through it:
    it can come from a project file, a model file or a store (red-team round 31, 01). The CLI's
    console makes whatever it prints safe as well; escaping here keeps table columns as wide as
    what is shown.
    """
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _severity_text(sev: Severity) -> Text:
    return Text(sev.value, style=SEVERITY_STYLES[sev])


def scan_table(result: ScanResult, *, title: str | None = "Bastion scan") -> Table:
    """A table of a scan, one row per file: path, format, verdict (coloured), top finding.

    The top finding is the worst one (``[severity] rule_id: title``); files without findings
    show their skip or error reason instead.

    Args:
        result: the scan.
        title: the table's title (``None``: none).
    """
    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("path", overflow="fold")
    table.add_column("format")
    table.add_column("verdict")
    table.add_column("findings", justify="right")
    table.add_column("top finding", overflow="fold")
    for fr in result.files:
        top = top_finding(fr.findings)
        if top is not None:
            cell = Text.assemble(
                (f"[{top.severity.value}] ", SEVERITY_STYLES[top.severity]),
                (printable(f"{top.rule_id}: {top.title}"), ""),
            )
        else:
            cell = Text(printable(fr.reason or ""), style="dim")
        table.add_row(
            Text(printable(fr.path)),
            Text(fr.format or "—"),
            Text(fr.verdict.value, style=VERDICT_STYLES[fr.verdict]),
            str(len(fr.findings)),
            cell,
        )
    return table


def findings_table(findings: Sequence[Finding], *, title: str | None = "Findings") -> Table:
    """A table of findings, worst first: severity, rule, asset, location, title.

    Report findings (:class:`~bastion.core.report.ReportFinding`) get a ``state`` column with the
    baseline state and ``waived`` (until when) where a waiver accepts them.

    Args:
        findings: the findings, in any order.
        title: the table's title (``None``: none).
    """
    with_state = any(isinstance(f, ReportFinding) for f in findings)
    table = Table(title=title)
    table.add_column("severity")
    table.add_column("rule", overflow="fold")
    table.add_column("asset", overflow="fold")
    table.add_column("location", overflow="fold")
    table.add_column("title", overflow="fold")
    if with_state:
        table.add_column("state")
    for f in sort_findings(findings):
        row: list[RenderableType] = [
            _severity_text(f.severity),
            Text(printable(f.rule_id)),
            Text(printable(f.asset or "—")),
            Text(printable(fmt_location(f) or "—")),
            Text(printable(f.title)),
        ]
        if with_state:
            row.append(_state_text(f))
        table.add_row(*row)
    return table


def _state_text(f: Finding) -> Text:
    if not isinstance(f, ReportFinding):
        return Text("")
    parts: list[tuple[str, str]] = []
    if f.state:
        parts.append(
            (printable(f.state), "green" if f.state == "fixed" else ("bold" if f.state == "new" else ""))
        )
    if f.waiver is not None:
        if parts:
            parts.append((", ", ""))
        parts.append((f"waived until {f.waiver.expires.isoformat()}", "italic dim"))
    return Text.assemble(*parts)


def _metric_lines(checks: Sequence[CheckResult], limit: int) -> Text:
    text = Text()
    shown = 0
    total = sum(len(c.metrics) for c in checks)
    for c in checks:
        for name, value in c.metrics.items():
            if shown >= limit:
                break
            if shown:
                text.append("\n")
            text.append(f"{printable(name)} ", style="bold")
            text.append(fmt_num(value))
            interval = fmt_interval(c.intervals.get(name))
            if interval:
                text.append(f" {interval}", style="dim")
            shown += 1
    if total > shown:
        text.append(f"\n… {total - shown} more", style="dim")
    return text


def _counts_text(counts: dict[str, int]) -> Text:
    text = Text()
    for sev in SEVERITIES_DESC:
        n = counts[sev.value]
        if text:
            text.append(" ")
        text.append(f"{sev.value} {n}", style=SEVERITY_STYLES[sev] if n else "dim")
    return text


def assessment_summary(
    report: Report, *, fail_on: str = "medium", max_metrics: int = MAX_METRICS
) -> list[RenderableType]:
    """The terminal summary of an assessment, as Rich renderables (print each to stderr).

    The list holds: a header panel (project, run id, status, time, budget); a table with one row
    per asset (checks ok/skipped/error, key metrics with intervals, findings by severity); the
    findings that trip the gate (at or above ``fail_on``; when none do, a line saying how many
    lie below it); and the gate line (``PASS``/``FAIL`` against ``fail_on``, plus
    ``INCOMPLETE`` when checks errored).

    Args:
        report: the report.
        fail_on: the gate threshold (a severity value or ``"none"``).
        max_metrics: most metrics shown per asset.

    Raises:
        ValueError: ``fail_on`` is not a severity value or ``"none"``.
    """
    run = report.run
    verdict = gate(report, fail_on)
    header = Text.assemble(
        ("project ", "dim"),
        (printable(run.project or "—"), "bold"),
        ("  run ", "dim"),
        (printable(run.id), ""),
        ("  status ", "dim"),
        (printable(run.status), _STATUS_STYLES.get(run.status, "")),
        ("\nstarted ", "dim"),
        (run.started.isoformat(timespec="seconds"), ""),
        ("  took ", "dim"),
        (f"{run.seconds:.1f} s", ""),
        ("  budget ", "dim"),
        (printable(run.budget or "—"), ""),
    )
    out: list[RenderableType] = [Panel(header, title=Text(printable(f"Bastion {run.command}")), expand=False)]

    table = Table(title="Assets")
    table.add_column("asset", overflow="fold")
    table.add_column("checks")
    table.add_column("key metrics", overflow="fold")
    table.add_column("findings")
    for view in asset_views(report):
        counts = view.check_counts()
        checks = Text.assemble(
            (f"{counts['ok']} ok", "green"),
            (" / ", ""),
            (f"{counts['skipped']} skipped", "dim"),
            (" / ", ""),
            (f"{counts['error']} error", "bold magenta" if counts["error"] else "dim"),
        )
        gating = [f for f in view.findings if f.waiver is None and f.state != "fixed"]
        table.add_row(
            Text(printable(view.name or "(project)")),
            checks,
            _metric_lines([c for c in view.checks if c.status == "ok"], max_metrics),
            _counts_text(severity_counts(gating)),
        )
    out.append(table)

    below = len(report.gating()) - len(verdict.tripping)
    if verdict.tripping:  # only what trips the gate: the totals below count the rest
        out.append(findings_table(verdict.tripping, title=f"Gating findings (at or above {fail_on})"))
        if below:
            out.append(Text(f"{below} finding(s) below {fail_on} not listed: see report.json", style="dim"))
    elif below:
        line = (
            f"none (--fail-on none gates nothing; {below} finding(s): see report.json)"
            if fail_on == "none"
            else f"none at or above {fail_on} ({below} finding(s) below it: see report.json)"
        )
        out.append(Text(f"Gating findings: {line}", style="dim"))
    waived = [f for f in report.findings if f.waiver is not None]
    if waived:
        out.append(Text(f"{len(waived)} waived finding(s) not counted", style="dim italic"))

    style = "bold red" if not verdict.passed else ("bold magenta" if verdict.incomplete else "bold green")
    out.append(
        Group(
            Text.assemble(("Totals: ", "bold"), _counts_text(report.counts())),
            Text(f"Gate (--fail-on {fail_on}): {verdict.line()}", style=style),
        )
    )
    return out


__all__ = [
    "SEVERITY_STYLES",
    "VERDICT_STYLES",
    "assessment_summary",
    "findings_table",
    "scan_table",
]
