from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion.core.findings import Finding, Location, Threat
from bastion.core.report import ReportFinding
from bastion.core.severity import Severity


def make(**kw: Any) -> Finding:
    base: dict[str, Any] = {
        "rule_id": "scan.pickle.denied-global",
        "severity": "high",
        "threat": "supply-chain",
        "title": "denied global os.system",
        "asset": "vendor-model",
        "location": Location(path="vendor-model.pkl", member="archive/data.pkl", offset=12),
    }
    base.update(kw)
    return Finding(**base)


@pytest.mark.parametrize(
    "rule_id",
    ["scan.pickle.denied-global", "evasion.pgd.low-robust-accuracy", "a.b", "membership.lira.tpr_at_low-fpr"],
)
def test_good_rule_ids(rule_id: str) -> None:
    assert make(rule_id=rule_id).rule_id == rule_id


@pytest.mark.parametrize(
    "rule_id",
    [
        "scan",
        "Scan.Pickle.x",
        "scan..x",
        ".scan.x",
        "scan.x.",
        "scan pickle.x",
        "scan.-x",
        "",
        "scan/pickle.x",
    ],
)
def test_bad_rule_ids_rejected(rule_id: str) -> None:
    with pytest.raises(ValidationError, match="rule_id"):
        make(rule_id=rule_id)


def test_atlas_ids() -> None:
    assert make(atlas=["AML.T0011.000", "AML.T0010"]).atlas == ["AML.T0011.000", "AML.T0010"]
    for bad in (["T0011"], ["aml.t0011"], ["CVE-2024-1234"], ["AML.T0011", ""]):
        with pytest.raises(ValidationError, match="not a MITRE ATLAS technique id"):
            make(atlas=bad)


def test_enums_and_strictness() -> None:
    f = make()
    assert f.severity is Severity.HIGH
    assert f.threat is Threat.SUPPLY_CHAIN
    with pytest.raises(ValidationError):
        make(severity="severe")
    with pytest.raises(ValidationError):
        make(threat="malware")
    with pytest.raises(ValidationError, match="extra"):
        make(cvss=9.8)
    with pytest.raises(ValidationError):
        Location(offset=-1)
    with pytest.raises(ValidationError):
        Location(index=-1)


def test_round_trips_through_json() -> None:
    f = make(evidence={"global": "posix.system", "opcode": "STACK_GLOBAL"}, atlas=["AML.T0011.000"])
    again = Finding.model_validate_json(f.model_dump_json())
    assert again == f
    assert json.loads(f.model_dump_json())["severity"] == "high"


def test_fingerprint_is_stable_across_releases() -> None:
    # Baselines compare stored fingerprints: the algorithm must not change silently.
    f = make()
    loc = {"member": "archive/data.pkl", "offset": 12, "path": "vendor-model.pkl"}
    key = json.dumps(["scan.pickle.denied-global", "vendor-model", loc], sort_keys=True)
    assert f.compute_fingerprint() == hashlib.sha256(key.encode()).hexdigest()[:16]
    assert f.compute_fingerprint() == "015a8ec763aa93ed"  # golden value: changing it breaks stored baselines


def test_fingerprint_same_for_equal_rule_asset_location() -> None:
    a = make(title="one", severity="low", evidence={"x": 1}, remediation="a", references=["r"])
    b = make(title="two", severity="critical", evidence={"x": 2, "y": [1, 2]}, atlas=["AML.T0011.000"])
    assert a.compute_fingerprint() == b.compute_fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"rule_id": "scan.pickle.unknown-global"},
        {"asset": "other-model"},
        {"asset": None},
        {"location": Location(path="vendor-model.pkl", member="archive/data.pkl", offset=13)},
        {"location": Location(path="other.pkl", member="archive/data.pkl", offset=12)},
        {"location": Location(path="vendor-model.pkl", offset=12)},
        {"location": Location(endpoint="https://x.example/predict")},
    ],
)
def test_fingerprint_differs_when_identity_differs(change: dict[str, Any]) -> None:
    assert make(**change).compute_fingerprint() != make().compute_fingerprint()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_fingerprint_independent_of_evidence(evidence: dict[str, Any]) -> None:
    assert make(evidence=evidence).compute_fingerprint() == make().compute_fingerprint()


def test_report_finding_carries_fingerprint() -> None:
    f = make()
    rf = ReportFinding.of(f, state="new")
    assert rf.fingerprint == f.compute_fingerprint()
    assert rf.state == "new"
    assert rf.rule_id == f.rule_id
