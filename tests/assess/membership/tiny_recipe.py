"""A tiny deterministic recipe for the reference-model tests: a nearest-class-mean softmax per model."""

from __future__ import annotations

import numpy as np


def linear(
    x: np.ndarray, y: np.ndarray, masks: np.ndarray, query: np.ndarray, *, seeds: np.ndarray
) -> np.ndarray:
    """``(K, Q, 10)`` probabilities from each model's class means, jittered by its seed."""
    out = []
    for mask, seed in zip(masks, seeds, strict=True):
        rng = np.random.default_rng(int(seed))
        means = np.stack(
            [
                x[mask & (y == c)].mean(axis=0) if (mask & (y == c)).any() else x.mean(axis=0)
                for c in range(10)
            ]
        )
        logits = -((query[:, None, :] - means[None]) ** 2).sum(-1) + 0.01 * rng.standard_normal(
            (len(query), 10)
        )
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        out.append(e / e.sum(axis=1, keepdims=True))
    return np.stack(out)


#: How many times :func:`broken` was called (the preflight trial must call it once, training never).
CALLS: list[int] = []


def broken(
    x: np.ndarray, y: np.ndarray, masks: np.ndarray, query: np.ndarray, *, seeds: np.ndarray
) -> np.ndarray:
    """A recipe that imports but raises when it runs (a user's bug)."""
    CALLS.append(len(masks))
    raise ValueError("shapes (12,64) and (30,128)\nnot aligned")


def wrong_shape(
    x: np.ndarray, y: np.ndarray, masks: np.ndarray, query: np.ndarray, *, seeds: np.ndarray
) -> np.ndarray:
    """Probabilities without the model axis: ``(Q, 10)`` instead of ``(K, Q, 10)``."""
    return np.full((len(query), 10), 0.1)
