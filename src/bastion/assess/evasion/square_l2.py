"""``evasion.square-l2``: the Square Attack under an L2 budget, score-based black-box.

Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020, arXiv:1912.00049 (the L2 variant, Algorithm 3).

ε bounds the L2 norm of ``u = δ / scale`` (``scale``: 1 for ``absolute``, each feature's range
for ``fraction``), as ``evasion.pgd-l2``. Per ε, for the samples still classified correctly:

1. start from a grid of ``s × s`` blocks (``s = h // 5``), each holding a pseudo-Gaussian
   pattern (two half-blocks of opposite sign, mass decaying away from their centres) with a
   random sign per channel, rescaled to ``‖u‖₂ = ε``;
2. repeat: draw two random ``s × s`` windows; the mass of the second window moves into the
   first, which gets a fresh random-signed pseudo-Gaussian pattern added to its old content
   and rescaled so that the whole perturbation stays on the ε-sphere; query the model and keep
   the change only if the margin loss ``log p_y − max_{k≠y} log p_k`` falls; stop a sample as
   soon as it is misclassified.

The window side follows the schedule of :func:`~bastion.assess.evasion.square.p_selection`
(``s = round(sqrt(p·h·w))``, odd, between 3 and ``min(h, w) − 1``). Inputs that are not
images (``(C, H, W)`` or ``(H, W)`` with sides of at least 4, e.g. tabular rows) use random
subsets of ``round(p·d)`` movable features as windows and Gaussian noise as the new pattern.

Every candidate is clipped to the declared bounds and the per-value ε interval (a superset of
the L2 ball), immutable and categorical values stay fixed and integer values are rounded before
the model sees it (:mod:`bastion.assess.evasion._common`); clipping only shrinks the L2 norm, and
where rounding to the nearest integer would leave the ball, values are rounded toward the clean
value instead (:meth:`~bastion.assess.evasion._common.InputBounds.finalize_l2`), so no candidate
is ever outside the ball. Each iteration is one batched
call for all samples still unbroken.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import ClassVar, Literal, cast

import numpy as np
from pydantic import Field

from bastion.assess.evasion._common import (
    L2_THRESHOLD_EPS,
    AttackOutcome,
    Engine,
    InputBounds,
    low_robust_accuracy,
)
from bastion.assess.evasion.square import SquareAttack, SquareParams, _SquareEngine, margin_loss, p_selection
from bastion.core.budget import BudgetMeter
from bastion.core.check import CheckContext
from bastion.core.config import Threshold
from bastion.core.registry import register

#: ε of the default threshold (L2, in the ε unit).


class SquareL2Params(SquareParams):
    """Parameters of ``evasion.square-l2``.

    Attributes:
        eps: the L2 ε grid (``None``: 0.25, 0.5, 1.0, as ``evasion.pgd-l2``).
        batch_size: rows per model call.
        n_queries: queries per sample and ε, the initial one included (also capped by the
            query budget).
        p_init: initial fraction of input values a window covers (the paper's L2 default 0.1).
    """

    eps: list[float] | None = Field(default_factory=lambda: [0.25, 0.5, 1.0], min_length=1, max_length=32)
    p_init: float = Field(default=0.1, gt=0, le=1)


@register("attack")
class SquareAttackL2(SquareAttack):
    """Square Attack (L2, score-based black-box): clean vs robust accuracy over an L2 ε grid.

    Threat model: the attacker only queries the model and reads its class probabilities, a
    bounded number of times per input, and may add a perturbation whose L2 norm (in the ε unit)
    is at most ε, within the declared bounds; untargeted.

    Shapes: evaluation inputs ``(n, *input_shape)`` float32, ``n = min(budget.samples, len(test))``.

    Budget: the clean pass costs ``n`` queries; then at most ``n_queries`` per attacked sample
    and ε, lowered when ``budget.queries`` cannot cover the rest of the grid (noted).

    Metrics (``@eps=<ε>`` per ε): those of ``evasion.square``; ``median_perturbation`` is the
    L2 norm in the ε unit.

    Source: Andriushchenko et al. 2020, arXiv:1912.00049. Its references, ATLAS techniques,
    metrics and budget preflight are those of ``evasion.square`` (inherited).
    """

    id: ClassVar[str] = "evasion.square-l2"
    title: ClassVar[str] = "Square Attack evasion (L2, black-box)"
    norm: ClassVar[Literal["linf", "l2"]] = "l2"
    Params = SquareL2Params
    threat_model: ClassVar[str] = (
        "Black-box, score-based: the attacker queries the model (or its endpoint) and reads class "
        "probabilities, a limited number of times per input, and may add a perturbation whose L2 "
        "norm (in the ε unit) is at most ε, within the declared bounds, to make the model "
        "misclassify (untargeted)."
    )
    default_thresholds: ClassVar[tuple[Threshold, ...]] = low_robust_accuracy(L2_THRESHOLD_EPS)

    @contextlib.contextmanager
    def engine(
        self, ctx: CheckContext, meter: BudgetMeter, bounds: InputBounds, rng: np.random.Generator
    ) -> Iterator[Engine]:
        """The L2 Square search on ``ctx.target.predict_proba`` (metered by the target)."""
        yield _SquareL2Engine(ctx.target, cast(SquareL2Params, ctx.params), bounds, rng, meter)


class _SquareL2Engine(_SquareEngine):
    """The L∞ engine's budget planning, with the L2 search."""

    def attack(self, x: np.ndarray, y: np.ndarray, eps: float, eps_left: int) -> AttackOutcome:
        cap = self._cap(len(x), eps, eps_left)
        low, high = self.bounds.box(x, eps)
        return square_l2(
            self._proba,
            x,
            y,
            low,
            high,
            eps,
            self.bounds.scale,
            self.bounds.mutable,
            n_queries=cap,
            p_init=self.params.p_init,
            rng=self.rng,
            bounds=self.bounds,
        )


# -- the pseudo-Gaussian patterns of the official code -------------------------------------------
def _rectangles(h: int, w: int) -> np.ndarray:
    """Nested rectangles of weight ``1/(k+1)²`` around the centre of an ``h × w`` block, unit norm."""
    delta = np.zeros((h, w))
    if h == 0 or w == 0:
        return delta
    ch, cw = h // 2 + 1, w // 2 + 1
    r, c = ch - 1, cw - 1
    for k in range(max(ch, cw)):
        delta[max(r, 0) : min(r + 2 * k + 1, h), max(c, 0) : min(c + 2 * k + 1, w)] += 1.0 / (k + 1) ** 2
        r -= 1
        c -= 1
    return delta / np.sqrt((delta**2).sum())


def pseudo_gaussian(s: int, rng: np.random.Generator) -> np.ndarray:
    """An ``s × s`` pattern: two half-blocks of opposite sign, unit L2 norm, maybe transposed.

    The ``meta_pseudo_gaussian_pert`` of the official code (arXiv:1912.00049).
    """
    delta = np.zeros((s, s))
    delta[: s // 2] = _rectangles(s // 2, s)
    delta[s // 2 :] = -_rectangles(s - s // 2, s)
    delta /= np.sqrt((delta**2).sum())
    return delta.T.copy() if rng.random() > 0.5 else delta


def _signs(rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 2, size=size).astype(np.float64) * 2.0 - 1.0


def _norm_rows(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    return np.sqrt((a**2).sum(axis=axes, keepdims=True))


def square_l2(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    eps: float,
    scale: np.ndarray,
    mutable: np.ndarray,
    *,
    n_queries: int,
    p_init: float,
    rng: np.random.Generator,
    finalize: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
    bounds: InputBounds | None = None,
) -> AttackOutcome:
    """Untargeted L2 Square Attack on a batch (Andriushchenko et al. 2020, arXiv:1912.00049).

    Args:
        predict_proba: ``(m, *input_shape)`` float32 → probabilities ``(m, K)``; called once per
            iteration with every sample still unbroken (and once for the initial point).
        x: clean inputs ``(n, *input_shape)`` float32, all classified correctly.
        y: their labels ``(n,)``.
        low: per-value lower end of the box each candidate is clipped to (bounds ∩ ε interval).
        high: per-value upper end of that box.
        eps: the L2 radius in the ε unit.
        scale: model-input units per ε unit, ``input_shape``.
        mutable: values the attacker may change, boolean ``input_shape``.
        n_queries: queries per sample, the initial one included.
        p_init: initial fraction of values a window covers.
        rng: the random source (the attack is deterministic given its state).
        finalize: ``(x, low, high) → x`` applied to every candidate before it is queried;
            plain clipping when ``None``.
        bounds: when given (the check does), every candidate goes through
            :meth:`InputBounds.finalize_l2` instead of ``finalize``: clipped, integer values
            rounded, and never outside the L2 ε-ball (rounding may not push it out).

    Returns:
        The best point per sample (the first misclassified one, for those broken), whether it is
        misclassified, and the queries each sample used.
    """
    n = len(x)
    shape = tuple(x.shape[1:])
    queries = np.zeros(n, dtype=np.int64)
    success = np.zeros(n, dtype=bool)
    mut = np.asarray(mutable, dtype=bool)
    if n == 0 or n_queries < 1 or not mut.any() or eps <= 0:
        return AttackOutcome(x_adv=x.copy(), success=success, queries=queries)
    image = len(shape) in (2, 3) and shape[-1] >= 4 and shape[-2] >= 4
    c = shape[0] if len(shape) == 3 else 1
    h, w = (shape[-2], shape[-1]) if image else (1, math.prod(shape))
    grid = (c, h, w)
    m4 = mut.reshape(1, *grid)
    sc = np.where(scale > 0, scale, 1.0).reshape(1, *grid)
    x64 = np.asarray(x, dtype=np.float64)

    def clip(cand: np.ndarray, xa: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        if bounds is not None:
            return bounds.finalize_l2(cand, xa, lo, hi, eps)
        if finalize is not None:
            return finalize(cand, lo, hi)
        return np.clip(cand.astype(np.float32), lo, hi)

    def to_x(xa: np.ndarray, u: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Scaled perturbation ``u`` ``(m, c, h, w)`` onto the ε-sphere, then into the box."""
        u = np.where(m4, u, 0.0)
        u = u / np.maximum(_norm_rows(u, (1, 2, 3)), 1e-12) * eps
        return clip((xa.reshape(len(xa), *grid) + u * sc).reshape(xa.shape), xa, lo, hi)

    # 1. initial point
    u0 = np.zeros((n, *grid))
    if image:
        s = max(h // 5, 1)
        top0 = (h - s * 5) // 2 if h >= 5 * s else 0
        for r in range(top0, h - s + 1, s):
            for col in range(top0, w - s + 1, s):
                u0[:, :, r : r + s, col : col + s] += pseudo_gaussian(s, rng) * _signs(rng, (n, c, 1, 1))
    else:
        u0 = rng.standard_normal((n, *grid))
    x_best = to_x(x64, u0, low, high)
    proba = predict_proba(x_best)
    queries += 1
    margin = margin_loss(proba, y)
    success = np.asarray(proba.argmax(axis=1) != y)
    n_mut = int(mut.sum())
    for it in range(n_queries - 1):
        act = np.flatnonzero(~success)
        if act.size == 0:
            break
        m = act.size
        p = p_selection(p_init, it, n_queries)
        xa, lo, hi = x64[act], low[act], high[act]
        u = ((x_best[act].astype(np.float64) - xa).reshape(m, *grid)) / sc
        u = np.where(m4, u, 0.0)
        norm_img = _norm_rows(u, (1, 2, 3))
        if image:
            s = round(math.sqrt(p * h * w))
            s = min(max(s, 3), min(h, w) - 1)
            if s % 2 == 0:
                s += 1
            s = min(s, min(h, w))
            win1 = _windows(m, grid, s, rng)
            win2 = _windows(m, grid, s, rng)
            pattern = np.zeros((m, *grid))
            rows = np.arange(m)
            pg = pseudo_gaussian(s, rng)
            for i in rows:  # place one s×s pattern per sample at its first window
                t, left = win1[1][i], win1[2][i]
                pattern[i, :, t : t + s, left : left + s] = pg
            pattern *= _signs(rng, (m, c, 1, 1))
            w1, w2 = win1[0], win2[0]
            axes: tuple[int, ...] = (2, 3)
        else:
            k = min(max(round(p * n_mut), 1), n_mut)
            w1, w2 = _subsets(m, mut.reshape(-1), k, rng), _subsets(m, mut.reshape(-1), k, rng)
            w1, w2 = w1.reshape(m, *grid), w2.reshape(m, *grid)
            pattern = np.where(w1, rng.standard_normal((m, *grid)), 0.0)
            pattern /= np.maximum(_norm_rows(pattern, (1, 2, 3)), 1e-12)
            axes = (1, 2, 3)
        w1 &= m4
        w2 &= m4
        both = w1 | w2
        norm_w1 = _norm_rows(np.where(w1, u, 0.0), axes)
        norm_both = _norm_rows(np.where(both, u, 0.0), axes)
        new = pattern + np.where(w1, u, 0.0) / (1e-10 + norm_w1)
        new = np.where(w1, new, 0.0)
        per = c if image else 1
        target_norm = np.sqrt(np.maximum(eps**2 - norm_img**2, 0.0) / per + norm_both**2)
        new = new / np.maximum(_norm_rows(new, axes), 1e-12) * target_norm
        u = np.where(w2, 0.0, u)
        u = np.where(w1, new, u)
        cand = to_x(xa, u, lo, hi)
        proba = predict_proba(cand)
        queries[act] += 1
        mg = margin_loss(proba, y[act])
        better = mg < margin[act]
        keep = act[better]
        x_best[keep] = cand[better]
        margin[keep] = mg[better]
        success[keep] = proba[better].argmax(axis=1) != y[keep]
    return AttackOutcome(x_adv=x_best, success=success, queries=queries)


def _windows(
    m: int, grid: tuple[int, int, int], s: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random ``s × s`` window per sample (all channels): mask ``(m, c, h, w)``, tops, lefts."""
    c, h, w = grid
    top = rng.integers(0, h - s + 1, size=m)
    left = rng.integers(0, w - s + 1, size=m)
    rows = np.arange(h)[None, :, None]
    cols = np.arange(w)[None, None, :]
    t, lf = top[:, None, None], left[:, None, None]
    win = (rows >= t) & (rows < t + s) & (cols >= lf) & (cols < lf + s)
    return np.broadcast_to(win[:, None], (m, c, h, w)).copy(), top, left


def _subsets(m: int, movable: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` random movable features per sample, boolean ``(m, d)``."""
    keys = rng.random((m, movable.size))
    keys[:, ~movable] = 2.0
    chosen = np.argpartition(keys, k - 1, axis=1)[:, :k]
    win = np.zeros((m, movable.size), dtype=bool)
    np.put_along_axis(win, chosen, True, axis=1)
    return win & movable[None]
