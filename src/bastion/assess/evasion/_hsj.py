"""What the L∞ and L2 HopSkipJump searches share: query accounting and the norm-free steps.

Chen, Jordan, Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
IEEE S&P 2020, arXiv:1904.02144. The searches themselves are
:func:`bastion.assess.evasion.hopskipjump.hopskipjump_linf` and
:func:`bastion.assess.evasion.hopskipjump_l2.hopskipjump_l2`; they differ in the boundary
search, the probe distribution, the step direction and the final projection.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from bastion.assess.evasion._gradients import bcast


class LabelOracle:
    """Misclassification queries for a batch of samples, each charged to its sample.

    Args:
        labels: predicted labels of rows ``(m, *shape)`` -> ``(m,)`` (the engine's ``labels``).
        y: the samples' true labels ``(n,)``.
        cap: queries per sample, the final check included (one query is always kept for it).

    Attributes:
        queries: queries charged so far per sample, ``(n,)`` int64.
    """

    def __init__(self, labels: Callable[[np.ndarray], np.ndarray], y: np.ndarray, cap: int) -> None:
        self.labels, self.y, self.cap = labels, y, cap
        self.queries = np.zeros(len(y), dtype=np.int64)

    def adv(self, rows: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Misclassified? for candidates ``xs`` (sent as float32) of samples ``rows`` (repeats allowed).

        Every probe is charged to its sample.
        """
        np.add.at(self.queries, rows, 1)
        return np.asarray(self.labels(np.asarray(xs, dtype=np.float32)) != self.y[rows])

    def room(self, rows: np.ndarray, k: int = 1) -> np.ndarray:
        """Whether samples ``rows`` can still afford ``k`` queries besides the final check."""
        return np.asarray(self.queries[rows] + k <= self.cap - 1)

    def random_start(
        self,
        start: np.ndarray,
        lo: np.ndarray,
        hi: np.ndarray,
        tries: int,
        rng: np.random.Generator,
        dtype: type,
    ) -> np.ndarray:
        """Uniform points in ``[lo, hi]`` (per sample, drawn as ``dtype``) until misclassified.

        Args:
            start: the clean inputs ``(n, *shape)``, a copy: found points are written into it.
            lo: per-sample lower bounds ``(n, *shape)``.
            hi: per-sample upper bounds ``(n, *shape)``.
            tries: the most rounds.
            rng: the search's generator.
            dtype: the candidates' dtype.

        Returns:
            Whether a misclassified start was found per sample, ``(n,)`` bool.
        """
        found = np.zeros(len(start), dtype=bool)
        for _ in range(tries):
            rows = np.flatnonzero(~found & self.room(np.arange(len(start))))
            if rows.size == 0:
                break
            cand: np.ndarray = rng.uniform(lo[rows], hi[rows]).astype(dtype)
            ok = self.adv(rows, cand)
            start[rows[ok]] = cand[ok]
            found[rows[ok]] = True
        return found

    def evals(self, rows: np.ndarray, t: int, init_evals: int, max_evals: int) -> int:
        """Probes for round ``t``: ``init_evals·√t``, at most ``max_evals`` and half the least room left."""
        budget_left = int((self.cap - 1 - self.queries[rows]).min())
        return int(min(max_evals, init_evals * math.sqrt(t), max(1, budget_left // 2)))

    def direction(self, rows: np.ndarray, cand: np.ndarray, rv: np.ndarray) -> np.ndarray:
        """The sign-weighted mean of the probes ``rv``: HopSkipJump's gradient estimate.

        Args:
            rows: the samples ``(m,)``.
            cand: the probed points ``(m, evals, *shape)`` (queried here, one batch).
            rv: the probes as the search measures them ``(m, evals, *shape)``.

        Returns:
            ``mean(φ·rv)`` per sample ``(m, *shape)``, ``φ = ±1`` (misclassified or not) minus
            its mean where the signs are mixed (the paper's baseline).
        """
        m, evals = cand.shape[:2]
        res = self.adv(np.repeat(rows, evals), cand.reshape(-1, *cand.shape[2:])).reshape(m, evals)
        fval = 2.0 * res - 1.0
        mean = fval.mean(axis=1, keepdims=True)
        mixed = (np.abs(mean) < 1.0).reshape(-1)
        fval = np.where(mixed[:, None], fval - mean, fval)
        return np.asarray(np.einsum("ne,ne...->n...", fval, rv) / evals)

    def step_search(
        self,
        rows: np.ndarray,
        xb: np.ndarray,
        update: np.ndarray,
        step: np.ndarray,
        scale: np.ndarray,
        bounds: tuple[np.ndarray, np.ndarray],
        tries: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Geometric step search: ``xb + step·update·scale``, ``step`` halved until misclassified.

        Args:
            rows: the samples ``(m,)``.
            xb: their boundary points ``(m, *shape)``.
            update: the step direction per sample ``(m, *shape)``.
            step: the first step length per sample ``(m,)`` (halved in place).
            scale: model-input units per ε unit ``(*shape)``.
            bounds: per-sample ``(lo, hi)`` of every sample ``(n, *shape)``; trials are clipped to them.
            tries: the most halvings.

        Returns:
            ``(points, moved)``: the misclassified trial per sample (``xb`` where none) and
            whether one was found ``(m,)``.
        """
        lo, hi = bounds
        moved = np.zeros(len(rows), dtype=bool)
        newp = xb.copy()
        for _ in range(tries):
            todo = np.flatnonzero(~moved & self.room(rows))
            if todo.size == 0:
                break
            moves = bcast(step[todo], update[todo]) * update[todo] * scale
            trial = np.clip(xb[todo] + moves, lo[rows[todo]], hi[rows[todo]])
            ok = self.adv(rows[todo], trial)
            newp[todo[ok]] = trial[ok]
            moved[todo[ok]] = True
            step[todo[~ok]] /= 2
        return newp, moved

    def final_check(self, found: np.ndarray, final: np.ndarray) -> np.ndarray:
        """One query per sample with a start: is its final point misclassified? ``(n,)`` bool."""
        success = np.zeros(len(found), dtype=bool)
        rows = np.flatnonzero(found)
        if rows.size:
            success[rows] = self.adv(rows, final[rows])
        return success
