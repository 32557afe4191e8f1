"""``assets[].lineage`` (report schema 1.3.0): a hardened version's lineage in ``report.json``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from bastion.core.report import REPORT_SCHEMA_VERSION, AssetRecord, Report, RunInfo, VersionLineage
from bastion.report import report_to_json

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "report.schema.json"


def lineage_report() -> Report:
    """A report with a model ``m``, its DP version ``m.v2`` and its adversarial version ``m.v3``."""
    created = dt.datetime(2025, 2, 1, 12, 0, tzinfo=dt.UTC)
    dp = VersionLineage(
        version_of="m",
        version=2,
        id="v2id",
        created=created,
        procedure="defend.dp-train",
        params={"epsilon": 3.0, "delta": 1e-5, "epochs": 2},
        epsilon_spent=2.97,
        delta=1e-5,
        parent_sha256="1" * 64,
        datasets=["dsv1"],
        details={"noise_multiplier": 1.1, "accountant": "rdp", "test_accuracy": 0.9},
    )
    at = VersionLineage(
        version_of="m",
        version=3,
        id="v3id",
        created=created,
        procedure="defend.pgd-at",
        params={"epsilon": 0.05},
        parent_sha256="1" * 64,
        datasets=["digits"],
    )
    return Report(
        bastion_version="0",
        run=RunInfo(id="0" * 32, status="ok", started=created, seconds=1.0, project="p"),
        assets=[
            AssetRecord(name="m", kind="model", sha256="1" * 64, scan_verdict="safe"),
            AssetRecord(name="m.v2", kind="model", sha256="2" * 64, scan_verdict="safe", lineage=dp),
            AssetRecord(name="m.v3", kind="model", sha256="3" * 64, scan_verdict="safe", lineage=at),
            AssetRecord(name="digits", kind="dataset", path="data/digits.npz", sha256="4" * 64),
        ],
    )


def test_lineage_is_in_report_json_and_valid_against_the_published_schema() -> None:
    report = lineage_report()
    doc = json.loads(report_to_json(report))
    assert doc["schema_version"] == REPORT_SCHEMA_VERSION == "1.6.0"
    jsonschema.validate(doc, json.loads(SCHEMA.read_text(encoding="utf-8")))
    assets = {a["name"]: a for a in doc["assets"]}
    assert assets["m"]["lineage"] is None
    dp = assets["m.v2"]["lineage"]
    assert dp["version_of"] == "m" and dp["version"] == 2 and dp["procedure"] == "defend.dp-train"
    assert dp["epsilon_spent"] == 2.97 and dp["delta"] == 1e-5 and dp["params"]["epochs"] == 2
    assert dp["parent_sha256"] == assets["m"]["sha256"] and dp["parent_id"] is None
    assert dp["datasets"] == ["dsv1"] and dp["created"].startswith("2025-02-01T12:00:00")
    assert assets["m.v3"]["lineage"]["epsilon_spent"] is None  # an adversarial ε is not a privacy budget
    assert Report.model_validate(doc) == report


def test_the_schema_refuses_a_malformed_lineage() -> None:
    doc = json.loads(report_to_json(lineage_report()))
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    doc["assets"][1]["lineage"]["version"] = 1  # version 1 is the original file, never a recorded one
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)
    with pytest.raises(ValidationError):
        Report.model_validate(doc)
    del doc["assets"][1]["lineage"]["version"]
    doc["assets"][1]["lineage"]["version"] = 2
    doc["assets"][1]["lineage"]["spent"] = 1.0  # unknown field
    with pytest.raises(ValidationError, match="spent"):
        Report.model_validate(doc)
