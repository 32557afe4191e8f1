from __future__ import annotations

import re

import pytest

from bastion.core import atlas

CONSTANTS = {name: value for name, value in vars(atlas).items() if name.isupper() and isinstance(value, str)}


def test_there_are_technique_constants() -> None:
    assert len(CONSTANTS) >= 10


@pytest.mark.parametrize("name", sorted(CONSTANTS))
def test_every_constant_is_in_the_shipped_data(name: str) -> None:
    tid = CONSTANTS[name]
    assert re.fullmatch(r"AML\.T\d{4}(\.\d{3})?", tid)
    assert atlas.is_known(tid), f"{name} = {tid} is not in ATLAS {atlas.version()}"
    t = atlas.technique(tid)
    assert t.id == tid
    assert t.name
    assert t.url == f"https://atlas.mitre.org/techniques/{tid}"


def test_unknown_ids() -> None:
    assert not atlas.is_known("AML.T9999")
    assert not atlas.is_known("T0011")
    with pytest.raises(KeyError):
        atlas.technique("AML.T9999")


def test_version_of_shipped_data() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", atlas.version())
