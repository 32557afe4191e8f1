"""New-user trial 30 (and trial 25's carry-overs): help texts, hints, paths and messages of the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.cli.main import run


def test_demo_help_shows_where_the_example_is_built(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # trial 25/30: "Where to build the example project ." -- the "[default: …]" written into the
    # help text was read as a Rich markup tag and dropped
    monkeypatch.setenv("COLUMNS", "240")
    assert run(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "default: (examples/clinic, or examples/clinic-poisoned with --poisoned)" in out
    assert "project ." not in out


@pytest.mark.parametrize(
    ("typo", "hint"),
    [
        ("--fial-on", "No such option: --fial-on (Possible options: --fail-on"),
        ("--jbos=2", "No such option: --jbos (Possible options: --jobs)"),
        ("--zzz", "No such option: --zzz\n"),
    ],
)
def test_scan_names_an_unknown_option_and_the_close_ones(
    typo: str, hint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # trial 25/30: `scan --fial-on` said "unrecognized arguments" with no hint (`assess` gives one)
    assert run(["scan", typo, "low", str(tmp_path)]) == 4
    assert hint in capsys.readouterr().err


def test_help_of_the_callable_packages_documents_the_function() -> None:
    # trial 25/30: help(bastion.assess) showed the subpackage's one line, and
    # inspect.signature(bastion.assess) was (*args, **kwargs)
    import inspect
    import pydoc

    import bastion
    from bastion import api

    for name in ("assess", "scan"):
        package, fn = getattr(bastion, name), getattr(api, name)
        assert inspect.signature(package) == inspect.signature(fn)
        text = pydoc.render_doc(package, renderer=pydoc.plaintext)
        summary = (inspect.getdoc(fn) or "").splitlines()[0]
        assert f"bastion.{name} - {summary}" in text
        assert f"bastion.{name}(config" in text or f"bastion.{name}(paths" in text
    assert "Attacks under a budget" in (bastion.assess.__doc__ or "")  # the package's own line too
    import bastion.assess.evasion as evasion  # still a package

    assert evasion.__name__ == "bastion.assess.evasion"


def test_harden_from_another_folder_prints_the_model_path_from_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # trial 30, L8: `harden -c ../clinic/bastion.yaml` printed ".bastion/models/…", the path
    # from the project folder, not from the current one
    from bastion import api
    from bastion.api import HardenResult

    rel = ".bastion/models/digits-trades-0a1b.pt"
    res = HardenResult("digits", 4, "digits.v4", rel, "ab" * 32, "defend.trades", {"epochs": 1})
    monkeypatch.setattr(api, "harden", lambda *a, **k: res)
    (tmp_path / "clinic").mkdir()
    (tmp_path / "else").mkdir()
    monkeypatch.chdir(tmp_path / "else")
    assert run(["harden", "trades", "--asset", "digits", "-c", "../clinic/bastion.yaml"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["path"] == f"../clinic/{rel}"
    assert f"trades → ../clinic/{rel}" in captured.err
    monkeypatch.chdir(tmp_path / "clinic")  # from the project folder: as before
    assert run(["harden", "trades", "--asset", "digits"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == rel
