"""``bastion bom``: which files are models and which are data (trial 32, M2).

``bastion bom data/`` of a project listed every ``.npz`` (splits files included) as a
``machine-learning-model`` with a model card: the project's ``bastion.yaml`` was only read at the
top of ``PATH``, and without one every file the scanner read was a model.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bastion.core.errors import ConfigError

from ._factories import npy_object, os_system_payload

CONFIG = """version: 1
project: {name: p}
assets:
  - {name: m, kind: model, path: models/m.pkl, format: pickle}
  - {name: w, kind: model, path: models/x.npy, format: numpy}
datasets:
  - {name: d, path: data/d.npz, label: y, features: x, splits_file: data/d_splits.npz}
  - {name: e, path: data/evil.npz, label: y, features: x}
"""


def _run(*args: str) -> tuple[int, str, str]:
    from bastion.cli.main import app

    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def _kinds(doc: dict) -> dict[str, str]:
    return {c["name"]: c["type"] for c in doc["components"]}


def _props(doc: dict, name: str) -> dict[str, str]:
    comp = next(c for c in doc["components"] if c["name"] == name)
    return {p["name"]: p["value"] for p in comp.get("properties", [])}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    (proj / ".git").mkdir(parents=True)  # the search for a bastion.yaml stops at a repository's top
    (proj / "data").mkdir()
    (proj / "models").mkdir()
    np.savez(proj / "data" / "d.npz", x=np.zeros((4, 2), np.float32), y=np.arange(4))
    np.savez(proj / "data" / "d_splits.npz", train=np.arange(2), test=np.arange(2, 3), population=[3])
    (proj / "data" / "evil.npz").write_bytes(os_system_payload(tmp_path / "never"))  # a pickle, declared data
    (proj / "data" / "t.csv").write_text("a,b\n1,2\n")
    (proj / "models" / "m.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    np.save(proj / "models" / "x.npy", np.ones((3, 3)))  # named like data, declared a model
    (proj / "bastion.yaml").write_text(CONFIG)
    return proj


def test_bom_of_a_projects_data_folder_uses_the_projects_declarations(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trial 32: ``bastion bom data`` said "7 model component(s), 1 data"."""
    monkeypatch.chdir(project)
    code, out, err = _run("bom", "data")
    assert code == 0, err
    doc = json.loads(out)
    assert _kinds(doc) == {"d.npz": "data", "d_splits.npz": "data", "evil.npz": "data", "t.csv": "data"}
    assert "ML-BOM: 0 model component(s), 4 data" in err
    assert not any("modelCard" in c for c in doc["components"])
    # every file is still scanned: the pickle declared as data is flagged as what it is
    assert _props(doc, "evil.npz")["bastion:scan.verdict"] == "malicious"
    assert _props(doc, "d.npz")["bastion:scan.verdict"] == "safe"
    # a declared model stays a model, whatever its name or content looks like
    code, out, err = _run("bom", "models")
    assert code == 0, err
    assert _kinds(json.loads(out)) == {"m.pkl": "machine-learning-model", "x.npy": "machine-learning-model"}
    code, out, err = _run("bom", "data/d_splits.npz")  # one file, the project above it
    assert code == 0, err
    assert _kinds(json.loads(out)) == {"d_splits.npz": "data"}


def test_bom_without_a_project_file_decides_by_content(tmp_path: Path) -> None:
    """No bastion.yaml: numeric arrays named as data are data; weights and pickles are models."""
    from bastion.api import model_bom

    d = tmp_path / "loose"
    (d / ".git").mkdir(parents=True)
    np.savez(d / "breast_cancer.npz", x=np.zeros((4, 2), np.float32), y=np.arange(4))
    np.savez(d / "cv.npz", train=np.arange(3), test=np.arange(3, 5), population=np.arange(5, 6))
    np.savez(d / "digits_splits.npz", a=np.arange(3))  # the file's name says so
    np.save(d / "X_train.npy", np.zeros((3, 2)))
    np.save(d / "labels.npy", np.arange(3))
    np.savez(d / "weights.npz", W1=np.ones((2, 2)), b1=np.zeros(2))
    np.savez(d / "profile.npz", mean=np.zeros(3), precision=np.eye(3))
    np.save(d / "embeddings.npy", np.ones((4, 8), np.float32))
    (d / "y_test.npy").write_bytes(os_system_payload(tmp_path / "never"))  # a pickle named like data
    (d / "x_val.npy").write_bytes(npy_object(["a", "b"]))  # object array: a pickle inside
    (d / "model.pkl").write_bytes(pickle.dumps({"w": 1}))
    (d / "rows.csv").write_text("a\n1\n")
    doc, result = model_bom(d)
    assert _kinds(doc) == {
        "breast_cancer.npz": "data",
        "cv.npz": "data",
        "digits_splits.npz": "data",
        "X_train.npy": "data",
        "labels.npy": "data",
        "rows.csv": "data",
        "weights.npz": "machine-learning-model",
        "profile.npz": "machine-learning-model",
        "embeddings.npy": "machine-learning-model",
        "y_test.npy": "machine-learning-model",
        "x_val.npy": "machine-learning-model",
        "model.pkl": "machine-learning-model",
    }, _kinds(doc)
    assert _props(doc, "y_test.npy")["bastion:scan.verdict"] == "malicious"
    assert _props(doc, "X_train.npy")["bastion:scan.verdict"] == "safe"
    assert len(result.files) == 12  # every file scanned


def test_a_given_config_decides_and_a_bad_one_is_an_error(project: Path) -> None:
    from bastion.api import scan_models
    from bastion.scan.bom import build_bom

    other = project.parent / "elsewhere"
    other.mkdir()
    np.savez(other / "d.npz", x=np.zeros((2, 2)), y=np.arange(2))
    scan = scan_models([other])
    cfg = other / "bastion.yaml"
    cfg.write_text("version: 1\nproject: {name: q}\nassets:\n  - {name: m, kind: model, path: d.npz}\n")
    assert _kinds(build_bom(scan, root=other, config=cfg)) == {"d.npz": "machine-learning-model"}
    assert _kinds(build_bom(scan, root=other, find_config=False)) == {"d.npz": "data"}
    cfg.write_text("version: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_bom(scan, root=other, config=cfg)
    assert _kinds(build_bom(scan, root=other)) == {"d.npz": "data"}  # a found, unreadable one: warned
