"""``evasion.square-l2`` on the digits CNN and the cancer logistic regression (probabilities only)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.assess.evasion.conftest import IMMUTABLE, robust

from bastion.assess.evasion._common import evaluation_set, metric_key, resolve_bounds
from bastion.assess.evasion.square_l2 import SquareAttackL2, pseudo_gaussian, square_l2
from bastion.core.budget import Budget
from bastion.core.capability import Capability
from bastion.core.registry import attacks
from bastion.core.results import CheckResult

EPS = 1.0


def test_registered_with_its_declarations() -> None:
    assert attacks.get("evasion.square-l2") is SquareAttackL2
    assert SquareAttackL2.requires == frozenset({Capability.PROBABILITIES})
    assert SquareAttackL2.norm == "l2"
    assert any("1912.00049" in r for r in SquareAttackL2.references)
    assert SquareAttackL2.parse_params(None).eps == [0.25, 0.5, 1.0]  # type: ignore[attr-defined]


def test_pseudo_gaussian_has_unit_norm_and_both_signs() -> None:
    for s in (1, 3, 5, 7):
        pg = pseudo_gaussian(s, np.random.default_rng(s))
        assert pg.shape == (s, s)
        assert np.sqrt((pg**2).sum()) == pytest.approx(1.0)
        if s > 1:
            assert pg.max() > 0 > pg.min()


def test_beats_l2_noise_of_the_same_norm_within_budget(
    digits: Any, digits_target: Any, make_ctx: Any
) -> None:
    n_queries = 100
    params = {"eps": [EPS], "n_queries": n_queries}
    ctx = make_ctx(
        SquareAttackL2, digits_target, digits, params=params, budget=Budget(samples=50), thresholds=[]
    )
    res = SquareAttackL2().run(ctx)
    clean = res.metrics["clean_accuracy"]
    assert clean is not None and clean >= 0.8
    ev = evaluation_set(digits.test, 50, 0)
    noise = np.random.default_rng(5).standard_normal(ev.x.shape)
    noise *= EPS / np.sqrt((noise.reshape(len(noise), -1) ** 2).sum(axis=1)).reshape(-1, 1, 1, 1)
    noisy = np.clip(ev.x + noise, 0, 1).astype(np.float32)
    ok = (digits_target.predict_label(ev.x) == ev.y) & (digits_target.predict_label(noisy) == ev.y)
    assert robust(res, EPS) < ok.mean() - 0.2
    norm = res.metrics[metric_key("median_perturbation", EPS)]
    assert norm is not None and norm <= EPS + 1e-5
    qps = res.metrics[metric_key("queries_per_sample", EPS)]
    assert qps is not None and 1 <= qps <= n_queries
    used = res.budget_used
    assert used is not None and used.queries is not None and used.queries <= 50 + 50 * n_queries


def test_every_candidate_in_the_ball_and_the_bounds(digits: Any, digits_target: Any) -> None:
    bounds = resolve_bounds(digits.spec, (1, 8, 8), digits.train.x)
    ev = evaluation_set(digits.test, 30, 0)
    keep = digits_target.predict_label(ev.x) == ev.y
    x, y = ev.x[keep], ev.y[keep]
    seen: list[np.ndarray] = []

    def proba(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.copy())
        return np.asarray(digits_target.predict_proba(batch))

    low, high = bounds.box(x, EPS)
    out = square_l2(
        proba,
        x,
        y,
        low,
        high,
        EPS,
        bounds.scale,
        bounds.mutable,
        n_queries=40,
        p_init=0.1,
        rng=np.random.default_rng(0),
        finalize=bounds.finalize,
    )
    assert len(seen) <= 40
    assert out.queries.max() <= 40
    for batch in seen:
        assert batch.min() >= 0.0 and batch.max() <= 1.0
    assert np.all(bounds.l2(out.x_adv, x) <= EPS + 1e-5)
    assert np.all(out.x_adv >= 0) and np.all(out.x_adv <= 1)
    assert out.success.any()


def test_tabular_immutables_fixed_and_deterministic(
    cancer: Any, cancer_lr_target: Any, make_ctx: Any
) -> None:
    params = {"eps": [0.1, 0.3], "n_queries": 60}

    def run() -> CheckResult:
        ctx = make_ctx(SquareAttackL2, cancer_lr_target, cancer, params=params, budget=Budget(samples=40))
        return SquareAttackL2().run(ctx)

    x_before = cancer.test.x.copy()
    a, b = run(), run()
    assert a.metrics == b.metrics
    np.testing.assert_array_equal(cancer.test.x, x_before)
    assert robust(a, 0.3) <= robust(a, 0.1) <= a.metrics["clean_accuracy"]  # type: ignore[operator]
    bounds = resolve_bounds(cancer.spec, (30,), cancer.train.x)
    ev = evaluation_set(cancer.test, 40, 0)
    low, high = bounds.box(ev.x, 0.3)
    out = square_l2(
        cancer_lr_target.predict_proba,
        ev.x,
        ev.y,
        low,
        high,
        0.3,
        bounds.scale,
        bounds.mutable,
        n_queries=30,
        p_init=0.1,
        rng=np.random.default_rng(1),
        finalize=bounds.finalize,
    )
    for i in IMMUTABLE:
        assert np.array_equal(out.x_adv[:, i], ev.x[:, i])
    assert np.all(bounds.l2(out.x_adv, ev.x) <= 0.3 + 0.05)  # integer rounding may add < one unit


def test_preflight_flags_too_few_queries(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    ctx = make_ctx(SquareAttackL2, digits_target, digits, params={"n_queries": 3})
    assert any("n_queries" in p for p in SquareAttackL2().preflight(ctx))
