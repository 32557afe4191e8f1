"""Red-team round 22: files Bastion writes never replace the user's data or follow a planted link."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from tests.keys import write_ec_keypair

from bastion import api
from bastion.cli.main import run
from bastion.core.errors import ConfigError


def test_honeytokens_never_write_over_the_dataset(wine_project: Path) -> None:
    # F1: `guard honeytokens -o data/wine.csv` turned the 179-row training set into 6 rows
    data = wine_project / "data/wine.csv"
    before = data.read_bytes()
    cfg = wine_project / "bastion.yaml"
    for force in (False, True):
        with pytest.raises(ConfigError, match="is the file of dataset 'wine'"):
            api.guard_honeytokens(cfg, asset="triage", out=data, n=5, seed=1, force=force)
    link = wine_project / "ht.csv"
    link.symlink_to(data)  # a link to the data is the data
    with pytest.raises(ConfigError, match="is the file of dataset"):
        api.guard_honeytokens(cfg, asset="triage", out=link, n=5, seed=1, force=True)
    assert data.read_bytes() == before
    assert run(["guard", "honeytokens", "-c", str(cfg), "--asset", "triage", "-o", str(data), "-n", "5"]) == 2
    assert data.read_bytes() == before


def test_honeytokens_replace_an_existing_file_only_with_force_and_always_0600(wine_project: Path) -> None:
    cfg = wine_project / "bastion.yaml"
    out = wine_project / "ht.csv"
    out.write_text("someone's notes\n")
    os.chmod(out, 0o644)
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        api.guard_honeytokens(cfg, asset="triage", out=out, n=5, seed=1)
    assert out.read_text() == "someone's notes\n"
    api.guard_honeytokens(cfg, asset="triage", out=out, n=5, seed=1, force=True)
    assert len(out.read_text().splitlines()) == 6 and (out.stat().st_mode & 0o777) == 0o600
    # guard fit checks the destination before it fits anything
    with pytest.raises(ConfigError, match="already exists"):
        api.guard_fit(cfg, asset="triage", out=wine_project / "prof", honeytokens=5, honeytokens_out=out)
    assert not (wine_project / "prof").exists()


def test_sign_refuses_a_planted_signature_link(tmp_path: Path) -> None:
    # F5: a model.pkl.sig symlink shipped with a download had the bundle written elsewhere
    pytest.importorskip("model_signing")
    key = tmp_path / "k.pem"
    write_ec_keypair(key, tmp_path / "k.pub")
    model = tmp_path / "dl" / "model.pkl"
    model.parent.mkdir()
    model.write_bytes(pickle.dumps({"w": [1.0]}))
    elsewhere = tmp_path / "victim.txt"
    (model.parent / "model.pkl.sig").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="symbolic link"):
        api.sign_model(model, key=key)
    assert not elsewhere.exists()
    (model.parent / "model.pkl.sig").unlink()
    sig = api.sign_model(model, key=key)
    assert json.loads(Path(sig).read_text()) and not list(model.parent.glob(".*.tmp"))


def test_a_report_never_replaces_what_is_scanned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # F8: `scan m.pkl -o m.pkl` and `bom d -o d/m.pkl` replaced the model with the report
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "m.pkl"
    model.write_bytes(pickle.dumps([1, 2]))
    before = model.read_bytes()
    assert run(["scan", "m.pkl", "-f", "json", "-o", "m.pkl"]) == 2
    (tmp_path / "d").mkdir()
    inner = tmp_path / "d" / "m.pkl"
    inner.write_bytes(before)
    assert run(["bom", "d", "-o", "d/m.pkl"]) == 2
    assert run(["scan", "d", "-f", "json", "-o", "d/m.pkl"]) == 2
    assert model.read_bytes() == before and inner.read_bytes() == before
    # a report inside the scanned folder, written again on the next run, is fine
    assert run(["scan", "d", "-f", "json", "-o", "d/report.json"]) == 0
    assert run(["scan", "d", "-f", "json", "-o", "d/report.json"]) == 0
