from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.severity import FAIL_ON_CHOICES, Severity, gates

ORDER = ["info", "low", "medium", "high", "critical"]
severities = st.sampled_from(list(Severity))


def test_order_is_info_to_critical() -> None:
    assert [s.value for s in sorted(Severity, key=lambda s: s.rank)] == ORDER
    assert sorted([Severity.CRITICAL, Severity.INFO, Severity.HIGH, Severity.LOW, Severity.MEDIUM]) == [
        Severity(v) for v in ORDER
    ]
    assert Severity.INFO < Severity.LOW < Severity.MEDIUM < Severity.HIGH < Severity.CRITICAL
    assert max([Severity.LOW, Severity.CRITICAL, Severity.MEDIUM]) is Severity.CRITICAL


def test_values_and_choices() -> None:
    assert Severity("high") is Severity.HIGH
    assert isinstance(Severity.HIGH, str)  # a str enum: compares and serialises as its value
    assert json.dumps([Severity.HIGH]) == '["high"]'
    assert (*ORDER, "none") == FAIL_ON_CHOICES


def test_comparison_with_other_types_is_not_supported() -> None:
    with pytest.raises(TypeError):
        _ = Severity.HIGH < 3  # type: ignore[operator]


@given(severities, severities)
def test_order_is_total_and_consistent_with_rank(a: Severity, b: Severity) -> None:
    assert sum([a < b, a == b, a > b]) == 1
    assert (a < b) == (a.rank < b.rank)
    assert (a <= b) == (a.rank <= b.rank)
    assert (a >= b) == (not a < b)
    assert (a > b) == (b < a)


@given(severities, severities, severities)
def test_order_is_transitive(a: Severity, b: Severity, c: Severity) -> None:
    if a <= b and b <= c:
        assert a <= c


@pytest.mark.parametrize(
    ("severity", "fail_on", "expected"),
    [
        ("medium", "medium", True),
        ("high", "medium", True),
        ("low", "medium", False),
        ("info", "info", True),
        ("critical", "critical", True),
        ("high", "critical", False),
        ("critical", "none", False),
        ("info", "none", False),
    ],
)
def test_gates_table(severity: str, fail_on: str, expected: bool) -> None:
    assert gates(Severity(severity), fail_on) is expected


@given(severities, st.sampled_from(FAIL_ON_CHOICES))
def test_gates_matches_rank(severity: Severity, fail_on: str) -> None:
    expected = fail_on != "none" and severity.rank >= ORDER.index(fail_on)
    assert gates(severity, fail_on) is expected


@pytest.mark.parametrize("bad", ["HIGH", "severe", "", "0"])
def test_gates_rejects_unknown_fail_on(bad: str) -> None:
    with pytest.raises(ValueError, match="--fail-on must be one of"):
        gates(Severity.HIGH, bad)
