"""JSON renderers: shape, key order, round trips."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.findings import Finding
from bastion.core.report import Report
from bastion.core.results import CheckResult
from bastion.core.scanning import FileResult, ScanResult
from bastion.report import report_to_json, scan_to_json
from bastion.report.json_out import dumps_indented, json_safe


def test_report_json_round_trips(report: Report) -> None:
    text = report_to_json(report)
    back = Report.model_validate_json(text)
    assert back == report
    assert back.findings[0].fingerprint == report.findings[0].fingerprint


def test_report_json_is_stable_and_ordered(report: Report) -> None:
    text = report_to_json(report)
    assert text == report_to_json(Report.model_validate_json(text))
    doc = json.loads(text)
    assert list(doc)[:3] == ["schema_version", "bastion_version", "run"]
    assert text.startswith('{\n  "schema_version"')  # indent 2
    waived = [f for f in doc["findings"] if f["waiver"]]
    assert len(waived) == 1 and waived[0]["waiver"]["expires"] == "2099-01-31"


def test_report_json_nan_becomes_null(report_factory: Callable[..., Report]) -> None:
    rep = report_factory(checks=[CheckResult(id="evasion.pgd", metrics={"auc": float("nan")})])
    doc = json.loads(report_to_json(rep))
    assert doc["checks"][0]["metrics"]["auc"] is None


def test_scan_json_shape(scan_result: ScanResult) -> None:
    doc = json.loads(scan_to_json(scan_result, version="9.9.9"))
    assert list(doc) == ["schema_version", "bastion_version", "files"]
    assert doc["bastion_version"] == "9.9.9"
    assert doc["schema_version"] == scan_result.schema_version
    first = doc["files"][0]
    assert list(first)[:7] == ["path", "format", "verdict", "sha256", "size", "reason", "findings"]
    assert [f["verdict"] for f in doc["files"]] == ["malicious", "suspicious", "safe", "error", "skipped"]
    assert doc["files"][3]["reason"] == "truncated pickle stream at byte 3"
    # Every file and finding validates back into the core models.
    for fd, fr in zip(doc["files"], scan_result.files, strict=True):
        assert FileResult.model_validate(fd) == fr
        for f in fd["findings"]:
            Finding.model_validate(f)


def test_scan_json_default_version_is_running_bastion(scan_result: ScanResult) -> None:
    import bastion

    assert json.loads(scan_to_json(scan_result))["bastion_version"] == bastion.__version__


def test_scan_json_non_finite_evidence(scan_result: ScanResult) -> None:
    finding = scan_result.files[0].findings[0].model_copy(update={"evidence": {"score": float("inf")}})
    result = ScanResult(files=[scan_result.files[0].model_copy(update={"findings": [finding]})])
    text = scan_to_json(result)
    assert "Infinity" not in text
    assert json.loads(text)["files"][0]["findings"][0]["evidence"]["score"] is None


def test_empty_scan() -> None:
    doc = json.loads(scan_to_json(ScanResult()))
    assert doc["files"] == []


_KEYS = st.one_of(st.text(), st.integers(), st.booleans(), st.none())
_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text())
_TREES = st.recursive(
    _LEAVES, lambda c: st.one_of(st.lists(c), st.dictionaries(_KEYS, c), st.tuples(c)), max_leaves=30
)


@settings(max_examples=500, deadline=None)
@given(_TREES)
def test_dumps_indented_is_json_dumps_with_indent_2(value: object) -> None:
    """The scan's fast renderer writes exactly ``json.dumps(json_safe(v), indent=2, ensure_ascii=False)``."""
    assert dumps_indented(value) == json.dumps(json_safe(value), indent=2, ensure_ascii=False)


def test_dumps_indented_refuses_what_json_refuses() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        dumps_indented({"a": {1, 2}})


_NAMES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from('\udcff"\\\n\x1b')
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "path": _NAMES,
                "verdict": st.sampled_from(["safe", "suspicious", "malicious", "error", "skipped"]),
                "format": st.none() | st.sampled_from(["pickle", "pytorch", "joblib"]),
                "sha256": st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
                "size": st.none() | st.integers(min_value=0, max_value=1 << 40),
                "reason": st.none() | _NAMES,
                "globals": st.lists(_NAMES, max_size=4),
                "findings": st.integers(min_value=0, max_value=2),
            }
        ),
        max_size=4,
    ),
    st.none() | st.text(max_size=8),
)
def test_scan_json_is_its_dict_written_by_dumps_indented(
    files: list[dict[str, object]], version: str | None
) -> None:
    """``scan_to_json`` (written a file at a time) is the text of ``dumps_indented(scan_to_dict(...))``."""
    from bastion.core._scan_records import FileRecord, ScanRecords, Verdict
    from bastion.core.findings import Severity, Threat
    from bastion.report.json_out import escape_surrogates, scan_to_dict

    records = ScanRecords()
    for f in files:
        findings = [
            Finding(
                rule_id="scan.pickle.unknown-global",
                title=f"finding {i}",
                severity=Severity.MEDIUM,
                threat=Threat.SUPPLY_CHAIN,
                evidence={"score": float("nan"), "names": [f["path"], 1, 2.5, None, True]},
            )
            for i in range(int(f["findings"]))  # type: ignore[call-overload]
        ]
        records.files.append(
            FileRecord(
                path=str(f["path"]),
                verdict=Verdict(f["verdict"]),
                format=f["format"],  # type: ignore[arg-type]
                sha256=f["sha256"],  # type: ignore[arg-type]
                size=f["size"],  # type: ignore[arg-type]
                reason=f["reason"],  # type: ignore[arg-type]
                globals=list(f["globals"]),  # type: ignore[call-overload]
                findings=findings,
            )
        )
    for result in (records, records.to_result()):
        expected = escape_surrogates(dumps_indented(scan_to_dict(result, version=version)))
        assert scan_to_json(result, version=version) == expected
        assert json.loads(expected) == json.loads(
            json.dumps(json_safe(scan_to_dict(result, version=version)))
        )
