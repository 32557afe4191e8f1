from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from bastion.core.config import Waiver
from bastion.core.findings import Finding, Location
from bastion.core.report import REPORT_SCHEMA_VERSION, Report, ReportFinding, RunInfo
from bastion.core.results import CheckResult, RunResult, Series
from bastion.core.severity import Severity

WAIVER = Waiver(rule_id="evasion.pgd.low-robust-accuracy", reason="accepted", expires=dt.date(2099, 1, 1))


def rf(severity: str, idx: int, **kw: Any) -> ReportFinding:
    f = Finding(
        rule_id="evasion.pgd.low-robust-accuracy",
        severity=severity,
        threat="evasion",
        title="t",
        asset="m",
        location=Location(index=idx),
    )
    return ReportFinding.of(f, **kw)


def report(findings: list[ReportFinding]) -> Report:
    run = RunInfo(id="r1", status="ok", started=dt.datetime(2030, 1, 1, tzinfo=dt.UTC), seconds=1.5)
    return Report(bastion_version="0.1.0", run=run, findings=findings)


def test_gating_excludes_waived_and_fixed() -> None:
    kept = rf("medium", 1, state="new")
    waived = rf("critical", 2, waiver=WAIVER)
    fixed = rf("high", 3, state="fixed")
    unchanged = rf("low", 4, state="unchanged")
    r = report([kept, waived, fixed, unchanged])
    assert r.gating() == [kept, unchanged]
    assert r.max_severity() is Severity.MEDIUM
    assert r.counts() == {"info": 0, "low": 1, "medium": 1, "high": 0, "critical": 0}


def test_empty_and_all_waived() -> None:
    assert report([]).max_severity() is None
    r = report([rf("critical", 1, waiver=WAIVER)])
    assert r.gating() == []
    assert r.max_severity() is None
    assert sum(r.counts().values()) == 0


def test_report_round_trips_and_is_versioned() -> None:
    r = report([rf("high", 1, state="new", waiver=WAIVER)])
    again = Report.model_validate_json(r.model_dump_json())
    assert again == r
    assert again.schema_version == REPORT_SCHEMA_VERSION
    with pytest.raises(ValidationError):
        Report.model_validate({**r.model_dump(), "secret": "x"})
    with pytest.raises(ValidationError):
        RunInfo(id="r", status="partial", started=dt.datetime(2030, 1, 1), seconds=0)  # type: ignore[arg-type]


def test_run_result_files_findings_errors_and_skips() -> None:
    f = Finding(rule_id="membership.threshold.high-auc", severity="medium", threat="privacy", title="t")
    rr = RunResult()
    rr.add(
        CheckResult(
            id="membership.threshold",
            asset="m",
            metrics={"auc": 0.7},
            intervals={"auc": (0.6, 0.8)},
            findings=[f],
        )
    )
    rr.add(CheckResult(id="evasion.pgd", asset="e", status="skipped", reason="needs loss-gradients"))
    rr.add(
        CheckResult(id="evasion.square", asset="m", status="error", reason="TargetError: m: bad shape: (3,)")
    )
    assert rr.findings == [f]
    assert [(s.check, s.asset, s.reason) for s in rr.skipped] == [
        ("evasion.pgd", "e", "needs loss-gradients")
    ]
    assert [(e.check, e.error, e.message) for e in rr.errors] == [
        ("evasion.square", "TargetError", "m: bad shape: (3,)")
    ]
    assert len(rr.checks) == 3


def test_check_result_metric_shapes() -> None:
    r = CheckResult(
        id="evasion.pgd",
        metrics={"clean_accuracy": 0.97, "robust_accuracy@eps=0.1": None},
        notes={"robust_accuracy@eps=0.1": "no correctly classified samples"},
        series={"robust_accuracy": Series(x=[0.0, 0.1], y=[0.97, None], x_label="eps")},
    )
    assert CheckResult.model_validate_json(r.model_dump_json()) == r
    with pytest.raises(ValidationError):
        CheckResult(id="x.y", status="crashed")  # type: ignore[arg-type]
