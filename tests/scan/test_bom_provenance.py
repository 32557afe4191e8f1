"""``report_bom``: data components carry their registered version; trained models reference them."""

from __future__ import annotations

import json

import pytest
from tests.report.test_report_provenance import ROOT, provenance_report

from bastion.scan.bom import report_bom


def test_bom_links_trained_model_to_its_dataset_and_validates() -> None:
    doc = report_bom(provenance_report())
    pytest.importorskip("cyclonedx")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc))
    assert error is None, str(error)
    comps = {c["name"]: c for c in doc["components"]}
    props = {p["name"]: p["value"] for p in comps["digits"]["properties"]}
    assert comps["digits"]["version"] == "2"
    assert props["bastion:provenance.merkle_root"] == ROOT
    assert props["bastion:provenance.lineage"] == "v2id <- v1id"
    assert comps["m.v2"]["modelCard"]["modelParameters"]["datasets"] == [{"ref": "asset-digits"}]
    assert "modelCard" not in comps["m"]
    assert "version" not in comps["wine"]
    deps = {d["ref"]: d["dependsOn"] for d in doc["dependencies"]}
    assert deps["asset-m.v2"] == ["asset-digits"] and set(deps["project"]) == {f"asset-{n}" for n in comps}
