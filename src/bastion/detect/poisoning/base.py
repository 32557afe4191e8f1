"""The base of backdoor detectors that read a trained model's internal representations.

A :class:`RepresentationDetector` is a :class:`bastion.detect.base.Detector` (``fit`` /
``score`` / ``flag``) whose rows are first mapped through a torch model to the activations of a
chosen layer (:func:`~bastion.detect.poisoning.representations.extract_representations`). With
no model, the rows are taken to be representations already (``(N, D)``). Labels are required:
every backdoor detector analyses each class on its own.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

import numpy as np

from bastion.core.errors import ConfigError, require
from bastion.detect.base import Detector


class RepresentationDetector(Detector):
    """A detector over a model's activations at ``layer``.

    Args:
        model: a ``torch.nn.Module`` (optional): rows go through it; else rows are used as is.
        layer: dotted module name to read; ``None``: the input of the last Linear layer.
        read: read the layer's ``"output"`` or ``"input"`` (default: see ``extract_representations``).
        seed: seed of any randomness.
        **params: the detector's typed ``Params``.

    Attributes:
        flagged_classes_: classes judged to hold poison (after :meth:`fit`).
        class_stats_: per-class statistics the decision rule used, keyed by class label.
        reference_flags_: bool ``(N,)``, the verdict on the reference rows.
    """

    uses_labels: ClassVar[bool] = True
    threat_model: ClassVar[str] = (
        "A poisoner adds trigger-carrying samples relabelled to a target class; the defender "
        "holds the training set and the model trained on it."
    )
    atlas: ClassVar[tuple[str, ...]] = ("AML.T0020", "AML.T0018")

    def __init__(
        self,
        *,
        model: Any = None,
        layer: str | None = None,
        read: Literal["output", "input"] | None = None,
        seed: int = 0,
        **params: Any,
    ) -> None:
        super().__init__(seed=seed, **params)
        self.model = model
        self.layer = layer
        self.read = read
        self.flagged_classes_: list[int] = []
        self.class_stats_: dict[int, dict[str, float]] = {}
        self.reference_flags_ = np.empty(0, dtype=bool)
        self.reference_scores_ = np.empty(0, dtype=np.float64)

    def represent(self, x: np.ndarray) -> np.ndarray:
        """Rows as representations ``(N, D)`` (through the model when one was given)."""
        if self.model is None:
            return np.asarray(x)
        from bastion.detect.poisoning.representations import extract_representations

        return extract_representations(self.model, x, layer=self.layer, read=self.read)

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> Self:
        """Analyse the training rows ``x`` with labels ``y`` (required).

        Raises:
            ConfigError: labels missing, or a class with fewer than 4 rows is all there is.
        """
        if y is None:
            raise ConfigError(f"{self.id}: needs the training labels")
        return super().fit(self.represent(x), y)

    def score(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Suspicion score per row ``(N,)`` (higher = more likely poisoned)."""
        if y is None:
            raise ConfigError(f"{self.id}: scoring needs the labels of the rows")
        return super().score(self.represent(x), y)

    def flag(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Rows judged poisoned, bool ``(N,)``: the fitted verdict on the reference rows."""
        if y is None:
            raise ConfigError(f"{self.id}: flagging needs the labels of the rows")
        reps = self.represent(x)
        xm, yv = self._prepare(reps, y)
        if self._is_reference(xm, yv):
            return self.reference_flags_.copy()
        return np.asarray(self._score(xm, yv) > self.threshold_, dtype=bool)


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(v - median) / (1.4826 MAD)`` (the standard deviation when MAD is 0; 0 when constant)."""
    v = np.asarray(values, dtype=np.float64)
    med = float(np.median(v))
    spread = 1.4826 * float(np.median(np.abs(v - med)))
    if spread <= 0:
        spread = float(v.std())
    if spread <= 0:
        return np.zeros_like(v)
    return (v - med) / spread


def fisher_ratio(z: np.ndarray, lab: np.ndarray) -> float:
    """Fisher ratio ``(m1 - m2)^2 / (v1 + v2)`` of a two-cluster split along the line joining the centroids.

    Args:
        z: rows ``(n, k)``.
        lab: cluster of each row ``(n,)``, 0 or 1, both present.
    """
    d = z[lab == 1].mean(axis=0) - z[lab == 0].mean(axis=0)
    n = float(np.linalg.norm(d))
    if n == 0:
        return 0.0
    t = z @ (d / n)
    a, b = t[lab == 0], t[lab == 1]
    var = float(a.var() + b.var())
    return float((a.mean() - b.mean()) ** 2 / var) if var > 0 else float("inf")


def two_means(x: np.ndarray, seed: int) -> np.ndarray | None:
    """2-means cluster of each row of ``x: (n, k)``, ``(n,)`` int64; ``None`` when a cluster is empty."""
    require("sklearn", "data")
    from sklearn.cluster import KMeans

    lab = np.asarray(KMeans(n_clusters=2, n_init=10, random_state=seed).fit(x).labels_, dtype=np.int64)
    if np.bincount(lab, minlength=2).min() == 0:
        return None
    return lab


def class_separation_z(stats: dict[int, dict[str, float]], who: str) -> list[int]:
    """Add each class's robust z of its Fisher ratio among the classes (``stats[c]["z"]``).

    Args:
        stats: per class at least ``{"fisher": ...}``; updated in place.
        who: the detector's id, for the error.

    Returns:
        The classes, sorted.

    Raises:
        ConfigError: ``stats`` is empty (no class had 4 or more rows).
    """
    if not stats:
        raise ConfigError(f"{who}: no class has 4 or more rows")
    keys = sorted(stats)
    zs = robust_z(np.array([stats[c]["fisher"] for c in keys]))
    for c, zc in zip(keys, zs, strict=True):
        stats[c]["z"] = float(zc)
    return keys


def separated(stats: dict[str, float], n_classes: int, min_separation: float, z: float) -> bool:
    """The class test of activation clustering: does the class hold a separate group of rows?

    True when its 2-means Fisher ratio is at least ``min_separation`` and, with three or more
    classes, its robust z among the classes (:func:`class_separation_z`) is at least ``z``.
    """
    return bool(stats["fisher"] >= min_separation and (n_classes < 3 or stats["z"] >= z))
