from __future__ import annotations

import pytest

from bastion.core import errors
from bastion.core.capability import Capability, missing
from bastion.core.errors import (
    BastionError,
    ConfigError,
    IntegrityError,
    MissingExtraError,
    NotFittedError,
    PluginError,
    ScanError,
    TargetError,
)
from bastion.core.settings import DEFAULT_DB, load_settings


def test_capability_missing_in_declaration_order() -> None:
    requires = frozenset({Capability.QUERY_LIMITED, Capability.LOSS_GRADIENTS, Capability.PROBABILITIES})
    offers = frozenset({Capability.PROBABILITIES, Capability.BATCHED})
    assert missing(requires, offers) == [Capability.LOSS_GRADIENTS, Capability.QUERY_LIMITED]
    assert missing(frozenset(), offers) == []
    assert Capability("label-only") is Capability.LABEL_ONLY


def test_error_tree_and_exit_codes() -> None:
    for cls in (
        ConfigError,
        TargetError,
        PluginError,
        ScanError,
        IntegrityError,
        NotFittedError,
        MissingExtraError,
    ):
        assert issubclass(cls, BastionError)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(MissingExtraError, ImportError)
    assert not issubclass(IntegrityError, ValueError)
    assert BastionError.exit_code == 2


def test_config_error_lists_problems() -> None:
    e = ConfigError("bastion.yaml: 2 problem(s)", ["a.b: bad", "c[0]: worse"])
    assert e.problems == ["a.b: bad", "c[0]: worse"]
    assert str(e) == "bastion.yaml: 2 problem(s)\n  - a.b: bad\n  - c[0]: worse"
    assert str(ConfigError("one line")) == "one line"


def test_missing_extra_names_the_install_line() -> None:
    e = MissingExtraError("torch", "torch")
    assert (e.package, e.extra) == ("torch", "torch")
    assert "pip install 'bastion-ml[torch]'" in str(e)


def test_require_imports_or_names_the_extra() -> None:
    import json

    assert errors.require("json", "none") is json
    with pytest.raises(MissingExtraError, match=r"pip install 'bastion-ml\[onnx\]'") as info:
        errors.require("bastion_no_such_module.sub", "onnx")
    assert info.value.package == "bastion_no_such_module"


def test_settings_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BASTION_DB", raising=False)
    s = load_settings()
    assert (s.db_url, s.fail_on, s.budget, s.max_time) == (DEFAULT_DB, "medium", "standard", None)
    monkeypatch.setenv("BASTION_DB", "sqlite:///env.db")
    assert load_settings().db_url == "sqlite:///env.db"
    assert load_settings(db_url="sqlite:///flag.db").db_url == "sqlite:///flag.db"
    assert load_settings(db_url=None).db_url == "sqlite:///env.db"
    assert load_settings(fail_on="none").fail_on == "none"
    with pytest.raises(ValueError):
        load_settings(fail_on="severe")
    with pytest.raises(ValueError):
        load_settings(budget="huge")
