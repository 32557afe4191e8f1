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


def test_an_unknown_plugin_id_is_a_usage_error_with_one_list_of_ids(
    wine_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # trial 30, L5: `assess --only evasion.pgdd` exited 2 (`--budget fast` exits 4), and the API
    # listed 38 ids (the scanners' too, once something had scanned) against the CLI's 24
    import bastion
    from bastion import api
    from bastion.core.errors import ConfigError, OptionError

    cfg = str(wine_project / "bastion.yaml")
    api.scan_models([wine_project / "model.joblib"])  # registers the scanners
    assert run(["assess", "-c", cfg, "--only", "evasion.pgdd", "--dry-run"]) == 4
    assert run(["assess", "-c", cfg, "--skip", "scan.pickle"]) == 4
    err = capsys.readouterr().err
    assert "unknown plugin id(s) in --only/--skip: evasion.pgdd; known: " in err
    cli_known = err.split("evasion.pgdd; known: ")[1].split("\n")[0]
    with pytest.raises(OptionError) as exc:
        bastion.assess(cfg, only=["evasion.pgdd"], store=False)
    assert isinstance(exc.value, ConfigError) and exc.value.exit_code == 4
    assert str(exc.value).split("known: ")[1] == cli_known
    assert cli_known.split(", ") == api._planning.selectable_ids()
    assert "scan.pickle" not in cli_known and "scan" in cli_known.split(", ")
    # a procedure that does not exist is the same kind of typo; an asset the project lacks is not
    assert run(["harden", "pgd-att", "--asset", "triage", "-c", cfg]) == 4
    assert "unknown hardening procedure 'pgd-att'; known: " in capsys.readouterr().err
    assert run(["assess", "-c", cfg, "--asset", "nosuch", "--dry-run"]) == 2


@pytest.mark.parametrize(("value", "bound"), [("nan", "'nan'"), ("inf", "'inf'"), ("-.inf", "-inf")])
def test_a_non_finite_parameter_is_named_as_such(
    value: str, bound: str, wine_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # trial 30, L5: `harden pgd-at -p epsilon=nan` said "Input should be less than or equal to 1000"
    cfg = str(wine_project / "bastion.yaml")
    assert run(["harden", "pgd-at", "--asset", "triage", "-c", cfg, "-p", f"epsilon={value}"]) == 2
    err = capsys.readouterr().err
    assert f"params.epsilon: {bound} is not a finite number (it must be " in err
    assert "Input should be" not in err


@pytest.mark.parametrize("command", ["sign", "verify", "bom"])
def test_a_folder_given_as_a_key_is_named_a_folder(
    command: str, wine_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # trial 30, L5: `sign x --key models` (a folder) said "models: no such key file"
    (wine_project / "keys").mkdir()
    model, keys = str(wine_project / "model.joblib"), str(wine_project / "keys")
    assert run([command, model, "--key", keys]) == 2
    err = capsys.readouterr().err
    kind = "private" if command == "sign" else "public"
    assert f"--key {keys}: is a folder, not a key file; give the {kind} key's PEM file" in err
    assert "no such key file" not in err


def test_init_names_non_ascii_files_readably(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # trial 30, L4: "ïris model.joblib" became asset "ris-model", "データ.csv" the generic "asset",
    # and every path was written as "\u30e2\u30c7\u30eb/\u00efris model.joblib"
    import joblib
    import numpy as np
    import yaml
    from sklearn.linear_model import LogisticRegression

    from bastion.core.config import load_config

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
    (tmp_path / "モデル").mkdir()
    joblib.dump(LogisticRegression(max_iter=200).fit(x, y), tmp_path / "モデル" / "ïris model.joblib")
    rows = "a,b,c,d,target\n" + "".join(
        f"{r[0]},{r[1]},{r[2]},{r[3]},{t}\n" for r, t in zip(x, y, strict=True)
    )
    names = ["データ.csv", "straße😀.csv", "ünï\u2028x.csv", "Œuvre\x7f.csv"]
    for name in names:
        (tmp_path / name).write_text(rows, encoding="utf-8")
    assert run(["init", str(tmp_path)]) == 0
    text = (tmp_path / "bastion.yaml").read_text(encoding="utf-8")
    assert 'path: "モデル/ïris model.joblib"' in text and "\\u30e2" not in text  # readable
    assert 'path: "ünï\\u2028x.csv"' in text and 'path: "Œuvre\\x7f.csv"' in text  # line break, DEL escaped
    cfg = load_config(tmp_path / "bastion.yaml")
    by_path = {a.path: a.name for a in cfg.assets} | {d.path: d.name for d in cfg.datasets}
    assert by_path == {
        "モデル/ïris model.joblib": "iris-model",
        "データ.csv": "dataset",
        "straße😀.csv": "strasse",
        "ünï\u2028x.csv": "uni-x",
        "Œuvre\x7f.csv": "OEuvre",
    }
    assert all((tmp_path / p).is_file() for p in by_path)  # every path reads back as the file's
    # a name that lost every letter says which file it stands for
    line = next(x for x in text.splitlines() if 'name: "dataset"' in x)
    assert '# REVIEW: a name for "データ"' in line
    assert yaml.safe_load(text)["project"]["name"] == tmp_path.name
