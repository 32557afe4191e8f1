"""LiRA's difficulty-shared (``smoothed``) fit for few reference models (issue 6)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion.assess import metrics as M
from bastion.assess.membership.lira import (
    LiraParams,
    MembershipLira,
    kernel_smooth,
    lira_smoothed_scores,
)


def test_kernel_smooth_recovers_a_smooth_trend_and_handles_constants() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=2000)
    trend = np.sin(x)
    fitted = kernel_smooth(x, trend + rng.normal(scale=1.0, size=x.size), 0.25)
    assert np.mean((fitted - trend) ** 2) < 0.02  # noise variance 1 shrinks ≥ 50×
    np.testing.assert_allclose(kernel_smooth(np.ones(5), np.arange(5.0), 0.3), np.full(5, 2.0))
    with pytest.raises(ValueError, match="bandwidth"):
        kernel_smooth(x, x, 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        kernel_smooth(x, x[:3], 0.2)


def _synthetic(seed: int, k: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """LiRA's own generative model: per-record difficulty, a difficulty-dependent IN shift."""
    rng = np.random.default_rng(seed)
    a = rng.normal(scale=2.0, size=n)  # difficulty: the OUT mean
    delta = 1.0 + 0.5 * np.tanh(a)  # membership effect, smooth in the difficulty
    sd = 0.8 + 0.2 * np.tanh(-a)  # spread, smooth in the difficulty
    ref_in = M.balanced_inclusion(k, n, seed)
    ref = a + delta * ref_in + sd * rng.normal(size=(k, n))
    member = np.arange(n) < n // 2
    target = a + delta * member + sd * rng.normal(size=n)
    return target, ref, ref_in, member


@pytest.mark.parametrize("seed", [0, 1])
def test_smoothed_fit_with_8_references_beats_plain_lira_with_8_and_matches_16(seed: int) -> None:
    def auc(s: np.ndarray, member: np.ndarray) -> float:
        return M.roc_auc(s[member], s[~member])

    t, ref, ref_in, member = _synthetic(seed, 8)
    smoothed = auc(lira_smoothed_scores(t, ref, ref_in), member)
    plain8 = max(auc(M.lira_scores(t, ref, ref_in, global_variance=g), member) for g in (True, False))
    t16, ref16, in16, member16 = _synthetic(seed, 16)
    plain16 = max(auc(M.lira_scores(t16, ref16, in16, global_variance=g), member16) for g in (True, False))
    assert smoothed > plain8 + 0.01
    assert smoothed > plain16 - 0.01


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 10), st.integers(3, 40), st.integers(0, 10_000))
def test_smoothed_scores_are_finite_and_offline_records_monotone(k: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref_in = M.balanced_inclusion(k, n, seed)
    ref = rng.normal(size=(k, n)) * 3 + 2.0 * ref_in
    t = rng.normal(size=n) * 3
    s = lira_smoothed_scores(t, ref, ref_in)
    assert s.shape == (n,) and np.isfinite(s).all()
    off = np.zeros_like(ref_in)  # offline: a one-sided test, increasing in the target's statistic
    lo, hi = lira_smoothed_scores(t, ref, off), lira_smoothed_scores(t + 0.5, ref, off)
    assert (hi >= lo).all() and (hi > lo)[lo < -1e-6].all()  # log Φ saturates at 0 far above
    # deterministic: same inputs, same scores
    np.testing.assert_array_equal(s, lira_smoothed_scores(t, ref, ref_in))


def test_smoothed_scores_validate_their_inputs() -> None:
    with pytest.raises(ValueError, match="did not train"):
        lira_smoothed_scores(np.zeros(2), np.zeros((2, 2)), np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match=r"must both be \(K, 3\)"):
        lira_smoothed_scores(np.zeros(3), np.zeros((2, 2)), np.zeros((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        lira_smoothed_scores(np.array([np.nan]), np.zeros((2, 1)), np.zeros((2, 1), dtype=bool))


def test_lira_params_default_to_the_smoothed_fit_and_reject_unknown_fits() -> None:
    assert MembershipLira.Params is LiraParams
    p = LiraParams(recipe="bastion.examples.clinic_recipes:digits_mlp")
    assert p.fit == "smoothed" and p.bandwidth == 0.25
    assert LiraParams(fit="per-record").fit == "per-record"
    with pytest.raises(ValidationError):
        LiraParams(fit="median")
    with pytest.raises(ValidationError):
        LiraParams(bandwidth=0)
