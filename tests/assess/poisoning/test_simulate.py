from __future__ import annotations

import numpy as np
import pytest

from bastion.assess.poisoning.measure import detection_metrics, sanitise_and_retrain, wilson
from bastion.assess.poisoning.simulate import (
    Trigger,
    attack_success_rate,
    badnets,
    clean_label,
    flip_labels_random,
    flip_labels_targeted,
)
from bastion.core.errors import ConfigError


def data(n: int = 200):
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 6, 6)).astype(np.float32) * 0.5, np.arange(n) % 4


def test_flip_random_changes_exactly_rate_and_keeps_input() -> None:
    x, y = data()
    y0 = y.copy()
    pd = flip_labels_random(x, y, rate=0.1, seed=1)
    assert pd.poisoned.sum() == 20
    assert np.all(pd.y[pd.poisoned] != y0[pd.poisoned])
    assert np.all(pd.y[~pd.poisoned] == y0[~pd.poisoned])
    assert np.array_equal(y, y0)
    again = flip_labels_random(x, y, rate=0.1, seed=1)
    assert np.array_equal(again.y, pd.y)


def test_flip_targeted_only_source_to_target() -> None:
    x, y = data()
    pd = flip_labels_targeted(x, y, rate=0.05, source=1, target=2)
    assert pd.poisoned.sum() == 10
    assert set(pd.y_original[pd.poisoned]) == {1} and set(pd.y[pd.poisoned]) == {2}
    with pytest.raises(ConfigError):
        flip_labels_targeted(x, y, rate=0.05, source=1, target=1)


def test_badnets_and_clean_label() -> None:
    x, y = data()
    trig = Trigger(size=2, value=1.0)
    pd = badnets(x, y, rate=0.1, target=3, trigger=trig)
    assert pd.poisoned.sum() == 20 and np.all(pd.y[pd.poisoned] == 3)
    assert np.all(pd.y_original[pd.poisoned] != 3)
    assert np.all(pd.x[pd.poisoned][:, 0, 4:, 4:] == 1.0)
    assert np.array_equal(pd.x[~pd.poisoned], x[~pd.poisoned])
    cl = clean_label(x, y, rate=0.05, target=3, trigger=trig)
    assert np.array_equal(cl.y, y) and np.all(y[cl.poisoned] == 3)
    assert np.all(cl.x[cl.poisoned][:, 0, 4:, 4:] == 1.0)
    flat = Trigger(size=1, value=9.0, corner="top-left", image_shape=(6, 6)).apply(x.reshape(200, -1))
    assert np.all(flat[:, 0] == 9.0)
    with pytest.raises(ConfigError, match="image rows"):
        Trigger().apply(x.reshape(200, -1))


def test_attack_success_rate() -> None:
    x, y = data()
    trig = Trigger()
    rate = attack_success_rate(lambda a: np.where(a[:, 0, 5, 5] == 1.0, 3, 0), x, y, target=3, trigger=trig)
    assert rate == 1.0


def test_detection_metrics() -> None:
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    flags = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], bool)
    m = detection_metrics(flags, truth)
    assert m["precision"] == 0.75 and m["recall"] == 0.75
    assert m["clean_flagged_rate"] == pytest.approx(1 / 6)
    lo, hi = m["intervals"]["precision"]
    assert lo < 0.75 < hi
    assert wilson(0, 0) == (0.0, 1.0)


def test_sanitise_and_retrain_drops_flagged_rows() -> None:
    x, y = data()
    trig = Trigger()
    pd = badnets(x, y, rate=0.1, target=3, trigger=trig)
    seen: dict[str, int] = {}

    def train(a: np.ndarray, b: np.ndarray) -> int:
        seen["n"] = len(a)
        return int((a[:, 0, 5, 5] == 1.0).any())  # "learns" the trigger only if a poisoned row is left

    def predict(model: int, a: np.ndarray) -> np.ndarray:
        return np.where((a[:, 0, 5, 5] == 1.0) & bool(model), 3, y[: len(a)] if len(a) == len(y) else 0)

    out = sanitise_and_retrain(train, predict, pd.x, pd.y, pd.poisoned, x, y, target=3, trigger=trig)
    assert seen["n"] == 180 and out["attack_success"] < 0.5


def test_label_flipping_found_by_confident_learning() -> None:
    from sklearn.datasets import load_breast_cancer

    from bastion.detect.label_issues import LabelIssueDetector

    bc = load_breast_cancer()
    pd = flip_labels_random(bc.data, bc.target, rate=0.1, seed=0)
    m = detection_metrics(LabelIssueDetector().fit(pd.x, pd.y).issues_, pd.poisoned)
    assert m["precision"] >= 0.8 and m["recall"] >= 0.8
