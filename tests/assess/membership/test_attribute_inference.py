"""membership.attribute-inference: the model's gain over a no-model baseline on a binarised feature."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bastion.assess.membership.attribute import AttributeInference
from bastion.core.budget import Budget
from bastion.core.config import Feature, InputSpec

from .conftest import Trained

COLS = [8, 1, 4, 9, 18, 11]  # "mean symmetry" (binarised at its median: the sensitive feature) + 5 others
NAMES = [
    "mean symmetry",
    "mean texture",
    "mean smoothness",
    "mean fractal dimension",
    "symmetry error",
    "texture error",
]


def _cancer(kind: str) -> Trained:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    b = load_breast_cancer()
    x = b.data[:, COLS].astype(np.float32)
    x[:, 0] = (x[:, 0] > np.median(x[:, 0])).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    train, test = np.sort(perm[:150]), np.sort(perm[150:])
    if kind == "overfit":
        clf = MLPClassifier((256, 256), alpha=0.0, max_iter=3000, random_state=0)
    else:
        clf = LogisticRegression(C=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = make_pipeline(StandardScaler(), clf).fit(x[train], b.target[train])
    return Trained(est, x, b.target, train, test, (len(COLS),), 2)


@pytest.fixture(scope="module")
def overfit() -> Trained:
    return _cancer("overfit")


@pytest.fixture(scope="module")
def regularised() -> Trained:
    return _cancer("regularised")


P = {"sensitive_feature": 0, "likelihood_weight": 16.0}


def test_overfit_model_leaks_the_feature_beyond_the_baseline(overfit, make_ctx) -> None:
    ctx = make_ctx(AttributeInference, overfit, params=P)
    assert AttributeInference().applicable(ctx) is None and AttributeInference().preflight(ctx) == []
    r = AttributeInference().run(ctx)
    assert r.status == "ok"
    adv = r.metrics["advantage"]
    assert adv is not None and adv > 0.06  # measured 0.093 (attack 0.760, baseline 0.667)
    assert r.metrics["attack_accuracy"] == pytest.approx(r.metrics["baseline_accuracy"] + adv)
    lo, hi = r.intervals["advantage"]
    assert lo < adv < hi and lo > 0.0
    for m in ("attack_accuracy", "baseline_accuracy"):
        assert r.intervals[m][0] <= r.metrics[m] <= r.intervals[m][1]
    # Memorisation: the gain is on training records, not on unseen ones (measured -0.048).
    assert r.metrics["advantage@nonmembers"] is not None and r.metrics["advantage@nonmembers"] < adv - 0.05
    (f,) = r.findings
    assert f.rule_id == "membership.attribute-inference.attribute-leakage"
    assert set(f.evidence["exposed_records"]) <= set(overfit.train.tolist())
    # 2 values × (150 members + 209 non-members; 210 of the 419 held-out rows are public) queries.
    assert r.budget_used.queries == 2 * (150 + 209)


def test_regularised_model_gives_no_gain(regularised, make_ctx) -> None:
    r = AttributeInference().run(make_ctx(AttributeInference, regularised, params=P))
    adv = r.metrics["advantage"]
    assert adv is not None and abs(adv) <= 0.05  # measured 0.000
    assert r.findings == []


def test_label_only_target_and_query_budget(overfit, make_ctx) -> None:
    ctx = make_ctx(
        AttributeInference,
        overfit,
        params=P,
        target=overfit.target(label_only=True),
        budget=Budget(queries=500),
    )
    r = AttributeInference().run(ctx)
    assert r.status == "ok" and "label-only" in r.notes["sample"]
    assert r.budget_used.queries <= 500
    assert r.metrics["attack_accuracy"] is not None


def test_skipped_without_a_sensitive_feature(overfit, make_ctx) -> None:
    reason = AttributeInference().applicable(make_ctx(AttributeInference, overfit))
    assert reason is not None and "sensitive_feature" in reason


def test_feature_by_name_and_bad_configs_are_preflight_errors(overfit, make_ctx) -> None:
    ctx = make_ctx(AttributeInference, overfit, params={"sensitive_feature": "mean symmetry"})
    ctx.asset.input = InputSpec(shape=[6], features=[Feature(name=n) for n in NAMES])
    assert AttributeInference().feature_index(ctx) == 0 and AttributeInference().preflight(ctx) == []
    ctx.params = AttributeInference.parse_params({"sensitive_feature": "age"})
    (p,) = AttributeInference().preflight(ctx)
    assert "'age' is not a declared feature" in p
    ctx.params = AttributeInference.parse_params({"sensitive_feature": 1})  # continuous: 500+ values
    (p,) = AttributeInference().preflight(ctx)
    assert "distinct values" in p and "binary or categorical" in p
