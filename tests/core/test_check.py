from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from bastion.core.budget import Budget
from bastion.core.capability import Capability
from bastion.core.check import Check, CheckContext, Split
from bastion.core.config import Threshold, parse_config
from bastion.core.findings import Location, Threat
from bastion.core.registry import NoParams
from bastion.core.results import CheckResult

CFG = parse_config(
    {"version": 1, "assets": [{"name": "diagnosis", "path": "models/d.onnx", "input": {"shape": [4]}}]}
)


class RobustnessCheck(Check):
    id: ClassVar[str] = "evasion.toy"
    title: ClassVar[str] = "Toy evasion"
    threat: ClassVar[Threat] = Threat.EVASION
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.LOSS_GRADIENTS})
    atlas: ClassVar[tuple[str, ...]] = ("AML.T0015",)
    references: ClassVar[tuple[str, ...]] = ("Madry et al. 2018, arXiv:1706.06083",)
    remediation: ClassVar[str] = "adversarial training"

    def run(self, ctx: CheckContext) -> CheckResult:
        result = CheckResult(id=self.id, asset=ctx.asset.name, metrics={"robust_accuracy@eps=0.1": 0.2})
        result.findings = self.threshold_findings(ctx, result)
        return result


class FakeTarget:
    def __init__(self, *caps: Capability) -> None:
        self.capabilities = frozenset(caps)


def ctx(thresholds: list[Threshold], target: object = None) -> CheckContext:
    x = np.zeros((3, 4), dtype=np.float32)
    return CheckContext(
        asset=CFG.assets[0],
        config=CFG,
        base_dir=Path("."),
        budget=Budget(queries=10),
        params=NoParams(),
        thresholds=thresholds,
        target=target,
        data={"test": Split(x=x, y=np.zeros(3, dtype=np.int64), index=np.arange(3))},
    )


def test_applicable_reports_missing_capabilities() -> None:
    check = RobustnessCheck()
    assert check.applicable(ctx([])) == "needs a loaded model target"
    reason = check.applicable(ctx([], FakeTarget(Capability.LABEL_ONLY)))
    assert reason == "needs loss-gradients; target offers label-only"
    assert check.applicable(ctx([], FakeTarget(Capability.LOSS_GRADIENTS))) is None
    assert check.preflight(ctx([])) == []


def test_threshold_findings_use_rule_ids_threat_and_atlas() -> None:
    ths = [
        Threshold(
            metric="robust_accuracy@eps=0.1", op="lt", value=0.5, severity="high", rule="low-robust-accuracy"
        ),
        Threshold(metric="robust_accuracy@eps=0.1", op="gt", value=0.9),
        Threshold(metric="not_produced", op="lt", value=1.0),
    ]
    result = RobustnessCheck().run(ctx(ths))
    assert len(result.findings) == 1
    f = result.findings[0]
    assert f.rule_id == "evasion.toy.low-robust-accuracy"
    assert f.severity == "high"
    assert f.threat is Threat.EVASION
    assert f.asset == "diagnosis"
    assert f.location == Location(path="models/d.onnx")
    assert f.atlas == ["AML.T0015"]
    assert f.remediation == "adversarial training"
    assert f.references == ["Madry et al. 2018, arXiv:1706.06083"]
    assert f.evidence == {"robust_accuracy@eps=0.1": 0.2, "threshold": "lt 0.5"}
    # the threshold that can never trip is said, with the metrics the result does have
    note = result.notes["unevaluated_thresholds"]
    assert note.startswith("not_produced: not a metric of this result") and "robust_accuracy@eps=0.1" in note
    assert "unevaluated_thresholds" not in RobustnessCheck().run(ctx(ths[:2])).notes


def test_progress_is_clamped() -> None:
    seen: list[float] = []
    c = ctx([])
    c.progress = seen.append
    for v in (-1.0, 0.5, 2.0):
        c.report_progress(v)
    assert seen == [0.0, 0.5, 1.0]


class OptInMetricCheck(RobustnessCheck):
    """A check whose default thresholds include one on an opt-in metric it did not compute."""

    id: ClassVar[str] = "evasion.toy-opt-in"
    default_thresholds: ClassVar[tuple[Threshold, ...]] = (
        Threshold(metric="opt_in_rate", op="gt", value=0.0),
    )


def test_a_checks_own_default_threshold_on_an_opt_in_metric_is_not_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`bastion demo` warned "thresholds never evaluated" about the checks' own opt-in defaults."""
    check = OptInMetricCheck()
    with caplog.at_level(logging.WARNING, logger="bastion.core.check"):
        quiet = check.run(ctx(list(check.default_thresholds)))
        loud = check.run(ctx([Threshold(metric="opt_in_rte", op="gt", value=0.0)]))  # a user's typo
    assert "unevaluated_thresholds" not in quiet.notes
    assert "opt_in_rte" in loud.notes["unevaluated_thresholds"]
    assert [r.getMessage().count("opt_in_rte") for r in caplog.records] == [1]
