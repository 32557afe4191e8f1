"""EnsembleTarget: averaged probabilities, intersected capabilities, gradients of the averaged CE."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.linear_model import LogisticRegression  # noqa: E402

from bastion.core.budget import Budget, BudgetMeter  # noqa: E402
from bastion.core.capability import Capability  # noqa: E402
from bastion.core.errors import ConfigError  # noqa: E402
from bastion.targets.ensemble import EnsembleTarget  # noqa: E402
from bastion.targets.sklearn_target import SklearnTarget  # noqa: E402
from bastion.targets.torch_target import TorchTarget  # noqa: E402


def _torch_member(seed: int, name: str) -> TorchTarget:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    return TorchTarget(net, name=name, input_shape=(4,), num_classes=3)


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)


def test_probabilities_are_the_average(x: np.ndarray) -> None:
    a, b = _torch_member(0, "a"), _torch_member(1, "b")
    ens = EnsembleTarget([a, b])
    p = ens.predict_proba(x)
    assert np.allclose(p, (a.predict_proba(x) + b.predict_proba(x)) / 2, atol=1e-6)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert ens.name == "a+b" and ens.kind == "ensemble"
    assert np.array_equal(ens.predict_label(x), p.argmax(axis=1))
    # the native module returns log of the averaged probabilities
    with torch.no_grad():
        assert np.allclose(torch.softmax(ens.module(torch.as_tensor(x)), 1).numpy(), p, atol=1e-5)


def test_loss_gradient_of_the_averaged_cross_entropy(x: np.ndarray) -> None:
    ens = EnsembleTarget([_torch_member(0, "a"), _torch_member(1, "b"), _torch_member(2, "c")])
    assert Capability.LOSS_GRADIENTS in ens.capabilities
    assert Capability.LOGITS not in ens.capabilities
    y = np.array([0, 1, 2, 0, 1, 2, 0])
    g = ens.loss_gradient(x, y)
    assert g.shape == x.shape and g.dtype == np.float32

    def loss(xx: np.ndarray) -> float:
        p = ens.predict_proba(xx)
        return float(-np.log(p[np.arange(len(y)), y]).sum())

    h = 1e-3
    for i, j in [(0, 0), (3, 2), (6, 3)]:
        xp, xm = x.copy(), x.copy()
        xp[i, j] += h
        xm[i, j] -= h
        assert g[i, j] == pytest.approx((loss(xp) - loss(xm)) / (2 * h), rel=2e-2, abs=2e-3)


def test_sklearn_member_drops_gradients(x: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(60, 4))
    lr = LogisticRegression().fit(xs, np.arange(60) % 3)
    sk = SklearnTarget(lr, name="sk", input_shape=(4,), num_classes=3)
    ens = EnsembleTarget([_torch_member(0, "a"), sk], name="mixed")
    assert Capability.LOSS_GRADIENTS not in ens.capabilities
    assert Capability.PROBABILITIES in ens.capabilities and Capability.BATCHED in ens.capabilities
    assert ens.module is None
    assert ens.describe()["members"][1]["name"] == "sk"


def test_queries_are_metered_per_row(x: np.ndarray) -> None:
    ens = EnsembleTarget([_torch_member(0, "a"), _torch_member(1, "b")])
    meter = BudgetMeter(Budget(queries=100))
    with ens.metered(meter):
        ens.predict_proba(x)
    assert meter.usage().queries == len(x)


def test_invalid_members_listed_at_once() -> None:
    a = _torch_member(0, "a")
    other = TorchTarget(torch.nn.Linear(5, 2), name="b", input_shape=(5,), num_classes=2)
    with pytest.raises(ConfigError) as info:
        EnsembleTarget([a, other])
    assert len(info.value.problems) == 2
    with pytest.raises(ConfigError):
        EnsembleTarget([a])
