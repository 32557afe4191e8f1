"""FGSM, PGD-L2, APGD-CE and APGD-DLR on the digits CNN, the cancer MLP and a logistic regression."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.assess.evasion.conftest import CATEGORICAL, IMMUTABLE, INTEGER, RecordingTarget, robust

from bastion.assess.evasion._apgd import checkpoints
from bastion.assess.evasion._common import metric_key
from bastion.assess.evasion.apgd_ce import APGDCE
from bastion.assess.evasion.apgd_dlr import APGDDLR
from bastion.assess.evasion.fgsm import FGSM
from bastion.assess.evasion.pgd import PGD
from bastion.assess.evasion.pgd_l2 import PGDL2
from bastion.core.budget import Budget
from bastion.core.registry import attacks

torch = pytest.importorskip("torch")


def test_registered() -> None:
    for plugin in (FGSM, PGDL2, APGDCE, APGDDLR):
        assert attacks.get(plugin.id) is plugin
        assert plugin.references and plugin.threat_model


def test_checkpoints_follow_the_reference_code() -> None:
    # the paper's p_j at N = 100; the auto-attack / torchattacks integer windows elsewhere
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(50) == [11, 21, 30, 38, 45]
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert checkpoints(1) == []


def test_fgsm_is_weaker_than_pgd(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    params = {"eps": [0.1]}
    fgsm = FGSM().run(make_ctx(FGSM, digits_target, digits, params=params))
    pgd = PGD().run(make_ctx(PGD, digits_target, digits, params={**params, "steps": 20}))
    assert fgsm.metrics["clean_accuracy"] == pgd.metrics["clean_accuracy"]
    assert robust(pgd, 0.1) <= robust(fgsm, 0.1) < fgsm.metrics["clean_accuracy"]  # type: ignore[operator]
    assert fgsm.metrics[metric_key("queries_per_sample", 0.1)] == 2.0
    norm = fgsm.metrics[metric_key("median_perturbation", 0.1)]
    assert norm is not None and norm == pytest.approx(0.1, abs=1e-6)


def test_apgd_at_least_as_strong_as_pgd(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    params = {"eps": [0.05, 0.1]}
    pgd = PGD().run(make_ctx(PGD, digits_target, digits, params={**params, "steps": 20}))
    ce = APGDCE().run(make_ctx(APGDCE, digits_target, digits, params={**params, "steps": 20}))
    dlr = APGDDLR().run(make_ctx(APGDDLR, digits_target, digits, params={**params, "steps": 20}))
    for e in (0.05, 0.1):
        assert robust(ce, e) <= robust(pgd, e) + 0.02
        assert robust(dlr, e) <= robust(pgd, e) + 0.05
    norm = ce.metrics[metric_key("median_perturbation", 0.1)]
    assert norm is not None and norm <= 0.1 + 1e-6
    assert ce.notes["backend"].startswith("torch")


def test_apgd_targeted(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    res = APGDDLR().run(
        make_ctx(
            APGDDLR,
            digits_target,
            digits,
            params={"eps": [0.1], "steps": 10, "targeted": True, "target_classes": 2},
            budget=Budget(samples=40),
        )
    )
    assert robust(res, 0.1) < res.metrics["clean_accuracy"]  # type: ignore[operator]


def test_apgd_dlr_needs_torch(cancer: Any, cancer_lr_target: Any, make_ctx: Any) -> None:
    ctx = make_ctx(APGDDLR, cancer_lr_target, cancer)
    assert "PyTorch" in (APGDDLR().applicable(ctx) or "")


def test_pgd_l2_norm_and_strength(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    res = PGDL2().run(make_ctx(PGDL2, digits_target, digits, budget=Budget(samples=60)))
    values = [robust(res, e) for e in (0.25, 0.5, 1.0)]
    assert values == sorted(values, reverse=True)
    assert values[-1] < res.metrics["clean_accuracy"] - 0.3  # type: ignore[operator]
    for e in (0.25, 0.5, 1.0):
        norm = res.metrics[metric_key("median_perturbation", e)]
        assert norm is None or norm <= e + 1e-4
    assert "L2" in res.notes["median_perturbation"]


@pytest.mark.parametrize("plugin", [FGSM, PGDL2, APGDCE])
def test_tabular_rules_on_sklearn(plugin: Any, cancer: Any, cancer_lr_target: Any, make_ctx: Any) -> None:
    rec = RecordingTarget(cancer_lr_target)
    params: dict[str, Any] = {"eps": [0.1]}
    if plugin is not FGSM:
        params["steps"] = 5
    res = plugin().run(make_ctx(plugin, rec, cancer, params=params, budget=Budget(samples=30)))
    assert res.notes["backend"].startswith("generic")
    assert robust(res, 0.1) < res.metrics["clean_accuracy"]  # type: ignore[operator]
    test = cancer.test.x
    lo = np.array([f.min for f in cancer.spec.features])
    hi = np.array([f.max for f in cancer.spec.features])
    for rows in rec.rows:
        rows = rows.reshape(len(rows), -1)
        # every queried row: immutable and categorical values equal some test row's clean value
        for col in (*IMMUTABLE, CATEGORICAL):
            assert np.isin(rows[:, col], test[:, col]).all()
        assert np.all(rows >= np.minimum(lo, test.min(axis=0)) - 1e-4)
        assert np.all(rows <= np.maximum(hi, test.max(axis=0)) + 1e-4)
    last = rec.rows[-1].reshape(len(rec.rows[-1]), -1)
    assert np.allclose(last[:, INTEGER], np.round(last[:, INTEGER]))


def test_inputs_not_mutated_and_deterministic(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    before = digits.test.x.copy()
    a = APGDCE().run(make_ctx(APGDCE, digits_target, digits, params={"eps": [0.1], "steps": 5}, seed=3))
    b = APGDCE().run(make_ctx(APGDCE, digits_target, digits, params={"eps": [0.1], "steps": 5}, seed=3))
    assert a.metrics == b.metrics
    assert np.array_equal(before, digits.test.x)


def test_pgd_white_box_on_a_linear_svm(cancer: Any, make_ctx: Any) -> None:
    """A scikit-learn linear SVM is attacked white-box through its decision-function gradient."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from bastion.core.capability import Capability
    from bastion.targets.sklearn_target import SklearnTarget

    svm = make_pipeline(StandardScaler(), LinearSVC(max_iter=5000, random_state=0))
    svm.fit(cancer.train.x, cancer.train.y)
    target = SklearnTarget(svm, name="svm", input_shape=(30,), num_classes=2)
    assert Capability.LOSS_GRADIENTS in target.capabilities
    assert PGD().applicable(make_ctx(PGD, target, cancer)) is None
    ctx = make_ctx(PGD, target, cancer, params={"eps": [0.02, 0.1], "steps": 10}, budget=Budget(samples=60))
    assert PGD().preflight(ctx) == []
    res = PGD().run(ctx)
    assert res.notes["backend"].startswith("generic")
    clean = res.metrics["clean_accuracy"]
    assert clean is not None and clean > 0.9
    assert robust(res, 0.1) <= robust(res, 0.02) < clean
    assert robust(res, 0.1) < 0.5 * clean
