"""Issue 8, end to end on the clinic example: provenance and lineage in the report and the ML-BOM.

``bastion data register`` the digits data, ``bastion harden pgd-at --asset digits`` (the new
version records the registered dataset version), ``bastion assess``: the HTML report shows every
dataset's provenance (Merkle root, source, licence, owner, lineage, models trained on it) and
``bom.json`` lists the dataset with its registered version and ``digits.v2``'s dependency on it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bastion import api
from bastion.cli.main import run

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def lineage_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("lineage")
    cfg = api.build_demo(root / "clinic")
    db = f"sqlite:///{root / 'bastion.db'}"
    data = cfg.parent / "data" / "digits.npz"
    reg = root / "registered.json"
    meta = [
        "--source",
        "sklearn load_digits",
        "--licence",
        "BSD-3-Clause",
        "--owner",
        "imaging-ml@example.org",
    ]
    code = run(["data", "register", str(data), "--name", "digit-images", *meta, "--db", db, "-o", str(reg)])
    assert code == 0
    version = json.loads(reg.read_text(encoding="utf-8"))
    code = run(["harden", "pgd-at", "--asset", "digits", "-c", str(cfg), "--db", db, "-p", "epochs=1"])
    assert code == 0
    out = root / "out"
    only = ["--only", "governance", "--only", "evasion.fgsm"]
    code = run(
        [
            "assess",
            "-c",
            str(cfg),
            "-o",
            str(out),
            "--db",
            db,
            "--budget",
            "quick",
            "--fail-on",
            "none",
            *only,
        ]
    )
    assert code == 0
    return {
        "version": version,
        "db": db,
        "report": json.loads((out / "report.json").read_text(encoding="utf-8")),
        "html": (out / "report.html").read_text(encoding="utf-8"),
        "bom": json.loads((out / "bom.json").read_text(encoding="utf-8")),
    }


def test_hardened_version_records_the_registered_dataset_version(lineage_run: dict[str, Any]) -> None:
    from bastion.store import Store
    from bastion.store.versions import latest_version

    with Store.open(lineage_run["db"]) as st:
        v = latest_version(st, "digits")
    assert v is not None and v.version == 2
    assert v.datasets == [lineage_run["version"]["id"]]


def test_report_notes_and_html_show_provenance_and_lineage(lineage_run: dict[str, Any]) -> None:
    version, report, html = lineage_run["version"], lineage_run["report"], lineage_run["html"]
    audit = {c["asset"]: c for c in report["checks"] if c["id"] == "governance.data-sources"}
    notes = audit["digit-images"]["notes"]
    assert notes["provenance.version_id"] == version["id"]
    assert notes["provenance.merkle_root"] == version["merkle_root"]
    assert notes["provenance.licence"] == "BSD-3-Clause"
    trained = json.loads(notes["lineage.trained_models"])
    assert [(t["model"], t["dataset_version"]) for t in trained] == [("digits.v2", version["id"])]
    assert audit["digit-images"]["metrics"]["lineage_depth"] == 1.0

    section = html[html.index('<section id="provenance">') :]
    section = section[: section.index('<section id="skipped">')] if 'id="skipped"' in section else section
    datasets = set(re.findall(r'data-dataset="([^"]+)"', section))
    assert datasets == {a["name"] for a in report["assets"] if a["kind"] == "dataset"}
    digits = section[section.index('data-dataset="digit-images"') :]
    digits = digits[: digits.index("</section>")]
    assert 'data-status="registered"' in digits
    assert version["merkle_root"] in digits and "sklearn load_digits" in digits
    assert 'data-model="digits.v2"' in digits and 'href="#asset-digits.v2"' in digits
    # the other datasets are listed too, as not registered
    assert 'data-dataset="wine" data-status="unregistered"' in section


def test_bom_lists_dataset_version_and_training_dependency(lineage_run: dict[str, Any]) -> None:
    pytest.importorskip("cyclonedx")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    bom, version = lineage_run["bom"], lineage_run["version"]
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom))
    assert error is None, str(error)
    comps = {c["name"]: c for c in bom["components"]}
    data = comps["digit-images"]
    props = {p["name"]: p["value"] for p in data["properties"]}
    assert data["type"] == "data" and data["version"] == "1"
    assert props["bastion:provenance.merkle_root"] == version["merkle_root"]
    assert props["bastion:provenance.version_id"] == version["id"]
    model = comps["digits.v2"]
    assert model["modelCard"]["modelParameters"]["datasets"] == [{"ref": data["bom-ref"]}]
    deps = {d["ref"]: d["dependsOn"] for d in bom["dependencies"]}
    assert deps[model["bom-ref"]] == [data["bom-ref"]]
    assert "modelParameters" not in comps["digits"].get("modelCard", {})  # no recorded training data


def test_asset_names_a_recorded_version_to_assess_beside_its_model(tmp_path: Path) -> None:
    """``--asset digits.v2`` assesses version 2 (not the latest) next to ``digits``.

    An unknown version is refused, naming the recorded ones.
    """
    from bastion.core.errors import ConfigError
    from bastion.core.settings import load_settings

    cfg = api.build_demo(tmp_path / "clinic")
    db = f"sqlite:///{tmp_path / 'b.db'}"
    for steps in ("1", "2"):  # v2, then v3 (another file)
        argv = ["harden", "pgd-at", "--asset", "digits", "-c", str(cfg), "--db", db, "-p", "epochs=1"]
        assert run([*argv, "-p", f"steps={steps}", "-p", "eval_steps=0"]) == 0
    s = load_settings(db_url=db, budget="quick")
    rep = api.assess(cfg, settings=s, asset="digits.v2", only=["governance"], store=False)
    assert {a.name for a in rep.assets} == {"digits", "digits.v2"}
    latest = api.assess(cfg, settings=s, asset="digits", only=["governance"])  # stored: reads versions
    assert {a.name for a in latest.assets} == {"digits", "digits.v3"}
    unknown = r"digits\.v9: no such version recorded; recorded: digits\.v2, digits\.v3"
    with pytest.raises(ConfigError, match=unknown):
        api.assess(cfg, settings=s, asset="digits.v9", only=["governance"], store=False)
