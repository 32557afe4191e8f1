"""Exact and near duplicates within a set, and test rows leaked from train."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from bastion.core.errors import NotFittedError
from bastion.core.registry import detectors
from bastion.detect import DuplicateDetector, find_duplicates, row_hashes


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    x, _ = load_digits(return_X_y=True)
    _, first = np.unique(x, axis=0, return_index=True)  # start from distinct rows
    return x[np.sort(first)].astype(np.float32)


def test_registered() -> None:
    assert detectors.get("detect.duplicates") is DuplicateDetector


def test_clean_data_has_no_duplicates(digits: np.ndarray) -> None:
    rep = find_duplicates(digits)
    assert rep.exact.size == 0 and rep.near.size == 0 and rep.scale > 0


def test_injected_duplicates_found_exactly(digits: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    n = len(digits)
    src_exact = rng.choice(n, 20, replace=False)
    src_near = rng.choice(np.setdiff1d(np.arange(n), src_exact), 15, replace=False)
    # noise of 0.5 % of each feature's spread: a copy with tiny jitter
    noise = (0.005 * digits.std(0) * rng.normal(size=(15, digits.shape[1]))).astype(np.float32)
    x = np.concatenate([digits, digits[src_exact], digits[src_near] + noise])
    rep = find_duplicates(x)
    assert rep.exact.tolist() == list(range(n, n + 20))
    assert rep.exact_of.tolist() == src_exact.tolist()
    assert rep.near.tolist() == list(range(n + 20, n + 35))
    assert rep.near_of.tolist() == src_near.tolist()


def test_negative_zero_counts_as_zero() -> None:
    a = np.array([[0.0, 1.0]], dtype=np.float32)
    b = np.array([[-0.0, 1.0]], dtype=np.float32)
    assert row_hashes(a) == row_hashes(b)


def test_leakage_across_splits(digits: np.ndarray) -> None:
    train, test = digits[:1200], digits[1200:].copy()
    test[:7] = train[[3, 50, 99, 400, 401, 800, 1199]]
    test[7] = train[10] + 0.01 * train.std(0)
    det = DuplicateDetector(tol=0.1).fit(train)
    assert det.exact_matches(test)[:8].tolist() == [3, 50, 99, 400, 401, 800, 1199, -1]
    assert np.flatnonzero(det.exact_matches(test) >= 0).tolist() == list(range(7))
    flags = det.flag(test)
    assert np.flatnonzero(flags).tolist() == list(range(8))
    scores = det.score(test)
    assert np.all(scores[:7] == 1.0) and det.threshold_ < scores[7] < 1.0
    pos, dist = det.nearest(test[7:8])
    assert pos.tolist() == [10] and dist[0] > 0


def test_not_fitted() -> None:
    with pytest.raises(NotFittedError):
        DuplicateDetector().score(np.zeros((2, 2)))
