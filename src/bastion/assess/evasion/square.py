"""``evasion.square``: the Square Attack, a score-based black-box L∞ attack by random search.

Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020, arXiv:1912.00049.

Only class probabilities are needed, so it runs on any target that returns them (torch,
scikit-learn, ONNX, an HTTP endpoint). Per ε, for the samples still classified correctly:

1. start at a vertex of the ε-ball made of vertical stripes (each column of each channel moved
   by ``+ε`` or ``−ε``, chosen at random);
2. repeat: in a random ``s × s`` square (per channel one random sign) set the perturbation to
   ``±ε``, query the model, and keep the change only if the margin loss
   ``log p_y − max_{k≠y} log p_k`` falls (the margin of the logits when the model is a softmax);
   stop a sample as soon as it is misclassified.

The side ``s`` follows the paper's schedule: the fraction ``p`` of values changed starts at
``p_init`` and halves at fixed fractions of the query budget (rescaled from 10,000 queries).
Inputs that are not images (``(C, H, W)`` or ``(H, W)``, e.g. tabular rows) get the same
vertex search over features: each step flips ``round(p·d)`` random movable features to the
opposite end of their ε-interval (there is no spatial neighbourhood to exploit), and the
stripes become one random sign per feature.

Every candidate is clipped to the ε-ball and the declared bounds, immutable and categorical
values stay fixed and integer values are rounded before the model sees it
(:mod:`bastion.assess.evasion._common`). Each iteration is one batched call for all samples
still unbroken.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, cast

import numpy as np
from pydantic import Field

from bastion.assess.evasion._common import (
    MIN_QUERIES,
    PER_EPS_METRICS,
    AttackOutcome,
    Engine,
    EvasionCheck,
    EvasionParams,
    InputBounds,
    affordable_queries,
    check_probabilities,
    eps_label,
)
from bastion.core.atlas import CRAFT_ADVERSARIAL, EVADE_MODEL
from bastion.core.budget import BudgetMeter
from bastion.core.capability import Capability
from bastion.core.check import CheckContext
from bastion.core.registry import register

log = logging.getLogger(__name__)

#: Tries at re-drawing the signs of a square that would not change the current best point.
_RESAMPLE_TRIES = 10


class SquareParams(EvasionParams):
    """Parameters of ``evasion.square``.

    Attributes:
        eps: the ε grid (see :class:`~bastion.assess.evasion._common.EvasionParams`).
        batch_size: rows per model call.
        n_queries: queries per sample and ε, the initial one included (also capped by the
            query budget: ``budget.queries`` shared over the samples and the ε grid).
        p_init: initial fraction of input values a square changes (the paper's ``p``). 0.1 by
            default: the paper's L∞ default of 0.05 is tuned for large images; on 8×8 images and
            30-feature rows 0.1 broke as many or more samples with the same queries.
    """

    n_queries: int = Field(default=200, ge=1, le=100_000)
    p_init: float = Field(default=0.1, gt=0, le=1)


@register("attack")
class SquareAttack(EvasionCheck):
    """Square Attack (L∞, score-based black-box): clean vs robust accuracy over an ε grid.

    Threat model: the attacker only queries the model and reads its class probabilities
    (no weights, no gradients), a bounded number of times per input, and may change every
    mutable input value by at most ε within the declared bounds; untargeted.

    Shapes: evaluation inputs ``(n, *input_shape)`` float32, ``n = min(budget.samples, len(test))``.

    Budget: the clean pass costs ``n`` queries; then at most ``n_queries`` per attacked sample
    and ε, lowered when ``budget.queries`` cannot cover the rest of the grid (noted).

    Metrics (``@eps=<ε>`` per ε): those of ``evasion.pgd`` plus ``median_queries_successful``
    (median queries to the first misclassification, over the samples broken at that ε).

    Source: Andriushchenko et al. 2020, arXiv:1912.00049.
    """

    id: ClassVar[str] = "evasion.square"
    title: ClassVar[str] = "Square Attack evasion (L∞, black-box)"
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.PROBABILITIES})
    Params = SquareParams
    references: ClassVar[tuple[str, ...]] = (
        "Andriushchenko, Croce, Flammarion, Hein. Square Attack: a query-efficient black-box "
        "adversarial attack via random search. ECCV 2020. arXiv:1912.00049",
        "https://arxiv.org/abs/1912.00049",
    )
    threat_model: ClassVar[str] = (
        "Black-box, score-based: the attacker queries the model (or its endpoint) and reads class "
        "probabilities, a limited number of times per input, and may move every mutable input value "
        "by at most ε within the declared bounds, to make the model misclassify (untargeted)."
    )
    atlas: ClassVar[tuple[str, ...]] = (EVADE_MODEL, CRAFT_ADVERSARIAL, "AML.T0043.001")
    metric_names: ClassVar[tuple[str, ...]] = (*PER_EPS_METRICS, "median_queries_successful")

    def extra_problems(self, ctx: CheckContext, n_samples: int, n_eps: int) -> list[str]:
        """``n_queries`` and the query budget must allow a useful search."""
        params = cast(SquareParams, ctx.params)
        problems: list[str] = []
        if params.n_queries < MIN_QUERIES:
            problems.append(f"params.n_queries: {params.n_queries} is too small (at least {MIN_QUERIES})")
        return problems + self.per_attack_budget(ctx, n_samples, n_eps, MIN_QUERIES)

    @contextlib.contextmanager
    def engine(
        self, ctx: CheckContext, meter: BudgetMeter, bounds: InputBounds, rng: np.random.Generator
    ) -> Iterator[Engine]:
        """The Square search on ``ctx.target.predict_proba`` (metered by the target)."""
        yield _SquareEngine(ctx.target, cast(SquareParams, ctx.params), bounds, rng, meter)

    def per_eps_metrics(self, eps: float, attacked: AttackOutcome | None) -> dict[str, float | None]:
        """``median_queries_successful``: median queries of the samples broken at this ε."""
        if attacked is None or not attacked.success.any():
            return {"median_queries_successful": None}
        return {"median_queries_successful": float(np.median(attacked.queries[attacked.success]))}


class _SquareEngine:
    """Square Attack bound to one target; plans the per-sample query cap from the budget."""

    def __init__(
        self,
        target: Any,
        params: SquareParams,
        bounds: InputBounds,
        rng: np.random.Generator,
        meter: BudgetMeter,
    ) -> None:
        self.target = target
        self.params = params
        self.bounds = bounds
        self.rng = rng
        self.meter = meter
        self.notes: dict[str, str] = {}
        self._capped: list[str] = []
        self.who = f"{getattr(target, 'name', 'target')}"

    def _proba(self, x: np.ndarray) -> np.ndarray:
        bs = self.params.batch_size
        parts = [
            check_probabilities(
                np.asarray(self.target.predict_proba(x[i : i + bs]), dtype=np.float64), self.who
            )
            for i in range(0, len(x), bs)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, int(self.target.num_classes)))

    def labels(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._proba(x).argmax(axis=1), dtype=np.int64)

    def attack(self, x: np.ndarray, y: np.ndarray, eps: float, eps_left: int) -> AttackOutcome:
        cap = self._cap(len(x), eps, eps_left)
        low, high = self.bounds.box(x, eps)
        return square_linf(
            self._proba,
            x,
            y,
            low,
            high,
            self.bounds.eps_values(eps),
            n_queries=cap,
            p_init=self.params.p_init,
            rng=self.rng,
            finalize=self.bounds.finalize,
        )

    def _cap(self, n: int, eps: float, eps_left: int) -> int:
        """``n_queries``, lowered (and noted per ε) to what the query budget leaves per sample."""
        cap, lowered = affordable_queries(self.meter, self.params.n_queries, n, eps_left)
        if lowered:
            self._capped.append(f"{cap} at ε={eps_label(eps)}")
            lowered_to = ", ".join(self._capped)
            self.notes["n_queries"] = f"the query budget lowered queries per sample to {lowered_to}"
        return cap


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """The paper's piecewise-constant schedule of ``p`` (fraction of values a square changes).

    The iteration is rescaled to a 10,000-query run; ``p`` halves at 10, 50, 200, 500, 1000,
    2000, 4000, 6000 and 8000 (Andriushchenko et al. 2020, arXiv:1912.00049, official code).
    """
    i = int(it / max(1, n_iters) * 10_000)
    for edge, div in (
        (8000, 512),
        (6000, 256),
        (4000, 128),
        (2000, 64),
        (1000, 32),
        (500, 16),
        (200, 8),
        (50, 4),
        (10, 2),
    ):
        if i > edge:
            return p_init / div
    return p_init


def margin_loss(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``log p_y − max_{k≠y} log p_k`` per row (negative: misclassified), shape ``(N,)``.

    Args:
        proba: class probabilities ``(N, K)``.
        y: true labels ``(N,)``.
    """
    logp = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-300, None))
    rows = np.arange(len(y))
    true = logp[rows, y].copy()
    logp[rows, y] = -np.inf
    return np.asarray(true - logp.max(axis=1))


def _random_signs(rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 2, size=size).astype(np.float64) * 2.0 - 1.0


class _Geometry:
    """Square windows and sign patterns for one input shape (images or flat features)."""

    def __init__(self, shape: tuple[int, ...], mutable: np.ndarray) -> None:
        self.shape = shape
        self.image = len(shape) in (2, 3) and shape[-1] >= 2 and shape[-2] >= 2
        self.c = shape[0] if len(shape) == 3 else 1
        self.h, self.w = (shape[-2], shape[-1]) if self.image else (1, math.prod(shape))
        self.mutable = mutable.reshape(-1)
        self.n_mutable = int(self.mutable.sum())

    def stripes(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Signs ``(n, *shape)``: one per column and channel (images), one per feature otherwise."""
        if self.image:
            signs = _random_signs(rng, (n, self.c, 1, self.w))
            return np.broadcast_to(signs, (n, self.c, self.h, self.w)).reshape(n, *self.shape)
        return _random_signs(rng, (n, *self.shape))

    def square(self, m: int, p: float, rng: np.random.Generator) -> np.ndarray:
        """A random ``s × s`` square per sample (all channels), boolean ``(m, *shape)``; images only."""
        s = round(math.sqrt(p * self.h * self.w))
        s = min(max(s, 1), self.h, self.w)
        top = rng.integers(0, self.h - s + 1, size=m)[:, None, None]
        left = rng.integers(0, self.w - s + 1, size=m)[:, None, None]
        rows = np.arange(self.h)[None, :, None]
        cols = np.arange(self.w)[None, None, :]
        win = (rows >= top) & (rows < top + s) & (cols >= left) & (cols < left + s)
        return np.broadcast_to(win[:, None], (m, self.c, self.h, self.w)).reshape(m, *self.shape)

    def square_signs(self, m: int, rng: np.random.Generator) -> np.ndarray:
        """One random sign per sample and channel, broadcast over the image ``(m, *shape)``."""
        signs = _random_signs(rng, (m, self.c, 1, 1))
        return np.broadcast_to(signs, (m, self.c, self.h, self.w)).reshape(m, *self.shape)

    def features(self, movable: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
        """``round(p·d)`` random movable features per sample, boolean ``(m, *shape)`` like ``movable``."""
        m = len(movable)
        flat = movable.reshape(m, -1)
        k = min(max(round(p * self.n_mutable), 1), flat.shape[1])
        keys = rng.random(flat.shape)
        keys[~flat] = 2.0
        chosen = np.argpartition(keys, k - 1, axis=1)[:, :k]
        win = np.zeros(flat.shape, dtype=bool)
        np.put_along_axis(win, chosen, True, axis=1)
        return np.asarray((win & flat).reshape(movable.shape))


def square_linf(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    eps_values: np.ndarray,
    *,
    n_queries: int,
    p_init: float,
    rng: np.random.Generator,
    finalize: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> AttackOutcome:
    """Untargeted L∞ Square Attack on a batch (Andriushchenko et al. 2020, arXiv:1912.00049).

    Images re-draw a square's per-channel sign until the square changes the current best point
    (at most 10 tries, as the official code's loop); other inputs flip the chosen features to
    the opposite vertex of their interval, which always changes them.

    Args:
        predict_proba: ``(m, *input_shape)`` float32 → probabilities ``(m, K)``; called once per
            iteration with every sample still unbroken (and once for the initial stripes).
        x: clean inputs ``(n, *input_shape)`` float32, all classified correctly.
        y: their labels ``(n,)``.
        low: per-value lower end of the box each candidate is clipped to (ε-ball ∩ bounds),
            shape of ``x``.
        high: per-value upper end of that box.
        eps_values: ε per value in model-input units ``input_shape`` (0: never changed).
        n_queries: queries per sample, the initial one included.
        p_init: initial fraction of values a square changes.
        rng: the random source (the attack is deterministic given its state).
        finalize: ``(x, low, high) → x`` applied to every candidate before it is queried
            (clips to the box and rounds integer features); plain clipping when ``None``.

    Returns:
        The best point per sample (the first misclassified one, for those broken), whether it is
        misclassified, and the queries each sample used.
    """
    n = len(x)
    shape = tuple(x.shape[1:])
    geo = _Geometry(shape, np.asarray(eps_values > 0))
    queries = np.zeros(n, dtype=np.int64)
    success = np.zeros(n, dtype=bool)
    if n == 0 or n_queries < 1 or geo.n_mutable == 0:
        return AttackOutcome(x_adv=x.copy(), success=success, queries=queries)
    e = np.asarray(eps_values, dtype=np.float64)
    movable_all = high > low

    def clip(cand: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        if finalize is not None:
            return finalize(cand, lo, hi)
        return np.clip(cand.astype(np.float32), lo, hi)

    x_best = clip(x + geo.stripes(n, rng) * e, low, high)
    proba = predict_proba(x_best)
    queries += 1
    margin = margin_loss(proba, y)
    success = np.asarray(proba.argmax(axis=1) != y)
    for it in range(n_queries - 1):
        act = np.flatnonzero(~success)
        if act.size == 0:
            break
        p = p_selection(p_init, it, n_queries)
        xa, best, lo, hi = x[act], x_best[act], low[act], high[act]
        delta = best.astype(np.float64) - xa
        if geo.image:
            win = geo.square(act.size, p, rng)
            delta = np.where(win, geo.square_signs(act.size, rng) * e, delta)
            cand = clip(xa + delta, lo, hi)
            redo = _unmoved(win, cand, best)
            for _ in range(_RESAMPLE_TRIES):
                if redo.size == 0:
                    break
                delta[redo] = np.where(win[redo], geo.square_signs(redo.size, rng) * e, delta[redo])
                cand[redo] = clip(xa[redo] + delta[redo], lo[redo], hi[redo])
                redo = redo[_unmoved(win[redo], cand[redo], best[redo])]
        else:
            win = geo.features(movable_all[act], p, rng)
            direction = np.sign(delta)
            direction = np.where(direction == 0, _random_signs(rng, delta.shape), -direction)
            cand = clip(xa + np.where(win, direction * e, delta), lo, hi)
        proba = predict_proba(cand)
        queries[act] += 1
        m = margin_loss(proba, y[act])
        better = m < margin[act]
        keep = act[better]
        x_best[keep] = cand[better]
        margin[keep] = m[better]
        success[keep] = proba[better].argmax(axis=1) != y[keep]
    return AttackOutcome(x_adv=x_best, success=success, queries=queries)


def _unmoved(win: np.ndarray, cand: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Rows whose square leaves the current best point unchanged."""
    moved = (win & (np.abs(cand - best) > 1e-7)).reshape(len(win), -1).any(axis=1)
    return np.flatnonzero(~moved)
