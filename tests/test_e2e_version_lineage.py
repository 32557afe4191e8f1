"""``bastion harden`` then ``bastion assess`` on the clinic: lineage in report.json and bom.json.

Also: re-running a deterministic ``harden`` that yields a byte-identical model reuses the
recorded version instead of recording a duplicate.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import jsonschema
import pytest

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "report.schema.json"


def test_harden_reuses_identical_versions_and_reports_lineage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion.cli.main import run
    from bastion.examples.clinic import build_clinic

    cfg = build_clinic(tmp_path)
    db = f"sqlite:///{tmp_path}/b.db"
    pgd = ["harden", "pgd-at", "--asset", "diagnosis", "-c", str(cfg), "--epsilon", "0.05", "--db", db]
    pgd += ["-p", "epochs=1", "-p", "steps=2"]
    assert run(pgd) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["name"] == "diagnosis.v2" and first["reused"] is False
    assert run(pgd) == 0  # deterministic (seeded): the same bytes again
    out = capsys.readouterr()
    again = json.loads(out.out)
    assert again["reused"] is True and again["name"] == "diagnosis.v2" and again["sha256"] == first["sha256"]
    assert "identical to the recorded version diagnosis.v2" in out.err
    assert "no new version recorded" in out.err
    rows = sqlite3.connect(tmp_path / "b.db").execute("select asset, version from model_versions").fetchall()
    assert rows == [("diagnosis", 2)]
    assert [p.name for p in (tmp_path / ".bastion" / "models").iterdir()] == [Path(first["path"]).name]

    dp = ["harden", "dp-logreg", "--asset", "triage", "-c", str(cfg), "--epsilon", "3", "--db", db]
    assert run(dp) == 0
    capsys.readouterr()

    # --dry-run plans the recorded versions a run would assess, reading the store only
    before = (tmp_path / "b.db").read_bytes()
    assert run(["assess", "-c", str(cfg), "--only", "scan", "--dry-run", "--db", db]) == 0
    planned = {i["asset"] for i in json.loads(capsys.readouterr().out)["checks"]}
    assert {"diagnosis", "diagnosis.v2", "triage", "triage.v2"} <= planned
    assert (
        run(["assess", "-c", str(cfg), "--only", "scan", "--dry-run", "--asset", "diagnosis.v2", "--db", db])
        == 0
    )
    picked = {i["asset"] for i in json.loads(capsys.readouterr().out)["checks"]}
    assert picked == {"diagnosis", "diagnosis.v2"}  # the picked version, beside its model
    assert run(["assess", "-c", str(cfg), "--dry-run", "--asset", "diagnosis.v7", "--db", db]) == 2
    assert "--asset diagnosis.v7: no such version recorded; recorded: diagnosis.v2" in capsys.readouterr().err
    assert (tmp_path / "b.db").read_bytes() == before  # nothing written

    report_dir = tmp_path / "out"
    assess = ["assess", "-c", str(cfg), "--only", "scan", "--fail-on", "none", "-o", str(report_dir)]
    assert run([*assess, "--db", db]) == 0
    doc = json.loads((report_dir / "report.json").read_text())
    jsonschema.validate(doc, json.loads(SCHEMA.read_text(encoding="utf-8")))
    assets = {a["name"]: a for a in doc["assets"]}
    assert assets["diagnosis"]["lineage"] is None
    lin = assets["diagnosis.v2"]["lineage"]
    assert lin["version_of"] == "diagnosis" and lin["version"] == 2
    assert lin["procedure"] == "defend.pgd-at" and lin["params"]["epsilon"] == 0.05
    assert lin["params"]["epochs"] == 1 and lin["epsilon_spent"] is None and lin["delta"] is None
    assert lin["parent_id"] is None and lin["parent_sha256"] == assets["diagnosis"]["sha256"]
    assert lin["datasets"] == ["breast-cancer"] and "test_accuracy" in lin["details"]
    assert assets["diagnosis.v2"]["sha256"] == first["sha256"]
    tri = assets["triage.v2"]["lineage"]
    assert tri["procedure"] == "defend.dp-logreg" and tri["epsilon_spent"] == 3.0 and tri["delta"] == 0.0

    bom = json.loads((report_dir / "bom.json").read_text())
    pytest.importorskip("cyclonedx")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom)) is None
    comps = {c["name"]: c for c in bom["components"]}
    v2 = comps["diagnosis.v2"]
    assert v2["version"] == "2" and v2["hashes"] == [{"alg": "SHA-256", "content": first["sha256"]}]
    assert v2["pedigree"]["ancestors"][0]["hashes"] == comps["diagnosis"]["hashes"]
    props = {p["name"]: p["value"] for p in comps["triage.v2"]["properties"]}
    assert props["bastion:lineage.procedure"] == "defend.dp-logreg"
    assert props["bastion:lineage.epsilon_spent"] == "3.0"
    assert v2["modelCard"]["modelParameters"]["datasets"] == [{"ref": "asset-breast-cancer"}]
    assert [d["name"] for d in comps["diagnosis"]["pedigree"]["descendants"]] == ["diagnosis.v2"]

    # ``bastion bom`` on the version's file: the store's lineage, matched by the file's hash
    assert run(["bom", str(tmp_path / first["path"]), "--db", db]) == 0
    single = json.loads(capsys.readouterr().out)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(single)) is None
    (comp,) = single["components"]
    assert comp["version"] == "2" and comp["pedigree"]["ancestors"][0]["name"] == "diagnosis"
    assert {"name": "bastion:lineage.procedure", "value": "defend.pgd-at"} in comp["properties"]
    assert run(["bom", str(tmp_path / "models" / "diagnosis.pt"), "--db", db]) == 0  # the original
    (orig,) = json.loads(capsys.readouterr().out)["components"]
    assert "pedigree" not in orig and "version" not in orig
