"""PyOD outlier detector: far points injected into breast cancer are flagged."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer

from bastion.core.errors import ConfigError, NotFittedError
from bastion.core.registry import detectors
from bastion.detect import OutlierDetector, robust_threshold


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x, _ = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(0)
    signs = rng.choice([-1.0, 1.0], size=(12, x.shape[1]))
    far = x.mean(0) + 15 * x.std(0) * signs
    xd = np.concatenate([x, far]).astype(np.float32)
    return xd, np.arange(len(x), len(xd))


def test_registered() -> None:
    assert detectors.get("detect.outliers") is OutlierDetector


@pytest.mark.parametrize("method", ["ecod", "iforest"])
def test_far_points_flagged_with_contamination_threshold(
    data: tuple[np.ndarray, np.ndarray], method: str
) -> None:
    x, far = data
    det = OutlierDetector(method=method, contamination=0.05, seed=0).fit(x)
    flagged = np.flatnonzero(det.reference_flags_)
    assert set(far.tolist()) <= set(flagged.tolist())
    assert det.reference_flags_.mean() == pytest.approx(0.05, abs=0.01)  # the quantile rule
    np.testing.assert_array_equal(det.flag(x), det.reference_flags_)


def test_robust_threshold_flags_only_the_far_points(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, far = data
    det = OutlierDetector(threshold="robust", z=5.0).fit(x)
    flagged = set(np.flatnonzero(det.reference_flags_).tolist())
    assert set(far.tolist()) <= flagged
    assert len(flagged - set(far.tolist())) <= 0.01 * len(x)


def test_new_batch_scores(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, far = data
    clean = x[: far[0]]
    det = OutlierDetector(threshold="robust").fit(clean)
    batch = np.concatenate([clean[:20], x[far]])
    flags = det.flag(batch)
    assert flags[20:].all() and flags[:20].sum() <= 1


def test_errors() -> None:
    with pytest.raises(NotFittedError):
        OutlierDetector().flag(np.zeros((3, 2)))
    det = OutlierDetector().fit(np.random.default_rng(0).normal(size=(50, 3)))
    with pytest.raises(ConfigError, match="3"):
        det.score(np.zeros((2, 4)))
    with pytest.raises(ConfigError, match="non-finite"):
        OutlierDetector().fit(np.array([[np.nan, 1.0], [1.0, 2.0]]))


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=50), st.floats(0.5, 10))
def test_robust_threshold_is_above_the_median(values: list[float], z: float) -> None:
    s = np.asarray(values)
    t = robust_threshold(s, z)
    assert t >= np.median(s)
    if np.all(s == s[0]):
        assert t == float("inf")
