"""``governance.data-sources``: unregistered, changed, ownerless, unlicensed, world-writable datasets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from bastion import api
from bastion.core.settings import load_settings

CHECK = "governance.data-sources"


def _project(tmp_path: Path, *, owner: bool = True) -> Path:
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data/rows.npz", x=rng.normal(size=(30, 3)).astype(np.float32), y=np.arange(30) % 2)
    for p in (tmp_path / "data/rows.npz",):
        os.chmod(p, 0o644)
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        "version: 1\nproject: {name: t}\nassets: []\ndatasets:\n"
        "  - name: rows\n    path: data/rows.npz\n    features: x\n    label: y\n"
        + ("    owner: data-team@example.org\n" if owner else ""),
        encoding="utf-8",
    )
    return cfg


def _rules(cfg: Path, db: str) -> dict[str, list[api.Finding]]:
    report = api.assess(cfg, settings=load_settings(db_url=db), only=[CHECK], store=False)
    res = next(c for c in report.checks if c.id == CHECK)
    assert res.status == "ok", res.reason
    out: dict[str, list[api.Finding]] = {}
    for f in report.findings:
        out.setdefault(f.rule_id.removeprefix(CHECK + "."), []).append(f)
    return out


def test_unregistered_dataset_without_owner(tmp_path: Path) -> None:
    cfg = _project(tmp_path, owner=False)
    found = _rules(cfg, f"sqlite:///{tmp_path / 'absent.db'}")
    assert set(found) == {"unregistered", "missing-owner", "missing-licence"}
    assert found["unregistered"][0].location.path == "data/rows.npz"
    assert not (tmp_path / "absent.db").exists()  # the audit only reads the store


def test_registered_then_tampered_and_world_writable(tmp_path: Path) -> None:
    cfg = _project(tmp_path)
    db = f"sqlite:///{tmp_path / 'b.db'}"
    data = tmp_path / "data/rows.npz"
    api.data_register(data, name="rows", source="in-house", licence="CC-BY-4.0", owner="data-team", db=db)
    assert _rules(cfg, db) == {}

    with np.load(data) as z:
        x, y = np.array(z["x"]), np.array(z["y"])
    x[3, 1] += 1.0
    np.savez(data, x=x, y=y)
    os.chmod(data, 0o646)
    found = _rules(cfg, db)
    assert set(found) == {"hash-changed", "world-writable"}
    changed = found["hash-changed"][0]
    assert changed.severity.value == "high" and changed.location.path == "data/rows.npz"
    assert changed.evidence["sha256_now"] != changed.evidence["sha256_registered"]
    assert found["world-writable"][0].evidence["mode"] == "646"
    assert found["world-writable"][0].severity.value == "high"


def test_registration_without_licence(tmp_path: Path) -> None:
    cfg = _project(tmp_path)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    api.data_register(tmp_path / "data/rows.npz", db=db)  # registered as "rows" (file stem), no licence
    assert set(_rules(cfg, db)) == {"missing-licence"}


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX modes")
def test_world_writable_splits_file(tmp_path: Path) -> None:
    cfg = _project(tmp_path)
    np.savez(tmp_path / "data/splits.npz", train=np.arange(20), test=np.arange(20, 30))
    os.chmod(tmp_path / "data/splits.npz", 0o666)
    text = cfg.read_text(encoding="utf-8") + "    splits_file: data/splits.npz\n"
    cfg.write_text(text, encoding="utf-8")
    found = _rules(cfg, f"sqlite:///{tmp_path / 'd.db'}")
    assert [f.location.path for f in found["world-writable"]] == ["data/splits.npz"]
    assert stat.S_IMODE((tmp_path / "data/splits.npz").stat().st_mode) == 0o666
