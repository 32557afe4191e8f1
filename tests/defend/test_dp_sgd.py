"""DP-SGD's noise search and RDP maths (defend.dp-train)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.errors import ConfigError
from bastion.defend.dp_sgd import (
    INT_ORDERS,
    find_noise_multiplier,
    prv_epsilon,
    rdp_epsilon,
    subsampled_gaussian_rdp,
)


@settings(max_examples=5, deadline=None)
@given(st.floats(0.5, 20.0), st.floats(0.001, 1.0))
def test_vectorised_rdp_matches_opacus(sigma: float, q: float) -> None:
    from opacus.accountants.analysis.rdp import compute_rdp

    ours = subsampled_gaussian_rdp(sigma, q, np.asarray(INT_ORDERS))
    theirs = np.asarray(compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=list(INT_ORDERS)))
    np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("eps", [1.0, 3.0, 8.0])
def test_rdp_noise_search_hits_target_from_below(eps: float) -> None:
    sigma, got = find_noise_multiplier(target_epsilon=eps, delta=1e-5, sample_rate=0.25, steps=120)
    assert eps - 0.01 <= got <= eps
    assert rdp_epsilon(sigma * 0.98, sample_rate=0.25, steps=120, delta=1e-5) > eps - 0.01
    # Opacus' own RDP accountant (fractional orders too) spends no more than our integer-order bound
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(sigma, 0.25, 120)]
    assert acc.get_epsilon(1e-5) <= eps + 1e-9


def test_prv_noise_search_is_feasible_and_tight() -> None:

    sigma, got = find_noise_multiplier(
        target_epsilon=3.0, delta=1e-5, sample_rate=0.25, steps=120, accountant="prv"
    )
    assert 2.9 <= got <= 3.0
    assert prv_epsilon(sigma, sample_rate=0.25, steps=120, delta=1e-5) == pytest.approx(got)


def test_unreachable_epsilon_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot be reached"):
        find_noise_multiplier(target_epsilon=1e-4, delta=1e-5, sample_rate=1.0, steps=10_000)
    with pytest.raises(ConfigError):
        find_noise_multiplier(target_epsilon=1.0, delta=2.0, sample_rate=0.1, steps=10)


@pytest.mark.parametrize(("sigma", "q", "steps"), [(1.7, 0.25, 60), (9.5, 0.32, 60), (1.0, 0.05, 200)])
def test_fast_prv_matches_opacus_prv_accountant(sigma: float, q: float, steps: int) -> None:
    """Only the safe domain size comes from our RDP bound: the ε equals Opacus' PRV accountant's."""
    from opacus.accountants import PRVAccountant

    acc = PRVAccountant()
    acc.history = [(sigma, q, steps)]
    expected = acc.get_epsilon(delta=1e-5)
    assert prv_epsilon(sigma, sample_rate=q, steps=steps, delta=1e-5) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("eps", "q", "steps"), [(1.0, 0.25, 60), (3.0, 0.25, 60), (8.0, 0.25, 60), (2.0, 0.05, 200)]
)
def test_prv_noise_search_is_safe_by_opacus_own_accountant(eps: float, q: float, steps: int) -> None:
    """The σ found spends at most the target ε (and within the tolerance of it) by Opacus' PRV accountant."""
    from opacus.accountants import PRVAccountant

    sigma, got = find_noise_multiplier(
        target_epsilon=eps, delta=1e-5, sample_rate=q, steps=steps, accountant="prv"
    )
    acc = PRVAccountant()
    acc.history = [(sigma, q, steps)]
    spent = acc.get_epsilon(delta=1e-5)
    assert eps - 0.01 <= spent <= eps
    assert spent == pytest.approx(got, rel=1e-6)


def test_vectorised_truncated_mean_matches_opacus_quad() -> None:
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV, TruncatedPrivacyRandomVariable

    from bastion.defend.dp_sgd import _truncated_mean

    for sigma, q, t_min, t_max in [(1.7, 0.25, -9.0, 9.5), (9.5, 0.32, -4.5, 4.6), (0.8, 0.5, -40.0, 41.0)]:
        prv = PoissonSubsampledGaussianPRV(q, sigma)
        theirs = TruncatedPrivacyRandomVariable(prv, t_min, t_max).mean()
        lo, hi = prv.cdf(t_min), prv.cdf(t_max)
        assert _truncated_mean(prv, t_min, t_max, hi - lo, lo) == pytest.approx(theirs, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_epsilon_is_refused_as_such(bad: float) -> None:
    from pydantic import ValidationError

    from bastion.defend.dp_sgd import DpTrainParams

    with pytest.raises(ValidationError, match="finite number"):
        DpTrainParams(epsilon=bad)
