"""SPECTRE (Hayase et al. 2021): robust whitening + QUE scores find a backdoor's rows."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.core.errors import NotFittedError
from bastion.core.registry import PluginError
from bastion.detect.poisoning import SpectreDetector
from bastion.detect.poisoning.spectre import que_matrix, robust_covariance


def backdoored(seed: int = 0, n: int = 600, rate: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BadNets on scikit-learn digits pixels (a 2x2 patch, relabelled 0): rows, labels, truth."""
    from sklearn.datasets import load_digits

    from bastion.assess.poisoning.simulate import Trigger, badnets

    d = load_digits()
    x = (d.data[:n] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    pd = badnets(x, d.target[:n], rate=rate, target=0, trigger=Trigger(size=2, value=1.0), seed=seed)
    return pd.x.reshape(n, -1), pd.y, pd.poisoned


def _pr(flags: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    tp = int((flags & truth).sum())
    return tp / max(1, int(flags.sum())), tp / int(truth.sum()), float((flags & ~truth).mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_spectre_finds_the_backdoor_rows_in_the_target_class_only(seed: int) -> None:
    x, y, truth = backdoored(seed)
    det = SpectreDetector(seed=seed).fit(x, y)
    assert det.flagged_classes_ == [0]
    precision, recall, clean = _pr(det.reference_flags_, truth)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    assert clean <= 0.02
    assert det.class_stats_[0]["analysed"] == 1.0 and det.class_stats_[1]["analysed"] == 0.0
    # new rows: poison-like rows score above the threshold, clean rows of other classes do not
    assert det.score(x[truth][:10], y[truth][:10]).min() > det.threshold_
    assert (det.score(x[y == 1][:10], y[y == 1][:10]) == 0).all()
    np.testing.assert_array_equal(det.flag(x, y), det.reference_flags_)


def test_spectre_clean_data_flags_nothing() -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.data[:600] / 16.0, d.target[:600]
    # min_separation 35: what the poisoning.backdoor check passes (digits' 2s have two real styles)
    det = SpectreDetector(seed=0, min_separation=35.0).fit(x, y)
    assert det.flagged_classes_ == [] and not det.reference_flags_.any()


def test_spectre_paper_rule_on_a_known_target_and_alpha_zero() -> None:
    x, y, truth = backdoored(seed=1)
    paper = SpectreDetector(decision="paper", classes=[0], eps=0.45).fit(x, y)
    flags = paper.reference_flags_
    assert int(flags.sum()) == int(np.floor(1.5 * 0.45 * (y == 0).sum()))  # 1.5 eps n rows removed
    assert set(np.unique(y[flags])) == {0}
    assert _pr(flags, truth)[1] >= 0.6
    x, y, truth = backdoored(seed=0)
    norm = SpectreDetector(alpha=0.0, seed=0).fit(x, y)  # QUE with alpha 0: the whitened norm
    _, recall, clean = _pr(norm.reference_flags_, truth)
    assert recall >= 0.9 and clean <= 0.02


def test_robust_covariance_ignores_a_minority_cluster() -> None:
    rng = np.random.default_rng(0)
    clean = rng.normal(0, 1, (300, 3))
    x = np.concatenate([clean, rng.normal(0, 1, (100, 3)) + np.array([8.0, 0, 0])])
    mu, cov = robust_covariance(x, support=0.7)
    assert np.abs(mu).max() < 0.3
    assert np.diag(cov).max() < 1.6  # the plain covariance is about 12 along the first axis
    q, lam = que_matrix(rng.normal(0, 1, (2000, 4)), 4.0)
    assert q.shape == (4, 4) and lam < 1.3
    eye, _ = que_matrix(rng.normal(0, 1, (50, 4)), 0.0)
    np.testing.assert_array_equal(eye, np.eye(4))


def test_spectre_validates_params_and_needs_fit() -> None:
    with pytest.raises(PluginError):
        SpectreDetector(eps=0.6)
    x, y, _ = backdoored()
    with pytest.raises(NotFittedError):
        SpectreDetector().score(x, y)
