"""Confident-learning label-issue detector on breast cancer with 5 % flipped labels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from bastion.core.errors import ConfigError, NotFittedError, PluginError
from bastion.core.registry import detectors
from bastion.detect import LabelIssueDetector


@pytest.fixture(scope="module")
def flipped() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(0)
    flip = rng.choice(len(y), size=int(0.05 * len(y)), replace=False)
    noisy = y.copy()
    noisy[flip] = 1 - noisy[flip]
    return x.astype(np.float32), noisy, np.sort(flip)


@pytest.fixture(scope="module")
def fitted(flipped: tuple[np.ndarray, np.ndarray, np.ndarray]) -> LabelIssueDetector:
    x, y, _ = flipped
    return LabelIssueDetector(seed=0).fit(x, y)


def test_registered() -> None:
    assert detectors.get("detect.label-issues") is LabelIssueDetector


def test_recall_and_precision_on_flipped_labels(
    flipped: tuple[np.ndarray, np.ndarray, np.ndarray], fitted: LabelIssueDetector
) -> None:
    x, y, flip = flipped
    found = set(np.flatnonzero(fitted.flag(x, y)).tolist())
    truth = set(flip.tolist())
    hits = len(found & truth)
    recall, precision = hits / len(truth), hits / max(1, len(found))
    assert recall >= 0.5, (recall, precision)
    assert precision >= 0.5, (recall, precision)
    assert fitted.folds_ == 5


def test_scores_rank_flipped_rows_high(
    flipped: tuple[np.ndarray, np.ndarray, np.ndarray], fitted: LabelIssueDetector
) -> None:
    x, y, flip = flipped
    s = fitted.score(x, y)
    assert s.shape == (len(y),) and np.all((s >= 0) & (s <= 1))
    mask = np.zeros(len(y), dtype=bool)
    mask[flip] = True
    assert s[mask].mean() > s[~mask].mean() + 0.3
    assert np.all(s[s > fitted.threshold_] > 0) and fitted.issues_[s > fitted.threshold_].all()


def test_new_batch_uses_final_model(
    flipped: tuple[np.ndarray, np.ndarray, np.ndarray], fitted: LabelIssueDetector
) -> None:
    x, y, _ = flipped
    batch = x[:50].copy()
    wrong = 1 - y[:50]  # every label flipped
    assert fitted.flag(batch, wrong).mean() >= 0.6
    assert fitted.flag(batch, y[:50]).mean() <= 0.1
    assert fitted.flag(batch, y[:50] * 0 + 7).all()  # a class never seen at fit


def test_deterministic(
    flipped: tuple[np.ndarray, np.ndarray, np.ndarray], fitted: LabelIssueDetector
) -> None:
    x, y, _ = flipped
    again = LabelIssueDetector(seed=0).fit(x, y)
    np.testing.assert_array_equal(again.issues_, fitted.issues_)


def test_errors() -> None:
    det = LabelIssueDetector()
    with pytest.raises(NotFittedError):
        det.score(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ConfigError, match="needs labels"):
        det.fit(np.zeros((4, 2)))
    with pytest.raises(ConfigError, match="two classes"):
        det.fit(np.random.default_rng(0).normal(size=(6, 2)), np.zeros(6, dtype=int))
    with pytest.raises(ConfigError, match="class 1 has a single row"):
        det.fit(np.random.default_rng(0).normal(size=(6, 2)), np.array([0, 0, 0, 0, 0, 1]))
    with pytest.raises(PluginError, match="folds"):
        LabelIssueDetector(folds=1)
