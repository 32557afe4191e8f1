"""``evasion.hopskipjump``: HopSkipJump, a decision-based (label-only) black-box attack, L∞.

Chen, Jordan, Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
IEEE S&P 2020, arXiv:1904.02144.

Only predicted labels are needed. Per sample: start from a misclassified point (uniform noise
inside the declared bounds, then the clean input blended toward it), binary-search to the
decision boundary, then repeat — estimate the boundary's normal from the signs of ``B`` random
probes (``B`` grows as ``√t``), step along its sign with a geometrically shrinking step until
still adversarial, and binary-search back to the boundary. The L∞ distance to ``x`` shrinks
under a per-sample query cap. At ε the result counts a sample as broken when the best point
clipped into the ε-box (ε-ball ∩ bounds, integer rounding) is still misclassified — one more
query, and never weaker than comparing the distance to ε. All samples move in lock-step, so
every probe round is one batched call (what makes it fast against an HTTP endpoint).

Deviations: L∞ only (the ε grid's norm); probes are uniform in ``[−1, 1]^d`` on mutable values.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, ClassVar, cast

import numpy as np
from pydantic import Field

from bastion.assess.evasion._common import (
    MIN_QUERIES,
    AttackOutcome,
    Engine,
    EvasionCheck,
    EvasionParams,
    InputBounds,
    affordable_queries,
)
from bastion.assess.evasion._gradients import bcast
from bastion.assess.evasion._hsj import LabelOracle
from bastion.core.atlas import CRAFT_ADVERSARIAL, EVADE_MODEL
from bastion.core.budget import BudgetMeter
from bastion.core.capability import Capability
from bastion.core.check import CheckContext
from bastion.core.registry import register


class HSJParams(EvasionParams):
    """Parameters of ``evasion.hopskipjump``.

    Attributes:
        eps: the ε grid (see :class:`~bastion.assess.evasion._common.EvasionParams`).
        batch_size: rows per model call.
        max_queries: queries per sample (the whole search; also capped by ``budget.queries``).
        init_evals: probes for the first gradient estimate (the paper's 100).
        max_evals: the most probes per estimate.
        init_tries: random points tried to find a misclassified start.
    """

    max_queries: int = Field(default=1000, ge=MIN_QUERIES, le=1_000_000)
    init_evals: int = Field(default=50, ge=1, le=10_000)
    max_evals: int = Field(default=200, ge=1, le=100_000)
    init_tries: int = Field(default=20, ge=1, le=1000)


@register("attack")
class HopSkipJump(EvasionCheck):
    """HopSkipJump (L∞, decision-based black-box): clean vs robust accuracy per ε from labels only.

    Threat model: the attacker sees only the predicted label (no scores, no gradients) and a
    bounded number of queries per input; untargeted.

    Budget: at most ``max_queries`` per attacked sample and ε (lowered to fit ``budget.queries``).

    Source: Chen et al. 2020, arXiv:1904.02144.
    """

    id: ClassVar[str] = "evasion.hopskipjump"
    title: ClassVar[str] = "HopSkipJump evasion (L∞, decision-based black-box)"
    requires: ClassVar[frozenset[Capability]] = frozenset()
    Params = HSJParams
    references: ClassVar[tuple[str, ...]] = (
        "Chen, Jordan, Wainwright. HopSkipJumpAttack: A Query-Efficient Decision-Based Attack. "
        "IEEE S&P 2020. arXiv:1904.02144",
        "https://arxiv.org/abs/1904.02144",
    )
    threat_model: ClassVar[str] = (
        "Black-box, decision-based: the attacker sees only predicted labels, a limited number of times "
        "per input, and may move every mutable input value by at most ε within the declared bounds."
    )
    atlas: ClassVar[tuple[str, ...]] = (EVADE_MODEL, CRAFT_ADVERSARIAL, "AML.T0043.001")

    def extra_problems(self, ctx: CheckContext, n_samples: int, n_eps: int) -> list[str]:
        """The query budget must leave a useful search per sample."""
        params = cast(HSJParams, ctx.params)
        per = self.queries_per_attack(ctx, n_samples, n_eps)
        if per is not None and per < 4 * MIN_QUERIES:
            return [
                f"budget.queries: {ctx.budget.queries} leaves {max(per, 0)} queries per sample and ε; "
                f"HopSkipJump needs at least {4 * MIN_QUERIES} (max_queries is {params.max_queries})"
            ]
        return []

    @contextlib.contextmanager
    def engine(
        self, ctx: CheckContext, meter: BudgetMeter, bounds: InputBounds, rng: np.random.Generator
    ) -> Iterator[Engine]:
        """HopSkipJump on ``ctx.target.predict_label`` (metered by the target)."""
        yield _HSJEngine(ctx.target, cast(HSJParams, ctx.params), bounds, rng, meter)


class _HSJEngine:
    def __init__(
        self,
        target: Any,
        params: HSJParams,
        bounds: InputBounds,
        rng: np.random.Generator,
        meter: BudgetMeter,
    ) -> None:
        self.target, self.params, self.bounds, self.rng, self.meter = target, params, bounds, rng, meter
        self.notes: dict[str, str] = {}

    def labels(self, x: np.ndarray) -> np.ndarray:
        bs = self.params.batch_size
        parts = [
            np.asarray(self.target.predict_label(x[i : i + bs]), dtype=np.int64) for i in range(0, len(x), bs)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def attack(self, x: np.ndarray, y: np.ndarray, eps: float, eps_left: int) -> AttackOutcome:
        return hopskipjump_linf(self, x, y, eps, self.query_cap(len(x), eps_left))

    def query_cap(self, n: int, eps_left: int) -> int:
        """``max_queries``, lowered (and noted) to what the query budget leaves per sample and ε."""
        cap, lowered = affordable_queries(self.meter, self.params.max_queries, n, eps_left)
        if lowered:
            self.notes["max_queries"] = f"the query budget lowered queries per sample to {cap}"
        return cap


def _dist(b: InputBounds, xa: np.ndarray, x: np.ndarray) -> np.ndarray:
    return b.linf(xa, x)


def hopskipjump_linf(eng: _HSJEngine, x: np.ndarray, y: np.ndarray, eps: float, cap: int) -> AttackOutcome:
    """Batched HopSkipJump (L∞) on ``x`` ``(n, *shape)``; see the module docstring."""
    b, p, rng = eng.bounds, eng.params, eng.rng
    oracle = LabelOracle(eng.labels, y, cap)
    adv, left = oracle.adv, oracle.room
    shape = x.shape[1:]
    mut = b.mutable
    lo = np.minimum(b.lo, x).astype(np.float32)  # per sample: the declared bounds, holding x
    hi = np.maximum(b.hi, x).astype(np.float32)
    lo = np.where(mut, lo, x).astype(np.float32)
    hi = np.where(mut, hi, x).astype(np.float32)
    d = max(int(mut.sum()), 1)
    scale = np.where(b.scale > 0, b.scale, 1.0)

    # 1. a misclassified start
    start = x.copy()
    found = oracle.random_start(start, lo, hi, p.init_tries, rng, np.float32)
    best = start.copy()
    active = np.flatnonzero(found)

    def blend(rows: np.ndarray, pert: np.ndarray, radius: np.ndarray) -> np.ndarray:
        """L∞ projection of ``pert`` onto the ball of radius ``radius`` (ε units) around x."""
        r = bcast(radius, pert) * scale
        return np.clip(pert, x[rows] - r, x[rows] + r).astype(np.float32)

    def boundary(rows: np.ndarray, pert: np.ndarray, iters: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Binary search (on the L∞ radius) between x and the adversarial ``pert``."""
        high = _dist(b, pert, x[rows])
        low = np.zeros_like(high)
        for _ in range(iters):
            ok_rows = left(rows)
            if not ok_rows.any():
                break
            mid = (high + low) / 2
            sel = np.flatnonzero(ok_rows)
            res = adv(rows[sel], blend(rows[sel], pert[sel], mid[sel]))
            high[sel[res]] = mid[sel[res]]
            low[sel[~res]] = mid[sel[~res]]
        return blend(rows, pert, high), high

    if active.size:
        best[active], dist = boundary(active, start[active])
        t = 0
        while True:
            active = active[left(active, 3)]
            if active.size == 0:
                break
            t += 1
            rows = active
            xb = best[rows]
            dist = _dist(b, xb, x[rows])
            evals = oracle.evals(rows, t, p.init_evals, p.max_evals)
            delta = np.maximum(d * (1.0 / d**2) * dist, 1e-4) if t > 1 else np.full(len(rows), 0.1)
            probes = rng.uniform(-1.0, 1.0, size=(len(rows), evals, *shape)) * mut
            cand = xb[:, None] + bcast(delta, probes) * probes * scale
            cand = np.clip(cand, lo[rows][:, None], hi[rows][:, None]).astype(np.float32)
            grad = oracle.direction(rows, cand, (cand - xb[:, None]).astype(np.float64))
            update = np.sign(grad) * mut
            # geometric step until adversarial
            newp, moved = oracle.step_search(rows, xb, update, dist / math.sqrt(t), scale, (lo, hi), 12)
            if moved.any():
                mv = rows[moved]
                proj, _ = boundary(mv, newp[moved])
                better = _dist(b, proj, x[mv]) < _dist(b, best[mv], x[mv])
                best[mv[better]] = proj[better]
            if not moved.any() and t > 50:
                break
    low, high = b.box(x, eps)
    final = b.finalize(np.where(bcast(found, x), best, x), low, high)
    return AttackOutcome(x_adv=final, success=oracle.final_check(found, final), queries=oracle.queries)
