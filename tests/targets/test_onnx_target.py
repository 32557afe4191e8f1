"""OnnxTarget: torch-exported logits graphs, skl2onnx-style outputs, verified bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from tests.targets.conftest import Cancer, ModelFiles, onnx_graph_from_mlp
from tests.targets.tiny_models import MLP

from bastion.core.budget import Budget, BudgetMeter
from bastion.core.capability import Capability
from bastion.core.errors import BudgetExhausted, IntegrityError, TargetError
from bastion.targets.onnx_target import OnnxTarget
from bastion.targets.torch_target import TorchTarget, load_torchscript

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402


def make(path: Path | str, **kw: object) -> OnnxTarget:
    kw.setdefault("input_shape", (30,))
    return OnnxTarget(path, name="mlp-onnx", num_classes=2, **kw)  # type: ignore[arg-type]


def sklearn_style_graph(lr: LogisticRegression, *, zipmap: bool) -> bytes:
    """An skl2onnx-like graph for a binary LR: outputs ``label`` and probabilities (ZipMap or tensor)."""
    w = np.vstack([np.zeros_like(lr.coef_), lr.coef_]).astype(np.float32)
    b = np.array([0.0, lr.intercept_[0]], dtype=np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "W", "b"], ["z"], transB=1),
        helper.make_node("Softmax", ["z"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, ["n"])]
    if zipmap:
        nodes.append(
            helper.make_node(
                "ZipMap",
                ["probabilities"],
                ["output_probability"],
                domain="ai.onnx.ml",
                classlabels_int64s=[0, 1],
            )
        )
        map_t = helper.make_map_type_proto(
            TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])
        )
        outputs.append(helper.make_value_info("output_probability", helper.make_sequence_type_proto(map_t)))
    else:
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 2]))
    graph = helper.make_graph(
        nodes,
        "lr",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 30])],
        outputs,
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    m.ir_version = 8
    return bytes(m.SerializeToString())


def test_torch_torchscript_onnx_agree(mlp: MLP, model_files: ModelFiles, cancer: Cancer) -> None:
    x = cancer.x_test
    t_torch = TorchTarget(mlp, name="a", input_shape=(30,), num_classes=2)
    t_ts = TorchTarget(load_torchscript(model_files.torchscript), name="b", input_shape=(30,), num_classes=2)
    t_onnx = make(model_files.onnx)
    assert t_onnx.output == "logits"
    assert t_onnx.capabilities == {Capability.LOGITS, Capability.PROBABILITIES, Capability.BATCHED}
    ref = t_torch.predict_logits(x)
    np.testing.assert_allclose(t_ts.predict_logits(x), ref, atol=1e-4)
    np.testing.assert_allclose(t_onnx.predict_logits(x), ref, atol=1e-4)
    np.testing.assert_allclose(t_onnx.predict_proba(x), t_torch.predict_proba(x), atol=1e-4)
    np.testing.assert_array_equal(t_onnx.predict_label(x), t_torch.predict_label(x))
    with pytest.raises(TargetError, match="loss-gradients"):
        t_onnx.loss_gradient(x[:2], cancer.y_test[:2])


def test_hand_built_graph_agrees_and_small_batches(mlp: MLP, tmp_path: Path, cancer: Cancer) -> None:
    p = tmp_path / "hand.onnx"
    p.write_bytes(onnx_graph_from_mlp(mlp))
    ref = TorchTarget(mlp, name="a", input_shape=(30,), num_classes=2).predict_logits(cancer.x_test)
    np.testing.assert_allclose(make(p, batch_size=16).predict_logits(cancer.x_test), ref, atol=1e-4)


def test_fixed_batch_dimension_is_chunked_and_padded(mlp: MLP, tmp_path: Path, cancer: Cancer) -> None:
    p = tmp_path / "batch4.onnx"
    p.write_bytes(onnx_graph_from_mlp(mlp, batch=4))
    t = make(p)
    assert t.batch_size == 4
    ref = TorchTarget(mlp, name="a", input_shape=(30,), num_classes=2).predict_logits(cancer.x_test[:11])
    np.testing.assert_allclose(t.predict_logits(cancer.x_test[:11]), ref, atol=1e-4)


def test_flattened_graph_input_is_reshaped(model_files: ModelFiles, cancer: Cancer) -> None:
    t = make(model_files.onnx, input_shape=(5, 6))
    x = cancer.x_test[:7]
    np.testing.assert_allclose(t.predict_logits(x.reshape(7, 5, 6)), make(model_files.onnx).predict_logits(x))
    with pytest.raises(TargetError, match=r"samples of shape \(30,\)"):
        make(model_files.onnx, input_shape=(29,))


@pytest.mark.parametrize("zipmap", [True, False])
def test_sklearn_style_outputs(
    zipmap: bool, logreg: LogisticRegression, tmp_path: Path, cancer: Cancer
) -> None:
    p = tmp_path / "lr.onnx"
    p.write_bytes(sklearn_style_graph(logreg, zipmap=zipmap))
    t = make(p)
    assert t.output == "probabilities"
    assert t.capabilities == {Capability.PROBABILITIES, Capability.BATCHED}
    np.testing.assert_allclose(t.predict_proba(cancer.x_test), logreg.predict_proba(cancer.x_test), atol=1e-5)
    labels = make(p, output="labels")
    assert Capability.LABEL_ONLY in labels.capabilities
    np.testing.assert_array_equal(labels.predict_label(cancer.x_test), logreg.predict(cancer.x_test))
    if zipmap:
        with pytest.raises(TargetError, match="probability map"):
            make(p, output="logits")


def test_loads_from_verified_bytes_and_checks_the_hash(model_files: ModelFiles, tmp_path: Path) -> None:
    data = model_files.onnx.read_bytes()
    elsewhere = tmp_path / "swapped.onnx"
    elsewhere.write_bytes(b"not onnx at all")
    t = make(elsewhere, model_bytes=data, expected_sha256=hashlib.sha256(data).hexdigest())
    assert t.sha256 == hashlib.sha256(data).hexdigest()
    assert t.predict_proba(np.zeros((2, 30), dtype=np.float32)).shape == (2, 2)
    with pytest.raises(IntegrityError):
        make(model_files.onnx, expected_sha256="0" * 64)


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="not found"):
        make(tmp_path / "nothing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    with pytest.raises(TargetError, match="not a loadable ONNX model"):
        make(bad)


def test_budget(model_files: ModelFiles, cancer: Cancer) -> None:
    t = make(model_files.onnx)
    meter = BudgetMeter(Budget(queries=20))
    with t.metered(meter):
        t.predict_proba(cancer.x_test[:20])
        with pytest.raises(BudgetExhausted):
            t.predict_logits(cancer.x_test[:1])
    assert t.queries == 20
