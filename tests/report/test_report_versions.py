"""The HTML report's before/after section for model versions (``<name>.v<N>``)."""

from __future__ import annotations

import datetime as dt

from bastion.core.report import AssetRecord, Report, RunInfo
from bastion.core.results import CheckResult
from bastion.report import report_to_html
from bastion.report._versions import compare_versions, robust_curve, version_pairs


def _pgd(asset: str, clean: float, robust: list[float]) -> CheckResult:
    metrics: dict[str, float | None] = {"clean_accuracy": clean}
    for eps, r in zip((0.05, 0.1, 0.2), robust, strict=True):
        metrics[f"robust_accuracy@eps={eps:g}"] = r
        metrics[f"attack_success_rate@eps={eps:g}"] = 1 - r
    return CheckResult(id="evasion.pgd", asset=asset, status="ok", metrics=metrics)


def _report(checks: list[CheckResult], names: list[str]) -> Report:
    return Report(
        bastion_version="0",
        run=RunInfo(
            id="r1",
            status="ok",
            started=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
            seconds=1.0,
            command="assess",
            project="p",
            budget="quick",
        ),
        assets=[AssetRecord(name=n, kind="model") for n in names],
        checks=checks,
    )


def test_before_after_table_and_plot() -> None:
    rep = _report(
        [
            _pgd("digits", 0.97, [0.87, 0.51, 0.01]),
            _pgd("digits.v2", 0.96, [0.94, 0.83, 0.05]),
            CheckResult(id="membership.threshold", asset="digits", status="ok", metrics={"auc": 0.6}),
            CheckResult(id="membership.threshold", asset="digits.v2", status="ok", metrics={"auc": 0.55}),
            CheckResult(id="evasion.square", asset="digits.v2", status="skipped", reason="x"),
        ],
        ["digits", "digits.v2", "other.v3"],
    )
    assert version_pairs(rep) == [("digits", "digits.v2", 2)]  # other.v3 has no original here
    (comp,) = compare_versions(rep)
    assert [c.check for c in comp.checks] == ["evasion.pgd", "membership.threshold"]
    rows = {r.name: r for r in comp.checks[0].rows}
    assert "attack_success_rate@eps=0.1" not in rows
    assert rows["robust_accuracy@eps=0.1"].delta is not None
    assert abs(rows["robust_accuracy@eps=0.1"].delta - 0.32) < 1e-9
    assert comp.plot is not None and comp.plot.startswith("<svg")
    html = report_to_html(rep)
    section = html[html.index('<section id="versions">') :]
    assert 'data-version="digits.v2"' in section
    assert "+0.32" in section and "-0.01" in section
    assert 'data-plot="versions/digits/digits.v2"' in section
    assert '<a href="#versions">' in html


def test_no_section_without_versions() -> None:
    html = report_to_html(_report([_pgd("digits", 0.97, [0.8, 0.5, 0.1])], ["digits"]))
    assert 'id="versions"' not in html


def test_robust_curve_sorted() -> None:
    xs, ys = robust_curve(_pgd("m", 1.0, [0.9, 0.5, 0.1]))
    assert xs == [0.05, 0.1, 0.2] and ys == [0.9, 0.5, 0.1]


def test_a_version_whose_clean_accuracy_collapsed_is_warned_about() -> None:
    """A 1-epoch distilled or DP model can look 'more robust' only because it barely works."""
    rep = _report(
        [_pgd("digits", 0.97, [0.8, 0.5, 0.1]), _pgd("digits.v2", 0.18, [0.18, 0.18, 0.18])],
        ["digits", "digits.v2"],
    )
    (comp,) = compare_versions(rep)
    assert len(comp.warnings) == 1 and "clean accuracy fell from 0.97 to 0.18" in comp.warnings[0]
    html = report_to_html(rep)
    assert '<p class="warning"><strong>Warning:</strong> evasion.pgd: clean accuracy fell' in html
    pair = ["digits", "digits.v2"]
    fine = _report([_pgd("digits", 0.97, [0.8, 0.5, 0.1]), _pgd("digits.v2", 0.92, [0.9, 0.8, 0.3])], pair)
    assert compare_versions(fine)[0].warnings == []  # a 5-point cost is the usual price of hardening
