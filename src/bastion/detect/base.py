"""The base class of every fitted detector: ``fit(reference)`` then ``score(batch)``.

A detector learns what normal data looks like from a reference set and scores a batch:
one float per row, **higher = more suspicious**. :meth:`Detector.flag` turns scores into a
boolean mask with the threshold chosen at fit time (``threshold_``). Using a detector before
:meth:`Detector.fit` raises :class:`bastion.core.errors.NotFittedError`.

Rows are ``x: (N, *input_shape)``; detectors flatten them to ``(N, F)``. Fitted state lives in
attributes ending in ``_`` (scikit-learn's convention); the constructor only stores settings.
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import BaseModel

from bastion.core.errors import ConfigError, NotFittedError
from bastion.core.findings import Threat
from bastion.core.registry import Plugin


class Detector(Plugin):
    """A fitted detector.

    Args:
        seed: seed of any randomness (cross-validation folds, isolation trees).
        **params: the detector's typed ``Params`` (validated at once).

    Attributes:
        params: the validated parameters.
        seed: the seed.
        threshold_: score above which :meth:`flag` marks a row (set by :meth:`fit`).
        n_features_: flat feature count of the reference (set by :meth:`fit`).

    Raises:
        PluginError: a parameter is unknown or out of bounds.
    """

    threat: ClassVar[Threat] = Threat.POISONING
    applies_to: ClassVar[frozenset[str]] = frozenset({"dataset"})
    #: Whether the detector reads labels (then ``y`` is part of the reference's identity).
    uses_labels: ClassVar[bool] = False

    def __init__(self, *, seed: int = 0, **params: Any) -> None:
        self.params: BaseModel = self.parse_params(params)
        self.seed = int(seed)
        self.threshold_: float = float("inf")
        self.n_features_: int = 0
        self._fitted = False
        self._reference_key: str | None = None

    # -- public verbs --------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self._fitted

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> Self:
        """Learn from the reference rows ``x`` (and labels ``y`` where the detector uses them).

        Args:
            x: reference rows ``(N, *input_shape)``.
            y: integer labels ``(N,)`` or ``None``.

        Returns:
            ``self``, fitted.

        Raises:
            ConfigError: ``x`` is empty or ``y`` does not match it (or is needed and missing).
        """
        xm = as_matrix(x, self.id)
        yv = as_labels(y, xm.shape[0], self.id)
        self.n_features_ = int(xm.shape[1])
        self._fit(xm, yv)
        self._reference_key = fingerprint(xm, yv if self.uses_labels else None)
        self._fitted = True
        return self

    def score(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Suspicion score of each row, float64 ``(N,)``; higher = more suspicious.

        Raises:
            NotFittedError: before :meth:`fit`.
            ConfigError: ``x`` does not have the reference's feature count.
        """
        xm, yv = self._prepare(x, y)
        return np.asarray(self._score(xm, yv), dtype=np.float64)

    def flag(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask ``(N,)`` of rows scoring above ``threshold_``.

        Raises:
            NotFittedError: before :meth:`fit`.
        """
        return self.score(x, y) > self.threshold_

    # -- for subclasses ------------------------------------------------------------------
    def _fit(self, x: np.ndarray, y: np.ndarray | None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _prepare(self, x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Check the detector is fitted and turn a batch into ``(N, F)`` rows and labels."""
        self._require_fitted()
        xm = as_matrix(x, self.id)
        if xm.shape[1] != self.n_features_:
            raise ConfigError(f"{self.id}: rows of {xm.shape[1]} features; fitted on {self.n_features_}")
        return xm, as_labels(y, xm.shape[0], self.id)

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError(f"{self.id}: call fit() before score() or flag()")

    def _is_reference(self, x: np.ndarray, y: np.ndarray | None) -> bool:
        """Whether ``(x, y)`` is exactly the data the detector was fitted on."""
        key = fingerprint(x, y if self.uses_labels else None)
        return self._reference_key is not None and key == self._reference_key


def as_matrix(x: np.ndarray, who: str) -> np.ndarray:
    """Rows flattened to a float64 ``(N, F)`` matrix.

    Raises:
        ConfigError: no rows, or non-finite values.
    """
    arr = np.asarray(x)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ConfigError(f"{who}: no rows to work on")
    m = arr.reshape(arr.shape[0], -1).astype(np.float64, copy=False)
    if not np.all(np.isfinite(m)):
        raise ConfigError(f"{who}: input holds non-finite values")
    return m


def as_labels(y: np.ndarray | None, n: int, who: str) -> np.ndarray | None:
    """Labels as int64 ``(n,)``, or ``None``.

    Raises:
        ConfigError: wrong length or shape.
    """
    if y is None:
        return None
    yv = np.asarray(y)
    if yv.ndim != 1 or yv.shape[0] != n:
        raise ConfigError(f"{who}: labels of shape {tuple(yv.shape)} for {n} rows")
    return yv.astype(np.int64, copy=False)


def fingerprint(x: np.ndarray, y: np.ndarray | None) -> str:
    """Hex digest identifying a data set (rows and labels) exactly."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(x.shape).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    if y is not None:
        h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


def standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(x - mean) / scale`` column-wise (``scale`` already has zeros replaced by 1)."""
    return (x - mean) / scale


def column_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations of ``x`` (a zero deviation becomes 1)."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    return mean, std
