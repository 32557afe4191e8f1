"""A test-only scikit-learn target shared by the membership and extraction tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from bastion.core.capability import Capability
from bastion.targets.base import Target


class EstimatorTarget(Target):
    """A fitted scikit-learn classifier with classes ``0..C-1``, flattened inputs."""

    kind = "test-sklearn"

    def __init__(
        self, est: Any, *, name: str, input_shape: tuple[int, ...], num_classes: int, label_only: bool = False
    ) -> None:
        caps = {Capability.BATCHED, Capability.LABEL_ONLY if label_only else Capability.PROBABILITIES}
        super().__init__(
            name=name, input_shape=input_shape, num_classes=num_classes, capabilities=frozenset(caps)
        )
        self.est = est

    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), self.num_classes))
        out[:, self.est.classes_] = self.est.predict_proba(x.reshape(len(x), -1))
        return out

    def _predict_label(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.est.predict(x.reshape(len(x), -1)), dtype=np.int64)


def wrap(est: Any, *, input_shape: tuple[int, ...], num_classes: int, label_only: bool = False) -> Target:
    """The real ``SklearnTarget`` when available (probabilities), else the test wrapper."""
    if not label_only:
        try:
            from bastion.targets.sklearn_target import SklearnTarget
        except ImportError:
            pass
        else:
            return SklearnTarget(est, name="model", input_shape=input_shape, num_classes=num_classes)
    return EstimatorTarget(
        est, name="model", input_shape=input_shape, num_classes=num_classes, label_only=label_only
    )
