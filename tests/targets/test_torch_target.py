"""TorchTarget and the torch loaders (TorchScript archive, weights-only state_dict)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from tests.targets.conftest import Cancer, ModelFiles
from tests.targets.tiny_models import MLP, DropoutMLP

from bastion.core.budget import Budget, BudgetMeter
from bastion.core.capability import Capability
from bastion.core.errors import BudgetExhausted, ConfigError, TargetError
from bastion.targets.torch_target import TorchTarget, load_state_dict_model, load_torchscript

torch = pytest.importorskip("torch")

REF = "tests.targets.tiny_models"


def make(module: torch.nn.Module, **kw: object) -> TorchTarget:
    return TorchTarget(module, name="mlp", input_shape=(30,), num_classes=2, **kw)


def test_capabilities_and_describe(mlp: MLP) -> None:
    t = make(mlp)
    assert t.capabilities == {
        Capability.LOGITS,
        Capability.PROBABILITIES,
        Capability.LOSS_GRADIENTS,
        Capability.BATCHED,
    }
    assert t.module is mlp
    d = t.describe()
    assert d["kind"] == "torch" and d["input_shape"] == [30] and d["num_classes"] == 2


def test_predictions_match_module_and_are_accurate(mlp: MLP, cancer: Cancer) -> None:
    t = make(mlp)
    x = cancer.x_test
    with torch.no_grad():
        ref = mlp(torch.from_numpy(x)).numpy()
    logits = t.predict_logits(x)
    proba = t.predict_proba(x)
    labels = t.predict_label(x)
    assert logits.shape == (len(x), 2) and proba.shape == (len(x), 2) and labels.dtype == np.int64
    np.testing.assert_allclose(logits, ref, atol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(labels, ref.argmax(axis=1))
    assert (labels == cancer.y_test).mean() > 0.9


def test_small_batches_give_the_same_answers(mlp: MLP, cancer: Cancer) -> None:
    big = make(mlp).predict_logits(cancer.x_test)
    small = make(mlp, batch_size=7).predict_logits(cancer.x_test)
    np.testing.assert_allclose(small, big, atol=1e-6)


def test_module_is_put_in_eval_mode(cancer: Cancer) -> None:
    torch.manual_seed(1)
    model = DropoutMLP().train()
    t = make(model)
    assert not t.module.training
    a = t.predict_logits(cancer.x_test[:20])
    b = t.predict_logits(cancer.x_test[:20])
    np.testing.assert_array_equal(a, b)


def test_inputs_are_not_mutated(mlp: MLP, cancer: Cancer) -> None:
    x = cancer.x_test[:16].copy()
    before = x.copy()
    t = make(mlp)
    t.predict_proba(x)
    t.loss_gradient(x, cancer.y_test[:16])
    np.testing.assert_array_equal(x, before)


def _double_loss(model: MLP, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        out = model(torch.from_numpy(x))
        return float(torch.nn.functional.cross_entropy(out, torch.from_numpy(y), reduction="sum"))


def test_loss_gradient_matches_finite_differences(mlp: MLP, cancer: Cancer) -> None:
    t = make(mlp)
    x = cancer.x_test[:5]
    y = cancer.y_test[:5]
    g = t.loss_gradient(x, y)
    assert g.shape == x.shape and g.dtype == np.float32
    m64 = copy.deepcopy(mlp).double()
    x64 = x.astype(np.float64)
    h = 1e-6
    fd = np.zeros_like(x64)
    for i in range(len(x64)):
        for j in range(x64.shape[1]):
            xp, xm = x64[i : i + 1].copy(), x64[i : i + 1].copy()
            xp[0, j] += h
            xm[0, j] -= h
            fd[i, j] = (_double_loss(m64, xp, y[i : i + 1]) - _double_loss(m64, xm, y[i : i + 1])) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-3, atol=1e-5)


def test_gradient_rows_do_not_depend_on_the_batch(mlp: MLP, cancer: Cancer) -> None:
    t = make(mlp, batch_size=3)
    x, y = cancer.x_test[:10], cancer.y_test[:10]
    together = t.loss_gradient(x, y)
    alone = np.concatenate([t.loss_gradient(x[i : i + 1], y[i : i + 1]) for i in range(10)])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_probability_output_module(mlp: MLP, cancer: Cancer) -> None:
    soft = torch.nn.Sequential(copy.deepcopy(mlp), torch.nn.Softmax(dim=1))
    t = make(soft, output="probabilities")
    assert Capability.LOGITS not in t.capabilities
    np.testing.assert_allclose(
        t.predict_proba(cancer.x_test), make(mlp).predict_proba(cancer.x_test), atol=1e-6
    )
    with pytest.raises(TargetError, match="logits"):
        t.predict_logits(cancer.x_test)
    g_soft = t.loss_gradient(cancer.x_test[:4], cancer.y_test[:4])
    g_log = make(mlp).loss_gradient(cancer.x_test[:4], cancer.y_test[:4])
    np.testing.assert_allclose(g_soft, g_log, rtol=1e-3, atol=1e-5)


def test_single_logit_binary_model_is_widened(cancer: Cancer) -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(30, 1)
    t = make(lin)
    x = cancer.x_test[:8]
    with torch.no_grad():
        z = lin(torch.from_numpy(x)).numpy()[:, 0]
    np.testing.assert_allclose(t.predict_logits(x)[:, 1] - t.predict_logits(x)[:, 0], z, atol=1e-6)
    np.testing.assert_allclose(t.predict_proba(x)[:, 1], 1 / (1 + np.exp(-z)), atol=1e-6)


def test_wrong_output_width_is_a_target_error(mlp: MLP, cancer: Cancer) -> None:
    t = TorchTarget(mlp, name="mlp", input_shape=(30,), num_classes=3)
    with pytest.raises(TargetError, match=r"expected \(N, 3\)"):
        t.predict_proba(cancer.x_test[:2])


def test_shape_mismatch_and_bad_labels(mlp: MLP, cancer: Cancer) -> None:
    t = make(mlp)
    with pytest.raises(TargetError, match=r"\(29,\)"):
        t.predict_proba(cancer.x_test[:, :29])
    with pytest.raises(TargetError, match="labels"):
        t.loss_gradient(cancer.x_test[:3], np.array([0, 1, 2]))
    with pytest.raises(TargetError, match="labels of shape"):
        t.loss_gradient(cancer.x_test[:3], np.array([0, 1]))
    with pytest.raises(ConfigError):
        make(mlp, output="labels")


def test_query_counting_and_budget(mlp: MLP, cancer: Cancer) -> None:
    t = make(mlp)
    meter = BudgetMeter(Budget(queries=10))
    with t.metered(meter):
        t.predict_proba(cancer.x_test[:6])
        t.predict_label(cancer.x_test[:3])
        with pytest.raises(BudgetExhausted):
            t.loss_gradient(cancer.x_test[:2], cancer.y_test[:2])
    assert meter.queries == 9
    assert t.queries == 9
    t.predict_logits(cancer.x_test[:5])  # outside the block: counted, not metered
    assert t.queries == 14 and meter.queries == 9


# -- loaders --------------------------------------------------------------------------------


def test_torchscript_agrees_with_the_module(mlp: MLP, model_files: ModelFiles, cancer: Cancer) -> None:
    module = load_torchscript(model_files.torchscript)
    a = make(mlp).predict_logits(cancer.x_test)
    b = make(module).predict_logits(cancer.x_test)
    np.testing.assert_allclose(b, a, atol=1e-4)
    g = make(module).loss_gradient(cancer.x_test[:4], cancer.y_test[:4])
    np.testing.assert_allclose(g, make(mlp).loss_gradient(cancer.x_test[:4], cancer.y_test[:4]), atol=1e-5)


def test_torchscript_loads_from_verified_bytes_not_the_path(model_files: ModelFiles, tmp_path: Path) -> None:
    data = model_files.torchscript.read_bytes()
    gone = tmp_path / "replaced.pt"
    gone.write_bytes(b"not an archive")
    module = load_torchscript(gone, model_bytes=data)
    assert make(module).predict_proba(np.zeros((1, 30), dtype=np.float32)).shape == (1, 2)


def test_torchscript_errors(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="not found"):
        load_torchscript(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(TargetError, match="TorchScript"):
        load_torchscript(bad)


def test_state_dict_loads_into_the_users_class(mlp: MLP, model_files: ModelFiles, cancer: Cancer) -> None:
    module = load_state_dict_model(model_files.state_dict, f"{REF}:MLP", {"in_features": 30, "hidden": 16})
    assert isinstance(module, MLP) and not module.training
    np.testing.assert_allclose(
        make(module).predict_logits(cancer.x_test), make(mlp).predict_logits(cancer.x_test), atol=1e-6
    )


def test_nested_checkpoint_is_unwrapped(mlp: MLP, tmp_path: Path) -> None:
    p = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "model_state_dict": mlp.state_dict()}, p)
    module = load_state_dict_model(p, f"{REF}:MLP")
    assert torch.equal(module.fc1.weight, mlp.fc1.weight)


@pytest.mark.parametrize(
    ("ref", "match"),
    [
        ("no_colon_here", "package.module:Class"),
        ("tests.targets.no_such_module:MLP", "cannot import module"),
        (f"{REF}:Missing", "has no attribute 'Missing'"),
        (f"{REF}:NOT_A_CLASS", "not a class"),
        (f"{REF}:NotAModule", "not a torch.nn.Module"),
    ],
)
def test_bad_class_ref_is_a_config_error(model_files: ModelFiles, ref: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        load_state_dict_model(model_files.state_dict, ref)
    assert repr(ref) in str(info.value) or ref in str(info.value)


def test_bad_kwargs_is_a_config_error(model_files: ModelFiles) -> None:
    with pytest.raises(ConfigError, match="model_kwargs"):
        load_state_dict_model(model_files.state_dict, f"{REF}:MLP", {"nonsense": 1})


def test_wrong_architecture_names_the_keys(model_files: ModelFiles) -> None:
    with pytest.raises(TargetError) as info:
        load_state_dict_model(model_files.state_dict, f"{REF}:DeepMLP")
    msg = str(info.value)
    assert str(model_files.state_dict) in msg
    assert "missing keys" in msg and "body.0.weight" in msg and "head.weight" in msg
    assert "unexpected keys" in msg and "fc1.weight" in msg


def test_wrong_sizes_name_the_mismatch(model_files: ModelFiles) -> None:
    with pytest.raises(TargetError, match="size mismatch"):
        load_state_dict_model(model_files.state_dict, f"{REF}:MLP", {"hidden": 8})


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_state_dict_with_a_pickled_callable_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    torch.save({"fc1.weight": torch.zeros(1), "payload": _Evil(marker)}, p, pickle_protocol=2)
    with pytest.raises(TargetError, match="weights-only"):
        load_state_dict_model(p, f"{REF}:MLP")
    assert not marker.exists()
    # positive control: a plain (unsafe) load of the same file runs the payload
    torch.load(p, weights_only=False)
    assert marker.exists()
