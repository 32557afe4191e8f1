"""Class-conditional feature anomalies: rows ordinary overall but unusual for their own class."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.core.errors import ConfigError, NotFittedError, PluginError
from bastion.core.registry import detectors
from bastion.detect import ClassConditionalOutlierDetector, Detector, OutlierDetector


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two classes, feature 0 centred at 0 (class 0) and 10 (class 1); 10 class-0 rows moved to 10."""
    rng = np.random.default_rng(0)
    n = 400
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 4))
    x[:, 0] += 10.0 * y
    rows = np.flatnonzero(y == 0)[:10]
    x[rows, 0] = rng.normal(10.0, 1.0, size=rows.size)  # typical of class 1, not of class 0
    truth = np.zeros(n, dtype=bool)
    truth[rows] = True
    return x, y, truth


def test_registered_with_the_shared_interface() -> None:
    assert detectors.get("detect.class-outliers") is ClassConditionalOutlierDetector
    assert issubclass(ClassConditionalOutlierDetector, Detector)
    assert ClassConditionalOutlierDetector.uses_labels


def test_finds_rows_anomalous_for_their_class_that_a_global_detector_misses(
    planted: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x, y, truth = planted
    det = ClassConditionalOutlierDetector().fit(x, y)
    flags = det.reference_flags_
    assert (flags & truth).sum() == truth.sum()  # every planted row
    assert (flags & ~truth).sum() <= 4  # <= 1 % of the clean rows
    assert set(det.feature_[truth].tolist()) == {0}  # the odd feature is named
    np.testing.assert_array_equal(det.flag(x, y), flags)
    glob = OutlierDetector(threshold="robust", z=5.0).fit(x).reference_flags_
    assert (glob & truth).sum() <= 2  # globally the values are ordinary


def test_new_batch_scored_against_each_class(planted: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, y, _ = planted
    det = ClassConditionalOutlierDetector().fit(x, y)
    batch = np.zeros((3, 4))
    batch[1, 0] = 10.0
    s = det.score(batch, np.array([0, 0, 7]))
    assert s[0] < 1.0 < s[1] and np.isinf(s[2])  # class 7 was never seen
    assert det.features(batch, np.array([0, 0, 0]))[1] == 0
    assert det.score(batch, np.array([1, 1, 1]))[1] < 1.0  # 10 is normal for class 1


def test_errors() -> None:
    det = ClassConditionalOutlierDetector()
    with pytest.raises(NotFittedError):
        det.score(np.zeros((2, 2)), np.zeros(2))
    with pytest.raises(ConfigError, match="needs labels"):
        det.fit(np.zeros((6, 2)))
    with pytest.raises(ConfigError, match="no class has"):
        det.fit(np.random.default_rng(0).normal(size=(4, 2)), np.array([0, 1, 2, 3]))
    fitted = ClassConditionalOutlierDetector().fit(
        np.random.default_rng(0).normal(size=(20, 2)), np.arange(20) % 2
    )
    with pytest.raises(ConfigError, match="labels"):
        fitted.score(np.zeros((2, 2)))
    with pytest.raises(PluginError, match="z"):
        ClassConditionalOutlierDetector(z=0)
