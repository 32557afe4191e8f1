"""Control 4 — anomaly detection on inputs (Mahalanobis OOD) and outputs (confidence drift).

Inputs: each row's Mahalanobis distance to the training distribution (shrunk covariance,
threshold at a high training quantile; Lee et al. 2018, arXiv:1807.03888 use the same score on
features). Outputs: the model's top-1 confidences over a sliding window are compared with the
training reference by PSI (population stability index, 10 quantile bins) and the two-sample
Kolmogorov–Smirnov statistic; a drift alert fires when either passes its bound, at most once
per window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from bastion.guard.profile import Profile

_EPS = 1e-4


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``reference`` (quantile bins of the reference).

    Returns:
        ``Σ (c − r) · ln(c / r)`` over bins; 0 for identical distributions, > 0.25 is a large shift.
    """
    reference = np.asarray(reference, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, reference), minlength=len(edges) + 1) / max(len(reference), 1)
    c = np.bincount(np.searchsorted(edges, current), minlength=len(edges) + 1) / max(len(current), 1)
    r, c = np.maximum(r, _EPS), np.maximum(c, _EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic ``sup |F_a − F_b|`` (0–1)."""
    a = np.sort(np.asarray(a, dtype=np.float64))
    b = np.sort(np.asarray(b, dtype=np.float64))
    if len(a) == 0 or len(b) == 0:
        return 0.0
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


class AnomalyMonitor:
    """Scores inputs and tracks output drift.

    Args:
        profile: the fitted profile (Mahalanobis detector and reference confidences).
        window: outputs per drift window.
        psi_alert: PSI bound.
        ks_alert: KS bound.
    """

    def __init__(
        self, profile: Profile, *, window: int = 500, psi_alert: float = 0.25, ks_alert: float = 0.2
    ):
        self.profile = profile
        self.window = int(window)
        self.psi_alert = float(psi_alert)
        self.ks_alert = float(ks_alert)
        self._conf: deque[float] = deque(maxlen=self.window)
        self._since = 0
        self.last_psi = 0.0
        self.last_ks = 0.0

    def ood(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mahalanobis distances ``(N,)`` and the OOD mask ``(N,)`` of flat rows ``(N, F)``."""
        d = self.profile.mahalanobis(flat)
        return d, np.asarray(self.ood_mask(d), dtype=bool)

    def ood_mask(self, dist: Sequence[float] | np.ndarray) -> list[bool]:
        """Whether each Mahalanobis distance ``(N,)`` is out of distribution (above the threshold)."""
        thr = self.profile.ood_threshold
        return [bool(d > thr) for d in dist]

    def observe_outputs(self, conf: Sequence[float] | np.ndarray) -> dict[str, float] | None:
        """Add top-1 confidences ``(N,)``; at each full window, return drift stats if a bound is passed."""
        self._conf.extend(map(float, conf))
        self._since += len(conf)
        ref = self.profile.ref_conf
        if self._since < self.window or len(ref) == 0 or len(self._conf) < self.window:
            return None
        self._since = 0
        cur = np.asarray(self._conf)
        self.last_psi = psi(ref, cur)
        self.last_ks = ks_statistic(ref, cur)
        if self.last_psi > self.psi_alert or self.last_ks > self.ks_alert:
            return {
                "psi": round(self.last_psi, 4),
                "ks": round(self.last_ks, 4),
                "window": float(self.window),
            }
        return None
