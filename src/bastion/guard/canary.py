"""Control 6 — canary tokens: secret trap inputs; a hit raises a critical alert at once.

A canary is an input only someone holding leaked data (or probing the service with it) would
send — e.g. a fabricated patient record planted in a dataset copy. ``guard.yaml`` stores only
its SHA-256 over the canonical bytes (float32, rounded to 4 decimals, C order, with the shape),
so the config does not reveal the trap. :func:`canary_hash` computes it for ``guard.yaml``.
"""

from __future__ import annotations

import hashlib

import numpy as np

from bastion.guard.config import Canary


def canary_hash(row: np.ndarray) -> str:
    """SHA-256 (hex) of one input row's canonical bytes."""
    a = np.ascontiguousarray(np.round(np.asarray(row, dtype=np.float64), 4).astype("<f4"))
    h = hashlib.sha256(repr(tuple(a.shape)).encode())
    h.update(a.tobytes())
    return h.hexdigest()


class CanaryWatch:
    """Matches each row against the configured canaries."""

    def __init__(self, canaries: list[Canary]) -> None:
        self._by_hash = {c.sha256: c.id for c in canaries}

    def hits(self, x: np.ndarray) -> list[str]:
        """Ids of the canaries among the rows of ``x`` ``(N, *shape)``."""
        if not self._by_hash:
            return []
        return [cid for row in x if (cid := self._by_hash.get(canary_hash(row))) is not None]
