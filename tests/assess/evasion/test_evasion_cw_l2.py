"""``evasion.cw-l2`` on the digits CNN: smaller adversarial examples than PGD-L2's ε, in bounds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.assess.evasion.conftest import robust

from bastion.assess.evasion._common import evaluation_set, metric_key, resolve_bounds
from bastion.assess.evasion._gradients import GradientOracle
from bastion.assess.evasion.cw_l2 import CWL2, MEDIAN_L2, CWL2Params, _CWEngine
from bastion.assess.evasion.pgd_l2 import PGDL2
from bastion.core.budget import Budget, BudgetMeter
from bastion.core.capability import Capability
from bastion.core.registry import attacks

torch = pytest.importorskip("torch")

GRID = [0.5, 1.0, 2.0]
FAST = {"steps": 30, "binary_search_steps": 3}


def test_registered_with_its_declarations() -> None:
    assert attacks.get("evasion.cw-l2") is CWL2
    assert CWL2.requires == frozenset({Capability.LOSS_GRADIENTS})
    assert CWL2.norm == "l2"
    assert any("1608.04644" in r for r in CWL2.references)


def test_smaller_than_pgd_l2_eps(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    budget = Budget(samples=60)
    cw = CWL2().run(make_ctx(CWL2, digits_target, digits, params={"eps": GRID}, budget=budget))
    pgd = PGDL2().run(make_ctx(PGDL2, digits_target, digits, params={"eps": GRID}, budget=budget))
    assert cw.status == "ok"
    assert cw.metrics["clean_accuracy"] == pgd.metrics["clean_accuracy"]
    med = cw.metrics[MEDIAN_L2]
    assert med is not None and med < 0.75  # PGD-L2 needs ε = 1 to break most digits
    assert robust(pgd, 1.0) < pgd.metrics["clean_accuracy"] - 0.3  # type: ignore[operator]
    values = [robust(cw, e) for e in GRID]
    assert values == sorted(values, reverse=True)
    # a minimal-norm attack reaches about the robust accuracy of a fixed-ε attack
    assert robust(cw, 1.0) <= robust(pgd, 1.0) + 0.1
    assert robust(cw, 2.0) <= 0.1
    for e in GRID:
        norm = cw.metrics[metric_key("median_perturbation", e)]
        assert norm is None or norm <= e + 1e-6
    # one optimisation, charged at the first ε only
    assert cw.metrics[metric_key("queries_per_sample", 2.0)] in (0.0, None)
    used = cw.budget_used
    assert used is not None and used.queries is not None
    assert used.queries <= 60 * (1 + 5 * 100 + 1)


def test_examples_in_bounds_and_misclassified(digits: Any, digits_target: Any) -> None:
    bounds = resolve_bounds(digits.spec, (1, 8, 8), digits.train.x)
    ev = evaluation_set(digits.test, 30, 0)
    keep = digits_target.predict_label(ev.x) == ev.y
    x, y = ev.x[keep], ev.y[keep]
    oracle = GradientOracle(digits_target, BudgetMeter(Budget()), 64, "torch")
    eng = _CWEngine(oracle, bounds, np.random.default_rng(0), CWL2Params(**FAST))  # type: ignore[arg-type]
    out = eng.attack(x, y, 10.0, 1)
    assert out.success.mean() > 0.9
    adv = out.x_adv[out.success]
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    assert np.all(digits_target.predict_label(adv) != y[out.success])
    assert np.array_equal(out.x_adv[~out.success], x[~out.success])
    again = eng.attack(x, y, 0.5, 1)  # cached: no new queries, broken only within ε
    assert again.queries.sum() == 0
    assert np.all(bounds.l2(again.x_adv[again.success], x[again.success]) <= 0.5 + 1e-6)


def test_needs_a_torch_target(cancer: Any, cancer_lr_target: Any, make_ctx: Any) -> None:
    ctx = make_ctx(CWL2, cancer_lr_target, cancer)
    assert "PyTorch" in (CWL2().applicable(ctx) or "")
    assert any("PyTorch" in p for p in CWL2().preflight(ctx))


def test_query_budget_lowers_steps(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    budget = Budget(samples=20, queries=20 * 60)
    ctx = make_ctx(CWL2, digits_target, digits, params={"eps": [1.0]}, budget=budget, thresholds=[])
    assert CWL2().preflight(ctx) == []
    res = CWL2().run(ctx)
    assert res.status == "ok" and "budget" not in res.notes
    assert "steps" in res.notes and res.budget_used is not None
    assert res.budget_used.queries is not None and res.budget_used.queries <= 20 * 60
    small = make_ctx(
        CWL2, digits_target, digits, params={"eps": [1.0]}, budget=Budget(samples=20, queries=500)
    )
    assert any("budget.queries" in p for p in CWL2().preflight(small))
