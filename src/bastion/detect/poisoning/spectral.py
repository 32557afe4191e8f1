"""Spectral signatures (Tran, Li, Madry 2018): the top singular direction of each class.

Threat model: as for activation clustering -- trigger-carrying samples relabelled to a target
class. When the poison is a small fraction of its class, the poisoned samples' activations
shift the class's covariance along one direction; the squared projection of each centred
activation on the top right singular vector is then larger for the poison.

Method, per class: centre the activations, take the top right singular vector ``v``, score each
row by ``((r - mean) . v)^2``. The paper removes the ``1.5 * eps`` highest-scoring rows of every
class (``decision="per-class"``, what ART does; ``eps`` the expected poison rate) -- this flags
rows in every class. ``decision="robust"`` (default) normalises the scores by each class's
median and flags rows above a robust z of ``z`` of the pooled log-scores, so clean classes
usually lose nothing. Known limit: when the poison is a large share of its class (near half),
the centred projection no longer separates it (both groups sit equally far from the mean);
activation clustering covers that case.

Reference: Tran, Li, Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS 2018,
arXiv:1811.00636.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import ConfigError
from bastion.core.findings import Threat
from bastion.core.registry import register
from bastion.detect.poisoning.base import RepresentationDetector


class SpectralParams(BaseModel):
    """Parameters of :class:`SpectralSignatureDetector`.

    Attributes:
        decision: ``robust`` (default) or ``per-class`` (the paper's removal of ``1.5 eps``).
        eps: expected poison rate (``per-class`` rule).
        z: robust z-score of the normalised log-score above which a row is flagged (``robust``).
    """

    model_config = ConfigDict(extra="forbid")

    decision: Literal["robust", "per-class"] = "robust"
    eps: float = Field(default=0.1, gt=0, lt=0.5)
    z: float = Field(default=4.0, gt=0)


@register("detector")
class SpectralSignatureDetector(RepresentationDetector):
    """Per-class squared projection on the top singular direction of the activations.

    Shapes: ``x: (N, *input_shape)`` with a model, else ``(N, D)`` activations; ``y: (N,)``.
    """

    id: ClassVar[str] = "detect.spectral-signatures"
    title: ClassVar[str] = "Backdoor: spectral signatures"
    threat: ClassVar[Threat] = Threat.POISONING
    Params: ClassVar[type[BaseModel]] = SpectralParams
    references: ClassVar[tuple[str, ...]] = (
        "Tran, Li, Madry, Spectral Signatures in Backdoor Attacks, NeurIPS 2018, arXiv:1811.00636",
    )

    params: SpectralParams

    def _fit(self, x: np.ndarray, y: np.ndarray | None) -> None:
        assert y is not None
        p = self.params
        self._dirs: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
        raw = np.zeros(x.shape[0], dtype=np.float64)
        flags = np.zeros(x.shape[0], dtype=bool)
        classes = np.unique(y)
        if classes.size < 1:
            raise ConfigError(f"{self.id}: no labelled rows")
        for c in classes.tolist():
            idx = np.flatnonzero(y == c)
            if idx.size < 3:
                continue
            mean = x[idx].mean(axis=0)
            z = x[idx] - mean
            _, _, vt = np.linalg.svd(z, full_matrices=False)
            s = (z @ vt[0]) ** 2
            med = float(np.median(s)) or 1.0
            self._dirs[int(c)] = (mean, vt[0], med)
            raw[idx] = s / med
            if p.decision == "per-class":
                k = int(np.floor(1.5 * p.eps * idx.size))
                if k > 0:
                    flags[idx[np.argsort(s)[::-1][:k]]] = True
        logs = np.log1p(raw)
        if p.decision == "robust":
            med = float(np.median(logs))
            spread = 1.4826 * float(np.median(np.abs(logs - med))) or float(logs.std()) or 1.0
            self.threshold_ = med + p.z * spread
            flags = logs > self.threshold_
        else:
            self.threshold_ = float(logs[flags].min()) - 1e-12 if flags.any() else float("inf")
        self.reference_scores_ = logs
        self.reference_flags_ = flags
        self.flagged_classes_ = sorted({int(c) for c in y[flags]})
        self.class_stats_ = {
            int(c): {"n": float((y == c).sum()), "flagged": float((flags & (y == c)).sum())}
            for c in classes.tolist()
        }

    def _score(self, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        assert y is not None
        if self._is_reference(x, y):
            return self.reference_scores_.copy()
        out = np.zeros(x.shape[0], dtype=np.float64)
        for c, (mean, v, med) in self._dirs.items():
            rows = y == c
            out[rows] = np.log1p(((x[rows] - mean) @ v) ** 2 / med)
        return out
