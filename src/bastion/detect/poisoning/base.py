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

from bastion.core.errors import ConfigError
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
