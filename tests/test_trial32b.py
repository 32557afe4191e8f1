"""Trial 32, second batch: config errors at once, help text, baseline, store hints, guard host, text files."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.cli.main import run
from bastion.core.errors import ConfigError

_BAD_YAML = """\
version: 1
project: {name: p}
datasets:
  - {name: d, path: d.csv, label: y, splits: {train: [0, 1], test: [2, 3]}}
assets:
  - name: nn
    path: nn.pt
    framework: torch
    model_class: "mypkg.nets:Net"
    dataset: d
    input: {shape: [4]}
    num_classes: 2
checks:
  evasion.pgdd: {}
  evasion.pgd: {params: {stepz: 3}}
  evasion.fgsm: {thresholds: [{metric: no_such_metric, op: gt, value: 0.5}]}
"""


def test_every_config_problem_comes_in_one_error_naming_the_file(tmp_path: Path) -> None:
    # trial 32, M4: four runs to see unknown id, bad threshold, missing paths, bad params
    from bastion.api import assess, preflight

    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(_BAD_YAML)
    for call in (lambda: preflight(cfg), lambda: assess(cfg, store=False)):
        with pytest.raises(ConfigError) as info:
            call()
        text = str(info.value) + "\n" + "\n".join(info.value.problems)
        assert str(cfg) in str(info.value)
        assert "checks.evasion.pgdd: unknown check id" in text
        assert "checks.evasion.fgsm.thresholds" in text and "no_such_metric" in text
        assert "assets[0].path: file not found" in text and "datasets[0].path: file not found" in text
        assert "checks.evasion.pgd.params.stepz" in text


def test_dry_run_lists_every_config_problem_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(_BAD_YAML)
    assert run(["assess", "-c", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err
    for words in ("evasion.pgdd", "no_such_metric", "nn.pt", "stepz", str(cfg)):
        assert words in err, words


@pytest.mark.parametrize(
    ("argv", "sentence"),
    [
        (["sign"], "no signature was written (the bundle, if one was there, is as it was; exit 130)"),
        (["harden"], "each (and the original) is attacked by membership inference"),
        (["bom"], "the nearest bastion.yaml (in PATH's folder or above) decides for the files"),
        (["data", "profile"], "if the output cannot be written, nothing is saved (exit 2)"),
        (["data", "validate"], "A file whose columns do not match the profile"),
    ],
)
def test_help_reads_as_prose_without_rst_markup(
    argv: list[str], sentence: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # trial 32: Typer kept the docstrings' line breaks (lines broke mid-sentence) and ``signed`` raw
    monkeypatch.setenv("COLUMNS", "400")
    assert run([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert sentence in out
    assert "``" not in out


def test_baseline_latest_takes_the_newest_run_covering_this_runs_scope(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # trial 32: latest took a newer run narrowed to another check, so a model file that had just
    # turned malicious read 'not-in-baseline' instead of 'new'
    import json
    import pickle

    (tmp_path / "m.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    (tmp_path / "n.pkl").write_bytes(pickle.dumps({"w": [3.0]}, protocol=2))
    (tmp_path / "bastion.yaml").write_text(
        "version: 1\nproject: {name: p}\nassets:\n  - {name: m, path: m.pkl}\n  - {name: n, path: n.pkl}\n"
    )
    db = f"sqlite:///{tmp_path / 'b.db'}"
    argv = ["assess", "-c", str(tmp_path / "bastion.yaml"), "-o", str(tmp_path / "r"), "--db", db]
    argv += ["--fail-on", "none"]
    assert run(argv) == 0
    full = json.loads((tmp_path / "r" / "report.json").read_text())["run"]["id"]
    assert run([*argv, "--only", "governance.runtime", "--asset", "n"]) == 0
    narrowed = json.loads((tmp_path / "r" / "report.json").read_text())["run"]["id"]
    (tmp_path / "m.pkl").write_bytes(b"\x80\x02cos\nsystem\nX\x05\x00\x00\x00touch\x85R.")
    capsys.readouterr()
    assert run([*argv, "--baseline", "latest"]) == 0
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert rep["baseline"] == full != narrowed
    states = {f["state"] for f in rep["findings"] if f["asset"] == "m" and f["rule_id"].startswith("scan.")}
    assert states == {"new"}
    assert f"baseline: run {full} of " in capsys.readouterr().err  # which run it took
    assert narrowed in caplog.text and "newest covering this run's scope" in caplog.text  # and passed over


@pytest.mark.parametrize(
    ("base", "mine", "covers"),
    [
        (None, None, True),
        (None, {"only": ["evasion"]}, True),
        ({"only": ["governance.runtime"], "asset": "n"}, None, False),
        ({"only": ["governance.runtime"], "asset": "n"}, {"only": ["governance.runtime"], "asset": "n"}, 1),
        ({"only": ["governance"]}, {"only": ["governance.runtime"], "asset": "n"}, True),
        ({"only": ["governance.runtime"]}, {"only": ["governance"]}, False),
        ({"asset": "n"}, {"asset": "m"}, False),
        ({"skip": ["evasion"]}, {"skip": ["evasion.pgd"]}, False),
        ({"skip": ["evasion.pgd"]}, {"skip": ["evasion"]}, True),
        ({"skip": ["evasion"]}, {"only": ["membership"]}, True),
    ],
)
def test_which_stored_scope_covers_a_runs_scope(
    base: dict[str, object] | None, mine: dict[str, object] | None, covers: bool
) -> None:
    from bastion.api._assessing import _covers
    from bastion.core.report import RunScope

    def scope(d: dict[str, object] | None) -> RunScope | None:
        return None if d is None else RunScope.model_validate(d)

    assert _covers(scope(base), scope(mine)) is bool(covers)


def test_store_commands_run_from_another_folder_name_the_project_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # trial 32: history/show/data verify said nothing stored or registered, with no hint of --db
    import pickle

    monkeypatch.delenv("BASTION_DB", raising=False)
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "m.pkl").write_bytes(pickle.dumps({"w": [1.0]}, protocol=2))
    cfg = proj / "bastion.yaml"
    cfg.write_text("version: 1\nproject: {name: p}\nassets:\n  - {name: m, path: m.pkl}\n")
    assert run(["assess", "-c", str(cfg), "-o", str(tmp_path / "r"), "--fail-on", "none"]) == 0
    assert (proj / ".bastion" / "bastion.db").is_file()
    (tmp_path / "d.csv").write_text("a,y\n1,0\n2,1\n")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    want = f"--db sqlite:///{proj / '.bastion' / 'bastion.db'}"
    assert run(["history"]) == 3
    err = capsys.readouterr().err.replace("\n", "")
    assert "no bastion.yaml in" in err and want in err
    assert run(["show", "latest"]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "no bastion.yaml in" in err and want in err
    assert run(["data", "verify", "d.csv"]) == 2
    err = capsys.readouterr().err.replace("\n", "")
    assert "is not registered" in err and want in err
    # in the project's own folder: no hint
    monkeypatch.chdir(proj)
    assert run(["data", "verify", str(tmp_path / "d.csv")]) == 2
    assert "no bastion.yaml in" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "warned"),
    [
        ("127.0.0.1", False),
        ("localhost", False),
        ("::1", False),
        ("127.0.0.5", False),
        ("0.0.0.0", True),
        ("::", True),
        ("10.0.0.4", True),
        ("guard.example.org", True),
    ],
)
def test_guard_serve_warns_off_loopback_that_keys_travel_in_clear(host: str, warned: bool) -> None:
    # trial 32: --host 0.0.0.0 gave no warning that bearer keys then travel over plain HTTP
    from bastion.cli.guard import exposure_warning

    text = exposure_warning(host)
    assert (text is not None) is warned
    if text is not None:
        assert "plain HTTP" in text and "TLS" in text and "API keys" in text


def test_a_short_text_file_reads_as_not_a_pickle_and_a_pkl_of_it_is_never_safe(tmp_path: Path) -> None:
    # trial 32: readme.txt = "hi" was "skipped … malformed pickle: memo value not found at index 105"
    from bastion.scan import scan_paths

    (tmp_path / "readme.txt").write_text("hi")
    (tmp_path / "m.pkl").write_text("hi")
    by_name = {Path(r.path).name: r for r in scan_paths([tmp_path]).files}
    txt = by_name["readme.txt"]
    assert txt.verdict.value == "skipped" and txt.reason is not None
    assert txt.reason.startswith("not a pickle") and "memo" not in txt.reason
    assert by_name["m.pkl"].verdict.value == "error"  # named as a pickle: never safe, never skipped
