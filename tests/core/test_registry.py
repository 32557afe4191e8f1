from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import BaseModel, Field

from bastion.core import registry
from bastion.core.errors import BastionError, PluginError
from bastion.core.registry import Plugin, Registry


class Params(BaseModel):
    eps: float = Field(default=0.1, gt=0, le=1)
    steps: int = Field(default=10, ge=1)


class PGD(Plugin):
    id: ClassVar[str] = "evasion.pgd"
    Params: ClassVar[type[BaseModel]] = Params


class Square(Plugin):
    id: ClassVar[str] = "evasion.square"


def test_register_and_get() -> None:
    reg = Registry("attack")
    assert reg.register(PGD) is PGD  # usable as a decorator
    reg.register(Square)
    assert reg.get("evasion.pgd") is PGD
    assert "evasion.square" in reg
    assert "evasion.fgsm" not in reg
    assert list(reg) == ["evasion.pgd", "evasion.square"]
    assert len(reg) == 2
    assert reg.items() == [("evasion.pgd", PGD), ("evasion.square", Square)]


def test_decorator_form() -> None:
    reg = Registry("detector")

    @reg.register
    class Drift(Plugin):
        id: ClassVar[str] = "detect.drift"

    assert reg.get("detect.drift") is Drift


def test_re_registering_the_same_class_is_harmless() -> None:
    reg = Registry("attack")
    reg.register(PGD)
    reg.register(PGD)
    assert len(reg) == 1


def test_duplicate_id_from_another_class_is_an_error() -> None:
    reg = Registry("attack")
    reg.register(PGD)

    class Impostor(Plugin):
        id: ClassVar[str] = "evasion.pgd"

    with pytest.raises(PluginError, match=r"'evasion\.pgd' already registered by PGD"):
        reg.register(Impostor)
    assert reg.get("evasion.pgd") is PGD


def test_unknown_id_lists_known_ids() -> None:
    reg = Registry("attack")
    with pytest.raises(PluginError, match="known: none"):
        reg.get("evasion.pgd")
    reg.register(PGD)
    reg.register(Square)
    with pytest.raises(
        PluginError, match=r"unknown attack 'evasion\.fgsm'; known: evasion\.pgd, evasion\.square"
    ):
        reg.get("evasion.fgsm")


@pytest.mark.parametrize("bad", ["", "pgd", "Evasion.PGD", "evasion.", "evasion..pgd", "evasion pgd.x"])
def test_malformed_ids_are_rejected(bad: str) -> None:
    cls = type("Bad", (Plugin,), {"id": bad})
    with pytest.raises(PluginError, match="not a dotted lower-case id"):
        Registry("check").register(cls)


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown plugin kind"):
        Registry("attacker")
    assert set(registry.REGISTRIES) == {"attack", "scanner", "detector", "check", "defence"}


def test_register_decorator_and_find_use_the_kind_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = {kind: Registry(kind) for kind in registry.KINDS}
    monkeypatch.setattr(registry, "REGISTRIES", fresh)
    registry.register("attack")(PGD)
    assert registry.find("evasion.pgd") is PGD
    assert fresh["attack"].get("evasion.pgd") is PGD
    with pytest.raises(PluginError, match=r"unknown plugin 'scan\.nope'; known: evasion\.pgd"):
        registry.find("scan.nope")


def test_parse_params_names_every_bad_field() -> None:
    p = PGD.parse_params({"eps": 0.3})
    assert isinstance(p, Params)
    assert (p.eps, p.steps) == (0.3, 10)
    assert PGD.parse_params(None) == Params()
    with pytest.raises(PluginError) as info:
        PGD.parse_params({"eps": 2, "steps": 0}, where="checks.evasion.pgd.params")
    msg = str(info.value)
    assert "checks.evasion.pgd.params.eps" in msg
    assert "checks.evasion.pgd.params.steps" in msg
    assert isinstance(info.value, BastionError)


def test_no_params_rejects_any_parameter() -> None:
    with pytest.raises(PluginError, match=r"params\.x"):
        Square.parse_params({"x": 1})
