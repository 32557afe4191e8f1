"""Tiny seeded models for the evasion tests, and a builder of check contexts.

* ``digits``: scikit-learn's 8×8 digits scaled to [0, 1], shape ``(N, 1, 8, 8)``, a small CNN
  trained two epochs (``digits_target``: the real ``TorchTarget``).
* ``cancer``: breast-cancer raw features with feature 0 rounded to integers; an input spec with
  declared ranges, two immutable features, one categorical and one integer feature; an MLP that
  standardises inside (``cancer_mlp_target``, a ``TorchTarget``) and a scaler + logistic
  regression pipeline (``cancer_lr_target``, the real ``SklearnTarget``).
* ``RecordingTarget``: wraps a target, counts calls and keeps every row it was asked about.
* ``make_ctx``: a ``CheckContext`` built by hand (asset, ``ProjectConfig(version=1)``, budget,
  params through ``Plugin.parse_params``, thresholds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from bastion.assess.evasion._common import metric_key  # noqa: E402
from bastion.core.budget import Budget  # noqa: E402
from bastion.core.capability import Capability  # noqa: E402
from bastion.core.check import Check, CheckContext, Split  # noqa: E402
from bastion.core.config import Asset, Feature, InputSpec, ProjectConfig, Threshold  # noqa: E402
from bastion.core.results import CheckResult  # noqa: E402
from bastion.targets.base import Target  # noqa: E402


@dataclass
class Data:
    """Train/test splits and the input spec of one model."""

    train: Split
    test: Split
    spec: InputSpec

    @property
    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "test": self.test}


def _split(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> Split:
    return Split(x=x[idx].astype(np.float32), y=y[idx].astype(np.int64), index=idx.astype(np.int64))


def _train(model: Any, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, seed: int) -> Any:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 32):
            b = perm[i : i + 32]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[b]), yt[b])
            loss.backward()
            opt.step()
    return model.eval()


# -- digits ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def digits() -> Data:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    spec = InputSpec(shape=[1, 8, 8], range=(0.0, 1.0), eps_unit="absolute")
    return Data(train=_split(x, y, order[:1200]), test=_split(x, y, order[1200:]), spec=spec)


def _cnn() -> Any:
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 10),
    )


@pytest.fixture(scope="session")
def digits_cnn(digits: Data) -> Any:
    return _train(_cnn(), digits.train.x, digits.train.y, epochs=2, lr=1e-2, seed=0)


@pytest.fixture(scope="session")
def digits_target(digits_cnn: Any) -> Target:
    from bastion.targets.torch_target import TorchTarget

    return TorchTarget(digits_cnn, name="digits", input_shape=(1, 8, 8), num_classes=10)


# -- breast cancer -----------------------------------------------------------------------------
INTEGER, CATEGORICAL, IMMUTABLE = 0, 1, (2, 3)


@pytest.fixture(scope="session")
def cancer() -> Data:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    x = d.data.astype(np.float64).copy()
    x[:, INTEGER] = np.round(x[:, INTEGER])
    x = x.astype(np.float32)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(1).permutation(len(x))
    train, test = order[:400], order[400:]
    feats = []
    for i, name in enumerate(d.feature_names):
        kind = "integer" if i == INTEGER else "categorical" if i == CATEGORICAL else "continuous"
        feats.append(
            Feature(
                name=str(name).replace(" ", "_"),
                min=float(x[train, i].min()),
                max=float(x[train, i].max()),
                type=kind,
                immutable=i in IMMUTABLE,
            )
        )
    spec = InputSpec(shape=[30], features=feats)
    return Data(train=_split(x, y, train), test=_split(x, y, test), spec=spec)


class _MLP(torch.nn.Module):
    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(mean.astype(np.float32)))
        self.register_buffer("std", torch.from_numpy(std.astype(np.float32)))
        nn = torch.nn
        self.net = nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, x: Any) -> Any:
        return self.net((x - self.mean) / self.std)


@pytest.fixture(scope="session")
def cancer_mlp(cancer: Data) -> Any:
    torch.manual_seed(0)
    x = cancer.train.x
    model = _MLP(x.mean(axis=0), x.std(axis=0) + 1e-6)
    return _train(model, x, cancer.train.y, epochs=30, lr=3e-3, seed=0)


@pytest.fixture(scope="session")
def cancer_mlp_target(cancer_mlp: Any) -> Target:
    from bastion.targets.torch_target import TorchTarget

    return TorchTarget(cancer_mlp, name="cancer-mlp", input_shape=(30,), num_classes=2)


@pytest.fixture(scope="session")
def cancer_lr(cancer: Data) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(
        cancer.train.x, cancer.train.y
    )


@pytest.fixture(scope="session")
def cancer_lr_target(cancer_lr: Any) -> Target:
    from bastion.targets.sklearn_target import SklearnTarget

    return SklearnTarget(cancer_lr, name="cancer-lr", input_shape=(30,), num_classes=2)


# -- helpers -----------------------------------------------------------------------------------
class TargetView(Target):
    """Another target's name, input shape and classes, with ``capabilities`` (default: the inner's)."""

    kind = "test-view"

    def __init__(self, inner: Target, capabilities: frozenset[Capability] | None = None) -> None:
        super().__init__(
            name=inner.name,
            input_shape=inner.input_shape,
            num_classes=inner.num_classes,
            capabilities=inner.capabilities if capabilities is None else capabilities,
        )
        self.inner = inner


class RecordingTarget(TargetView):
    """Passes every call to ``inner`` (unmetered there), counting calls and keeping the rows."""

    kind = "test-recording"

    def __init__(self, inner: Target) -> None:
        super().__init__(inner)
        self.calls = 0
        self.rows: list[np.ndarray] = []

    def _seen(self, x: np.ndarray) -> None:
        self.calls += 1
        self.rows.append(np.array(x, copy=True))

    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        self._seen(x)
        return self.inner._predict_proba(x)

    def _predict_logits(self, x: np.ndarray) -> np.ndarray:
        self._seen(x)
        return self.inner._predict_logits(x)

    def _loss_gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        self._seen(x)
        return self.inner._loss_gradient(x, y)


class LabelOnly(TargetView):
    """A label-only view of another target."""

    kind = "test-label-only"

    def __init__(self, inner: Target) -> None:
        super().__init__(inner, frozenset({Capability.LABEL_ONLY}))

    def _predict_label(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.inner._predict_proba(x).argmax(axis=1), dtype=np.int64)


class ProbaOnly(LabelOnly):
    """A probabilities-only (black-box) view of another target."""

    def __init__(self, inner: Target) -> None:
        super().__init__(inner)
        self.capabilities = frozenset({Capability.PROBABILITIES})

    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.inner._predict_proba(x)


def robust(result: CheckResult, eps: float) -> float:
    """``robust_accuracy@eps=<eps>`` of an evasion result (present)."""
    value = result.metrics[metric_key("robust_accuracy", eps)]
    assert value is not None
    return value


CtxBuilder = Callable[..., CheckContext]


@pytest.fixture(scope="session")
def make_ctx() -> CtxBuilder:
    def build(
        plugin: type[Check],
        target: Target | None,
        data: Data,
        *,
        params: dict[str, Any] | None = None,
        budget: Budget | None = None,
        thresholds: list[Threshold] | None = None,
        seed: int = 0,
        spec: InputSpec | str | None = "data",
        splits: dict[str, Split] | None = None,
        task: str = "classification",
    ) -> CheckContext:
        asset = Asset(
            name="model",
            kind="model",
            path="model.bin",
            task=task,  # type: ignore[arg-type]
            input=data.spec if spec == "data" else spec,  # type: ignore[arg-type]
        )
        return CheckContext(
            asset=asset,
            config=ProjectConfig(version=1),
            base_dir=Path("."),
            budget=budget or Budget(queries=200_000, samples=100),
            params=plugin.parse_params(params),
            thresholds=list(plugin.default_thresholds) if thresholds is None else thresholds,
            seed=seed,
            target=target,
            data=data.splits if splits is None else splits,
        )

    return build
