"""One way to call any model: the ``Target`` interface and query accounting.

Every target answers on numpy arrays: ``x`` of shape ``(N, *input_shape)`` float32 in the
model's input units. Each row sent to the model counts as one query against the bound
``BudgetMeter``; a target raises ``BudgetExhausted`` before it spends past the budget.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bastion.core.budget import BudgetMeter
from bastion.core.capability import Capability
from bastion.core.errors import TargetError

if TYPE_CHECKING:
    pass


class Target:
    """A model (in process) or an endpoint (remote) that can be queried.

    Subclasses implement the ``_`` methods for the capabilities they declare.

    Attributes:
        name: asset name.
        capabilities: what it offers (``PROBABILITIES``, ``LOSS_GRADIENTS`` ...).
        input_shape: one sample's shape.
        num_classes: number of classes.
        queries: rows sent to the model so far (all calls, metered or not).
    """

    kind: ClassVar[str] = "base"

    def __init__(
        self,
        *,
        name: str,
        input_shape: tuple[int, ...],
        num_classes: int,
        capabilities: frozenset[Capability],
    ) -> None:
        self.name = name
        self.input_shape = tuple(input_shape)
        self.num_classes = int(num_classes)
        self.capabilities = frozenset(capabilities)
        self.queries = 0
        self._meter: BudgetMeter | None = None

    # -- accounting ------------------------------------------------------------------
    @contextlib.contextmanager
    def metered(self, meter: BudgetMeter) -> Iterator[BudgetMeter]:
        """Charge every query made inside the block to ``meter``."""
        previous, self._meter = self._meter, meter
        try:
            yield meter
        finally:
            self._meter = previous

    def _charge(self, n: int) -> None:
        if self._meter is not None:
            self._meter.charge(queries=n)
        self.queries += n

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise TargetError(
                f"{self.name}: input of shape {tuple(x.shape[1:])} per sample, model takes {self.input_shape}"
            )
        return x

    def _need(self, cap: Capability) -> None:
        if cap not in self.capabilities:
            raise TargetError(f"{self.name}: target does not offer {cap.value}")

    # -- public API -----------------------------------------------------------------
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, num_classes)``, rows summing to 1.

        Raises:
            TargetError: the target returns only labels, or the input shape is wrong.
            BudgetExhausted: the bound meter's query budget would be passed.
        """
        self._need(Capability.PROBABILITIES)
        x = self._check(x)
        self._charge(len(x))
        return self._predict_proba(x)

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        """Raw scores ``(N, num_classes)``.

        Raises:
            TargetError: the target does not offer logits.
        """
        self._need(Capability.LOGITS)
        x = self._check(x)
        self._charge(len(x))
        return self._predict_logits(x)

    def predict_label(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels ``(N,)`` int64 (every target offers this)."""
        x = self._check(x)
        self._charge(len(x))
        return self._predict_label(x)

    def loss_gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of the cross-entropy loss w.r.t. ``x``, shape of ``x`` (white-box).

        Raises:
            TargetError: the target does not offer loss gradients.
        """
        self._need(Capability.LOSS_GRADIENTS)
        x = self._check(x)
        self._charge(len(x))
        return self._loss_gradient(x, np.asarray(y, dtype=np.int64))

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (kind, shape, classes, capabilities)."""
        return {
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "capabilities": sorted(c.value for c in self.capabilities),
        }

    # -- to implement ---------------------------------------------------------------
    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        raise TargetError(f"{self.name}: probabilities not implemented")

    def _predict_logits(self, x: np.ndarray) -> np.ndarray:
        raise TargetError(f"{self.name}: logits not implemented")

    def _predict_label(self, x: np.ndarray) -> np.ndarray:
        if Capability.PROBABILITIES in self.capabilities:
            return np.asarray(self._predict_proba(x).argmax(axis=1), dtype=np.int64)
        if Capability.LOGITS in self.capabilities:
            return np.asarray(self._predict_logits(x).argmax(axis=1), dtype=np.int64)
        raise TargetError(f"{self.name}: labels not implemented")

    def _loss_gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise TargetError(f"{self.name}: loss gradients not implemented")
