"""``governance.data-sources`` stores provenance and lineage (parent chain, trained models) in its notes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bastion import api
from bastion.core.settings import load_settings

CHECK = "governance.data-sources"


def _project(tmp_path: Path, data: str) -> Path:
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        "version: 1\nproject: {name: t}\nassets: []\ndatasets:\n"
        f"  - name: rows\n    path: {data}\n    features: x\n    label: y\n    owner: team\n",
        encoding="utf-8",
    )
    return cfg


def _audit(cfg: Path, db: str) -> api.CheckResult:
    report = api.assess(cfg, settings=load_settings(db_url=db), only=[CHECK], store=False)
    res = next(c for c in report.checks if c.id == CHECK)
    assert res.status == "ok", res.reason
    return res


def _add_model_version(db: str, datasets: list[str]) -> None:
    from bastion.store import Store
    from bastion.store.versions import add_version

    with Store.open(db) as st:
        add_version(
            st,
            asset="m",
            path="m.pt",
            sha256="0" * 64,
            procedure="defend.pgd-at",
            details={},
            datasets=datasets,
        )


def test_sanitised_version_notes_carry_the_parent_chain_and_trained_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    src = tmp_path / "data/rows.npz"
    np.savez(src, x=rng.normal(size=(20, 3)).astype(np.float32), y=np.arange(20) % 2)
    db = f"sqlite:///{tmp_path / 'b.db'}"
    parent = api.data_register(src, name="rows", source="in-house", licence="CC0-1.0", owner="team", db=db)
    _, new, _ = api.data_sanitize(src, remove="1,2", name="rows", output=tmp_path / "data/clean.npz", db=db)
    _add_model_version(db, [new.id])
    res = _audit(_project(tmp_path, "data/clean.npz"), db)
    n = res.notes
    assert n["provenance.version_id"] == new.id and n["provenance.version"] == "2"
    assert n["provenance.merkle_root"] == new.merkle_root != parent.merkle_root
    assert (n["provenance.source"], n["provenance.licence"], n["provenance.owner"]) == (
        "in-house",
        "CC0-1.0",
        "team",
    )
    chain = json.loads(n["provenance.lineage"])
    assert [(v["id"], v["version"], v["removed_rows"]) for v in chain] == [(new.id, 2, 2), (parent.id, 1, 0)]
    trained = json.loads(n["lineage.trained_models"])
    assert [(t["model"], t["dataset_version"], t["procedure"]) for t in trained] == [
        ("m.v2", new.id, "defend.pgd-at")
    ]
    assert res.metrics["lineage_depth"] == 2.0 and res.metrics["trained_models"] == 1.0


def test_unregistered_dataset_still_lists_models_recorded_by_name(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "rows.npz", x=rng.normal(size=(10, 2)).astype(np.float32), y=np.arange(10) % 2)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    _add_model_version(db, ["rows"])
    res = _audit(_project(tmp_path, "rows.npz"), db)
    assert "provenance.version_id" not in res.notes and res.metrics["lineage_depth"] is None
    assert res.notes["lineage_depth"].startswith("not registered")
    assert [t["model"] for t in json.loads(res.notes["lineage.trained_models"])] == ["m.v2"]
