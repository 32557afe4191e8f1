"""``evasion.hopskipjump-l2``: HopSkipJump under an L2 budget, decision-based (label-only) black-box.

Chen, Jordan, Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
IEEE S&P 2020, arXiv:1904.02144 (the ℓ2 variant, Algorithm 2).

Only predicted labels are needed. Distances are L2 norms of ``u = δ / scale`` (``scale``: 1
for ``absolute``, each feature's range for ``fraction``) over mutable values, as in
``evasion.pgd-l2``; ``d`` is the number of mutable values. Per sample:

1. **start**: uniform noise inside the declared bounds until misclassified (``init_tries``);
2. **boundary**: binary search on the blend ``x + α (x' − x)``, ``α ∈ [0, 1]``, until the
   interval is at most ``θ = d^{-3/2}`` (the paper's ℓ2 threshold, ``γ = 1``), keeping the
   adversarial end;
3. repeat, ``t = 1, 2, …``:

   * **gradient direction** at the boundary point ``x_t``: ``B_t = min(init_evals·√t,
     max_evals)`` probes ``x_t + δ_t·r`` with ``r`` Gaussian, unit L2 norm in ``u``;
     ``δ_1 = 0.1`` × the mean mutable width (in ``u``), then ``δ_t = √d·θ·‖x_t − x‖``; the
     direction is the mean of ``φ·r`` with ``φ = ±1`` (misclassified or not) minus its mean
     (the paper's baseline, when the signs are mixed), normalised;
   * **geometric step search**: ``ξ = ‖x_t − x‖ / √t``, halved until ``x_t + ξ·v`` is still
     misclassified (at most ``step_halvings`` tries);
   * **boundary** again between ``x`` and the stepped point; keep it when it is closer.

   A sample stops as soon as its boundary point is within ε (broken), or when its query cap
   (``max_queries``, lowered to fit ``budget.queries``) has no room for another round.

At ε the best point, scaled onto the ε-ball when farther (``x + (x_b − x)·ε/‖x_b − x‖``),
clipped to the declared bounds and the per-value ε interval (a superset of the ball: clipping
only shrinks the norm), integer values rounded — to the nearest integer, or toward the clean
value where the nearest would leave the ball
(:meth:`~bastion.assess.evasion._common.InputBounds.finalize_l2`), so no returned point is
outside the ball — is classified once more (one query): the sample is broken when it is
misclassified. Every probe round is one batched call for all active
samples (fast against an HTTP endpoint); every probe a sample causes is charged to it.

Deviations from the paper: the search iterates from the best point found so far; integer
values are rounded only at the end (the search queries unrounded points), inside the ball.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
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
from bastion.assess.evasion._gradients import bcast
from bastion.assess.evasion._hsj import LabelOracle
from bastion.assess.evasion.hopskipjump import HopSkipJump, HSJParams, _HSJEngine
from bastion.core.budget import BudgetMeter
from bastion.core.check import CheckContext
from bastion.core.config import Threshold
from bastion.core.registry import register

#: The most binary-search halvings per boundary search (θ is usually reached well before).
MAX_BISECTIONS = 30


class HSJL2Params(HSJParams):
    """Parameters of ``evasion.hopskipjump-l2``.

    Attributes:
        eps: the L2 ε grid (``None``: 0.25, 0.5, 1.0, as ``evasion.pgd-l2``).
        batch_size: rows per model call.
        max_queries: queries per sample and ε (the whole search and the final check; also
            capped by ``budget.queries``).
        init_evals: probes for the first gradient estimate (the paper's 100).
        max_evals: the most probes per estimate.
        init_tries: random points tried to find a misclassified start.
        step_halvings: the most halvings of the geometric step search per round.
    """

    eps: list[float] | None = Field(default_factory=lambda: [0.25, 0.5, 1.0], min_length=1, max_length=32)
    init_evals: int = Field(default=100, ge=1, le=10_000)
    max_evals: int = Field(default=1000, ge=1, le=100_000)
    step_halvings: int = Field(default=12, ge=1, le=64)


@register("attack")
class HopSkipJumpL2(HopSkipJump):
    """HopSkipJump (L2, decision-based black-box): clean vs robust accuracy over an L2 ε grid.

    Threat model: the attacker sees only the predicted label (no scores, no gradients), a
    bounded number of times per input, and may add a perturbation whose L2 norm (in the ε
    unit) is at most ε, within the declared bounds; untargeted.

    Shapes: evaluation inputs ``(n, *input_shape)`` float32, ``n = min(budget.samples, len(test))``.

    Budget: the clean pass costs ``n`` queries; then at most ``max_queries`` per attacked sample
    and ε (lowered to fit ``budget.queries``, noted).

    Metrics (``@eps=<ε>`` per ε): those of every evasion check; ``median_perturbation`` is the
    L2 norm in the ε unit.

    Source: Chen et al. 2020, arXiv:1904.02144. Its references, ATLAS techniques and budget
    preflight are those of ``evasion.hopskipjump`` (inherited).
    """

    id: ClassVar[str] = "evasion.hopskipjump-l2"
    title: ClassVar[str] = "HopSkipJump evasion (L2, decision-based black-box)"
    norm: ClassVar[Literal["linf", "l2"]] = "l2"
    Params = HSJL2Params
    threat_model: ClassVar[str] = (
        "Black-box, decision-based: the attacker sees only predicted labels, a limited number of times "
        "per input, and may add a perturbation whose L2 norm (in the ε unit) is at most ε, within the "
        "declared bounds (untargeted)."
    )
    default_thresholds: ClassVar[tuple[Threshold, ...]] = low_robust_accuracy(L2_THRESHOLD_EPS)

    @contextlib.contextmanager
    def engine(
        self, ctx: CheckContext, meter: BudgetMeter, bounds: InputBounds, rng: np.random.Generator
    ) -> Iterator[Engine]:
        """HopSkipJump (L2) on ``ctx.target.predict_label`` (metered by the target)."""
        yield _HSJL2Engine(ctx.target, cast(HSJL2Params, ctx.params), bounds, rng, meter)


class _HSJL2Engine(_HSJEngine):
    """The L∞ engine's labels and budget planning, with the L2 search."""

    def attack(self, x: np.ndarray, y: np.ndarray, eps: float, eps_left: int) -> AttackOutcome:
        return hopskipjump_l2(self, x, y, eps, self.query_cap(len(x), eps_left))


def hopskipjump_l2(eng: _HSJEngine, x: np.ndarray, y: np.ndarray, eps: float, cap: int) -> AttackOutcome:
    """Batched HopSkipJump (L2) on ``x`` ``(n, *shape)``, all classified correctly when clean.

    Args:
        eng: the engine (its ``labels``, ``bounds``, ``params`` and ``rng`` are used).
        x: clean inputs ``(n, *input_shape)`` float32.
        y: their labels ``(n,)``.
        eps: the L2 radius in the ε unit.
        cap: queries per sample, the final check included.

    Returns:
        Per sample the final point (inside the ε-ball and the bounds), whether it is
        misclassified, and the queries it used (never more than ``cap``).
    """
    b, rng = eng.bounds, eng.rng
    p = cast(HSJL2Params, eng.params)
    n = len(x)
    oracle = LabelOracle(eng.labels, y, cap)
    adv, room = oracle.adv, oracle.room
    mut = np.asarray(b.mutable, dtype=bool)
    if n == 0 or not mut.any():
        return AttackOutcome(x_adv=x.copy(), success=np.zeros(n, dtype=bool), queries=oracle.queries)
    shape = x.shape[1:]
    x64 = np.asarray(x, dtype=np.float64)
    lo = np.where(mut, np.minimum(b.lo, x64), x64)  # per sample: the declared bounds, holding x
    hi = np.where(mut, np.maximum(b.hi, x64), x64)
    sc = np.where(b.scale > 0, b.scale, 1.0)
    d = int(mut.sum())
    theta = 1.0 / (d * math.sqrt(d))
    width_u = float(((b.hi - b.lo) / sc)[mut].mean())

    def dist(xa: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """L2 distance in the ε unit of ``xa`` from the clean rows."""
        diff = np.where(mut, (np.asarray(xa, np.float64) - x64[rows]) / sc, 0.0)
        return np.asarray(np.sqrt((diff.reshape(len(diff), -1) ** 2).sum(axis=1)))

    def blend(rows: np.ndarray, far: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        return np.asarray(x64[rows] + bcast(alpha, far) * (far - x64[rows]))

    def boundary(rows: np.ndarray, far: np.ndarray) -> np.ndarray:
        """Binary search on the blend between ``x`` and the misclassified ``far``, to ``θ``."""
        high = np.ones(len(rows))
        low = np.zeros(len(rows))
        for _ in range(MAX_BISECTIONS):
            sel = np.flatnonzero((high - low > theta) & room(rows))
            if sel.size == 0:
                break
            mid = (high[sel] + low[sel]) / 2
            res = adv(rows[sel], blend(rows[sel], far[sel], mid))
            high[sel[res]] = mid[res]
            low[sel[~res]] = mid[~res]
        return blend(rows, far, high)

    # 1. a misclassified start
    start = x64.copy()
    found = oracle.random_start(start, lo, hi, p.init_tries, rng, np.float64)
    best = start.copy()
    active = np.flatnonzero(found)
    if active.size:
        best[active] = boundary(active, start[active])
    best_d = dist(best, np.arange(n))
    t = 0
    while True:
        active = active[(best_d[active] > eps) & room(active, 3)]
        if active.size == 0:
            break
        t += 1
        rows = active
        m = rows.size
        xb, db = best[rows], best_d[rows]
        evals = oracle.evals(rows, t, p.init_evals, p.max_evals)
        delta = np.full(m, 0.1 * width_u) if t == 1 else math.sqrt(d) * theta * db
        r = np.where(mut, rng.standard_normal((m, evals, *shape)), 0.0)
        r /= np.maximum(np.sqrt((r.reshape(m, evals, -1) ** 2).sum(axis=2)), 1e-12).reshape(
            m, evals, *([1] * len(shape))
        )
        cand = xb[:, None] + bcast(delta, r) * r * sc
        cand = np.clip(cand, lo[rows][:, None], hi[rows][:, None])
        grad = oracle.direction(rows, cand, (cand - xb[:, None]) / sc / bcast(delta, r))  # probes sent, in u
        gnorm = np.sqrt((grad.reshape(m, -1) ** 2).sum(axis=1))
        update = np.where(mut, grad / bcast(np.maximum(gnorm, 1e-12), grad), 0.0)
        # geometric step search until still misclassified
        newp, moved = oracle.step_search(rows, xb, update, db / math.sqrt(t), sc, (lo, hi), p.step_halvings)
        if moved.any():
            mv = rows[moved]
            proj = boundary(mv, newp[moved])
            pd = dist(proj, mv)
            better = pd < best_d[mv]
            best[mv[better]] = proj[better]
            best_d[mv[better]] = pd[better]
        elif t > 50:
            break
    # 2. the final point at ε: onto the ball, into the box, rounded; one query
    shrink = np.where(best_d > eps, eps / np.maximum(best_d, 1e-12), 1.0)
    final = x64 + bcast(shrink, x64) * (best - x64)
    low, high = b.box(x, eps)
    final = b.finalize_l2(np.where(bcast(found, x), final, x64), x, low, high, eps)
    return AttackOutcome(x_adv=final, success=oracle.final_check(found, final), queries=oracle.queries)
