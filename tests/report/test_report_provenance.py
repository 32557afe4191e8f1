"""The HTML report's "Data provenance and lineage" section, from ``governance.data-sources`` notes."""

from __future__ import annotations

import datetime as dt
import json

from bastion.core.report import AssetRecord, Report, RunInfo
from bastion.core.results import CheckResult
from bastion.report._provenance import dataset_provenance
from bastion.report.html import report_to_html

ROOT = "ab" * 32


def provenance_report() -> Report:
    notes = {
        "provenance.version_id": "v2id",
        "provenance.dataset": "digits",
        "provenance.version": "2",
        "provenance.merkle_root": ROOT,
        "provenance.source": "<script>alert(1)</script>",
        "provenance.licence": "BSD-3-Clause",
        "provenance.registered": "2025-01-01T00:00:00+00:00",
        "provenance.lineage": json.dumps(
            [
                {"id": "v2id", "version": 2, "merkle_root": ROOT, "created": "t2", "removed_rows": 3},
                {"id": "v1id", "version": 1, "merkle_root": "cd" * 32, "created": "t1", "removed_rows": 0},
            ]
        ),
        "lineage.trained_models": json.dumps(
            [
                {
                    "model": "m.v2",
                    "asset": "m",
                    "version": 2,
                    "procedure": "defend.pgd-at",
                    "dataset_version": "v2id",
                    "created": "t3",
                }
            ]
        ),
    }
    return Report(
        bastion_version="0",
        run=RunInfo(id="0" * 32, status="ok", started=dt.datetime(2025, 1, 1, tzinfo=dt.UTC), seconds=1.0),
        assets=[
            AssetRecord(name="m", kind="model", sha256="1" * 64),
            AssetRecord(name="m.v2", kind="model", sha256="2" * 64),
            AssetRecord(name="digits", kind="dataset", path="data/digits.npz", sha256="3" * 64),
            AssetRecord(name="wine", kind="dataset", path="data/wine.csv"),
            AssetRecord(name="iris", kind="dataset", path="data/iris.csv"),
        ],
        checks=[
            CheckResult(
                id="governance.data-sources", asset="digits", notes=notes, metrics={"registered": 1.0}
            ),
            CheckResult(
                id="governance.data-sources",
                asset="wine",
                metrics={"registered": 0.0},
                notes={"lineage.trained_models": "not json"},
            ),
        ],
    )


def test_every_dataset_has_an_entry_with_its_status() -> None:
    entries = {e.name: e for e in dataset_provenance(provenance_report())}
    assert {n: e.status for n, e in entries.items()} == {
        "digits": "registered",
        "wine": "unregistered",
        "iris": "not-audited",
    }
    d = entries["digits"]
    assert d.facts["Merkle root"] == ROOT and [v["id"] for v in d.lineage] == ["v2id", "v1id"]
    assert d.trained[0]["model"] == "m.v2" and d.trained[0]["in_report"] is True
    assert entries["wine"].trained == []  # a bad JSON note is left out, not fatal
    assert "did not run" in (entries["iris"].reason or "")


def test_html_section_lists_provenance_lineage_and_models_escaped() -> None:
    html = report_to_html(provenance_report(), fail_on="none")
    section = html[html.index('<section id="provenance">') :]
    assert 'href="#provenance"' in html
    digits = section[section.index('data-dataset="digits"') :]
    digits = digits[: digits.index("</section>")]
    assert ROOT in digits and "cd" * 32 in digits and "BSD-3-Clause" in digits
    assert "<script>" not in html and "&lt;script&gt;" in digits
    assert 'data-model="m.v2"' in digits and 'href="#asset-m.v2"' in digits
    assert 'data-dataset="wine" data-status="unregistered"' in section
    assert 'data-dataset="iris" data-status="not-audited"' in section
