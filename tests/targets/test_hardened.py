"""Output hardening (issue 6): temperature, top-k, rounding, label only — and honest capabilities."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from tests.targets.conftest import Cancer, ModelFiles

from bastion.core.budget import Budget, BudgetMeter
from bastion.core.capability import Capability as C
from bastion.core.config import Asset, InputSpec, OutputSpec, parse_config
from bastion.core.errors import BudgetExhausted, ConfigError, TargetError
from bastion.targets.base import Target
from bastion.targets.hardened import (
    HardenedTarget,
    harden_output,
    harden_probabilities,
    hardened_capabilities,
)


class Fixed(Target):
    """A target answering fixed logits for every row (``x[:, 0]`` picks the row of ``table``)."""

    kind = "fixed"

    def __init__(self, table: np.ndarray, caps: set[C]) -> None:
        super().__init__(
            name="fixed", input_shape=(1,), num_classes=table.shape[1], capabilities=frozenset(caps)
        )
        self.table = table

    def _rows(self, x: np.ndarray) -> np.ndarray:
        return self.table[x[:, 0].astype(int)]

    def _predict_logits(self, x: np.ndarray) -> np.ndarray:
        return self._rows(x)

    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = self._rows(x) - self._rows(x).max(axis=1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


LOGITS = np.array([[4.0, 2.0, 1.0, 0.5], [0.1, 0.2, 3.0, 0.0], [1.0, 1.0, 0.0, -1.0]])
X = np.arange(3, dtype=np.float32)[:, None]
FULL = {C.PROBABILITIES, C.LOGITS, C.LOSS_GRADIENTS, C.BATCHED, C.QUERY_LIMITED}


def test_temperature_flattens_and_keeps_the_label() -> None:
    inner = Fixed(LOGITS, FULL)
    t = HardenedTarget(inner, OutputSpec(temperature=4.0))
    p = t.predict_proba(X)
    z = LOGITS / 4.0
    want = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(p, want / want.sum(1, keepdims=True), rtol=1e-12)
    assert (p.max(1) < inner.predict_proba(X).max(1)).all()  # flatter
    np.testing.assert_array_equal(t.predict_label(X), inner.predict_label(X))
    np.testing.assert_allclose(t.predict_logits(X), LOGITS / 4.0)
    # temperature alone keeps logits; gradients never pass (the hardening would be bypassed)
    assert t.capabilities == frozenset({C.PROBABILITIES, C.LOGITS, C.BATCHED, C.QUERY_LIMITED})
    with pytest.raises(TargetError, match="loss-gradients"):
        t.loss_gradient(X, np.zeros(3, dtype=np.int64))


def test_temperature_on_log_probabilities_equals_temperature_on_logits() -> None:
    probs_only = HardenedTarget(Fixed(LOGITS, {C.PROBABILITIES}), OutputSpec(temperature=0.5))
    with_logits = HardenedTarget(Fixed(LOGITS, {C.PROBABILITIES, C.LOGITS}), OutputSpec(temperature=0.5))
    np.testing.assert_allclose(probs_only.predict_proba(X), with_logits.predict_proba(X), rtol=1e-9)
    assert C.LOGITS not in probs_only.capabilities


def test_top_k_renormalises_and_rounding_rounds() -> None:
    inner = Fixed(LOGITS, FULL)
    p0 = inner.predict_proba(X)
    top2 = HardenedTarget(inner, OutputSpec(top_k=2)).predict_proba(X)
    assert ((top2 > 0).sum(1) == 2).all()
    np.testing.assert_allclose(top2.sum(1), 1.0)
    # the kept classes keep their ratio
    np.testing.assert_allclose(top2[0, 0] / top2[0, 1], p0[0, 0] / p0[0, 1])
    one = HardenedTarget(inner, OutputSpec(top_k=1)).predict_proba(X)
    np.testing.assert_array_equal(one, np.eye(4)[[0, 2, 0]])  # row 2 ties: lower index kept
    r = HardenedTarget(inner, OutputSpec(top_k=3, decimals=2))
    out = r.predict_proba(X)
    np.testing.assert_array_equal(out, np.round(out, 2))
    assert np.abs(out.sum(1) - 1.0).max() <= 3 * 0.005 + 1e-12
    assert r.capabilities == frozenset({C.PROBABILITIES, C.BATCHED, C.QUERY_LIMITED})  # no logits


def test_label_only_offers_labels_and_nothing_else() -> None:
    t = HardenedTarget(Fixed(LOGITS, FULL), OutputSpec(label_only=True))
    assert t.capabilities == frozenset({C.LABEL_ONLY, C.BATCHED, C.QUERY_LIMITED})
    np.testing.assert_array_equal(t.predict_label(X), [0, 2, 0])
    for call in (t.predict_proba, t.predict_logits):
        with pytest.raises(TargetError, match="does not offer"):
            call(X)
    assert t.describe()["output"] == {"label_only": True}
    assert t.describe()["inner"]["kind"] == "fixed"


def test_scores_of_a_label_only_model_cannot_be_hardened() -> None:
    with pytest.raises(ConfigError, match="labels only"):
        HardenedTarget(Fixed(LOGITS, {C.LABEL_ONLY}), OutputSpec(decimals=2))
    assert harden_output(inner := Fixed(LOGITS, FULL), None) is inner


def test_queries_are_metered_once_per_row() -> None:
    inner = Fixed(LOGITS, FULL)
    t = HardenedTarget(inner, OutputSpec(decimals=3))
    meter = BudgetMeter(Budget(queries=4))
    with t.metered(meter):
        t.predict_proba(X)
        with pytest.raises(BudgetExhausted):
            t.predict_label(X)
    assert meter.usage().queries == 3 and t.queries == 3 and inner.queries == 3


def test_capabilities_for_planning_match_the_built_target() -> None:
    for spec in (OutputSpec(temperature=2), OutputSpec(top_k=2), OutputSpec(label_only=True), None):
        t = harden_output(Fixed(LOGITS, FULL), spec)
        assert hardened_capabilities(frozenset(FULL), spec) == t.capabilities


@settings(max_examples=60, deadline=None)
@given(
    logits=arrays(np.float64, (5, 6), elements=st.floats(-20, 20)),
    k=st.integers(1, 6),
    decimals=st.one_of(st.none(), st.integers(1, 6)),
)
def test_hardened_rows_are_distributions_with_the_same_top_class(
    logits: np.ndarray, k: int, decimals: int | None
) -> None:
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    spec = OutputSpec(top_k=k if k < 6 else None, decimals=decimals) if (k < 6 or decimals) else None
    if spec is None:
        return
    out = harden_probabilities(p, spec)
    assert out.shape == p.shape and (out >= 0).all()
    assert ((out > 0).sum(1) <= k).all()
    tol = 0.0 if decimals is None else 6 * 0.5 * 10.0**-decimals
    assert np.abs(out.sum(1) - 1.0).max() <= tol + 1e-9
    top = p.argmax(1)
    assert (out[np.arange(5), top] >= out.max(1) - 1e-12).all()  # the top class stays on top (ties allowed)


def test_config_validation_names_the_field() -> None:
    def cfg(output: Any, **extra: Any) -> dict[str, Any]:
        a = {"name": "m", "path": "m.pt", "framework": "torch", "num_classes": 3, "output": output, **extra}
        return {"version": 1, "assets": [a]}

    assert parse_config(cfg({"top_k": 2, "decimals": 3})).assets[0].output == OutputSpec(top_k=2, decimals=3)
    cases = [
        ({"top_k": 0}, "assets[0].output.top_k"),
        ({"decimals": 0}, "assets[0].output.decimals"),
        ({"temperature": -1}, "assets[0].output.temperature"),
        ({"topk": 2}, "assets[0].output.topk"),
        ({}, "assets[0].output: set at least one"),
        ({"label_only": True, "decimals": 2}, "assets[0].output: label_only returns no scores"),
        ({"top_k": 3}, "output.top_k: 3 keeps all 3 classes"),
        # strict types: a YAML true, a quoted number or a non-finite temperature is a mistake
        ({"top_k": True}, "assets[0].output.top_k: Input should be a valid integer"),
        ({"decimals": "2"}, "assets[0].output.decimals: Input should be a valid integer"),
        ({"label_only": "yes"}, "assets[0].output.label_only: Input should be a valid boolean"),
        ({"temperature": float("nan")}, "assets[0].output.temperature: Input should be a finite number"),
        ({"temperature": float("inf")}, "assets[0].output.temperature: Input should be a finite number"),
    ]
    for output, where in cases:
        with pytest.raises(ConfigError) as exc:
            parse_config(cfg(output))
        assert any(where in p for p in exc.value.problems), (output, exc.value.problems)


def test_build_target_applies_the_asset_output(
    tmp_path: Path, model_files: ModelFiles, cancer: Cancer
) -> None:
    pytest.importorskip("torch")
    from bastion.targets import TorchTarget, build_target

    shutil.copy(model_files.torchscript, tmp_path / "mlp.ts")
    a = Asset(
        name="m",
        path="mlp.ts",
        framework="torch",
        format="torchscript",
        input=InputSpec(shape=[30]),
        num_classes=2,
        output=OutputSpec(decimals=1),
    )
    t = build_target(a, base_dir=tmp_path)
    assert isinstance(t, HardenedTarget) and isinstance(t.inner, TorchTarget)
    assert C.LOSS_GRADIENTS not in t.capabilities and not hasattr(t, "module")
    p = t.predict_proba(cancer.x_test[:20])
    np.testing.assert_array_equal(p, np.round(p, 1))
    plain = build_target(a.model_copy(update={"output": None}), base_dir=tmp_path)
    assert isinstance(plain, TorchTarget)
