"""Exact and near-duplicate rows, within a data set and across splits (train/test leakage).

Threat model: duplicated rows inflate the weight of some samples (a cheap poisoning lever) and,
when a test row also sits in the training split, inflate every measured accuracy and hide
memorisation (leakage). Near duplicates (a copy with tiny noise, a re-encoded image) have the
same effect and escape exact matching.

Method: an **exact** duplicate is a row whose float32 bytes hash (BLAKE2b, ``-0.0`` folded to
``0.0``) equals an earlier row's. A **near** duplicate is a row, not an exact one, whose
Euclidean distance to an earlier row, after standardising every feature with the reference's
mean and deviation, is below ``tol`` times the median nearest-neighbour distance between the
distinct reference rows (the data set's own scale, so ``tol`` is unit-free).

As a fitted detector, ``fit(train)`` then ``score(test)`` gives each test row
``1 / (1 + d / scale)`` (``d`` its distance to the nearest training row): 1 for an exact copy,
above ``threshold_ = 1 / (1 + tol)`` for a near one. :func:`find_duplicates` searches within one
set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import require
from bastion.core.findings import Threat
from bastion.core.registry import register
from bastion.detect.base import Detector, as_matrix, column_stats, standardise


class DuplicateParams(BaseModel):
    """Parameters of :class:`DuplicateDetector`.

    Attributes:
        tol: a near duplicate lies closer than ``tol`` x the median nearest-neighbour distance.
    """

    model_config = ConfigDict(extra="forbid")

    tol: float = Field(default=0.1, gt=0, le=1)


@dataclass
class DuplicateReport:
    """Duplicates within one set of rows; positions are row positions in that set.

    Attributes:
        exact: positions of rows that repeat an earlier row exactly, sorted.
        exact_of: for each of ``exact``, the position of the first row it repeats.
        near: positions of rows (not exact duplicates) within the tolerance of an earlier row.
        near_of: for each of ``near``, the position of the nearest earlier row within tolerance.
        scale: the median nearest-neighbour distance (standardised units).
    """

    exact: np.ndarray
    exact_of: np.ndarray
    near: np.ndarray
    near_of: np.ndarray
    scale: float


def row_hashes(x: np.ndarray) -> list[bytes]:
    """A 16-byte BLAKE2b digest of each row's float32 bytes (``-0.0`` counted as ``0.0``)."""
    rows = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1) + np.float32(0.0))
    return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]


def _first_positions(hashes: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of first occurrences, and (positions, originals) of repeats."""
    first: dict[bytes, int] = {}
    repeats: list[int] = []
    originals: list[int] = []
    for i, h in enumerate(hashes):
        j = first.setdefault(h, i)
        if j != i:
            repeats.append(i)
            originals.append(j)
    uniq = np.fromiter(first.values(), dtype=np.int64)
    return uniq, np.asarray(repeats, dtype=np.int64), np.asarray(originals, dtype=np.int64)


def _median_nn_distance(xs: np.ndarray) -> float:
    """Median distance from each row to its nearest other row (rows assumed distinct)."""
    from sklearn.neighbors import NearestNeighbors

    if xs.shape[0] < 2:
        return 1.0
    dist, _ = NearestNeighbors(n_neighbors=2).fit(xs).kneighbors(xs)
    d = dist[:, 1]
    d = d[d > 0]
    return float(np.median(d)) if d.size else 1.0


def find_duplicates(x: np.ndarray, *, tol: float = 0.1) -> DuplicateReport:
    """Exact and near duplicates within one set of rows.

    Args:
        x: rows ``(N, *input_shape)``.
        tol: near-duplicate tolerance as a fraction of the median nearest-neighbour distance.

    Returns:
        The duplicates, by position in ``x`` (each counted once, at its later occurrence).

    Raises:
        ConfigError: no rows or non-finite values.
        MissingExtraError: scikit-learn is not installed.
    """
    require("sklearn.neighbors", "data")
    from sklearn.neighbors import NearestNeighbors

    xm = as_matrix(x, "detect.duplicates")
    hashes = row_hashes(xm)
    uniq, exact, exact_of = _first_positions(hashes)
    mean, std = column_stats(xm)
    xs = standardise(xm, mean, std)
    scale = _median_nn_distance(xs[uniq])
    radius = tol * scale
    near: list[int] = []
    near_of: list[int] = []
    if uniq.size >= 2:
        xu = xs[uniq]
        nn = NearestNeighbors(radius=radius).fit(xu)
        dists, neigh = nn.radius_neighbors(xu, radius=radius, sort_results=True)
        for row, (d, nb) in enumerate(zip(dists, neigh, strict=True)):
            me = int(uniq[row])
            for dist, k in zip(d, nb, strict=True):
                other = int(uniq[k])
                if other < me and dist < radius:
                    near.append(me)
                    near_of.append(other)
                    break
    order = np.argsort(near, kind="stable")
    return DuplicateReport(
        exact=exact,
        exact_of=exact_of,
        near=np.asarray(near, dtype=np.int64)[order],
        near_of=np.asarray(near_of, dtype=np.int64)[order],
        scale=scale,
    )


@register("detector")
class DuplicateDetector(Detector):
    """Rows of a batch that copy (exactly or nearly) a row of the reference.

    Shapes: ``x: (N, *input_shape)``; labels are ignored.

    Attributes:
        scale_: median nearest-neighbour distance of the distinct reference rows.
        threshold_: ``1 / (1 + tol)``; a score above it is a (near) duplicate.
    """

    id: ClassVar[str] = "detect.duplicates"
    title: ClassVar[str] = "Duplicate and leaked rows"
    threat: ClassVar[Threat] = Threat.POISONING
    Params: ClassVar[type[BaseModel]] = DuplicateParams
    references: ClassVar[tuple[str, ...]] = (
        "Allamanis, The Adverse Effects of Code Duplication in Machine Learning Models of Code, "
        "2019, arXiv:1812.06469",
    )
    threat_model: ClassVar[str] = (
        "Rows are copied into the training data (to up-weight them) or shared between the "
        "training and test splits (leakage that hides poor generalisation)."
    )
    atlas: ClassVar[tuple[str, ...]] = ("AML.T0020", "AML.T0059")

    params: DuplicateParams

    def __init__(self, *, seed: int = 0, **params: Any) -> None:
        super().__init__(seed=seed, **params)
        self.scale_ = 1.0
        self._mean = np.empty(0)
        self._std = np.empty(0)
        self._nn: Any = None
        self._hashes: dict[bytes, int] = {}

    def _fit(self, x: np.ndarray, y: np.ndarray | None) -> None:
        require("sklearn.neighbors", "data")
        from sklearn.neighbors import NearestNeighbors

        hashes = row_hashes(x)
        self._hashes = {}
        for i, h in enumerate(hashes):
            self._hashes.setdefault(h, i)
        uniq = np.fromiter(self._hashes.values(), dtype=np.int64)
        self._mean, self._std = column_stats(x)
        xs = standardise(x, self._mean, self._std)
        self.scale_ = _median_nn_distance(xs[uniq])
        self._nn = NearestNeighbors(n_neighbors=1).fit(xs)
        self.threshold_ = 1.0 / (1.0 + self.params.tol)

    def nearest(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Position in the reference of each row's nearest reference row, and the distance.

        Returns:
            ``(positions (N,) int64, distances (N,) float64)``, distances in standardised units.

        Raises:
            NotFittedError: before :meth:`fit`.
        """
        xm, _ = self._prepare(x, None)
        dist, idx = self._nn.kneighbors(standardise(xm, self._mean, self._std), n_neighbors=1)
        return idx[:, 0].astype(np.int64), dist[:, 0].astype(np.float64)

    def exact_matches(self, x: np.ndarray) -> np.ndarray:
        """Position of the first identical reference row for each row, or -1, int64 ``(N,)``.

        Raises:
            NotFittedError: before :meth:`fit`.
        """
        xm, _ = self._prepare(x, None)
        return np.array([self._hashes.get(h, -1) for h in row_hashes(xm)], dtype=np.int64)

    def _score(self, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        _, dist = self.nearest(x)
        score = 1.0 / (1.0 + dist / self.scale_)
        score[self.exact_matches(x) >= 0] = 1.0
        return score
