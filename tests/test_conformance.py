"""The conformance kit over every registered attack and every target kind (DESIGN.md)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bastion.testing import KINDS, TinyTarget, check_conformance, conformance_cases, tiny_targets


@pytest.fixture(scope="module")
def tiny() -> Iterator[dict[str, TinyTarget]]:
    with tiny_targets(seed=0) as targets:
        yield targets


@pytest.mark.parametrize(("plugin", "kind"), conformance_cases())
def test_plugin_conforms(plugin: str, kind: str, tiny: dict[str, TinyTarget]) -> None:
    from bastion.core.registry import attacks

    report = check_conformance(attacks.get(plugin), tiny[kind])
    assert report.problems == [], report
    assert report.status in ("ok", "skipped"), report  # a default setting never fails preflight
    if report.status == "skipped":
        assert report.reason, "a skip always says why"


@pytest.mark.parametrize("kind", KINDS)
def test_a_black_box_attack_runs_on_every_kind(kind: str, tiny: dict[str, TinyTarget]) -> None:
    from bastion.core.registry import attacks

    report = check_conformance(attacks.get("evasion.square"), tiny[kind])
    assert report.status == "ok" and report.problems == [], report
