"""``evasion.square`` on a digits CNN (torch) and a logistic regression (sklearn), probabilities only."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.assess.evasion.conftest import CATEGORICAL, IMMUTABLE, INTEGER, RecordingTarget, robust

from bastion.assess.evasion._common import evaluation_set, metric_key, resolve_bounds
from bastion.assess.evasion.square import SquareAttack, square_linf
from bastion.core.budget import Budget, BudgetMeter
from bastion.core.capability import Capability
from bastion.core.errors import PluginError
from bastion.core.registry import attacks
from bastion.core.results import CheckResult


def test_registered_with_its_declarations() -> None:
    assert attacks.get("evasion.square") is SquareAttack
    assert SquareAttack.requires == frozenset({Capability.PROBABILITIES})
    assert "AML.T0043.001" in SquareAttack.atlas
    assert any("1912.00049" in r for r in SquareAttack.references)
    assert SquareAttack.parse_params(None).n_queries == 200  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match="p_init"):
        SquareAttack.parse_params({"p_init": 0})


def test_digits_cnn_one_call_per_iteration(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    rec = RecordingTarget(digits_target)
    n_queries, grid = 100, [0.1, 0.2]
    params = {"eps": grid, "n_queries": n_queries}
    ctx = make_ctx(SquareAttack, rec, digits, params=params, budget=Budget(samples=50), thresholds=[])
    res = SquareAttack().run(ctx)
    clean = res.metrics["clean_accuracy"]
    assert clean is not None and clean >= 0.8
    values = [robust(res, e) for e in grid]
    assert values[0] <= clean and values[1] <= values[0]
    assert values[1] <= clean - 0.4  # the black-box search breaks most digits at ε = 0.2
    # one batched call for the clean pass, then one per iteration for all unbroken samples
    assert res.series["robust_accuracy"].x == grid
    assert rec.calls <= 1 + len(grid) * n_queries
    assert all(len(batch) > 1 for batch in rec.rows[:2])
    used = res.budget_used
    assert used is not None and used.queries == sum(len(b) for b in rec.rows) == rec.queries
    for e in grid:
        qps = res.metrics[metric_key("queries_per_sample", e)]
        med = res.metrics[metric_key("median_queries_successful", e)]
        assert qps is not None and 1 <= qps <= n_queries
        assert med is not None and 1 <= med <= n_queries
        norm = res.metrics[metric_key("median_perturbation", e)]
        assert norm is not None and norm <= e + 1e-6
    assert CheckResult.model_validate_json(res.model_dump_json()) == res


def test_beats_uniform_noise(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    eps = 0.15
    params = {"eps": [eps], "n_queries": 100}
    res = SquareAttack().run(
        make_ctx(SquareAttack, digits_target, digits, params=params, budget=Budget(samples=50))
    )
    ev = evaluation_set(digits.test, 50, 0)
    noisy = np.clip(ev.x + np.random.default_rng(5).uniform(-eps, eps, size=ev.x.shape), 0, 1).astype(
        np.float32
    )
    ok = (digits_target.predict_label(ev.x) == ev.y) & (digits_target.predict_label(noisy) == ev.y)
    assert robust(res, eps) < ok.mean() - 0.1


def test_tabular_rules_hold_for_every_candidate(cancer: Any, cancer_lr_target: Any, make_ctx: Any) -> None:
    eps = 0.1
    bounds = resolve_bounds(cancer.spec, (30,), cancer.train.x)
    ev = evaluation_set(cancer.test, 60, 0)
    ok = cancer_lr_target.predict_label(ev.x) == ev.y
    x, y = ev.x[ok], ev.y[ok]
    low, high = bounds.box(x, eps)
    seen: list[np.ndarray] = []

    def proba(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.copy())
        return np.asarray(cancer_lr_target.predict_proba(batch))

    x_before = x.copy()
    out = square_linf(
        proba,
        x,
        y,
        low,
        high,
        bounds.eps_values(eps),
        n_queries=60,
        p_init=0.1,
        rng=np.random.default_rng(0),
        finalize=bounds.finalize,
    )
    np.testing.assert_array_equal(x, x_before)
    assert out.success.any() and out.queries.max() <= 60
    assert len(seen) <= 60
    fixed = [CATEGORICAL, *IMMUTABLE]
    e = bounds.eps_values(eps)
    for batch in [*seen, out.x_adv]:
        assert {tuple(r) for r in batch[:, fixed]} <= {tuple(r) for r in x[:, fixed]}
        np.testing.assert_array_equal(batch[:, INTEGER], np.round(batch[:, INTEGER]))
        assert np.all(batch >= low.min(axis=0)) and np.all(batch <= high.max(axis=0))
    adv = out.x_adv.astype(np.float64)
    assert np.all(np.abs(adv - x) <= e + 1e-4 * (1 + np.abs(x)))
    assert np.all((adv >= low) & (adv <= high))
    # a sample counted as broken really is misclassified
    assert np.all(cancer_lr_target.predict_label(out.x_adv[out.success]) != y[out.success])


def test_sklearn_logistic_regression(cancer: Any, cancer_lr_target: Any, make_ctx: Any) -> None:
    ctx = make_ctx(
        SquareAttack, cancer_lr_target, cancer, params={"n_queries": 60}, budget=Budget(samples=50)
    )
    res = SquareAttack().run(ctx)
    clean = res.metrics["clean_accuracy"]
    values = [robust(res, e) for e in (0.01, 0.02, 0.05, 0.1)]
    assert clean is not None and clean >= 0.9
    assert values == sorted(values, reverse=True) and values[-1] < clean - 0.3


def test_query_budget_lowers_the_per_sample_cap(cancer: Any, cancer_lr_target: Any, make_ctx: Any) -> None:
    budget = Budget(queries=3000, samples=50)
    ctx = make_ctx(SquareAttack, cancer_lr_target, cancer, budget=budget)
    assert SquareAttack().preflight(ctx) == []
    res = SquareAttack().run(ctx)
    used = res.budget_used
    assert used is not None and used.queries <= 3000 and not used.exhausted
    assert "n_queries" in res.notes
    assert all(res.metrics[metric_key("robust_accuracy", e)] is not None for e in (0.01, 0.02, 0.05, 0.1))


def test_exhausted_budget_keeps_what_was_reached(cancer: Any, cancer_lr_target: Any, make_ctx: Any) -> None:
    ctx = make_ctx(SquareAttack, cancer_lr_target, cancer, budget=Budget(queries=60, samples=50))
    assert any("budget.queries" in p for p in SquareAttack().preflight(ctx))
    res = SquareAttack().run(ctx)
    used = res.budget_used
    assert used is not None and used.exhausted and used.queries <= 60
    assert res.metrics["clean_accuracy"] is not None
    assert res.metrics[metric_key("robust_accuracy", 0.01)] is None
    assert "budget" in res.notes and "stopped" in res.notes["budget"]
    # a gate whose metric the budget left null fails closed: never a silent pass
    (f,) = res.findings
    assert (
        f.rule_id == "evasion.square.unmeasured" and f.severity == SquareAttack.default_thresholds[0].severity
    )
    th_metric = SquareAttack.default_thresholds[0].metric
    assert f.evidence[th_metric] is None and "stopped" in f.evidence["budget"]
    assert CheckResult.model_validate_json(res.model_dump_json()) == res


def test_deterministic_and_inputs_untouched(cancer: Any, cancer_lr_target: Any, make_ctx: Any) -> None:
    x_before = cancer.test.x.copy()
    runs = [
        SquareAttack().run(
            make_ctx(
                SquareAttack,
                cancer_lr_target,
                cancer,
                params={"eps": [0.05], "n_queries": 40},
                budget=Budget(samples=40),
                seed=9,
            )
        )
        for _ in range(2)
    ]
    assert runs[0].metrics == runs[1].metrics
    np.testing.assert_array_equal(cancer.test.x, x_before)


def test_preflight_flags_too_few_queries(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    problems = SquareAttack().preflight(
        make_ctx(SquareAttack, digits_target, digits, params={"n_queries": 5})
    )
    assert problems == ["params.n_queries: 5 is too small (at least 10)"]


def test_engine_counts_every_query_on_the_meter(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    ctx = make_ctx(SquareAttack, digits_target, digits, params={"n_queries": 30})
    bounds = resolve_bounds(digits.spec, (1, 8, 8), None)
    ev = evaluation_set(digits.test, 20, 0)
    meter = BudgetMeter(Budget())
    with (
        digits_target.metered(meter),
        SquareAttack().engine(ctx, meter, bounds, np.random.default_rng(1)) as eng,
    ):
        out = eng.attack(ev.x, ev.y, 0.2, 1)
    assert meter.queries == int(out.queries.sum())
    assert out.queries.max() <= 30
