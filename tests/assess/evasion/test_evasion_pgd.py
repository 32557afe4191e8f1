"""``evasion.pgd`` on a digits CNN, a breast-cancer MLP (torch) and a logistic regression (sklearn)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.assess.evasion.conftest import CATEGORICAL, IMMUTABLE, INTEGER, RecordingTarget, robust

from bastion.assess.evasion._common import evaluation_set, metric_key, resolve_bounds
from bastion.assess.evasion.pgd import PGD
from bastion.core.budget import Budget, BudgetMeter
from bastion.core.capability import Capability
from bastion.core.config import Threshold
from bastion.core.errors import PluginError
from bastion.core.findings import Threat
from bastion.core.registry import attacks
from bastion.core.results import CheckResult
from bastion.core.severity import Severity

torch = pytest.importorskip("torch")


def test_registered_with_its_declarations() -> None:
    assert attacks.get("evasion.pgd") is PGD
    assert PGD.threat is Threat.EVASION
    assert PGD.requires == frozenset({Capability.LOSS_GRADIENTS})
    assert {"AML.T0015", "AML.T0043"} <= set(PGD.atlas)
    assert any("1706.06083" in r for r in PGD.references)
    th = PGD.default_thresholds[0]
    assert th.metric == "robust_accuracy@eps=0.05" and th.rule == "low-robust-accuracy"
    with pytest.raises(PluginError, match="steps"):
        PGD.parse_params({"steps": 0})
    with pytest.raises(PluginError, match="restarts"):
        PGD.parse_params({"restarts": 0})


def test_digits_cnn_default_grid(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    progress: list[float] = []
    ctx = make_ctx(PGD, digits_target, digits)
    ctx.progress = progress.append
    before = digits_target.queries
    res = PGD().run(ctx)
    grid = [0.05, 0.1, 0.2]
    clean = res.metrics["clean_accuracy"]
    assert clean is not None and clean >= 0.8
    values = [robust(res, e) for e in grid]
    assert all(v <= clean for v in values)
    assert values == sorted(values, reverse=True)
    assert values[-1] <= 0.1  # an undefended CNN breaks at ε = 0.2
    for e in grid:
        lo, hi = res.intervals[metric_key("robust_accuracy", e)]
        assert lo <= robust(res, e) <= hi
        asr = res.metrics[metric_key("attack_success_rate", e)]
        assert asr is not None and 0 <= asr <= 1
        assert res.metrics[metric_key("robust_accuracy_drop", e)] == pytest.approx(clean - robust(res, e))
        norm = res.metrics[metric_key("median_perturbation", e)]
        assert norm is not None and 0 < norm <= e + 1e-6
        assert res.metrics[metric_key("queries_per_sample", e)] == 21.0
    assert res.series["robust_accuracy"].x == grid and res.series["robust_accuracy"].y == values
    assert res.series["clean_accuracy"].y == [clean] * 3
    assert res.notes["backend"].startswith("torch")
    assert progress[-1] == 1.0
    used = res.budget_used
    assert used is not None and not used.exhausted and used.samples == 100
    assert used.queries == digits_target.queries - before  # the native loop counts on the target too
    assert CheckResult.model_validate_json(res.model_dump_json()) == res


def test_large_eps_breaks_the_cnn(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    res = PGD().run(make_ctx(PGD, digits_target, digits, params={"eps": [0.3]}, budget=Budget(samples=60)))
    assert robust(res, 0.3) <= 0.05


def test_beats_uniform_noise_of_the_same_eps(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    eps = 0.1
    res = PGD().run(make_ctx(PGD, digits_target, digits, params={"eps": [eps]}, budget=Budget(samples=100)))
    ev = evaluation_set(digits.test, 100, 0)
    noise = np.random.default_rng(5).uniform(-eps, eps, size=ev.x.shape)
    noisy = np.clip(ev.x + noise, 0, 1).astype(np.float32)
    ok = (digits_target.predict_label(ev.x) == ev.y) & (digits_target.predict_label(noisy) == ev.y)
    assert robust(res, eps) < ok.mean() - 0.1


def _reference_pgd(model: Any, x: np.ndarray, y: np.ndarray, eps: float, steps: int) -> np.ndarray:
    """Textbook L∞ PGD from x (no random start) on [0, 1] images; True where still correct."""
    x0 = torch.from_numpy(x)
    lo = torch.from_numpy(np.maximum(x.astype(np.float64) - eps, 0.0).astype(np.float32))
    hi = torch.from_numpy(np.minimum(x.astype(np.float64) + eps, 1.0).astype(np.float32))
    alpha = torch.tensor(np.float32(2.5 * eps / steps))
    yt = torch.from_numpy(y)
    xa = x0.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xa), yt, reduction="sum")
        (g,) = torch.autograd.grad(loss, xa)
        xa = torch.max(torch.min(xa.detach() + alpha * g.sign(), hi), lo)
    with torch.no_grad():
        clean_ok = model(x0).argmax(1) == yt
        adv_ok = model(xa).argmax(1) == yt
    return (clean_ok & adv_ok).numpy()


def test_matches_a_hand_written_reference(
    digits: Any, digits_cnn: Any, digits_target: Any, make_ctx: Any
) -> None:
    eps, steps, n = 0.1, 10, 120
    params = {"eps": [eps], "steps": steps, "random_start": False}
    res = PGD().run(make_ctx(PGD, digits_target, digits, params=params, budget=Budget(samples=n)))
    ev = evaluation_set(digits.test, n, 0)
    ref = _reference_pgd(digits_cnn, ev.x, ev.y, eps, steps)
    assert robust(res, eps) == pytest.approx(ref.mean())


def test_native_and_generic_backends_agree(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    runs = []
    for backend in ("torch", "generic"):
        params = {"eps": [0.05, 0.1], "steps": 10, "backend": backend}
        runs.append(PGD().run(make_ctx(PGD, digits_target, digits, params=params, budget=Budget(samples=60))))
    assert runs[0].notes["backend"].startswith("torch") and runs[1].notes["backend"].startswith("generic")
    assert runs[0].metrics == runs[1].metrics
    assert runs[0].budget_used is not None and runs[1].budget_used is not None
    assert runs[0].budget_used.queries == runs[1].budget_used.queries


@pytest.mark.parametrize("backend", ["torch", "generic"])
def test_tabular_rules_hold_for_every_adversarial_example(
    cancer: Any, cancer_mlp_target: Any, make_ctx: Any, backend: str
) -> None:
    eps = 0.1
    ctx = make_ctx(PGD, cancer_mlp_target, cancer, params={"eps": [eps], "steps": 10, "backend": backend})
    check = PGD()
    bounds = resolve_bounds(cancer.spec, (30,), cancer.train.x)
    ev = evaluation_set(cancer.test, 80, 0)
    x_before = ev.x.copy()
    with check.engine(ctx, BudgetMeter(Budget()), bounds, np.random.default_rng(0)) as engine:
        out = engine.attack(ev.x, ev.y, eps, 1)
    np.testing.assert_array_equal(ev.x, x_before)
    adv, x = out.x_adv.astype(np.float64), ev.x.astype(np.float64)
    assert out.success.any() and (out.queries == 11).all()
    fixed = [CATEGORICAL, *IMMUTABLE]
    np.testing.assert_array_equal(adv[:, fixed], x[:, fixed])
    np.testing.assert_array_equal(adv[:, INTEGER], np.round(adv[:, INTEGER]))
    e = bounds.eps_values(eps)
    assert np.all(np.abs(adv - x) <= e + 1e-4 * (1 + np.abs(x)))
    inside = (x >= bounds.lo) & (x <= bounds.hi)
    assert np.all(((adv >= bounds.lo - 1e-4) & (adv <= bounds.hi + 1e-4)) | ~inside)
    assert np.all(bounds.linf(out.x_adv, ev.x) <= eps + 1e-5)


def test_queried_rows_keep_fixed_features(cancer: Any, cancer_mlp_target: Any, make_ctx: Any) -> None:
    rec = RecordingTarget(cancer_mlp_target)
    params = {"eps": [0.05], "steps": 5, "backend": "generic"}
    res = PGD().run(make_ctx(PGD, rec, cancer, params=params, budget=Budget(samples=40)))
    assert res.status == "ok" and rec.rows
    fixed = [CATEGORICAL, *IMMUTABLE]
    clean = {tuple(r) for r in cancer.test.x[:, fixed]}
    for batch in rec.rows:
        assert {tuple(r) for r in batch[:, fixed]} <= clean


def test_sklearn_logistic_regression_through_loss_gradients(
    cancer: Any, cancer_lr_target: Any, make_ctx: Any
) -> None:
    res = PGD().run(make_ctx(PGD, cancer_lr_target, cancer, params={"steps": 10}, budget=Budget(samples=60)))
    assert res.notes["backend"].startswith("generic")
    clean = res.metrics["clean_accuracy"]
    values = [robust(res, e) for e in (0.01, 0.02, 0.05, 0.1)]
    assert clean is not None and clean >= 0.9
    assert values == sorted(values, reverse=True) and values[-1] < clean - 0.3
    assert "integer features rounded" in res.notes["bounds"]


def test_small_query_budget_stops_cleanly(cancer: Any, cancer_mlp_target: Any, make_ctx: Any) -> None:
    budget = Budget(queries=1500, samples=50)
    ctx = make_ctx(PGD, cancer_mlp_target, cancer, budget=budget)
    assert any(
        "budget.queries" in p
        for p in PGD().preflight(
            make_ctx(PGD, cancer_mlp_target, cancer, budget=Budget(queries=500, samples=50))
        )
    )
    assert PGD().preflight(ctx) == []
    res = PGD().run(ctx)
    used = res.budget_used
    assert used is not None and used.exhausted and used.queries <= 1500
    assert res.metrics["clean_accuracy"] is not None
    assert res.metrics[metric_key("robust_accuracy", 0.01)] is not None
    assert res.metrics[metric_key("robust_accuracy", 0.1)] is None
    assert res.series["robust_accuracy"].y[-1] is None
    assert "budget" in res.notes and "0.01" in res.notes["budget"]
    assert CheckResult.model_validate_json(res.model_dump_json()) == res


def test_deterministic_and_inputs_untouched(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    x_before, y_before = digits.test.x.copy(), digits.test.y.copy()
    runs = [
        PGD().run(
            make_ctx(
                PGD,
                digits_target,
                digits,
                params={"eps": [0.1], "steps": 8},
                budget=Budget(samples=50),
                seed=3,
            )
        )
        for _ in range(2)
    ]
    assert runs[0].metrics == runs[1].metrics and runs[0].intervals == runs[1].intervals
    np.testing.assert_array_equal(digits.test.x, x_before)
    np.testing.assert_array_equal(digits.test.y, y_before)


def test_thresholds_make_findings_and_join_the_grid(digits: Any, digits_target: Any, make_ctx: Any) -> None:
    th = [
        Threshold(
            metric="robust_accuracy@eps=0.25",
            op="lt",
            value=0.5,
            severity=Severity.HIGH,
            rule="low-robust-accuracy",
        )
    ]
    res = PGD().run(
        make_ctx(PGD, digits_target, digits, params={"eps": [0.05]}, thresholds=th, budget=Budget(samples=50))
    )
    assert res.series["robust_accuracy"].x == [0.05, 0.25]
    assert "0.25" in res.notes["eps_grid"]
    (f,) = res.findings
    assert f.rule_id == "evasion.pgd.low-robust-accuracy" and f.severity is Severity.HIGH
    assert f.threat is Threat.EVASION and "AML.T0015" in f.atlas
    assert f.evidence["robust_accuracy@eps=0.25"] == robust(res, 0.25)
    assert len(f.evidence["interval"]) == 2 and f.evidence["eps_unit"] == "absolute"


def test_applicable_and_preflight_name_every_problem(
    digits: Any, digits_target: Any, cancer: Any, cancer_mlp_target: Any, make_ctx: Any
) -> None:
    from sklearn.tree import DecisionTreeClassifier

    from bastion.targets.sklearn_target import SklearnTarget

    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(cancer.train.x, cancer.train.y)
    no_grad = SklearnTarget(tree, name="tree", input_shape=(30,), num_classes=2)
    assert "loss-gradients" in (PGD().applicable(make_ctx(PGD, no_grad, cancer)) or "")
    assert PGD().applicable(make_ctx(PGD, digits_target, digits, splits={"train": digits.train})) == (
        "needs a labelled test split"
    )
    assert "classification" in (
        PGD().applicable(make_ctx(PGD, cancer_mlp_target, cancer, task="regression")) or ""
    )
    assert PGD().applicable(make_ctx(PGD, digits_target, digits)) is None

    th = [
        Threshold(metric="robust_acc@eps=0.1", op="lt", value=0.5),
        Threshold(metric="robust_accuracy@eps=3", op="lt", value=0.5),
    ]
    problems = PGD().preflight(
        make_ctx(PGD, cancer_mlp_target, cancer, params={"eps": [-0.1, 0.05, 2.0]}, thresholds=th)
    )
    assert any("eps[0]" in p and "positive" in p for p in problems)
    assert any("eps[2]" in p and "beyond the feature range" in p for p in problems)
    assert any("robust_acc@eps=0.1" in p for p in problems)
    assert any("thresholds[1]" in p and "ε 3 is beyond" in p for p in problems)
    assert len(problems) == 4
    assert any(
        "beyond the input range" in p
        for p in PGD().preflight(make_ctx(PGD, digits_target, digits, params={"eps": [1.5]}))
    )
    no_bounds = make_ctx(PGD, cancer_mlp_target, cancer, spec=None, splits={"test": cancer.test})
    assert any("no declared range" in p for p in PGD().preflight(no_bounds))
    assert any(
        "backend" in p for p in PGD().preflight(make_ctx(PGD, no_grad, cancer, params={"backend": "torch"}))
    )
    assert any("test split" in p for p in PGD().preflight(make_ctx(PGD, digits_target, digits, splits={})))


def test_missing_spec_falls_back_to_train_ranges(cancer: Any, cancer_mlp_target: Any, make_ctx: Any) -> None:
    res = PGD().run(
        make_ctx(
            PGD,
            cancer_mlp_target,
            cancer,
            spec=None,
            params={"eps": [0.05], "steps": 5},
            budget=Budget(samples=30),
        )
    )
    assert "train split" in res.notes["bounds"] and res.notes["eps_unit"].startswith("fraction")
    assert res.metrics[metric_key("robust_accuracy", 0.05)] is not None
