"""membership.threshold: leakage found on an over-fit model, not on a regularised one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bastion.assess.membership.threshold import MembershipThreshold, MembershipThresholdParams
from bastion.core import atlas
from bastion.core.budget import Budget
from bastion.core.check import Split
from bastion.core.errors import PluginError
from bastion.core.findings import Threat
from bastion.core.registry import attacks
from bastion.core.results import CheckResult
from bastion.core.severity import Severity


def _comparable(r: CheckResult) -> dict[str, object]:
    d = r.model_dump(mode="json")
    d.pop("seconds")
    d["budget_used"].pop("seconds")
    return d


def test_registered_with_contract_attributes() -> None:
    assert attacks.get("membership.threshold") is MembershipThreshold
    assert MembershipThreshold.threat is Threat.PRIVACY
    assert MembershipThreshold.atlas == ("AML.T0024.000",)
    assert all(atlas.is_known(t) for t in MembershipThreshold.atlas)
    assert any("1709.01604" in r for r in MembershipThreshold.references)
    assert any("2112.03570" in r for r in MembershipThreshold.references)
    assert {t.metric for t in MembershipThreshold.default_thresholds} == {"auc", "tpr@fpr=0.01"}


def test_overfit_model_leaks(overfit_digits, make_ctx) -> None:
    ctx = make_ctx(MembershipThreshold, overfit_digits)
    r = MembershipThreshold().run(ctx)
    assert r.status == "ok"
    auc = r.metrics["auc"]
    assert auc is not None and auc > 0.7  # measured 0.80
    low, high = r.intervals["auc"]
    assert low <= auc <= high and low > 0.6
    assert r.metrics["advantage"] is not None and r.metrics["advantage"] > 0.3
    assert r.metrics["balanced_accuracy"] == pytest.approx(0.5 + r.metrics["advantage"] / 2)
    assert r.metrics["epsilon_lower_bound"] is not None and r.metrics["epsilon_lower_bound"] > 1.0
    tpr10 = r.metrics["tpr@fpr=0.1"]
    assert tpr10 is not None and tpr10 >= 0.1  # measured 0.18: weak at low FPR, as Carlini et al. warn
    lo10, hi10 = r.intervals["tpr@fpr=0.1"]
    assert lo10 <= tpr10 <= hi10
    rules = {f.rule_id for f in r.findings}
    assert "membership.threshold.membership-leakage" in rules
    leak = next(f for f in r.findings if f.rule_id == "membership.threshold.membership-leakage")
    assert leak.severity is Severity.MEDIUM and leak.threat is Threat.PRIVACY
    assert leak.atlas == ["AML.T0024.000"]
    assert leak.evidence["auc"] == auc and leak.evidence["members"] == 200
    # The most exposed training records are cited by dataset row index, never by content.
    exposed = leak.evidence["exposed_records"]
    assert len(exposed) == 10
    assert {e["index"] for e in exposed} <= set(overfit_digits.train.tolist())
    assert str(exposed[0]["index"]) in r.notes["exposed_records"]
    # Calibrated operating point: threshold fixed on held-out non-members only.
    tpr_c, fpr_c = r.metrics["tpr@calibrated"], r.metrics["fpr@calibrated"]
    assert tpr_c is not None and fpr_c is not None and fpr_c <= 0.15
    assert r.metrics["precision@calibrated"] == pytest.approx(tpr_c / (tpr_c + fpr_c))
    assert "100 calibration non-members" in r.notes["tpr@calibrated"]


def test_regularised_model_does_not_leak(regularised_cancer, make_ctx) -> None:
    r = MembershipThreshold().run(make_ctx(MembershipThreshold, regularised_cancer))
    auc = r.metrics["auc"]
    assert auc is not None and 0.35 < auc < 0.6  # measured 0.459
    assert r.metrics["tpr@fpr=0.01"] is not None and r.metrics["tpr@fpr=0.01"] <= 0.05
    assert r.findings == []


def test_unresolvable_default_fpr_is_null_with_reason(overfit_digits, make_ctx) -> None:
    r = MembershipThreshold().run(make_ctx(MembershipThreshold, overfit_digits))
    assert r.metrics["tpr@fpr=0.001"] is None
    assert "tpr@fpr=0.001" not in r.intervals
    assert "1000" in r.notes["tpr@fpr=0.001"] and "200" in r.notes["tpr@fpr=0.001"]
    assert r.metrics["tpr@fpr=0.01"] is not None  # 200 non-members resolve 1 %


def test_preflight_rejects_an_fpr_the_user_asked_for(overfit_digits, make_ctx) -> None:
    check = MembershipThreshold()
    assert check.preflight(make_ctx(MembershipThreshold, overfit_digits)) == []
    problems = check.preflight(make_ctx(MembershipThreshold, overfit_digits, params={"fprs": [0.01, 0.001]}))
    assert len(problems) == 1
    assert "params.fprs" in problems[0] and "1000" in problems[0] and "asset model" in problems[0]
    # 100 samples per side cannot resolve an explicit 1 %... but 200 can.
    assert check.preflight(
        make_ctx(MembershipThreshold, overfit_digits, params={"fprs": [0.01]}, budget=Budget(samples=99))
    )
    assert not check.preflight(make_ctx(MembershipThreshold, overfit_digits, params={"fprs": [0.01]}))
    cal = check.preflight(make_ctx(MembershipThreshold, overfit_digits, params={"calibration_fpr": 0.001}))
    assert len(cal) == 1 and "calibration_fpr" in cal[0]


def test_params_validated() -> None:
    with pytest.raises(PluginError, match="fprs"):
        MembershipThreshold.parse_params({"fprs": [1.5]})
    with pytest.raises(PluginError, match="calibration_fpr"):
        MembershipThreshold.parse_params({"calibration_fpr": 0.0})
    p = MembershipThreshold.parse_params({"fprs": [0.01, 0.1, 0.01]})
    assert isinstance(p, MembershipThresholdParams) and p.fprs == [0.1, 0.01]


@pytest.mark.parametrize(
    ("budget", "per_side"),
    [(Budget(queries=100), 50), (Budget(samples=30), 30), (Budget(samples=30, queries=41), 20)],
)
def test_budget_respected(overfit_digits, make_ctx, budget: Budget, per_side: int) -> None:
    target = overfit_digits.target()
    r = MembershipThreshold().run(make_ctx(MembershipThreshold, overfit_digits, budget=budget, target=target))
    assert r.status == "ok"
    assert target.queries == 2 * per_side
    assert r.budget_used is not None and r.budget_used.queries == 2 * per_side
    assert not r.budget_used.exhausted
    assert f"{per_side} members" in r.notes["sample"]


def test_deterministic_under_seed_and_json(overfit_digits, make_ctx) -> None:
    a = MembershipThreshold().run(
        make_ctx(MembershipThreshold, overfit_digits, budget=Budget(samples=120), seed=3)
    )
    b = MembershipThreshold().run(
        make_ctx(MembershipThreshold, overfit_digits, budget=Budget(samples=120), seed=3)
    )
    c = MembershipThreshold().run(
        make_ctx(MembershipThreshold, overfit_digits, budget=Budget(samples=120), seed=4)
    )
    assert _comparable(a) == _comparable(b)
    assert a.metrics != c.metrics
    text = json.dumps(a.model_dump(mode="json"), allow_nan=False)
    assert CheckResult.model_validate_json(text).metrics == a.metrics


def test_roc_series_on_log_axes(overfit_digits, make_ctx) -> None:
    r = MembershipThreshold().run(make_ctx(MembershipThreshold, overfit_digits))
    roc = r.series["roc"]
    assert roc.log_x and roc.log_y and roc.x_label == "false-positive rate"
    assert 2 <= len(roc.x) <= 200 and len(roc.x) == len(roc.y)
    assert min(roc.x) > 0 and min(v for v in roc.y if v is not None) > 0
    assert roc.x == sorted(roc.x) and roc.x[-1] == 1.0
    assert r.series["chance"].x == r.series["chance"].y


def test_not_applicable_without_probabilities_or_data(overfit_digits, make_ctx) -> None:
    check = MembershipThreshold()
    label_only = make_ctx(MembershipThreshold, overfit_digits, target=overfit_digits.target(label_only=True))
    assert "probabilities" in (check.applicable(label_only) or "")
    no_test = make_ctx(MembershipThreshold, overfit_digits, data={"train": overfit_digits.data()["train"]})
    assert "'test'" in (check.applicable(no_test) or "")
    assert check.applicable(make_ctx(MembershipThreshold, overfit_digits)) is None


def test_held_out_rows_also_in_train_are_dropped(overfit_digits, make_ctx) -> None:
    d = overfit_digits
    leaked = np.concatenate([d.test[:300], d.train[:50]])
    data = {
        "train": Split(x=d.x[d.train], y=d.y[d.train], index=d.train),
        "test": Split(x=d.x[leaked], y=d.y[leaked], index=leaked),
    }
    r = MembershipThreshold().run(make_ctx(MembershipThreshold, d, data=data))
    assert r.notes["overlap"].startswith("50 held-out rows")
    assert "200 members" in r.notes["sample"]


def test_budget_exhausted_mid_run_is_reported(overfit_digits, make_ctx) -> None:
    ctx = make_ctx(MembershipThreshold, overfit_digits, budget=Budget(samples=50, seconds=1e-9))
    r = MembershipThreshold().run(ctx)
    assert r.status == "error" and r.reason is not None and r.reason.startswith("BudgetExhausted")
    assert r.budget_used is not None and r.budget_used.exhausted
