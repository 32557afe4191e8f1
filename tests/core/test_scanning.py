from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.findings import Finding
from bastion.core.scanning import SCAN_SCHEMA_VERSION, FileResult, ScanResult, Verdict
from bastion.core.severity import FAIL_ON_CHOICES, Severity


def finding(severity: str) -> Finding:
    return Finding(rule_id="scan.pickle.unknown-global", severity=severity, threat="supply-chain", title="t")


def file(verdict: str, *severities: str, **kw: Any) -> FileResult:
    return FileResult(path=f"{verdict}.pkl", verdict=verdict, findings=[finding(s) for s in severities], **kw)


@pytest.mark.parametrize(
    ("files", "fail_on", "code"),
    [
        ([file("safe")], "medium", 0),
        ([file("suspicious", "medium")], "medium", 1),
        ([file("suspicious", "medium")], "high", 0),
        ([file("malicious", "critical")], "none", 0),
        ([file("malicious", "critical"), file("error")], "medium", 2),
        ([file("error")], "none", 2),
        ([file("skipped")], "medium", 3),
        ([], "medium", 3),
        ([file("skipped"), file("safe")], "medium", 0),
        ([file("skipped"), file("malicious", "high")], "medium", 1),
        ([file("skipped"), file("error")], "medium", 2),
        ([file("skipped", "high")], "medium", 1),  # 1 over 3
        ([file("skipped", "high")], "none", 3),
        ([file("safe", "info")], "info", 1),
    ],
)
def test_exit_code_table(files: list[FileResult], fail_on: str, code: int) -> None:
    assert ScanResult(files=files).exit_code(fail_on) == code


def test_default_gate_is_medium() -> None:
    assert ScanResult(files=[file("suspicious", "medium")]).exit_code() == 1
    assert ScanResult(files=[file("suspicious", "low")]).exit_code() == 0


files_st = st.lists(
    st.tuples(
        st.sampled_from(list(Verdict)),
        st.lists(st.sampled_from([s.value for s in Severity]), max_size=3),
    ),
    max_size=5,
)


@given(files_st, st.sampled_from(FAIL_ON_CHOICES))
def test_exit_code_precedence(spec: list[tuple[Verdict, list[str]]], fail_on: str) -> None:
    result = ScanResult(files=[file(v.value, *sevs) for v, sevs in spec])
    any_error = any(v == Verdict.ERROR for v, _ in spec)
    order = [s.value for s in Severity]
    gating = fail_on != "none" and any(
        order.index(s) >= order.index(fail_on) for _, sevs in spec for s in sevs
    )
    nothing = all(v == Verdict.SKIPPED for v, _ in spec)
    expected = 2 if any_error else 1 if gating else 3 if nothing else 0
    assert result.exit_code(fail_on) == expected


def test_findings_flatten_and_serialise() -> None:
    r = ScanResult(files=[file("malicious", "high", "critical"), file("safe"), file("suspicious", "medium")])
    assert [f.severity.value for f in r.findings()] == ["high", "critical", "medium"]
    again = ScanResult.model_validate_json(r.model_dump_json())
    assert again == r
    assert again.schema_version == SCAN_SCHEMA_VERSION
    assert again.files[0].verdict is Verdict.MALICIOUS
