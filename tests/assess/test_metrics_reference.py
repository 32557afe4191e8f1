"""Properties of the reference-attack maths appended to bastion.assess.metrics (issue 6)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.assess import metrics as M


@given(st.integers(1, 12), st.integers(0, 30), st.integers(0, 1000))
def test_balanced_inclusion_puts_each_record_in_half_the_models(k: int, n: int, seed: int) -> None:
    m = M.balanced_inclusion(k, n, seed)
    assert m.shape == (k, n)
    assert (m.sum(axis=0) == k // 2).all()


@settings(max_examples=30)
@given(st.integers(2, 6), st.integers(1, 8), st.integers(0, 100))
def test_logit_confidence_is_monotone_in_true_class_probability(c: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(c), size=n)
    y = rng.integers(0, c, n)
    s = M.logit_confidence(p, y)
    q = p.copy()
    q[np.arange(n), y] += 0.1
    q /= q.sum(axis=1, keepdims=True)
    assert (M.logit_confidence(q, y) > s).all()
    np.testing.assert_allclose(s, np.log(p[np.arange(n), y]) - np.log(1 - p[np.arange(n), y]), rtol=1e-6)


@settings(max_examples=30)
@given(st.integers(0, 1000))
def test_lira_scores_rank_a_higher_target_statistic_higher(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k, n = 8, 5
    ref_in = M.balanced_inclusion(k, n, seed)
    t = rng.normal(size=n)
    # offline (one-sided test): monotone in the target's statistic for any reference spread
    ref = rng.normal(size=(k, n)) + 2.0 * ref_in  # IN models are more confident
    off = np.zeros_like(ref_in)
    assert (M.lira_scores(t + 0.5, ref, off) > M.lira_scores(t, ref, off)).all()
    # online: a Gaussian likelihood ratio is monotone only when the IN and OUT spreads are equal
    # (else it is quadratic in φ); build references whose IN/OUT deviations are the same
    noise = rng.normal(scale=0.5, size=(k // 2, n))
    ref_eq = (
        np.where(ref_in, 2.0, 0.0)
        + np.concatenate([noise, noise])[np.argsort(np.argsort(ref_in, axis=0), axis=0), np.arange(n)]
    )
    lo = M.lira_scores(t, ref_eq, ref_in)
    hi = M.lira_scores(t + 0.5, ref_eq, ref_in)
    assert (hi > lo).all()


def test_lira_needs_out_models() -> None:
    with pytest.raises(ValueError, match="did not train"):
        M.lira_scores(np.zeros(2), np.zeros((2, 2)), np.ones((2, 2), dtype=bool))


@settings(max_examples=30)
@given(st.integers(0, 1000), st.sampled_from([None, 0.0, 0.5, 1.0]))
def test_rmia_scores_are_fractions_and_monotone(seed: int, a: float | None) -> None:
    rng = np.random.default_rng(seed)
    k, n, z = 4, 6, 20
    rx, rz = rng.random((k, n)), rng.random((k, z))
    tx, tz = rng.random(n), rng.random(z)
    s = M.rmia_scores(tx, rx, tz, rz, offline_a=a)
    assert ((s >= 0) & (s <= 1)).all()
    assert (M.rmia_scores(np.minimum(tx * 1.5, 1.0), rx, tz, rz, offline_a=a) >= s).all()
    # γ larger → harder to beat z
    assert (M.rmia_scores(tx, rx, tz, rz, gamma=2.0, offline_a=a) <= s).all()


@given(st.integers(1, 10_000), st.floats(1e-4, 10.0))
def test_logistic_sensitivity_bound(n: int, lam: float) -> None:
    assert M.logistic_sensitivity(n, lam) == pytest.approx(2.0 / (n * lam))


def test_logistic_sensitivity_bounds_a_real_neighbouring_pair() -> None:
    """Two datasets differing in one record: the regularised minimisers differ by at most 2/(nλ)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n, lam = 200, 0.05
    x = rng.normal(size=(n, 5))
    x /= np.maximum(1.0, np.linalg.norm(x, axis=1, keepdims=True))
    y = (x[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int)
    x2, y2 = x.copy(), y.copy()
    x2[0] = -x[0]
    y2[0] = 1 - y[0]
    # sklearn minimises C Σ ℓ + ½‖w‖²  ⇔  (1/n) Σ ℓ + (λ/2)‖w‖²  with C = 1/(nλ)
    fit = [
        LogisticRegression(C=1 / (n * lam), fit_intercept=False, tol=1e-8, max_iter=2000).fit(a, b).coef_[0]
        for a, b in ((x, y), (x2, y2))
    ]
    assert np.linalg.norm(fit[0] - fit[1]) <= M.logistic_sensitivity(n, lam)
