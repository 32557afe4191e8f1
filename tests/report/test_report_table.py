"""Rich renderables: content rendered to plain text through a recording console."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console, RenderableType
from rich.table import Table

from bastion.core.report import Report
from bastion.core.scanning import ScanResult
from bastion.report import assessment_summary, findings_table, scan_table


def render(*items: RenderableType) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=200, color_system=None, force_terminal=False)
    for item in items:
        console.print(item)
    return buf.getvalue()


def styled(item: RenderableType) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=200, color_system="truecolor", force_terminal=True)
    console.print(item)
    return buf.getvalue()


def test_scan_table(scan_result: ScanResult) -> None:
    table = scan_table(scan_result)
    assert isinstance(table, Table)
    assert table.row_count == len(scan_result.files)
    text = render(table)
    for fr in scan_result.files:
        assert fr.path in text and fr.verdict.value in text
    # The top finding of the malicious file is the critical one.
    evil_line = next(line for line in text.splitlines() if "models/evil.pkl" in line)
    assert "[critical] scan.pickle.denied-global" in evil_line
    assert "truncated pickle stream" in text and "not a model file" in text
    # Verdicts are coloured.
    assert "\x1b[" in styled(table)


def test_findings_table(report: Report) -> None:
    table = findings_table(report.findings)
    assert table.row_count == len(report.findings)
    text = render(table)
    lines = [line for line in text.splitlines() if "scan.pickle" in line or "drift.psi" in line]
    assert "critical" in lines[0]  # worst first
    assert "waived until 2099-01-31" in text
    assert "fixed" in text and "unchanged" in text
    assert "<script>alert(1)</script>" in text  # plain text, not markup
    plain = findings_table([f for f in report.findings if f.severity.value == "high"][:1])
    assert len(plain.columns) == 6


def test_assessment_summary(report: Report) -> None:
    items = assessment_summary(report)
    assert isinstance(items, Sequence) and len(items) >= 3
    text = render(*items)
    for asset in ("diagnosis-model", "triage-model", "triage-api", "patients-train", "(project)"):
        assert asset in text
    assert "1 ok / 1 skipped / 0 error" in text  # triage-model: lira ok, dp-audit skipped
    assert "0 ok / 0 skipped / 1 error" in text  # patients-train
    assert "robust_accuracy@eps=0.1 0.12 [0.08, 0.17]" in text
    assert "Gate (--fail-on medium): FAIL: 6 findings at or above medium" in text
    assert "INCOMPLETE" in text
    assert "1 waived finding(s) not counted" in text
    assert "critical 2 high 2 medium 2 low 2 info 1" in text


def test_assessment_summary_gate_threshold(report: Report) -> None:
    text = render(*assessment_summary(report, fail_on="critical", max_metrics=1))
    assert "FAIL: 2 findings at or above critical (2 critical)" in text
    assert "… 2 more" in text  # diagnosis-model shows 1 of its 3 metrics
    assert "PASS" in render(*assessment_summary(report, fail_on="none"))


def test_scan_table_escapes_control_characters() -> None:
    from io import StringIO

    from rich.console import Console

    from bastion.core.scanning import FileResult, ScanResult, Verdict
    from bastion.report import scan_table

    result = ScanResult(
        files=[FileResult(path="evil\x1b]0;pwned\x07.pkl", verdict=Verdict.SKIPPED, reason="x\x1b[2J")]
    )
    buf = StringIO()
    Console(file=buf, width=200, color_system=None).print(scan_table(result))
    out = buf.getvalue()
    assert "\x1b" not in out and "\\x1b" in out


#: Control and bidi characters a hostile project, model file or store row can carry (round 31, 01).
HOSTILE = "\x1b]0;PWNED\x07\x1b[2J\x1b[1A\x1b[2K\x1b[8m\r\x9b\u202e"


def test_assessment_summary_escapes_control_characters(report: Report) -> None:
    """Red-team round 31, 01: the project name, asset names, finding titles, locations and metric
    names reached the terminal raw (window title set, screen cleared, a critical finding erased)."""
    from bastion.core.findings import Finding, Location, Threat
    from bastion.core.report import ReportFinding
    from bastion.core.severity import Severity

    hostile = ReportFinding.of(
        Finding(
            rule_id="scan.pickle.denied-global",
            severity=Severity.CRITICAL,
            threat=Threat.SUPPLY_CHAIN,
            title=f"Pickle imports os.system{HOSTILE}",
            asset=f"m{HOSTILE}",
            location=Location(path=f"m{HOSTILE}.pkl", member=HOSTILE),
        )
    )
    run = report.run.model_copy(update={"project": f"clinic{HOSTILE}", "budget": HOSTILE})
    checks = [c.model_copy(update={"metrics": {f"acc{HOSTILE}": 0.5}}) for c in report.checks[:1]]
    bad = report.model_copy(update={"run": run, "findings": [hostile], "checks": checks})
    for out in (render(*assessment_summary(bad)), render(findings_table([hostile]))):
        assert not any(c in out for c in "\x1b\x07\r\x9b\u202e"), repr(out)
        assert "\\x1b]0;PWNED\\x07" in out and "\\u202e" in out
    text = styled(assessment_summary(bad)[0])
    assert "\x1b[" in text and "\x1b]0;" not in text and "\x1b[2J" not in text  # styling only


def test_the_gating_table_lists_only_findings_at_or_above_the_gate(report: Report) -> None:
    """Trial 33, 14: ``--fail-on critical`` (and ``none``) listed high, medium and low rows too."""

    text = render(*assessment_summary(report, fail_on="critical"))
    table = text[text.index("Gating findings") :]
    assert "Gating findings (at or above critical)" in text
    assert "│ critical │" in table
    for below in ("│ high ", "│ medium ", "│ low ", "│ info "):
        assert below not in table, below
    assert "7 finding(s) below critical not listed: see report.json" in text  # 9 counted, 2 critical
    text = render(*assessment_summary(report, fail_on="high"))
    table = text[text.index("Gating findings") :]
    assert "│ high " in table and "│ medium " not in table and "│ low " not in table
    text = render(*assessment_summary(report, fail_on="none"))
    assert "Gating findings: none (--fail-on none gates nothing; 9 finding(s): see report.json)" in text
    assert "┃ severity ┃" not in text  # no findings table at all
    assert "Totals: critical 2 high 2 medium 2 low 2 info 1" in text  # still counted


def test_a_gate_nothing_reaches_says_so_and_how_many_lie_below(report: Report) -> None:
    report = report.model_copy(
        update={"findings": [f for f in report.findings if f.severity.value not in ("critical", "high")]}
    )
    text = render(*assessment_summary(report, fail_on="critical"))
    assert "Gating findings: none at or above critical (5 finding(s) below it: see report.json)" in text
    assert "┃ severity ┃" not in text
    assert "PASS" in text
