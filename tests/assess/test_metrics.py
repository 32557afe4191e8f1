"""Properties of the pure evaluation maths in bastion.assess.metrics (hypothesis + sklearn oracle)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.assess import metrics as M

scores = st.lists(st.integers(-5, 5).map(float) | st.floats(-10, 10), min_size=1, max_size=40)
tied_scores = st.lists(st.integers(0, 3).map(float), min_size=1, max_size=30)


@settings(max_examples=25)
@given(scores, scores)
def test_auc_matches_sklearn_oracle(pos: list[float], neg: list[float]) -> None:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    assert M.roc_auc(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-12)


@given(scores, scores)
def test_auc_in_unit_interval_and_antisymmetric(pos: list[float], neg: list[float]) -> None:
    a = M.roc_auc(pos, neg)
    assert 0.0 <= a <= 1.0
    assert M.roc_auc(neg, pos) == pytest.approx(1.0 - a, abs=1e-12)


@given(tied_scores)
def test_auc_of_identical_samples_is_one_half(s: list[float]) -> None:
    assert M.roc_auc(s, s) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(5))
def test_auc_of_identical_distributions_is_near_one_half(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = M.roc_auc(rng.normal(size=500), rng.normal(size=500))
    assert 0.42 < a < 0.58


@given(
    st.lists(st.floats(-10, 0), min_size=1, max_size=30),
    st.lists(st.floats(0.5, 10), min_size=1, max_size=30),
)
def test_perfect_separation(neg: list[float], pos: list[float]) -> None:
    assert M.roc_auc(pos, neg) == 1.0
    assert M.roc_auc(neg, pos) == 0.0
    fpr, tpr, _ = M.roc_curve(pos, neg)
    value, reason = M.tpr_at_fpr(fpr, tpr, 1e-6)
    assert value == 1.0 and reason is None


@given(scores, scores)
def test_roc_curve_shape_and_area(pos: list[float], neg: list[float]) -> None:
    fpr, tpr, thr = M.roc_curve(pos, neg)
    assert fpr[0] == 0.0 and tpr[0] == 0.0 and thr[0] == math.inf
    assert fpr[-1] == 1.0 and tpr[-1] == 1.0
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all() and (np.diff(thr) < 0).all()
    # Ties move the curve diagonally, so the trapezoid area is the tie-aware AUC.
    assert float(np.trapezoid(tpr, fpr)) == pytest.approx(M.roc_auc(pos, neg), abs=1e-12)


@given(scores, scores, st.floats(1e-4, 1.0), st.floats(1e-4, 1.0))
def test_tpr_at_fpr_monotone_in_target(pos: list[float], neg: list[float], a: float, b: float) -> None:
    fpr, tpr, _ = M.roc_curve(pos, neg)
    lo, hi = sorted((a, b))
    v_lo, _ = M.tpr_at_fpr(fpr, tpr, lo)
    v_hi, _ = M.tpr_at_fpr(fpr, tpr, hi)
    assert v_lo is not None and v_hi is not None
    assert 0.0 <= v_lo <= v_hi <= 1.0
    # It is a point of the curve whose FPR is within the target.
    assert any(t == v_lo and f <= lo + 1e-12 for f, t in zip(fpr, tpr, strict=True))


def test_tpr_at_fpr_resolution() -> None:
    fpr, tpr, _ = M.roc_curve(np.arange(100.0) + 0.5, np.arange(100.0))
    value, reason = M.tpr_at_fpr(fpr, tpr, 0.01, n_nonmembers=99)
    assert value is None and reason is not None and "100 non-members" in reason and "99" in reason
    value, reason = M.tpr_at_fpr(fpr, tpr, 0.01, n_nonmembers=100)
    assert reason is None and value == pytest.approx(0.02)  # one false positive allowed
    assert M.unresolvable_fpr_reason(0.001, 1000) is None
    assert M.unresolvable_fpr_reason(0.001, 999) is not None
    with pytest.raises(ValueError, match="target_fpr"):
        M.tpr_at_fpr(fpr, tpr, 0.0)


@given(st.integers(0, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_estimate(kn: tuple[int, int]) -> None:
    k, n = kn
    low, high = M.wilson_interval(k, n)
    assert 0.0 <= low <= high <= 1.0
    if n:
        assert low <= k / n <= high


@settings(max_examples=60)
@given(st.integers(0, 300).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_clopper_pearson_contains_estimate_and_covers_wilson_centre(kn: tuple[int, int]) -> None:
    k, n = kn
    low, high = M.clopper_pearson(k, n)
    assert 0.0 <= low <= high <= 1.0
    if n:
        assert low <= k / n <= high
        w_low, w_high = M.wilson_interval(k, n)
        assert low <= w_high and w_low <= high  # the two overlap


def test_interval_known_values() -> None:
    assert M.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert M.wilson_interval(0, 0) == (0.0, 1.0)
    assert M.clopper_pearson(5, 10) == pytest.approx((0.1871, 0.8129), abs=1e-4)
    assert M.clopper_pearson(0, 10) == pytest.approx((0.0, 0.3085), abs=1e-4)
    assert M.clopper_pearson(10, 10) == pytest.approx((0.6915, 1.0), abs=1e-4)
    with pytest.raises(ValueError):
        M.wilson_interval(3, 2)
    with pytest.raises(ValueError):
        M.clopper_pearson(1, 2, alpha=1.5)


def test_bootstrap_interval() -> None:
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 200)
    a = M.roc_auc(pos, neg)
    low, high = M.bootstrap_auc_interval(pos, neg, n_boot=200, seed=1)
    assert 0.0 <= low < a < high <= 1.0
    assert high - low < 0.2
    assert M.bootstrap_auc_interval(pos, neg, n_boot=50, seed=1) == M.bootstrap_auc_interval(
        pos, neg, n_boot=50, seed=1
    )
    with pytest.raises(ValueError, match="n_boot"):
        M.bootstrap_auc_interval(pos, neg, n_boot=0)


def test_advantage_and_balanced_accuracy() -> None:
    fpr, tpr, _ = M.roc_curve([2.0, 3.0, 0.5], [0.0, 1.0, 2.5])
    adv = M.membership_advantage(fpr, tpr)
    best = max(M.balanced_accuracy(t, f) for f, t in zip(fpr, tpr, strict=True))
    assert best == pytest.approx(0.5 + adv / 2)
    assert M.balanced_accuracy(0.5, 0.5) == 0.5
    with pytest.raises(ValueError, match="tpr"):
        M.balanced_accuracy(1.5, 0.0)


rates = st.integers(0, 1000).map(lambda k: k / 1000)  # rates are k/n in practice


@given(rates, rates, st.floats(0, 0.5))
def test_epsilon_bound_properties(tpr: float, fpr: float, delta: float) -> None:
    eps = M.empirical_epsilon_lower_bound(tpr, fpr, delta)
    assert eps >= 0.0
    assert M.empirical_epsilon_lower_bound(tpr, fpr, 0.0) >= eps  # δ only weakens the bound
    # The complementary test ("non-member" when the score passes) has the same bound.
    assert M.empirical_epsilon_lower_bound(1.0 - fpr, 1.0 - tpr, delta) == pytest.approx(eps)
    # A better attack at the same FPR never lowers the bound.
    assert M.empirical_epsilon_lower_bound(min(1.0, tpr + 0.1), fpr, delta) >= eps


def test_epsilon_bound_values() -> None:
    assert M.empirical_epsilon_lower_bound(0.5, 0.05) == pytest.approx(math.log(10))
    assert M.empirical_epsilon_lower_bound(0.3, 0.3) == 0.0
    assert M.empirical_epsilon_lower_bound(0.5, 0.0) == math.inf
    assert M.empirical_epsilon_lower_bound(0.0, 0.0) == 0.0
    assert M.empirical_epsilon_lower_bound(1.0, 0.5) == math.inf  # 1 − TPR = 0
    # From counts, with Clopper-Pearson bounds: finite, and below the point estimate.
    ci = M.epsilon_lower_bound_ci([0, 100, 100], [0, 0, 100], 100, 100)
    assert 0.0 < ci < math.inf
    assert ci == pytest.approx(math.log(M.clopper_pearson(100, 100)[0] / M.clopper_pearson(0, 100)[1]))
    assert M.epsilon_lower_bound_ci([0, 50, 100], [0, 50, 100], 100, 100) == 0.0


def test_accuracy_interval() -> None:
    acc, low, high = M.accuracy_interval([0, 1, 1, 0], [0, 1, 0, 0])
    assert acc == 0.75 and low < 0.75 < high
    assert M.accuracy_interval([], []) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="differ"):
        M.accuracy_interval([0, 1], [0])


@given(st.integers(2, 3000), st.integers(2, 300))
def test_downsample_curve(n: int, max_points: int) -> None:
    rng = np.random.default_rng(n)
    fpr, tpr, _ = M.roc_curve(rng.normal(0.5, 1, n), rng.normal(0, 1, n))
    x, y = M.downsample_curve(fpr, tpr, max_points)
    assert 1 <= len(x) <= max_points and len(x) == len(y)
    assert min(x) > 0 and min(y) > 0
    assert x == sorted(x) and y == sorted(y)
    assert x[-1] == 1.0 and y[-1] == 1.0


def test_bad_scores_rejected() -> None:
    with pytest.raises(ValueError, match="at least one"):
        M.roc_auc([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        M.roc_curve([float("nan")], [1.0])
