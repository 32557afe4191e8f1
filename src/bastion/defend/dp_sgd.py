"""``defend.dp-train``: retrain a torch model from scratch with DP-SGD (Opacus).

DP-SGD (Abadi et al. 2016, arXiv:1607.00133) clips each example's gradient to norm ``C``,
adds Gaussian noise of standard deviation ``σ·C`` to the sum and samples batches by Poisson
sampling, so the trained weights are (ε, δ)-differentially private with respect to the
training records. The target ε is met by choosing ``σ``: :func:`find_noise_multiplier` finds
it with a root finder in ``log σ`` over the cheap integer-order RDP bound, then (for the PRV
accountant, Gopi et al. 2021, arXiv:2106.02848) a few secant steps on the PRV accountant
itself, instead of Opacus' doubling-and-bisection search. The (ε, δ) actually spent, as the
accountant reports it after training, is recorded in the version's ``details``.
"""

from __future__ import annotations

import copy
import functools
import io
import logging
import math
import time
import warnings
from typing import Any, ClassVar, Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import ConfigError, require
from bastion.core.findings import Threat
from bastion.core.registry import register
from bastion.defend.base import Defence, HardenContext, Hardened

log = logging.getLogger(__name__)

#: Integer Rényi orders: closed-form RDP of the subsampled Gaussian (fast, still a valid bound).
INT_ORDERS: tuple[float, ...] = tuple(float(a) for a in (*range(2, 64), 80, 96, 128, 160, 192, 256, 384, 512))
#: Noise multipliers above this make training pointless: the ε is deemed unreachable.
MAX_SIGMA = 200.0


@functools.lru_cache(maxsize=16)
def _rdp_terms(sample_rate: float, orders: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The σ-independent part of :func:`subsampled_gaussian_rdp`: ``(A, K+1)`` log terms and ``k² − k``."""
    from scipy.special import gammaln

    a = np.asarray(orders, dtype=np.float64)
    k = np.arange(int(a.max()) + 1, dtype=np.float64)
    aa = a[:, None]
    log_binom = gammaln(aa + 1) - gammaln(k[None, :] + 1) - gammaln(np.maximum(aa - k[None, :], 0) + 1)
    base = log_binom + k[None, :] * math.log(sample_rate) + (aa - k[None, :]) * math.log1p(-sample_rate)
    base = np.where(k[None, :] <= aa, base, -np.inf)
    base.setflags(write=False)
    return base, k**2 - k


def subsampled_gaussian_rdp(sigma: float, sample_rate: float, orders: np.ndarray) -> np.ndarray:
    """RDP of one Poisson-subsampled Gaussian step at integer ``orders`` (Mironov et al. 2019, §3.3).

    ``log A_α = logsumexp_k [log C(α, k) + k log q + (α − k) log(1 − q) + (k² − k)/(2σ²)]`` and
    the RDP is ``log A_α / (α − 1)``; vectorised over orders (the same numbers as Opacus'
    ``compute_rdp`` at integer orders, without its Python loop). The σ-independent terms are
    cached per ``(q, orders)``, so a search over σ pays for them once.

    Args:
        sigma: noise multiplier ``σ > 0``.
        sample_rate: ``q ∈ (0, 1]``.
        orders: ``(A,)`` integer orders ``≥ 2``.

    Returns:
        ``(A,)`` RDP values of one step.
    """
    from scipy.special import logsumexp

    a = np.asarray(orders, dtype=np.float64)
    if sample_rate >= 1.0:
        return a / (2 * sigma**2)
    base, kk = _rdp_terms(float(sample_rate), tuple(a.tolist()))
    log_a = logsumexp(base + kk[None, :] / (2 * sigma**2), axis=1)
    return np.asarray(log_a / (a - 1), dtype=np.float64)


_ORDERS = np.asarray(INT_ORDERS)


def _rdp_to_eps(rdp: np.ndarray, delta: float) -> float:
    """Opacus' ``get_privacy_spent`` (Balle et al. 2020, Thm 21) over :data:`INT_ORDERS`, vectorised."""
    a = _ORDERS
    eps = rdp - (math.log(delta) + np.log(a)) / (a - 1) + np.log((a - 1) / a)
    return float("inf") if np.isnan(eps).all() else float(np.nanmin(eps))


def rdp_epsilon(sigma: float, *, sample_rate: float, steps: int, delta: float) -> float:
    """ε of ``steps`` Poisson-subsampled Gaussian steps by RDP over :data:`INT_ORDERS` (an upper bound).

    Args:
        sigma: noise multiplier ``σ > 0``.
        sample_rate: Poisson sampling rate ``q ∈ (0, 1]``.
        steps: number of steps.
        delta: target δ.
    """
    return _rdp_to_eps(subsampled_gaussian_rdp(sigma, sample_rate, _ORDERS) * steps, delta)


def _truncated_mean(prv: Any, t_min: float, t_max: float, mass: float, cdf_min: float) -> float:
    """Mean of the PRV truncated to ``[t_min, t_max]``, as Opacus' ``TruncatedPrivacyRandomVariable.mean``.

    ``E[T] = t_max − ∫ F_trunc`` over Opacus' own breakpoints (plus ``log(1 − q)``, where the
    density starts), each piece by 64-point Gauss–Legendre in one vectorised call instead of
    ``scipy.integrate.quad``'s ~1000 scalar calls; agrees with it to ~1e-12.
    """
    lower = int(np.log10(np.abs(t_min)))
    upper = int(np.log10(t_max))
    pts = np.concatenate(
        [
            [t_min],
            -np.logspace(lower, -5, num=10),
            [0.0],
            np.logspace(-5, upper, num=10),
            [t_max],
        ]
    )
    if prv.sample_rate < 1.0:
        pts = np.append(pts, math.log1p(-prv.sample_rate))
    pts = np.unique(np.clip(pts, t_min, t_max))
    nodes, weights = _gauss_legendre()
    left, right = pts[:-1, None], pts[1:, None]
    half = (right - left) / 2
    t = left + half * (nodes[None, :] + 1)
    f = np.clip((prv.cdf(t) - cdf_min) / mass, 0.0, 1.0)
    return float(t_max - (half * weights[None, :] * f).sum())


@functools.lru_cache(maxsize=1)
def _gauss_legendre() -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(64)


def _prv_epsilon(
    sigma: float,
    *,
    sample_rate: float,
    steps: int,
    delta: float,
    eps_error: float,
) -> tuple[float, float]:
    """``(eps_upper, eps_upper − eps_error)`` of the PRV accountant at error ``eps_error``.

    See :func:`prv_epsilon`; the domain's size is rounded up to a fast FFT length (a wider
    domain is safe: less truncation).
    """
    from opacus.accountants.analysis.prv import Domain, PoissonSubsampledGaussianPRV
    from opacus.accountants.analysis.prv.prvs import DiscretePRV
    from scipy.fft import irfft, next_fast_len, rfft

    delta_error = delta / 1000  # Opacus' default
    one = subsampled_gaussian_rdp(sigma, sample_rate, _ORDERS)
    l_max = max(
        _rdp_to_eps(one * steps, delta_error / 4),
        _rdp_to_eps(one, delta_error / (8 * steps)),
    )
    half_width = max(l_max, eps_error) + 3
    mesh = eps_error / math.sqrt(steps * math.log(12 / delta_error) / 2)
    domain = Domain.create_aligned(-half_width, half_width, mesh)
    size = next_fast_len(domain.size, real=True)
    while size % 2:
        size = next_fast_len(size + 1, real=True)
    if size != domain.size:  # widen both sides by whole mesh steps: the same grid, a fast FFT
        pad = (size - domain.size) // 2 * domain.dt
        domain = Domain(domain.t_min - pad, domain.t_max + pad, size)
    prv = PoissonSubsampledGaussianPRV(sample_rate, sigma)
    ts = domain.ts
    dt = domain.dt
    edges = np.append(ts - dt / 2, ts[-1] + dt / 2)
    cdf_min, cdf_max = prv.cdf(domain.t_min), prv.cdf(domain.t_max)
    mass = cdf_max - cdf_min
    f = np.where(
        edges < domain.t_min, 0.0, np.where(edges < domain.t_max, (prv.cdf(edges) - cdf_min) / mass, 1.0)
    )
    pmf = np.diff(f)
    mean_shift = _truncated_mean(prv, domain.t_min, domain.t_max, mass, cdf_min) - float(np.dot(ts, pmf))
    if abs(mean_shift) >= dt / 2:
        raise RuntimeError("Discrete mean differs significantly from continuous mean.")
    shifted = domain.shift_right(mean_shift)
    composed_pmf = irfft(rfft(pmf) ** steps, n=size)
    # index j of the circular sum of `steps` copies is t = steps·t_min + j·dt; back on the domain
    # that is index j − (steps − 1)·K with t_min = −K·dt (Opacus' roll, for any K)
    k_min = round(-domain.t_min / dt)
    m = (-(steps - 1) * k_min) % size
    composed = DiscretePRV(
        pmf=np.roll(composed_pmf, m), domain=shifted.shift_right(shifted.shifts * (steps - 1))
    )
    upper = float(composed.compute_epsilon(delta, delta_error, eps_error)[2])
    return upper, upper - eps_error


def prv_epsilon(
    sigma: float, *, sample_rate: float, steps: int, delta: float, eps_error: float = 0.01
) -> float:
    """ε of the same mechanism by the PRV accountant (Gopi et al. 2021, arXiv:2106.02848).

    Opacus' ``PRVAccountant.get_epsilon`` (its upper bound ``eps_upper``) with Opacus'
    discretisation, composition and mesh, computed faster: the safe domain size ``L`` of
    Remark 5.6 comes from the vectorised integer-order RDP bound (:func:`rdp_epsilon`) instead
    of Opacus' per-order Python loop over fractional orders (integer orders bound ε from above,
    so ``L`` is at least Opacus': the truncation stays safe); the domain is widened by a few
    mesh steps to a fast FFT length; the truncated PRV's mean is integrated by vectorised
    Gauss–Legendre instead of ``quad``. On the same mesh the two agree to ~1e-7 relative
    (tested against Opacus' accountant).

    Args:
        sigma: noise multiplier ``σ > 0``.
        sample_rate: Poisson sampling rate ``q ∈ (0, 1]``.
        steps: number of steps.
        delta: target δ.
        eps_error: the accountant's ε error (Opacus' default 0.01).
    """
    return _prv_epsilon(sigma, sample_rate=sample_rate, steps=steps, delta=delta, eps_error=eps_error)[0]


#: The PRV search locates σ on a mesh this many times coarser than the accountant's, then
#: confirms on the accountant's own mesh.
COARSE_FACTOR = 10.0


def find_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: Literal["rdp", "prv"] = "rdp",
    tolerance: float = 0.01,
) -> tuple[float, float]:
    """The noise multiplier ``σ`` whose ε is at most ``target_epsilon`` and within ``tolerance`` of it.

    RDP: Brent's method on ``log ε(log σ)`` over the integer-order RDP bound (ε is smooth and
    decreasing in σ). PRV: the RDP σ is an upper bracket (the PRV ε never exceeds the RDP ε);
    secant steps in ``(log σ, log ε)`` locate the PRV root on a mesh :data:`COARSE_FACTOR`
    times coarser than the accountant's (its central estimate ``eps_upper − eps_error`` moves
    with the fine one to within ~1e-3), then the accountant's own mesh confirms — usually one
    fine evaluation — and further secant steps on the fine accountant run only if that one
    misses ``[target − tolerance, target]``. The returned ε is always the fine accountant's
    (Opacus' ``get_epsilon`` on the same σ, q, steps agrees to ~1e-7 relative), with a small
    safety margin below the target.

    Args:
        target_epsilon: ε > 0.
        delta: δ in ``(0, 1)``.
        sample_rate: Poisson sampling rate ``q ∈ (0, 1]``.
        steps: optimiser steps (``epochs / q``).
        accountant: ``rdp`` or ``prv``.
        tolerance: accept ``target − tolerance ≤ ε ≤ target``.

    Returns:
        ``(sigma, epsilon)`` with ``epsilon <= target_epsilon``.

    Raises:
        ConfigError: bad arguments, or ε unreachable with ``σ ≤`` :data:`MAX_SIGMA`.
    """
    if target_epsilon <= 0 or not 0 < delta < 1 or not 0 < sample_rate <= 1 or steps < 1:
        raise ConfigError(
            f"noise search: need ε > 0, δ in (0, 1), q in (0, 1], steps >= 1; got "
            f"{target_epsilon}, {delta}, {sample_rate}, {steps}"
        )
    from scipy.optimize import brentq

    def f_rdp(log_s: float) -> float:
        return math.log(
            max(rdp_epsilon(math.exp(log_s), sample_rate=sample_rate, steps=steps, delta=delta), 1e-300)
        ) - math.log(target_epsilon)

    hi = 1.0
    while f_rdp(math.log(hi)) > 0:
        hi *= 2.0
        if hi > MAX_SIGMA:
            raise ConfigError(
                f"ε={target_epsilon:g} at δ={delta:g} cannot be reached in {steps} steps at sampling rate "
                f"{sample_rate:.3g} (noise multiplier above {MAX_SIGMA:g}); "
                "raise ε, lower epochs or batch size"
            )
    lo = hi / 2.0
    while lo > 1e-2 and f_rdp(math.log(lo)) < 0:
        lo /= 2.0
    log_sigma = brentq(f_rdp, math.log(lo), math.log(hi), xtol=1e-4 if accountant == "rdp" else 1e-2)
    sigma = math.exp(log_sigma) * (1 + 2e-4)  # the safe side of the root
    eps = rdp_epsilon(sigma, sample_rate=sample_rate, steps=steps, delta=delta)
    if accountant == "rdp":
        return sigma, eps
    return _prv_search(sigma, eps, target_epsilon, delta, sample_rate, steps, tolerance)


def _prv_search(
    sigma_rdp: float,
    eps_rdp: float,
    target: float,
    delta: float,
    q: float,
    steps: int,
    tolerance: float,
) -> tuple[float, float]:
    """Secant search for the PRV σ from the RDP one: coarse mesh to locate, fine mesh to confirm."""
    fine_err = 0.01
    margin = max(1e-6, 1e-5 * target)  # below the target by more than Opacus vs us (~1e-7 relative)
    top = target - margin
    aim = target - tolerance / 2
    # Slope d log ε / d log σ from the RDP bound (cheap), for the first secant step.
    h = 0.05
    slope = (
        math.log(rdp_epsilon(sigma_rdp * math.exp(h), sample_rate=q, steps=steps, delta=delta))
        - math.log(eps_rdp)
    ) / h

    def coarse(s: float) -> float:
        # the fine accountant's predicted upper bound: the coarse central estimate + fine error
        _, central = _prv_epsilon(
            s, sample_rate=q, steps=steps, delta=delta, eps_error=fine_err * COARSE_FACTOR
        )
        return central + fine_err

    pts: list[tuple[float, float]] = []
    x = math.log(sigma_rdp)
    for _ in range(6):
        y = math.log(max(coarse(math.exp(x)), 1e-300))
        pts.append((x, y))
        if abs(math.exp(y) - aim) <= tolerance / 8:
            break
        if len(pts) >= 2 and pts[-1][0] != pts[-2][0]:
            slope = (pts[-1][1] - pts[-2][1]) / (pts[-1][0] - pts[-2][0])
        if slope >= 0:
            break
        x = x + (math.log(aim) - y) / slope
    best: tuple[float, float] | None = None
    fine_pts: list[tuple[float, float]] = []
    s = math.exp(x)
    for _ in range(8):
        e = _prv_epsilon(s, sample_rate=q, steps=steps, delta=delta, eps_error=fine_err)[0]
        fine_pts.append((math.log(s), math.log(max(e, 1e-300))))
        if e <= top and (best is None or e > best[1]):
            best = (s, e)
        if best is not None and target - best[1] <= tolerance:
            break
        if len(fine_pts) >= 2 and fine_pts[-1][0] != fine_pts[-2][0]:
            slope = (fine_pts[-1][1] - fine_pts[-2][1]) / (fine_pts[-1][0] - fine_pts[-2][0])
        if slope >= 0:
            s *= 1.05 if e > top else 0.99
        else:
            s = math.exp(fine_pts[-1][0] + (math.log(aim) - fine_pts[-1][1]) / slope)
    if best is None:  # never feasible: walk up from the RDP σ (whose PRV ε is almost surely below)
        s = sigma_rdp
        while True:
            e = _prv_epsilon(s, sample_rate=q, steps=steps, delta=delta, eps_error=fine_err)[0]
            if e <= top:
                return s, e
            s *= 1.1
            if s > MAX_SIGMA:
                raise ConfigError(f"PRV noise search found no σ ≤ {MAX_SIGMA:g} for ε={target:g}")
    return best


class DpTrainParams(BaseModel):
    """Parameters of ``defend.dp-train``.

    Attributes:
        epsilon: target ε of (ε, δ)-DP over the training records.
        delta: target δ; must be below ``1/n`` for ``n`` training records.
        accountant: ``rdp`` (Rényi DP, Mironov 2017) or ``prv`` (tighter, Gopi et al. 2021).
        max_grad_norm: per-example clipping norm ``C``. Adam is invariant to the gradient's
            scale, so a small ``C`` only means that (nearly) every example's gradient is
            clipped, i.e. every record pulls with the same norm — which both improves utility
            and evens out the per-record influence that membership attacks exploit.
        epochs: passes over the data (expected). Few epochs at a higher learning rate spend
            the budget on fewer, less noisy steps (``σ`` grows with the number of steps).
        batch_size: expected Poisson batch size (sampling rate ``batch_size / n``).
        lr: Adam learning rate.

        seed: training seed (``None``: the project seed).
        secure_mode: Opacus' ``secure_mode``: noise and Poisson batches drawn from
            ``torchcsprng``'s cryptographically secure generator (``/dev/urandom``), and noise
            robust to floating-point attacks (Mironov 2012) — the production-grade run. Needs
            ``torchcsprng`` installed (preflight says so, exit 2); the noise is then not
            reproducible from the seed. Off (the default), the run is seeded and reproducible,
            fit for experiments and for choosing ε, not for the model you ship.

    The defaults were tuned on the 200-record digits MLP of the privacy tests at ε = 3
    (test accuracy 57–60 % against 25–40 % with ``C = 1``, 30 epochs at 5e-3, and the loss
    attack's AUC 0.53–0.55 over all 200 members against 400 non-members).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN would pass no bound's message

    epsilon: float = Field(default=3.0, gt=0.0, le=100.0)
    delta: float = Field(default=1e-5, gt=0.0, lt=0.1)
    accountant: Literal["rdp", "prv"] = "rdp"
    max_grad_norm: float = Field(default=0.1, gt=0.0)
    epochs: int = Field(default=15, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=2e-2, gt=0.0)
    seed: int | None = None
    secure_mode: bool = False


#: What preflight says when ``secure_mode`` is asked for and ``torchcsprng`` is missing.
SECURE_MODE_NEEDS = (
    "secure_mode=true needs torchcsprng (Opacus' cryptographically secure generator), which is not "
    "installed: pip install torchcsprng (or build it for your torch from github.com/pytorch/csprng); "
    "without secure_mode the run is seeded, for experiments only (docs/hardening.md)"
)


def _secure_mode_problem() -> str | None:
    """Why Opacus' secure mode cannot run here, or ``None``: it makes the generator it would.

    ``torchcsprng`` missing is :data:`SECURE_MODE_NEEDS`. One that is installed but does not
    load (a wheel built for another torch: ``OSError: … undefined symbol``) or lacks the
    generator Opacus calls (``create_random_device_generator``) is said so, with the error
    (red-team round 28, F7: both ended in "internal error").
    """
    try:
        import torchcsprng
    except ModuleNotFoundError as exc:
        if exc.name == "torchcsprng":
            return SECURE_MODE_NEEDS
        return _secure_mode_unusable(exc)
    except Exception as exc:  # an extension that does not load: OSError, ImportError
        return _secure_mode_unusable(exc)
    try:
        torchcsprng.create_random_device_generator("/dev/urandom")  # as Opacus' PrivacyEngine does
    except Exception as exc:
        return _secure_mode_unusable(exc)
    return None


def _secure_mode_unusable(exc: BaseException) -> str:
    return (
        "secure_mode=true needs torchcsprng (Opacus' cryptographically secure generator), which is "
        f"installed but unusable: {type(exc).__name__}: {str(exc)[:300]}; reinstall it, or build it for "
        "your torch from github.com/pytorch/csprng; without secure_mode the run is seeded, for "
        "experiments only (docs/hardening.md)"
    )


@register("defence")
class DpTrain(Defence):
    """Train the model's architecture from scratch with DP-SGD (per-example clipping + Gaussian noise).

    Threat model: membership and attribute inference, and memorisation of individual
    records; the guarantee bounds any attacker's advantage on any training record by (ε, δ).
    The architecture is re-initialised (never fine-tuned from the non-private weights, which
    would carry their leakage). Buffers that the model computes from data (e.g. input
    standardisation) are kept from the original and are not covered by the guarantee.

    Errors (preflight, before training): δ not below ``1/n``, ε unreachable in the epochs
    given, layers Opacus cannot train per example that its validator would have to replace,
    ``secure_mode`` without ``torchcsprng``. Opacus' "Secure RNG turned off" warning is not
    passed on: ``secure_mode`` (recorded in the version's details) says which run it was.

    References: Abadi et al. 2016, "Deep Learning with Differential Privacy" (arXiv:1607.00133);
    Yousefpour et al. 2021, "Opacus" (arXiv:2109.12298); Gopi et al. 2021, PRV accountant
    (arXiv:2106.02848).
    """

    id: ClassVar[str] = "defend.dp-train"
    title: ClassVar[str] = "Differentially private training (DP-SGD)"
    threat: ClassVar[Threat] = Threat.PRIVACY
    frameworks: ClassVar[frozenset[str]] = frozenset({"torch"})
    Params: ClassVar[type[BaseModel]] = DpTrainParams
    references: ClassVar[tuple[str, ...]] = (
        "Abadi et al. 2016, Deep Learning with Differential Privacy, arXiv:1607.00133",
        "Yousefpour et al. 2021, Opacus: User-Friendly Differential Privacy Library in PyTorch, "
        "arXiv:2109.12298",
        "Gopi et al. 2021, Numerical Composition of Differential Privacy, arXiv:2106.02848",
    )

    def preflight(self, ctx: HardenContext) -> list[str]:
        """δ below 1/n, ε reachable, layers trainable per example."""
        problems = super().preflight(ctx)
        if problems:
            return problems
        p = cast(DpTrainParams, ctx.params)
        n = len(ctx.data["train"].x)
        where = f"{self.id} on {ctx.asset.name}"
        if p.delta >= 1.0 / n:
            problems.append(
                f"{where}: δ={p.delta:g} must be below 1/n = {1.0 / n:.3g} ({n} training records)"
            )
        if p.batch_size > n:
            problems.append(f"{where}: batch_size {p.batch_size} exceeds the {n} training records")
        why = _secure_mode_problem() if p.secure_mode else None
        if why is not None:
            problems.append(f"{where}: {why}")
        if not problems:
            try:
                find_noise_multiplier(
                    target_epsilon=p.epsilon,
                    delta=p.delta,
                    sample_rate=1.0 / _batches(p, n),  # as harden() trains: Opacus' Poisson rate
                    steps=_steps(p, n),
                    accountant="rdp",
                )
            except ConfigError as exc:
                problems.append(f"{where}: {exc}")
        module = getattr(ctx.target, "module", None)
        if module is None:
            problems.append(f"{where}: needs an eager torch module (a state_dict with model_class)")
        else:
            from opacus.validators import ModuleValidator

            errors = ModuleValidator.validate(module, strict=False)
            if errors:
                fixed = ModuleValidator.fix(copy.deepcopy(module))
                if set(fixed.state_dict()) != set(module.state_dict()):
                    problems.append(
                        f"{where}: layers Opacus cannot train per example "
                        f"({'; '.join(str(e) for e in errors[:3])}); "
                        "its fix changes the architecture, which model_class could not load — replace them "
                        "(e.g. BatchNorm → GroupNorm) in your model class"
                    )
        return problems

    def harden(self, ctx: HardenContext) -> Hardened:
        """Re-initialise, train with DP-SGD to the target ε, and measure accuracy."""
        torch = require("torch", "torch")
        from opacus import PrivacyEngine
        from opacus.validators import ModuleValidator

        p = cast(DpTrainParams, ctx.params)
        seed = ctx.seed if p.seed is None else p.seed
        train, test = ctx.data["train"], ctx.data.get("test")
        assert train.y is not None
        n = len(train.x)
        q = 1.0 / _batches(p, n)  # Opacus' Poisson sampling rate: 1 / len(data_loader)
        steps = _steps(p, n)
        t0 = time.monotonic()
        sigma, eps_planned = find_noise_multiplier(
            target_epsilon=p.epsilon, delta=p.delta, sample_rate=q, steps=steps, accountant=p.accountant
        )
        search_s = time.monotonic() - t0

        original = ctx.target.module
        torch.manual_seed(seed)
        model = copy.deepcopy(original)
        for m in model.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
        fixed = False
        if ModuleValidator.validate(model, strict=False):
            model = ModuleValidator.fix(model)
            fixed = True
        model.train()
        xt = torch.as_tensor(np.asarray(train.x, dtype=np.float32))
        yt = torch.as_tensor(np.asarray(train.y, dtype=np.int64))
        gen = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(xt, yt), batch_size=p.batch_size, shuffle=True, generator=gen
        )
        opt = torch.optim.Adam(model.parameters(), lr=p.lr)
        with warnings.catch_warnings():
            # Opacus warns on every run without secure_mode; the run records which it was and
            # docs/hardening.md says how to make the production-grade one (new-user trial)
            warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
            try:
                engine = PrivacyEngine(accountant=p.accountant, secure_mode=p.secure_mode)
            except Exception as exc:  # torchcsprng went missing or broke after preflight
                if not p.secure_mode:
                    raise
                why = _secure_mode_problem() or _secure_mode_unusable(exc)
                raise ConfigError(f"{self.id} on {ctx.asset.name}: {why}") from None
        dp_model, dp_opt, dp_loader = engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=sigma,
            max_grad_norm=p.max_grad_norm,
            # secure mode draws from torchcsprng; Opacus refuses a seeded generator there
            noise_generator=None if p.secure_mode else torch.Generator().manual_seed(seed + 1),
        )
        t1 = time.monotonic()
        with warnings.catch_warnings():
            # Opacus' per-sample hooks on the first layer: harmless here, noise on the user's stderr
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            for epoch in range(p.epochs):
                for xb, yb in dp_loader:
                    if len(xb) == 0:
                        continue
                    dp_opt.zero_grad()
                    loss = torch.nn.functional.cross_entropy(dp_model(xb), yb)
                    loss.backward()
                    dp_opt.step()
                ctx.report_progress((epoch + 1) / p.epochs)
        train_s = time.monotonic() - t1
        eps_spent = float(engine.get_epsilon(p.delta))
        model.eval()
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        buf = io.BytesIO()
        torch.save(state, buf)

        def acc(mod: Any, x: np.ndarray, y: np.ndarray | None) -> float | None:
            if y is None or len(x) == 0:
                return None
            with torch.no_grad():
                pred = mod(torch.as_tensor(np.asarray(x, dtype=np.float32))).argmax(-1).numpy()
            return round(float((pred == y).mean()), 6)

        original.eval()
        details: dict[str, Any] = {
            "epsilon": round(eps_spent, 6),
            "delta": p.delta,
            "epsilon_target": p.epsilon,
            "accountant": p.accountant,
            "noise_multiplier": round(sigma, 6),
            "epsilon_planned": round(eps_planned, 6),
            "noise_search_seconds": round(search_s, 4),
            "max_grad_norm": p.max_grad_norm,
            "epochs": p.epochs,
            "batch_size": p.batch_size,
            "sample_rate": round(q, 6),
            "steps": steps,
            "train_seconds": round(train_s, 3),
            "train_accuracy": acc(model, train.x, train.y),
            "test_accuracy": acc(model, test.x, test.y) if test is not None else None,
            "original_test_accuracy": acc(original, test.x, test.y) if test is not None else None,
            "validator_fixed_layers": fixed,
            "secure_mode": p.secure_mode,
        }
        if details["test_accuracy"] is not None and details["original_test_accuracy"] is not None:
            details["accuracy_cost"] = round(details["original_test_accuracy"] - details["test_accuracy"], 6)
        log.info("dp-train %s: ε=%.3g spent (δ=%g), σ=%.4g", ctx.asset.name, eps_spent, p.delta, sigma)
        return Hardened(payload=buf.getvalue(), format="torch", extension=".pt", details=details)


def _steps(p: DpTrainParams, n: int) -> int:
    """Optimiser steps as Opacus' DP data loader takes them: ``epochs × ⌈n / batch_size⌉``."""
    return p.epochs * _batches(p, n)


def _batches(p: DpTrainParams, n: int) -> int:
    return max(1, math.ceil(n / p.batch_size))
