"""``report_bom``: a hardened version's lineage as CycloneDX 1.6 pedigree and ``bastion:lineage.*``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.report.test_report_lineage import lineage_report

from bastion.core.results import CheckResult
from bastion.scan.bom import report_bom


def _validate(doc: dict[str, Any]) -> None:
    pytest.importorskip("cyclonedx")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc))
    assert error is None, str(error)


def _props(comp: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in comp.get("properties", [])}


def test_versions_carry_their_lineage_and_the_bom_validates() -> None:
    report = lineage_report()
    # the data-sources audit registered ``digits`` as version id ``dsv1`` (what m.v2 was trained on)
    report.checks.append(
        CheckResult(
            id="governance.data-sources",
            asset="digits",
            notes={"provenance.version_id": "dsv1", "provenance.version": "1"},
        )
    )
    doc = report_bom(report)
    _validate(doc)
    comps = {c["name"]: c for c in doc["components"]}
    v2, v3, m = comps["m.v2"], comps["m.v3"], comps["m"]
    assert v2["version"] == "2" and v3["version"] == "3" and "version" not in m
    (parent,) = v2["pedigree"]["ancestors"]
    assert parent["name"] == "m" and parent["version"] == "1"
    assert parent["hashes"] == m["hashes"] == [{"alg": "SHA-256", "content": "1" * 64}]
    assert "defend.dp-train" in v2["pedigree"]["notes"] and "ε=2.97" in v2["pedigree"]["notes"]
    assert "ε=" not in v3["pedigree"]["notes"]  # adversarial training spends no privacy budget
    p2 = _props(v2)
    assert p2["bastion:lineage.version_of"] == "m" and p2["bastion:lineage.id"] == "v2id"
    assert p2["bastion:lineage.procedure"] == "defend.dp-train"
    assert p2["bastion:lineage.epsilon_spent"] == "2.97" and p2["bastion:lineage.delta"] == "1e-05"
    assert p2["bastion:lineage.parent_sha256"] == "1" * 64
    assert p2["bastion:lineage.created"] == "2025-02-01T12:00:00Z"
    assert p2["bastion:lineage.param.epochs"] == "2" and p2["bastion:lineage.datasets"] == "dsv1"
    assert "bastion:lineage.epsilon_spent" not in _props(v3)
    assert [(d["name"], d["version"]) for d in m["pedigree"]["descendants"]] == [("m.v2", "2"), ("m.v3", "3")]
    assert m["pedigree"]["descendants"][0]["hashes"] == v2["hashes"]
    # datasets: a registered version id and a dataset name both resolve to the report's data component
    assert v2["modelCard"]["modelParameters"]["datasets"] == [{"ref": "asset-digits"}]
    assert v3["modelCard"]["modelParameters"]["datasets"] == [{"ref": "asset-digits"}]
    deps = {d["ref"]: d["dependsOn"] for d in doc["dependencies"]}
    assert deps["asset-m.v2"] == ["asset-digits"] == deps["asset-m.v3"]


def test_a_report_without_versions_has_no_pedigree() -> None:
    report = lineage_report()
    report.assets = [a for a in report.assets if a.lineage is None]
    doc = report_bom(report)
    _validate(doc)
    assert all("pedigree" not in c and "version" not in c for c in doc["components"])
    names = [p["name"] for c in doc["components"] for p in c["properties"]]
    assert not any(n.startswith("bastion:lineage.") for n in names)
