"""Markdown summary of an assessment, for a CI job summary or a pull-request comment."""

from __future__ import annotations

import html

from bastion.core.findings import Finding
from bastion.core.report import Report, ReportFinding
from bastion.core.terminal import terminal_safe
from bastion.report._common import (
    SEVERITIES_DESC,
    all_errors,
    all_skipped,
    asset_views,
    fmt_interval,
    fmt_num,
    gate,
    severity_counts,
    sort_findings,
    technique_ref,
)
from bastion.report._exposure import ExposureTable, exposure_table

#: Most findings listed in the table; the rest are counted ("… and N more").
MAX_FINDINGS = 50

_ICONS = {"critical": "🟥", "high": "🟧", "medium": "🟨", "low": "🟦", "info": "⬜"}


def md_cell(text: str) -> str:
    r"""``text`` made safe for one GitHub-flavoured Markdown table cell.

    HTML is escaped (GitHub renders raw HTML in comments), pipes, backticks and Markdown
    emphasis/link characters are backslash-escaped, newlines become spaces, and control and
    bidi characters are written as escapes (``\x1b``: the summary is also read in a terminal).
    """
    text = html.escape(terminal_safe(" ".join(text.split())), quote=False)
    for ch in ("\\", "|", "`", "*", "_", "[", "]", "#"):
        text = text.replace(ch, "\\" + ch)
    return text


def _code(text: str) -> str:
    """``text`` as inline code in a table cell (backticks and pipes cannot be escaped inside)."""
    safe = terminal_safe(" ".join(text.split())).replace("`", "'").replace("|", "/")
    return f"`{safe}`"


def _state(f: Finding) -> str:
    if not isinstance(f, ReportFinding):
        return ""
    bits: list[str] = []
    if f.state:
        bits.append(f.state)
    if f.waiver is not None:
        bits.append(f"waived until {f.waiver.expires.isoformat()}: {md_cell(f.waiver.reason)}")
    return "; ".join(bits)


def report_to_markdown(report: Report, *, fail_on: str = "medium", max_findings: int = MAX_FINDINGS) -> str:
    """Render an assessment as a short Markdown summary (GitHub-flavoured).

    Sections: title with status and gate line; counts of gating findings by severity; per asset,
    checks ok/skipped/error and its metrics with intervals; per asset with membership results,
    the most exposed training records (row indices and per-attack ranks only); the findings
    (worst first, at most ``max_findings``) with ATLAS ids and baseline state; waived findings;
    skipped checks; errors.
    Text from the report is escaped, so a hostile title cannot inject HTML or break a table.

    Args:
        report: the report.
        fail_on: the gate threshold (a severity value or ``"none"``).
        max_findings: most findings listed.

    Returns:
        Markdown text ending with a newline.

    Raises:
        ValueError: ``fail_on`` is not a severity value or ``"none"``.
    """
    run = report.run
    verdict = gate(report, fail_on)
    mark = "❌" if not verdict.passed else ("⚠️" if verdict.incomplete else "✅")
    lines: list[str] = []
    title = f"Bastion {run.command}"
    if run.project:
        title += f": {md_cell(run.project)}"
    lines.append(f"## {mark} {title}")
    lines.append("")
    lines.append(
        f"Run {_code(run.id)} · status **{run.status}** · started "
        f"{run.started.isoformat(timespec='seconds')} · {run.seconds:.1f} s"
        + (f" · budget {md_cell(run.budget)}" if run.budget else "")
        + (f" · baseline {md_cell(report.baseline)}" if report.baseline else "")
        + (
            f" (narrowed: {md_cell(report.baseline_run.scope.describe())})"
            if report.baseline_run is not None and report.baseline_run.scope is not None
            else ""
        )
    )
    lines.append("")
    additions = [
        f"{label}: " + ", ".join(_code(e) for e in entries)
        for label, entries in (
            ("project file (`scan.allow`)", run.scan_allow),
            ("command line (`--allow`)", run.scan_allow_cli),
        )
        if entries
    ]
    if additions:  # what the scanner was told to accept besides its shipped allow-list
        lines.append("**Scan allow-list additions**: " + "; ".join(additions))
        lines.append("")
    lines.append(f"**Gate (`--fail-on {fail_on}`)**: {md_cell(verdict.line())}")
    lines.append("")

    counts = report.counts()
    lines.append("| " + " | ".join(f"{_ICONS[s.value]} {s.value}" for s in SEVERITIES_DESC) + " |")
    lines.append("|" + "---:|" * len(SEVERITIES_DESC))
    lines.append("| " + " | ".join(str(counts[s.value]) for s in SEVERITIES_DESC) + " |")
    lines.append("")
    waived = [f for f in report.findings if f.waiver is not None]
    fixed = [f for f in report.findings if f.state == "fixed"]
    extras = []
    if waived:
        extras.append(f"{len(waived)} waived")
    if fixed:
        extras.append(f"{len(fixed)} fixed since the baseline")
    if extras:
        lines.append(f"Not counted: {', '.join(extras)}.")
        lines.append("")

    views = asset_views(report)
    if views:
        lines.append("### Assets")
        lines.append("")
        lines.append("| asset | checks ok / skipped / error | findings | metrics |")
        lines.append("|---|---|---|---|")
        for view in views:
            cc = view.check_counts()
            gating = [f for f in view.findings if f.waiver is None and f.state != "fixed"]
            sev = severity_counts(gating)
            sev_text = ", ".join(f"{n} {k}" for k, n in sev.items() if n) or "none"
            metrics = []
            for c in view.checks:
                for name, value in c.metrics.items():
                    interval = fmt_interval(c.intervals.get(name))
                    metrics.append(  # named with its check: several checks report e.g. clean_accuracy
                        f"{_code(c.id)} {_code(name)} {fmt_num(value)}"
                        + (f" {md_cell(interval)}" if interval else "")
                    )
            lines.append(
                f"| {md_cell(view.name or '(project)')} | {cc['ok']} / {cc['skipped']} / {cc['error']} "
                f"| {sev_text} | {'<br>'.join(metrics) or '—'} |"
            )
        lines.append("")

    for view in views:
        table = exposure_table(view.checks, view.findings)
        if table is not None:
            lines += _exposure_lines(view.name, table)

    listed = [f for f in sort_findings(report.findings) if f.waiver is None]
    if listed:
        lines.append("### Findings")
        lines.append("")
        lines.append("| severity | rule | asset | title | ATLAS | state |")
        lines.append("|---|---|---|---|---|---|")
        for f in listed[:max_findings]:
            techniques = ", ".join(
                f"[{md_cell(t.id)}]({t.url})" + (f" {md_cell(t.name)}" if t.name else "")
                for t in (technique_ref(tid) for tid in f.atlas)
            )
            lines.append(
                f"| {_ICONS[f.severity.value]} {f.severity.value} | {_code(f.rule_id)} "
                f"| {md_cell(f.asset or '—')} | {md_cell(f.title)} | {techniques or '—'} "
                f"| {_state(f) or '—'} |"
            )
        if len(listed) > max_findings:
            lines.append("")
            lines.append(f"… and {len(listed) - max_findings} more findings (see the HTML report).")
        lines.append("")

    if waived:
        lines.append("### Waived")
        lines.append("")
        for f in sort_findings(waived):
            assert f.waiver is not None
            lines.append(
                f"- {f.severity.value} {_code(f.rule_id)} on {md_cell(f.asset or '—')}: "
                f"{md_cell(f.title)} — waived until {f.waiver.expires.isoformat()}: "
                f"{md_cell(f.waiver.reason)}"
            )
        lines.append("")

    skipped = all_skipped(report)
    if skipped:
        lines.append("### Skipped checks")
        lines.append("")
        for s in skipped:
            where = f" on {md_cell(s.asset)}" if s.asset else ""
            lines.append(f"- {_code(s.check)}{where}: {md_cell(s.reason or 'no reason given')}")
        lines.append("")

    errors = all_errors(report)
    if errors:
        lines.append("### Errors")
        lines.append("")
        for e in errors:
            where = f" on {md_cell(e.asset)}" if e.asset else ""
            lines.append(f"- {_code(e.check)}{where}: {md_cell(e.error)}: {md_cell(e.message)}")
        lines.append("")

    versions = ", ".join(f"{k} {v}" for k, v in report.reproducibility.versions.items() if v)
    repro = report.reproducibility
    seed = repro.seed if repro.seed is not None else "—"
    lines.append(
        f"<sub>Bastion {md_cell(report.bastion_version)} · seed {seed}"
        + (f" · config {_code(repro.config_hash[:12])}" if repro.config_hash else "")
        + (f" · {md_cell(versions)}" if versions else "")
        + "</sub>"
    )
    return "\n".join(lines) + "\n"


def _exposure_lines(asset: str | None, table: ExposureTable) -> list[str]:
    """The per-record exposure table of one asset (issue 6): dataset row indices and ranks only."""
    lines = [f"### Most exposed training records: {md_cell(asset or '(project)')}", ""]
    shown = ""
    if table.total > len(table.rows):
        shown = f" Showing {len(table.rows)} of {table.total} cited records."
    lines.append(
        "Training records the membership attacks are most confident were trained on, by dataset row "
        "index only (the records themselves are never shown). Rank 1 is an attack's most exposed "
        f"record; rows cited by more attacks come first.{shown}"
    )
    lines.append("")
    header = ["dataset row", "cited by", *(f"rank in {_code(a)}" for a in table.attacks)]
    if table.has_fraction:
        header.append("non-members scoring at or above")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---:|" * len(header))
    for row in table.rows:
        cells = [str(row.index), f"{row.cited} of {len(table.attacks)}"]
        cells += [str(row.ranks[a]) if a in row.ranks else "—" for a in table.attacks]
        if table.has_fraction:
            cells.append(fmt_num(row.nonmember_fraction))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


__all__ = ["md_cell", "report_to_markdown"]
