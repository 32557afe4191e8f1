"""Tiny targets for the extraction tests: logistic regressions on breast cancer and on 8×8 digits.

``wrap`` uses ``bastion.targets.sklearn_target.SklearnTarget`` when it is importable and falls
back to :class:`EstimatorTarget`, a test-only wrapper with the same behaviour; a label-only
target is always the test wrapper (the real one is label-only only without ``predict_proba``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.assess._estimators import EstimatorTarget, wrap

from bastion.core.budget import Budget
from bastion.core.check import Check, CheckContext, Split
from bastion.core.config import Asset, InputSpec, ProjectConfig
from bastion.targets.base import Target


class RecordingTarget(EstimatorTarget):
    """A label-only test target that keeps every batch it is asked to label."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[np.ndarray] = []

    def _predict_label(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(np.array(x, copy=True))
        return super()._predict_label(x)


@dataclass
class Trained:
    """A fitted estimator with its data split into the model's train and test rows."""

    est: Any
    x: np.ndarray
    y: np.ndarray
    train: np.ndarray
    test: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int
    input_range: tuple[float, float] | None = None

    def target(self, *, label_only: bool = False) -> Target:
        return wrap(
            self.est, input_shape=self.input_shape, num_classes=self.num_classes, label_only=label_only
        )

    def recording(self) -> RecordingTarget:
        return RecordingTarget(
            self.est,
            name="model",
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            label_only=True,
        )

    def data(self) -> dict[str, Split]:
        return {
            "train": Split(x=self.x[self.train], y=self.y[self.train], index=self.train),
            "test": Split(x=self.x[self.test], y=self.y[self.test], index=self.test),
        }


@pytest.fixture(scope="session")
def cancer_lr() -> Trained:
    """Logistic regression (standardised) on half of breast cancer; tabular, 30 features."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    b = load_breast_cancer()
    x = b.data.astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    train, test = np.sort(perm[:285]), np.sort(perm[285:])
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x[train], b.target[train])
    return Trained(est, x, b.target, train, test, (30,), 2)


@pytest.fixture(scope="session")
def digits_lr() -> Trained:
    """Logistic regression on 8×8 digit images ``(1, 8, 8)`` in [0, 16], 900 train rows."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    x = d.data.astype(np.float32).reshape(-1, 1, 8, 8)
    perm = np.random.default_rng(0).permutation(len(x))
    train, test = np.sort(perm[:900]), np.sort(perm[900:])
    est = LogisticRegression(max_iter=2000).fit(x[train].reshape(len(train), -1), d.target[train])
    return Trained(est, x, d.target, train, test, (1, 8, 8), 10, input_range=(0.0, 16.0))


MakeCtx = Callable[..., CheckContext]


@pytest.fixture
def make_ctx() -> MakeCtx:
    """Build a ``CheckContext`` by hand, as the runner would."""

    def build(
        check: type[Check],
        trained: Trained,
        *,
        params: dict[str, Any] | None = None,
        budget: Budget | None = None,
        seed: int = 0,
        target: Target | None = None,
        data: dict[str, Split] | None = None,
        input_spec: InputSpec | None = None,
    ) -> CheckContext:
        spec = input_spec or InputSpec(shape=list(trained.input_shape), range=trained.input_range)
        asset = Asset(
            name="model",
            path="model.joblib",
            framework="sklearn",
            input=spec,
            num_classes=trained.num_classes,
        )
        return CheckContext(
            asset=asset,
            config=ProjectConfig(version=1, seed=seed),
            base_dir=Path("."),
            budget=budget or Budget(samples=200),
            params=check.parse_params(params),
            thresholds=list(check.default_thresholds),
            seed=seed,
            target=target if target is not None else trained.target(),
            data=data if data is not None else trained.data(),
        )

    return build
