"""Markdown summary: counts, gate, findings, escaping."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest

from bastion.core.findings import Finding, Threat
from bastion.core.report import Report, ReportFinding, RunInfo
from bastion.core.severity import Severity
from bastion.report import report_to_markdown
from bastion.report.markdown import md_cell


def _count_row(md: str) -> dict[str, int]:
    lines = md.splitlines()
    i = next(i for i, line in enumerate(lines) if "critical |" in line and "info" in line)
    header = [c.strip().split()[-1] for c in lines[i].strip("|").split("|")]
    values = [int(c) for c in lines[i + 2].strip("| ").split("|")]
    return dict(zip(header, values, strict=True))


def test_counts_and_gate(report: Report) -> None:
    md = report_to_markdown(report)
    assert _count_row(md) == report.counts()
    assert _count_row(md) == {"critical": 2, "high": 2, "medium": 2, "low": 2, "info": 1}
    assert "FAIL: 6 findings at or above medium (2 critical, 2 high, 2 medium)" in md
    assert "INCOMPLETE" in md
    assert "1 waived" in md and "1 fixed since the baseline" in md
    assert md.startswith("## ❌ Bastion assess: st-mary-diagnostics")


def test_findings_skips_errors_listed(report: Report) -> None:
    md = report_to_markdown(report)
    for f in report.findings:
        assert f"`{f.rule_id}`" in md
    assert "Unsafe AI Artifacts" in md and "Infer Training Data Membership" in md
    assert "(https://atlas.mitre.org/techniques/AML.T0015)" in md
    assert "### Waived" in md and "waived until 2099-01-31" in md
    assert "needs loss gradients; target is HTTP, label-only" in md
    assert "`poisoning.spectral` on patients-train: PluginError: feature extractor failed on row 3" in md
    assert "\\[0.08, 0.17\\]" in md  # intervals, brackets escaped


def test_escapes_hostile_text(report: Report) -> None:
    md = report_to_markdown(report)
    assert "<script>" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    # Every table row keeps its column count despite pipes in data.
    hostile = ReportFinding.of(
        Finding(rule_id="x.y.z", severity=Severity.HIGH, threat=Threat.RUNTIME, title="a | b\nc", asset="q|r")
    )
    md2 = report_to_markdown(report.model_copy(update={"findings": [hostile]}))
    row = next(line for line in md2.splitlines() if "`x.y.z`" in line)
    assert len(re.findall(r"(?<!\\)\|", row)) == 7


def test_fail_on_none_and_pass(report: Report, report_factory: Callable[..., Report]) -> None:
    assert "PASS: --fail-on none" in report_to_markdown(report, fail_on="none")
    clean = report_factory(
        run=RunInfo(id="r", status="ok", started=dt.datetime(2025, 1, 1), seconds=1),
        findings=[],
        errors=[],
        skipped=[],
        checks=[],
    )
    md = report_to_markdown(clean)
    assert md.startswith("## ✅")
    assert "### Findings" not in md
    with pytest.raises(ValueError):
        report_to_markdown(clean, fail_on="bad")


def test_truncates_long_lists(report: Report) -> None:
    md = report_to_markdown(report, max_findings=3)
    body = md.split("### Findings")[1].split("###")[0]
    assert len([line for line in body.splitlines() if line.startswith("| ") and "`" in line]) == 3
    assert "… and 7 more findings" in md


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [("a|b", "a\\|b"), ("<i>", "&lt;i&gt;"), ("x\ny", "x y"), ("[l](u)", "\\[l\\](u)"), ("`c`", "\\`c\\`")],
)
def test_md_cell(raw: str, escaped: str) -> None:
    assert md_cell(raw) == escaped


def test_asset_metrics_are_named_with_their_check(report: Report) -> None:
    md = report_to_markdown(report)
    named = [(c.id, name) for c in report.checks for name in c.metrics]
    assert named  # the fixture has metrics
    for cid, name in named:
        assert f"`{cid}` `{name}`" in md, (cid, name)


def test_control_and_bidi_characters_are_written_as_escapes(report: Report) -> None:
    """Red-team round 31, 01: ``bastion show -f markdown`` to a terminal carried a hostile
    project's ESC sequences raw; a PR comment carried its bidi overrides."""
    hostile = ReportFinding.of(
        Finding(
            rule_id="x.y.z",
            severity=Severity.HIGH,
            threat=Threat.RUNTIME,
            title="t\x1b]0;PWNED\x07\u202eevil",
            asset="a\x9b",
        )
    )
    from bastion.core.results import CheckError

    run = report.run.model_copy(update={"project": "p\x1b[8m"})
    errors = [CheckError(check="x.y\x1b[2J", error="E", message="m")]
    md = report_to_markdown(report.model_copy(update={"run": run, "findings": [hostile], "errors": errors}))
    assert not any(c in md for c in "\x1b\x07\x9b\u202e"), repr(md)
    assert "p\\\\x1b\\[8m" in md and "\\\\x1b\\]0;PWNED\\\\x07\\\\u202eevil" in md
    assert "`x.y\\x1b[2J`" in md  # inline code: no escapes inside backticks
