"""Red-team round 33, finding 01: a project file's training recipe imported any module.

``checks.*.params.recipe`` / ``retrain_recipe`` went straight to ``importlib.import_module``:
``recipe: "venv.__main__:x"`` made ``bastion assess`` build a virtualenv, run ``ensurepip`` and
exit 0 without assessing anything (``SystemExit`` is no ``ImportError``), so a CI gate passed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.assess.membership.reference import load_recipe, recipe_fingerprint
from bastion.core.config import Asset
from bastion.core.errors import ConfigError
from bastion.targets.torch_target import import_class


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("this:s", "standard library"),
        ("venv.__main__:x", "__main__"),
        ("unittest.__main__:x", "__main__"),
        ("antigravity:x", "standard library"),
        ("typer.__main__:x", "__main__"),  # an installed package's command line
        ("numpy.f2py.__main__:x", "__main__"),
    ],
)
def test_a_recipe_naming_the_stdlib_or_a_main_module_is_refused_before_any_import(ref: str, why: str) -> None:
    mod = ref.split(":")[0]
    was = set(sys.modules)
    with pytest.raises(ConfigError, match=why):
        load_recipe(ref, where="params.recipe")
    assert mod not in sys.modules or mod in was
    with pytest.raises(ValueError, match=why):
        Asset(name="m", kind="model", path="m.pt", framework="torch", model_class=ref)


@pytest.fixture()
def exiting_module(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "rt33_exits.py").write_text("import sys\nsys.exit(0)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield "rt33_exits"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("rt33_exits", None)


def test_a_recipe_module_that_exits_when_imported_is_a_config_error(exiting_module: str) -> None:
    with pytest.raises(ConfigError, match="SystemExit"):
        load_recipe(f"{exiting_module}:train", where="params.retrain_recipe")
    recipe_fingerprint(f"{exiting_module}:train")  # hashing never ends the run either


def test_a_model_class_module_that_exits_when_imported_is_a_config_error(exiting_module: str) -> None:
    with pytest.raises(ConfigError, match="SystemExit"):
        import_class(f"{exiting_module}:Net")


def test_python_warnings_reach_the_terminal_without_raw_control_characters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # finding 03: scikit-learn's InconsistentVersionWarning quotes a pickle's _sklearn_version;
    # warnings.showwarning wrote its escape sequences to stderr raw (window title, clear screen).
    # The CLI escapes where warnings are formatted (what stderr gets), not where they are shown,
    # so pytest.warns and catch_warnings(record=True) still record them
    import warnings

    from bastion.cli.main import configure

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    configure()
    configure()  # idempotent: one layer
    text = warnings.formatwarning("version '\x1b]0;pwned\x07\x1b[2J1.0' of the model", UserWarning, "m.py", 3)
    assert "pwned" in text and "\x1b" not in text and "\x07" not in text
    assert "\\x1b]0;pwned\\x07" in text and text.count("\\x1b") == 2
    with pytest.warns(UserWarning, match="pwned"):
        warnings.warn("pwned", UserWarning, stacklevel=1)
