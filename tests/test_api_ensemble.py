"""Ensemble assets (issue 5): ``framework: ensemble`` with ``members``, assessed like any model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion import api
from bastion.core.capability import Capability
from bastion.core.config import Asset, parse_config
from bastion.core.errors import ConfigError

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

ENSEMBLE = {
    "name": "diagnosis-ensemble",
    "framework": "ensemble",
    "members": ["diagnosis", "diagnosis-onnx"],
    "num_classes": 2,
    "dataset": "breast-cancer",
}


@pytest.fixture(scope="module")
def clinic_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return api.build_demo(tmp_path_factory.mktemp("ens-src") / "clinic").parent


@pytest.fixture
def clinic(clinic_src: Path, tmp_path: Path) -> Path:
    """A copy of the clinic with an ensemble of the diagnosis torch and ONNX models."""
    dest = tmp_path / "clinic"
    shutil.copytree(clinic_src, dest)
    cfg_path = dest / "bastion.yaml"
    data = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    diag = next(a for a in data["assets"] if a["name"] == "diagnosis")
    data["assets"].append({**ENSEMBLE, "input": diag["input"]})
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return cfg_path


def test_ensemble_of_torch_and_onnx_assessed_by_square(clinic: Path) -> None:
    plan = api.plan(clinic, asset="diagnosis-ensemble", only=["evasion"])
    planned = {i.check_id: i.skip_reason for i in plan.items if i.asset == "diagnosis-ensemble"}
    assert planned["evasion.square"] is None
    assert planned["evasion.pgd"] is not None and "loss-gradients" in planned["evasion.pgd"]
    report = api.assess(
        clinic, asset="diagnosis-ensemble", only=["evasion.square"], store=False, include_versions=False
    )
    assert not report.errors
    res = next(c for c in report.checks if c.id == "evasion.square" and c.asset == "diagnosis-ensemble")
    assert res.status == "ok", res.reason
    clean = res.metrics["clean_accuracy"]
    assert clean is not None and clean > 0.85
    robust = [v for k, v in res.metrics.items() if k.startswith("robust_accuracy@")]
    assert robust and all(v is not None and v <= clean for v in robust)
    # the members were scanned (never loaded unscanned) though only the ensemble was selected
    names = {a.name: a for a in report.assets}
    assert names["diagnosis"].scan_verdict == "safe" and names["diagnosis-onnx"].scan_verdict == "safe"


def test_declared_capabilities_are_the_members_intersection() -> None:
    from bastion.api._planning import _declared_capabilities

    torch_a = Asset(name="t", path="t.pt", framework="torch")
    onnx_a = Asset(name="o", path="o.onnx", framework="onnx")
    by_name = {"t": torch_a, "o": onnx_a, "t2": torch_a.model_copy(update={"name": "t2"})}
    mixed = Asset(name="e", framework="ensemble", members=["t", "o"])
    both = Asset(name="e2", framework="ensemble", members=["t", "t2"])
    assert _declared_capabilities(mixed, by_name) == {Capability.PROBABILITIES, Capability.BATCHED}
    assert Capability.LOSS_GRADIENTS in _declared_capabilities(both, by_name)
    assert Capability.LOGITS not in _declared_capabilities(both, by_name)


def _cfg(*assets: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "assets": list(assets), "datasets": [{"name": "d", "path": "d.csv"}]}


def test_config_validates_members() -> None:
    ok = parse_config(
        _cfg(
            {"name": "a", "path": "a.pt"},
            {"name": "b", "path": "b.pt"},
            ENSEMBLE | {"members": ["a", "b"], "dataset": None},
        )
    )
    assert ok.assets[2].members == ["a", "b"] and ok.assets[2].path is None
    with pytest.raises(ConfigError) as exc:
        parse_config(
            _cfg(
                {"name": "a", "path": "a.pt"},
                {"name": "ds", "kind": "dataset", "path": "d.csv"},
                {"name": "e", "framework": "ensemble", "members": ["a", "ghost", "ds"]},
            )
        )
    problems = exc.value.problems
    assert any("members[1]" in p and "ghost" in p for p in problems)
    assert any("members[2]" in p and "not a model" in p for p in problems)
    with pytest.raises(ConfigError, match="members"):
        parse_config(_cfg({"name": "e", "framework": "ensemble"}))
    with pytest.raises(ConfigError, match="only for framework: ensemble"):
        parse_config(_cfg({"name": "a", "path": "a.pt", "members": ["x", "y"]}))
