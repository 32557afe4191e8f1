"""New-user trial 32: a project file's ``model_class`` may not name the standard library."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bastion.cli.main import run
from bastion.core.config import Asset
from bastion.core.errors import ConfigError
from bastion.targets.torch_target import import_class


@pytest.mark.parametrize(
    "ref", ["this:WineNet", "antigravity:Net", "idlelib.idle:Net", "os:system", "__main__:Net"]
)
def test_model_class_of_the_standard_library_is_refused_before_any_import(ref: str) -> None:
    root = ref.split(":")[0].split(".")[0]
    was_loaded = root in sys.modules
    with pytest.raises(ValueError, match="standard library"):
        Asset(name="m", kind="model", path="m.pt", framework="torch", model_class=ref)
    with pytest.raises(ConfigError, match="standard library"):
        import_class(ref)  # the loader refuses it too, without importing it
    assert (root in sys.modules) == was_loaded


@pytest.mark.parametrize(
    "ref", ["mynets:WineNet", "torchvision.models.resnet:ResNet", "bastion.examples.clinic_models:DigitsCNN"]
)
def test_the_users_and_libraries_model_classes_stand(ref: str) -> None:
    assert Asset(name="m", kind="model", path="m.pt", framework="torch", model_class=ref).model_class == ref


def test_assess_on_a_project_naming_a_stdlib_model_class_runs_nothing_of_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # trial 32: `model_class: "this:WineNet"` printed the Zen of Python (the module's import ran)
    (tmp_path / "m.pt").write_bytes(b"\x80\x02}q\x00.")
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        "version: 1\nassets:\n  - {name: m, path: m.pt, framework: torch, model_class: 'this:WineNet'}\n"
    )
    sys.modules.pop("this", None)
    assert run(["assess", "-c", str(cfg), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert "Zen of Python" not in out + err and "this" not in sys.modules
    assert "standard library" in err and "model_class" in err
