"""A project file may not send an endpoint on another host rows of a file outside its folder.

An endpoint asset is attacked with rows of its dataset; a ``bastion.yaml`` (a cloned repository's)
could name a dataset path outside the project folder (absolute, ``..``, a symlink out) and a URL
on its own host, so ``bastion assess`` sent another project's data there. Refused at load, before
any request (``--dry-run`` too), unless the folder is approved in ``BASTION_ALLOW_PATHS``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bastion.core.config import load_config
from bastion.core.errors import ConfigError
from bastion.core.project_trust import ALLOW_PATHS_VAR, endpoint_data_problem

REMOTE = "https://exfil.invalid/v1/predict"  # unroutable: any connection attempt would fail


@pytest.fixture(autouse=True)
def _no_approval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_PATHS_VAR, raising=False)


def _data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "secret.npz"
    np.savez(f, x=np.zeros((4, 3), dtype=np.float32), y=np.array([0, 1, 0, 1]))
    return f


def _project(tmp_path: Path, data_path: str, url: str = REMOTE, *, splits_file: str | None = None) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir(exist_ok=True)
    ds = f"  - name: d\n    path: {data_path!r}\n    label: y\n    features: x\n"
    ds += f"    splits_file: {splits_file!r}\n" if splits_file else "    splits: {test: [0, 1, 2, 3]}\n"
    (proj / "bastion.yaml").write_text(
        "version: 1\nproject: {name: p}\n"
        f"assets:\n  - name: svc\n    kind: endpoint\n    url: {url}\n    dataset: d\n"
        "    input: {shape: [3]}\n    num_classes: 2\n"
        f"datasets:\n{ds}"
    )
    return proj / "bastion.yaml"


def _outside(tmp_path: Path) -> Path:
    return _data(tmp_path / "other_project")


def test_absolute_path_outside_is_refused(tmp_path: Path) -> None:
    f = _outside(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(_project(tmp_path, str(f)))
    text = str(info.value) + " ".join(getattr(info.value, "problems", []) or [])
    for word in ("'svc'", "'d'", str(f), ALLOW_PATHS_VAR, "outside the project folder"):
        assert word in text
    assert info.value.exit_code == 2


def test_dotdot_path_outside_is_refused(tmp_path: Path) -> None:
    _outside(tmp_path)
    with pytest.raises(ConfigError, match="outside the project folder"):
        load_config(_project(tmp_path, "../other_project/secret.npz"))


def test_symlink_leading_out_is_refused(tmp_path: Path) -> None:
    f = _outside(tmp_path)
    cfg = _project(tmp_path, "data/secret.npz")
    (cfg.parent / "data").mkdir()
    (cfg.parent / "data" / "secret.npz").symlink_to(f)
    with pytest.raises(ConfigError, match="outside the project folder"):
        load_config(cfg)


def test_splits_file_outside_is_refused(tmp_path: Path) -> None:
    _data(tmp_path / "proj")
    splits = tmp_path / "other_project" / "splits.npz"
    splits.parent.mkdir()
    np.savez(splits, test=np.array([0, 1]))
    with pytest.raises(ConfigError, match=r"splits\.npz"):
        load_config(_project(tmp_path, "secret.npz", splits_file=str(splits)))


def test_dataset_inside_the_project_passes(tmp_path: Path) -> None:
    _data(tmp_path / "proj" / "data")
    assert load_config(_project(tmp_path, "data/secret.npz")).assets[0].name == "svc"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/p", "http://localhost:9/p", "http://[::1]:9/p"])
def test_outside_dataset_with_a_loopback_endpoint_passes(tmp_path: Path, url: str) -> None:
    f = _outside(tmp_path)
    assert load_config(_project(tmp_path, str(f), url)).datasets[0].path == str(f)


def test_an_approved_folder_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _outside(tmp_path)
    monkeypatch.setenv(ALLOW_PATHS_VAR, os.pathsep.join(["", str(tmp_path / "elsewhere"), str(f.parent)]))
    load_config(_project(tmp_path, str(f)))
    load_config(_project(tmp_path, "../other_project/secret.npz"))


def test_an_unrelated_approval_does_not_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _outside(tmp_path)
    monkeypatch.setenv(ALLOW_PATHS_VAR, str(tmp_path / "other_project_2"))
    with pytest.raises(ConfigError):
        load_config(_project(tmp_path, str(f)))


def test_local_models_are_unaffected(tmp_path: Path) -> None:
    f = _outside(tmp_path)
    cfg = _project(tmp_path, str(f))
    text = cfg.read_text().replace("kind: endpoint\n    url: " + REMOTE, "path: m.onnx\n    framework: onnx")
    cfg.write_text(text)
    assert load_config(cfg).datasets[0].path == str(f)


def test_the_rule_function(tmp_path: Path) -> None:
    assert endpoint_data_problem("a", REMOTE, "d", "x.csv", tmp_path, environ={}) is None
    assert endpoint_data_problem("a", REMOTE, "d", "/etc/x.csv", tmp_path, environ={}) is not None
    assert (
        endpoint_data_problem("a", REMOTE, "d", "/etc/x.csv", tmp_path, environ={ALLOW_PATHS_VAR: "/etc"})
        is None
    )


def test_assess_and_dry_run_refuse_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from bastion.cli.main import run

    def no_connection(*args: object, **kwargs: object) -> None:
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(socket, "create_connection", no_connection)
    monkeypatch.setattr(socket, "getaddrinfo", no_connection)
    f = _outside(tmp_path)
    cfg = _project(tmp_path, str(f))
    assert run(["assess", "-c", str(cfg), "--dry-run"]) == 2
    assert "outside the project folder" in capsys.readouterr().err
    assert run(["assess", "-c", str(cfg), "-o", str(tmp_path / "r")]) == 2
    assert "outside the project folder" in capsys.readouterr().err
