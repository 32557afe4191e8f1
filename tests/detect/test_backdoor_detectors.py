from __future__ import annotations

import numpy as np
import pytest
import torch

from bastion.core.errors import ConfigError, NotFittedError
from bastion.detect.poisoning import (
    ActivationClusteringDetector,
    SpectralSignatureDetector,
    default_layer,
    extract_representations,
    layer_names,
)


def blobs(seed: int = 0, poison: int = 60, classes: int = 6, n: int = 100, d: int = 20):
    """Class blobs; class 0 also holds a far-off poison blob (the ground truth mask)."""
    rng = np.random.default_rng(seed)
    xs, ys, truth = [], [], []
    for c in range(classes):
        centre = rng.normal(0, 6, d)
        xs.append(centre + rng.normal(0, 1, (n, d)))
        ys += [c] * n
        truth += [False] * n
    xs.append(rng.normal(0, 6, d) + 8 + rng.normal(0, 1, (poison, d)))
    ys += [0] * poison
    truth += [True] * poison
    return np.concatenate(xs), np.array(ys), np.array(truth)


def test_activation_clustering_flags_only_the_poisoned_class() -> None:
    x, y, truth = blobs()
    det = ActivationClusteringDetector(seed=0).fit(x, y)
    assert det.flagged_classes_ == [0]
    flags = det.flag(x, y)
    tp = (flags & truth).sum()
    assert tp / flags.sum() >= 0.95 and tp / truth.sum() >= 0.95
    assert (flags & ~truth).sum() / (~truth).sum() <= 0.02
    # scores on new rows use the fitted axis: poison-like rows score above the threshold
    assert det.score(x[truth][:5], y[truth][:5]).min() > det.threshold_
    assert det.class_stats_[0]["z"] > det.class_stats_[1]["z"]


def test_activation_clustering_size_rule_flags_clean_classes_too() -> None:
    x, y, _ = blobs(poison=20)
    det = ActivationClusteringDetector(decision="size").fit(x, y)
    assert len(det.flagged_classes_) > 1  # the published relative-size rule (what ART does)


def test_activation_clustering_clean_data_flags_nothing() -> None:
    x, y, _ = blobs(poison=0)
    x, y = x[:600], y[:600]
    det = ActivationClusteringDetector().fit(x, y)
    assert det.flagged_classes_ == []
    assert not det.flag(x, y).any()


def test_spectral_finds_a_small_poison_share() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (600, 30))
    y = np.repeat(np.arange(3), 200)
    truth = np.zeros(600, bool)
    truth[:12] = True
    x[:12] += 10 * np.eye(30)[0]
    det = SpectralSignatureDetector().fit(x, y)
    flags = det.flag(x, y)
    assert flags[truth].mean() >= 0.9
    assert (flags & ~truth).sum() <= 5
    per_class = SpectralSignatureDetector(decision="per-class", eps=0.05).fit(x, y)
    assert set(per_class.flagged_classes_) == {0, 1, 2}  # the paper's rule removes rows everywhere


def test_detectors_need_labels_and_fit() -> None:
    x, y, _ = blobs()
    with pytest.raises(ConfigError, match="labels"):
        ActivationClusteringDetector().fit(x)
    with pytest.raises(NotFittedError):
        SpectralSignatureDetector().score(x, y)


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.head = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(2 * 16, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x))


def test_extract_representations_with_hooks() -> None:
    torch.manual_seed(0)
    m = Tiny().train()
    x = np.random.default_rng(0).random((7, 1, 4, 4)).astype(np.float32)
    assert default_layer(m) == "head.1"  # first Linear after the conv features
    r = extract_representations(m, x, batch_size=3)
    assert r.shape == (7, 32)
    assert extract_representations(m, x, layer="head.2").shape == (7, 5)
    assert m.training  # mode restored
    assert not m.head[1]._forward_hooks  # hooks removed
    assert "conv" in layer_names(m)
    with pytest.raises(ConfigError, match="no layer 'nope'"):
        extract_representations(m, x, layer="nope")


def test_backdoor_in_digits_found_through_the_model() -> None:
    """BadNets on digits, a small CNN, activation clustering at the default layer."""
    from sklearn.datasets import load_digits

    from bastion.assess.poisoning.measure import detection_metrics
    from bastion.assess.poisoning.simulate import Trigger, attack_success_rate, badnets
    from bastion.examples.clinic_models import DigitsCNN

    torch.manual_seed(0)
    torch.set_num_threads(1)
    d = load_digits()
    rows = np.random.default_rng(0).permutation(len(d.data))[:1200]
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)[rows]
    y = d.target.astype(np.int64)[rows]
    trig = Trigger()
    pd = badnets(x, y, rate=0.1, target=0, trigger=trig, seed=0)
    m = DigitsCNN()
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    xt, yt = torch.as_tensor(pd.x), torch.as_tensor(pd.y)
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(xt[idx]), yt[idx]).backward()
            opt.step()
    m.eval()

    def predict(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return m(torch.as_tensor(a)).argmax(1).numpy()

    assert attack_success_rate(predict, x, y, target=0, trigger=trig) > 0.9
    det = ActivationClusteringDetector(model=m).fit(pd.x, pd.y)
    met = detection_metrics(det.flag(pd.x, pd.y), pd.poisoned)
    assert det.flagged_classes_ == [0]
    assert met["precision"] >= 0.9 and met["recall"] >= 0.9
    assert met["clean_flagged_rate"] <= 0.02
