"""Tiny targets for the membership tests: an over-fit MLP and a regularised logistic regression.

``wrap`` uses ``bastion.targets.sklearn_target.SklearnTarget`` when it is importable and falls
back to :class:`EstimatorTarget`, a test-only wrapper with the same behaviour; a label-only
target is always the test wrapper (the real one is label-only only without ``predict_proba``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.assess._estimators import wrap

from bastion.core.budget import Budget
from bastion.core.check import Check, CheckContext, Split
from bastion.core.config import Asset, InputSpec, ProjectConfig
from bastion.targets.base import Target


@dataclass
class Trained:
    """A fitted estimator with its data split into members (train) and non-members (test)."""

    est: Any
    x: np.ndarray
    y: np.ndarray
    train: np.ndarray
    test: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int

    def target(self, *, label_only: bool = False) -> Target:
        return wrap(
            self.est, input_shape=self.input_shape, num_classes=self.num_classes, label_only=label_only
        )

    def data(self) -> dict[str, Split]:
        return {
            "train": Split(x=self.x[self.train], y=self.y[self.train], index=self.train),
            "test": Split(x=self.x[self.test], y=self.y[self.test], index=self.test),
        }


@pytest.fixture(scope="session")
def overfit_digits() -> Trained:
    """An MLP trained to 100 % accuracy on 200 noisy digits (test accuracy about 0.74)."""
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    x = x + 0.3 * np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    train, test = np.sort(perm[:200]), np.sort(perm[200:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((128,), alpha=0.0, max_iter=500, random_state=0).fit(x[train], d.target[train])
    assert est.score(x[train], d.target[train]) == 1.0
    return Trained(est, x, d.target, train, test, (64,), 10)


@pytest.fixture(scope="session")
def regularised_cancer() -> Trained:
    """A strongly regularised logistic regression (C=0.01) on half of breast cancer."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    b = load_breast_cancer()
    x = b.data.astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    train, test = np.sort(perm[:285]), np.sort(perm[285:])
    est = make_pipeline(StandardScaler(), LogisticRegression(C=0.01)).fit(x[train], b.target[train])
    return Trained(est, x, b.target, train, test, (30,), 2)


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
    ) -> CheckContext:
        asset = Asset(
            name="model",
            path="model.joblib",
            framework="sklearn",
            input=InputSpec(shape=list(trained.input_shape)),
            num_classes=trained.num_classes,
        )
        return CheckContext(
            asset=asset,
            config=ProjectConfig(version=1, seed=seed),
            base_dir=Path("."),
            budget=budget or Budget(samples=2000),
            params=check.parse_params(params),
            thresholds=list(check.default_thresholds),
            seed=seed,
            target=target if target is not None else trained.target(),
            data=data if data is not None else trained.data(),
        )

    return build
