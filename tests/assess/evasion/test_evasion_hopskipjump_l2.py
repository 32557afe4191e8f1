"""``evasion.hopskipjump-l2`` on the digits CNN and the cancer logistic regression (labels only)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.assess.evasion.conftest import IMMUTABLE, LabelOnly, RecordingTarget, robust

from bastion.assess.evasion._common import evaluation_set, metric_key, resolve_bounds
from bastion.assess.evasion.hopskipjump_l2 import HopSkipJumpL2, HSJL2Params, _HSJL2Engine, hopskipjump_l2
from bastion.core.budget import Budget, BudgetMeter
from bastion.core.registry import attacks
from bastion.targets.base import Target


def test_registered_with_its_declarations() -> None:
    assert attacks.get("evasion.hopskipjump-l2") is HopSkipJumpL2
    assert HopSkipJumpL2.requires == frozenset()
    assert HopSkipJumpL2.norm == "l2"
    assert "1904.02144" in HopSkipJumpL2.references[0]


def _direct(
    digits: Any, target: Target, eps: float, cap: int, seed: int, n: int = 25
) -> tuple[Any, Any, Any]:
    ev = evaluation_set(digits.test, n, 0)
    bounds = resolve_bounds(digits.spec, ev.x.shape[1:], None)
    keep = np.asarray(target.predict_label(ev.x)) == ev.y
    x, y = ev.x[keep], ev.y[keep]
    eng = _HSJL2Engine(target, HSJL2Params(), bounds, np.random.default_rng(seed), BudgetMeter(Budget()))
    return hopskipjump_l2(eng, x, y, eps, cap), (x, y), bounds


def test_returned_points_inside_the_ball_and_the_cap(digits: Any, digits_target: Any) -> None:
    target = LabelOnly(digits_target)
    cap = 250
    for eps in (0.5, 1.5):
        out, (x, y), bounds = _direct(digits, target, eps, cap, seed=0)
        norms = bounds.l2(out.x_adv, x)
        assert norms.max() <= eps + 1e-5
        assert out.queries.max() <= cap
        assert out.x_adv.min() >= 0.0 and out.x_adv.max() <= 1.0
        wrong = np.asarray(digits_target.predict_label(out.x_adv)) != y
        np.testing.assert_array_equal(wrong, out.success)  # success is what the model says
    assert out.success.mean() > 0.5  # ε₂ = 1.5 on 8×8 digits breaks most samples


def test_deterministic_under_a_seed(digits: Any, digits_target: Any) -> None:
    target = LabelOnly(digits_target)
    a, _, _ = _direct(digits, target, 1.0, 200, seed=7, n=15)
    b, _, _ = _direct(digits, target, 1.0, 200, seed=7, n=15)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    np.testing.assert_array_equal(a.queries, b.queries)


def test_robust_accuracy_falls_with_eps(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    rec = RecordingTarget(digits_target)
    params = {"eps": [0.25, 1.0, 2.0], "max_queries": 300}
    res = HopSkipJumpL2().run(
        make_ctx(HopSkipJumpL2, LabelOnly(rec), digits, params=params, budget=Budget(samples=30))
    )
    clean = res.metrics["clean_accuracy"]
    assert clean is not None
    r = [robust(res, e) for e in (0.25, 1.0, 2.0)]
    assert r[2] <= r[1] <= r[0] <= clean
    assert r[2] < r[0] and r[2] < 0.5 * clean
    for e in (0.25, 1.0, 2.0):
        qps = res.metrics[metric_key("queries_per_sample", e)]
        assert qps is None or qps <= 300
        med = res.metrics[metric_key("median_perturbation", e)]
        assert med is None or med <= 2.0 + 1e-5
    for rows in rec.rows:  # every query inside the declared range
        assert rows.min() >= 0.0 and rows.max() <= 1.0
    again = HopSkipJumpL2().run(
        make_ctx(HopSkipJumpL2, LabelOnly(digits_target), digits, params=params, budget=Budget(samples=30))
    )
    assert again.metrics == res.metrics


def test_query_budget_respected_and_noted(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    budget = Budget(samples=20, queries=3000)
    res = HopSkipJumpL2().run(
        make_ctx(HopSkipJumpL2, LabelOnly(digits_target), digits, params={"eps": [0.5, 1.0]}, budget=budget)
    )
    assert res.budget_used is not None and res.budget_used.queries <= 3000
    assert "max_queries" in res.notes
    assert robust(res, 1.0) < res.metrics["clean_accuracy"]  # type: ignore[operator]


def test_budget_preflight(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    ctx = make_ctx(HopSkipJumpL2, digits_target, digits, budget=Budget(samples=30, queries=200))
    assert any("budget.queries" in p for p in HopSkipJumpL2().preflight(ctx))


def test_tabular_immutable_features_stay(cancer: Any, cancer_lr_target: Any, make_ctx: Any) -> None:
    rec = RecordingTarget(cancer_lr_target)
    res = HopSkipJumpL2().run(
        make_ctx(
            HopSkipJumpL2,
            LabelOnly(rec),
            cancer,
            params={"eps": [0.5, 1.0], "max_queries": 200},
            budget=Budget(samples=20),
        )
    )
    assert robust(res, 1.0) <= robust(res, 0.5) <= res.metrics["clean_accuracy"]  # type: ignore[operator]
    lo = np.array([f.min for f in cancer.spec.features])
    hi = np.array([f.max for f in cancer.spec.features])
    ev = evaluation_set(cancer.test, 20, 0)
    allowed = {tuple(ev.x[i, list(IMMUTABLE)]) for i in range(len(ev.x))}
    lo_eff, hi_eff = np.minimum(lo, ev.x.min(axis=0)), np.maximum(hi, ev.x.max(axis=0))
    queried = np.concatenate(rec.rows[1:])  # after the clean pass
    assert len(queried) > 100
    assert np.all(queried >= lo_eff - 1e-3) and np.all(queried <= hi_eff + 1e-3)
    assert {tuple(r) for r in queried[:, list(IMMUTABLE)]} <= allowed


@pytest.mark.parametrize("eps", [0.0])
def test_zero_eps_rejected(digits: Any, digits_target: Any, make_ctx: Any, eps: float) -> None:
    ctx = make_ctx(HopSkipJumpL2, digits_target, digits, params={"eps": [eps]})
    assert any("must be positive" in p for p in HopSkipJumpL2().preflight(ctx))
