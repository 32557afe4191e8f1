"""build_target: one bastion.yaml asset -> the right Target, verified bytes, secrets from the environment."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.targets.conftest import TOKEN, Cancer, ModelFiles, Server, f64

from bastion.core.config import Asset, EndpointSpec, InputSpec
from bastion.core.errors import ConfigError, IntegrityError, TargetError
from bastion.targets import HttpTarget, OnnxTarget, SklearnTarget, TorchTarget, build_target

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("httpx")

from sklearn.linear_model import LogisticRegression

REF = "tests.targets.tiny_models"


def asset(**kw: Any) -> Asset:
    kw.setdefault("name", "m")
    kw.setdefault("input", InputSpec(shape=[30]))
    kw.setdefault("num_classes", 2)
    return Asset(**kw)


@pytest.fixture
def project(tmp_path: Path, model_files: ModelFiles, logreg_file: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(model_files.torchscript, models / "mlp.ts")
    shutil.copy(model_files.state_dict, models / "mlp_weights.pt")
    shutil.copy(model_files.onnx, models / "mlp.onnx")
    shutil.copy(logreg_file, models / "lr.joblib")
    return tmp_path


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_torchscript(project: Path, mlp: Any, cancer: Cancer) -> None:
    t = build_target(asset(path="models/mlp.ts", framework="torch", format="torchscript"), base_dir=project)
    assert isinstance(t, TorchTarget) and t.name == "m" and t.input_shape == (30,)
    ref = TorchTarget(mlp, name="r", input_shape=(30,), num_classes=2).predict_logits(cancer.x_test)
    np.testing.assert_allclose(t.predict_logits(cancer.x_test), ref, atol=1e-4)


def test_state_dict_with_model_class(project: Path, mlp: Any, cancer: Cancer) -> None:
    a = asset(
        path="models/mlp_weights.pt", format="torch", model_class=f"{REF}:MLP", model_kwargs={"hidden": 16}
    )
    t = build_target(a, base_dir=project)
    assert isinstance(t, TorchTarget)
    ref = TorchTarget(mlp, name="r", input_shape=(30,), num_classes=2).predict_logits(cancer.x_test)
    np.testing.assert_allclose(t.predict_logits(cancer.x_test), ref, atol=1e-6)
    with pytest.raises(TargetError, match="missing keys"):
        build_target(asset(path="models/mlp_weights.pt", model_class=f"{REF}:DeepMLP"), base_dir=project)
    with pytest.raises(ConfigError, match="Nope"):
        build_target(asset(path="models/mlp_weights.pt", model_class=f"{REF}:Nope"), base_dir=project)


def test_onnx_inferred_from_the_suffix(project: Path, cancer: Cancer) -> None:
    t = build_target(asset(path="models/mlp.onnx"), base_dir=project)
    assert isinstance(t, OnnxTarget)
    assert t.predict_proba(cancer.x_test[:3]).shape == (3, 2)


def test_sklearn_needs_the_scanners_hash(project: Path, logreg: LogisticRegression, cancer: Cancer) -> None:
    a = asset(path="models/lr.joblib", framework="sklearn")
    with pytest.raises(TargetError, match="refusing to unpickle"):
        build_target(a, base_dir=project)
    t = build_target(a, base_dir=project, verified_sha256=sha(project / "models/lr.joblib"))
    assert isinstance(t, SklearnTarget)
    np.testing.assert_allclose(t.predict_proba(cancer.x_test), logreg.predict_proba(f64(cancer.x_test)))


def test_verified_bytes_are_loaded_not_the_file(project: Path, cancer: Cancer) -> None:
    p = project / "models/lr.joblib"
    data = p.read_bytes()
    p.write_bytes(b"swapped after the scan")
    t = build_target(
        asset(path="models/lr.joblib"),
        base_dir=project,
        verified_bytes=data,
        verified_sha256=hashlib.sha256(data).hexdigest(),
    )
    assert t.predict_label(cancer.x_test[:2]).shape == (2,)


def test_hash_mismatches_are_integrity_errors(project: Path) -> None:
    p = project / "models/mlp.onnx"
    with pytest.raises(IntegrityError):
        build_target(asset(path="models/mlp.onnx"), base_dir=project, verified_sha256="0" * 64)
    with pytest.raises(IntegrityError):
        build_target(asset(path="models/mlp.onnx", sha256="a" * 64), base_dir=project)
    good = build_target(
        asset(path="models/mlp.onnx", sha256=sha(p)), base_dir=project, verified_sha256=sha(p)
    )
    assert isinstance(good, OnnxTarget)
    recorded = sha(project / "models/lr.joblib")
    (project / "models/lr.joblib").write_bytes(b"changed")
    with pytest.raises(IntegrityError):
        build_target(asset(path="models/lr.joblib"), base_dir=project, verified_sha256=recorded)


def test_http_endpoint_with_token_from_env(
    server: Server, monkeypatch: pytest.MonkeyPatch, logreg: LogisticRegression, cancer: Cancer
) -> None:
    monkeypatch.setenv("BASTION_TEST_TOKEN", TOKEN)
    a = asset(kind="endpoint", url=server.url("/auth"), endpoint=EndpointSpec(token_env="BASTION_TEST_TOKEN"))
    t = build_target(a, base_dir=Path("."))
    assert isinstance(t, HttpTarget)
    np.testing.assert_allclose(
        t.predict_proba(cancer.x_test[:5]), logreg.predict_proba(f64(cancer.x_test[:5]))
    )
    assert server.hits[-1]["auth"] == f"Bearer {TOKEN}"
    assert TOKEN not in repr(t) and TOKEN not in str(t.describe())


def test_missing_env_vars_are_named_never_valued(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BASTION_TEST_TOKEN", raising=False)
    monkeypatch.setenv("BASTION_TEST_TENANT", "tenant-secret-value")
    monkeypatch.delenv("BASTION_TEST_MISSING", raising=False)
    spec = EndpointSpec(
        token_env="BASTION_TEST_TOKEN",
        headers_env={"X-Tenant": "BASTION_TEST_TENANT", "X-Other": "BASTION_TEST_MISSING"},
    )
    a = asset(kind="endpoint", url=server.url("/predict"), endpoint=spec)
    with pytest.raises(ConfigError) as info:
        build_target(a, base_dir=Path("."))
    msg = str(info.value)
    assert "BASTION_TEST_TOKEN" in msg and "BASTION_TEST_MISSING" in msg
    assert "tenant-secret-value" not in msg


def test_http_settings_come_from_the_endpoint_spec(server: Server, cancer: Cancer) -> None:
    spec = EndpointSpec(output="labels", max_batch=5, timeout=3.0)
    t = build_target(asset(kind="endpoint", url=server.url("/labels"), endpoint=spec), base_dir=Path("."))
    assert isinstance(t, HttpTarget) and t.output == "labels" and t.max_batch == 5 and t.timeout == 3.0
    t.predict_label(cancer.x_test[:12])
    assert server.rows("/labels") == [5, 5, 2]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"kind": "dataset", "path": "d.csv"}, "is a dataset"),
        ({"path": "models/mlp.onnx", "input": None, "num_classes": None}, r"input\.shape(.|\n)*num_classes"),
        ({"path": "models/mlp.onnx", "task": "regression"}, "regression"),
        ({"path": "models/mlp.bin", "format": "h5"}, "format 'h5' is not supported"),
        ({"path": "models/mlp.onnx", "format": "onnx", "framework": "torch"}, "contradicts"),
        ({"path": "models/mlp.bin"}, "cannot tell its framework"),
        ({"path": "models/mlp.ts", "format": "torchscript", "model_class": f"{REF}:MLP"}, "no model_class"),
    ],
)
def test_config_errors(project: Path, kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_target(asset(**kw), base_dir=project)


def test_missing_file_is_a_target_error(project: Path) -> None:
    with pytest.raises(TargetError, match="not found"):
        build_target(asset(path="models/absent.onnx"), base_dir=project)
