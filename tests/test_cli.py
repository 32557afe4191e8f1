"""The CLI: exit codes, formats, usage errors, bad input — over real generated files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from bastion.cli.main import run
from bastion.core.errors import ConfigError


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def models(tmp_path: Path) -> Path:
    import joblib
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    d = tmp_path / "models"
    d.mkdir()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    joblib.dump(LogisticRegression().fit(x, y), d / "lr.joblib")
    torch.save(torch.nn.Linear(3, 2).state_dict(), d / "linear.pt")
    np.save(d / "weights.npy", rng.normal(size=(4, 4)))
    (d / "README.txt").write_text("not a model\n")
    return d


def test_scan_safe_folder_exit_0(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["scan", str(models), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    verdicts = {Path(f["path"]).name: f["verdict"] for f in out["files"]}
    assert verdicts == {
        "lr.joblib": "safe",
        "linear.pt": "safe",
        "weights.npy": "safe",
        "README.txt": "skipped",
    }


def test_scan_payload_exit_1_and_not_executed(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "marker"
    (models / "evil.bin").write_bytes(pickle.dumps(_Payload(marker), protocol=2))
    assert run(["scan", str(models)]) == 1
    assert "evil.bin" in capsys.readouterr().err
    assert not marker.exists()
    assert run(["scan", str(models), "--fail-on", "none"]) == 0
    assert (
        run(["scan", str(models), "--fail-on", "critical", "-f", "sarif", "-o", str(tmp_path / "s.sarif")])
        == 1
    )
    sarif = json.loads((tmp_path / "s.sarif").read_text())
    assert sarif["runs"][0]["results"][0]["ruleId"].startswith("scan.")


def test_scan_error_and_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "trunc.pkl").write_bytes(pickle.dumps({"a": list(range(100))}, protocol=4)[:-20])
    assert run(["scan", str(tmp_path / "trunc.pkl")]) == 2
    (tmp_path / "notes.txt").write_text("hello")
    assert run(["scan", str(tmp_path / "notes.txt")]) == 3
    assert run(["scan", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_usage_errors_exit_4(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["scan", "--bogus", "x"]) == 4
    assert run(["no-such-command"]) == 4
    assert run(["scan", "x", "--format", "xml"]) == 4
    assert run(["scan", "x", "--fail-on", "severe"]) == 4


def test_allow_list_from_explicit_flag_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a pickle reaching an unknown class: suspicious, unless the user allows it explicitly
    data = b"\x80\x02cmyproject.layers\nBlock\nq\x00)\x81q\x01."
    (tmp_path / "m.pkl").write_bytes(data)
    (tmp_path / "bastion.yaml").write_text("version: 1\nscan:\n  allow: [myproject.layers.Block]\n")
    assert run(["scan", str(tmp_path / "m.pkl")]) == 1  # the config beside the model is ignored
    assert run(["scan", str(tmp_path / "m.pkl"), "--allow", "myproject.layers.Block"]) == 0
    assert run(["scan", str(tmp_path / "m.pkl"), "-c", str(tmp_path / "bastion.yaml")]) == 0


def test_init_writes_valid_starter(models: Path, tmp_path: Path) -> None:
    import numpy as np

    np.savez(models / "data.npz", x=np.zeros((10, 3), dtype=np.float32), y=np.arange(10) % 2)
    assert run(["init", str(models)]) == 0
    from bastion.core.config import load_config

    cfg = load_config(models / "bastion.yaml")
    assert {a.path for a in cfg.assets} >= {"lr.joblib", "linear.pt"}
    assert [d.path for d in cfg.datasets] == ["data.npz"]
    assert run(["init", str(models)]) == 2  # exists; no overwrite without --force
    assert run(["init", str(tmp_path / "nope")]) == 2


def test_invalid_config_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        "version: 1\nassets:\n  - {name: a, kind: model}\n  - {name: b, kind: endpoint, url: ftp://x}\n"
        "checks:\n  evasion.pgd: {thresholds: [{metric: m, op: '<<', value: 1}]}\n"
    )
    assert run(["assess", "-c", str(cfg), "-o", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    for field in ("assets[0]", "assets[1]", "checks.evasion.pgd.thresholds[0].op"):
        assert field in err
    assert "Traceback" not in err and not (tmp_path / "r").exists()


def test_output_to_special_file_is_written_in_place(models: Path, tmp_path: Path) -> None:
    fifo_free = tmp_path / "devnull"
    import os
    import stat

    os.mknod(fifo_free, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null twin
    assert run(["scan", str(models), "-f", "json", "-o", str(fifo_free)]) == 0
    assert stat.S_ISCHR(os.stat(fifo_free).st_mode), "the device must never be replaced by a file"


def test_output_to_folder_is_a_clear_error(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "outdir"
    out.mkdir()
    assert run(["scan", str(models), "-f", "json", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "internal error" not in err
    assert list(out.iterdir()) == [] and not list(tmp_path.glob(".outdir*"))


def test_init_quotes_file_names(tmp_path: Path) -> None:
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x, y = np.random.default_rng(0).random((20, 3)), np.arange(20) % 2
    joblib.dump(LogisticRegression().fit(x, y), tmp_path / "x.joblib\n    tags: [injected]")
    joblib.dump(LogisticRegression().fit(x, y), tmp_path / "model #1.joblib")
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=y)
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n")
    assert run(["init", str(tmp_path)]) == 0
    from bastion.core.config import load_config

    cfg = load_config(tmp_path / "bastion.yaml")
    paths = {a.path for a in cfg.assets}
    assert "model #1.joblib" in paths and "x.joblib\n    tags: [injected]" in paths
    assert all(a.tags == [] for a in cfg.assets)
    assert len({d.name for d in cfg.datasets}) == 2


def test_history_and_show_do_not_create_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "none" / "b.db"
    assert run(["history", "--db", f"sqlite:///{db}"]) == 3
    assert f"no runs stored: no database file at {db}" in capsys.readouterr().err
    assert run(["show", "latest", "--db", f"sqlite:///{db}"]) == 2
    assert not db.exists() and not db.parent.exists()


def test_unknown_check_key_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bastion.yaml").write_text(
        "version: 1\nchecks:\n  evasoin.pgd: {}\n  scan.pickle: {enabled: false}\n"
    )
    assert run(["assess", "-c", str(tmp_path / "bastion.yaml"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "checks.evasoin.pgd: unknown check id" in err and "checks.scan.pickle" in err


def test_labels_outside_num_classes_fail_preflight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    np.savez(
        tmp_path / "d.npz", x=np.zeros((10, 3), dtype=np.float32), y=np.array([0, 1, 2, 7, 0, 1, 2, 0, 1, 2])
    )
    (tmp_path / "m.pkl").write_bytes(b"\x80\x04N.")
    (tmp_path / "bastion.yaml").write_text(
        "version: 1\nassets:\n  - {name: m, path: m.pkl, framework: sklearn, num_classes: 3, dataset: d,"
        " input: {shape: [3]}}\ndatasets:\n  - {name: d, path: d.npz}\n"
    )
    assert run(["assess", "-c", str(tmp_path / "bastion.yaml"), "--dry-run"]) == 2
    assert "label(s) outside 0..2" in capsys.readouterr().err


def test_init_warns_on_stderr_about_a_malicious_model_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    (tmp_path / "evil.pkl").write_bytes(b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x8c\x02id\x85R.")
    (tmp_path / "ok.pkl").write_bytes(b"\x80\x04]\x94.")
    with caplog.at_level(logging.WARNING, logger="bastion.discover"):
        assert run(["init", str(tmp_path)]) == 0
    warned = [r.getMessage() for r in caplog.records if r.name == "bastion.discover"]
    assert len(warned) == 1 and warned[0].startswith("evil.pkl: the scanner judged it malicious")


@pytest.mark.parametrize("argv", [["scan", "-j", "-3"], ["bom", "-j", "-1"], ["bom", "-j", "x"]])
def test_a_bad_jobs_value_is_a_usage_error_everywhere(tmp_path: Path, argv: list[str]) -> None:
    # new-user trial: `scan -j -3` exited 4 (usage) but `bom -j -1` exited 2
    f = tmp_path / "m.pkl"
    f.write_bytes(b"\x80\x04N.")
    assert run([argv[0], str(f), *argv[1:]]) == 4


def test_help_texts_show_no_rst_markup(capsys: pytest.CaptureFixture[str]) -> None:
    # new-user trial: help texts showed ``double backticks`` from the docstrings
    for cmd in (
        ["--help"],
        ["harden", "--help"],
        ["bom", "--help"],
        ["assess", "--help"],
        ["guard", "fit", "--help"],
    ):
        assert run(cmd) == 0
    out = capsys.readouterr().out
    assert "sweep" in out and "pedigree" in out
    assert "``" not in out and ":func:" not in out and ":class:" not in out


@pytest.mark.timeout(60)  # a FIFO config used to hang for ever
@pytest.mark.parametrize("kind", ["fifo", "too-large"])
@pytest.mark.parametrize(
    "args",
    [
        ["assess", "-c", "{f}", "--dry-run"],
        ["assess", "-c", "{f}"],
        ["scan", "{m}", "-c", "{f}"],
        ["scan", "{m}", "--rules", "{f}"],
        ["guard", "serve", "-c", "{f}"],
        ["guard", "verify-log", "-c", "{f}"],
    ],
)
def test_a_config_that_is_not_a_small_regular_file_is_one_clear_error(
    kind: str, args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # red-team round 22 F4: -c /dev/zero ended in "internal error: MemoryError", a FIFO hung, and
    # `assess -c` called both "config file not found"
    import os

    from bastion.core.files import MAX_CONFIG_BYTES

    f = tmp_path / "cfg.yaml"
    if kind == "fifo":
        os.mkfifo(f)
    else:
        with f.open("wb") as fh:
            fh.truncate(MAX_CONFIG_BYTES + 1)
    m = tmp_path / "m.pkl"
    m.write_bytes(pickle.dumps([1, 2]))
    assert run([a.format(f=f, m=m) for a in args]) == 2
    err = capsys.readouterr().err
    assert ("not a regular file (a FIFO)" if kind == "fifo" else "too large") in err, err
    assert str(f) in err and "not found" not in err and "internal error" not in err


def test_a_store_failure_at_the_end_keeps_the_report_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # red-team round 22 F6: saving the run failed after all the work ("internal error"), and no
    # report folder was written; now the files are written first and the error is a store error
    from bastion.store import Store
    from bastion.store.errors import StoreError

    (tmp_path / "m.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        "version: 1\nproject: {name: p}\nassets: [{name: m, kind: model, path: m.pkl, format: pickle}]\n"
    )

    def boom(self: Store, report: object, **kw: object) -> str:
        raise StoreError("cannot save run x to sqlite:///st.db: OverflowError: Python int too large")

    monkeypatch.setattr(Store, "save_report", boom)
    out = tmp_path / "out"
    code = run(["assess", "-c", str(cfg), "-o", str(out), "--db", f"sqlite:///{tmp_path / 'st.db'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert {p.name for p in out.iterdir()} == {"report.html", "report.json", "report.sarif", "bom.json"}
    assert "the run was not stored" in err and "cannot save run x" in err and "internal error" not in err


def test_the_run_is_stored_even_when_writing_the_report_files_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion import api
    from bastion.core.errors import ConfigError
    from bastion.core.settings import load_settings

    (tmp_path / "m.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        "version: 1\nproject: {name: p}\nassets: [{name: m, kind: model, path: m.pkl, format: pickle}]\n"
    )
    db = f"sqlite:///{tmp_path / 'st.db'}"

    def hook(report: object) -> None:
        raise ConfigError("disk full")

    with pytest.raises(ConfigError, match="disk full"):
        api.assess(cfg, settings=load_settings(db_url=db), before_store=hook)
    assert len(api.history(db_url=db)) == 1


def test_history_limit_and_bad_run_references_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # red-team round 22 F9: `history -n 99999999999999999999999` and `show $'\xff\xfe'` ended in
    # "internal error" (OverflowError, UnicodeEncodeError)
    from bastion.cli._app import MAX_HISTORY_LIMIT
    from bastion.store.repository import MAX_LIST_LIMIT

    assert MAX_HISTORY_LIMIT == MAX_LIST_LIMIT
    (tmp_path / "m.pkl").write_bytes(pickle.dumps([1, 2]))
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        "version: 1\nproject: {name: p}\nassets: [{name: m, kind: model, path: m.pkl, format: pickle}]\n"
    )
    db = f"sqlite:///{tmp_path / 'st.db'}"
    assert run(["assess", "-c", str(cfg), "-o", str(tmp_path / "out"), "--db", db, "--fail-on", "none"]) == 0
    capsys.readouterr()
    assert run(["history", "-n", "99999999999999999999999", "--db", db]) == 4  # usage
    err = capsys.readouterr().err
    assert "--limit" in err and "1000000" in err and "internal error" not in err
    assert run(["history", "-n", str(MAX_HISTORY_LIMIT), "--db", db, "-f", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    for ref in ("\udcff\udcfe", "zz-top"):
        assert run(["show", ref, "--db", db]) == 2
        err = capsys.readouterr().err
        assert "not found" in err and "internal error" not in err


def test_harden_warns_when_the_new_version_lost_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    # new-user trial: a 0.18-accuracy distilled model was recorded as the latest version in silence
    from bastion.cli.harden import _warn_accuracy_drop

    _warn_accuracy_drop({"test_accuracy": 0.18, "teacher_test_accuracy": 0.97})
    assert "test accuracy is 0.180, the original's 0.970" in capsys.readouterr().err
    _warn_accuracy_drop({"test_accuracy": 0.95, "test_accuracy_before": 0.97})
    assert capsys.readouterr().err == ""


def test_harden_prints_what_it_recorded_as_a_table_not_a_dict_repr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # new-user trial: the details were one raw dict repr on stderr, wrapped mid-token
    from bastion.api import HardenResult
    from bastion.cli.harden import _print_version

    details = {
        "epsilon": 2.978608,
        "accountant": "rdp",
        "validator_fixed_layers": True,
        "format": "torch",
        "model_class": "bastion.examples.clinic_models:DiagnosisMLP",
        "model_kwargs": {"n_features": 64, "hidden": 128},
        "params": {"epsilon": 3.0, "seed": None},
        "parent_sha256": "beaa2e0783662a63292e4b945044f162d8bfe6f17256f34373222f06ae12951d",
        "test_accuracy": None,
    }
    res = HardenResult(
        "digits", 2, "digits.v2", ".bastion/models/d.pt", "2eab7764" * 8, "defend.dp-train", details
    )
    _print_version(res)
    err = capsys.readouterr().err
    assert "{'" not in err and "'epsilon'" not in err
    lines = err.splitlines()
    assert lines[0].startswith(
        "recorded digits.v2: defend.dp-train → .bastion/models/d.pt (sha256 2eab77642eab…)"
    )
    rows = {line.split()[0]: line.split(None, 1)[1].strip() for line in lines[1:]}
    assert rows == {
        "epsilon": "2.979",
        "accountant": "rdp",
        "validator_fixed_layers": "yes",
        "model_class": "bastion.examples.clinic_models:DiagnosisMLP",
        "model_kwargs": "n_features=64, hidden=128",
        "params": "epsilon=3",
        "parent_sha256": "beaa2e078366…",
    }


def test_harden_summary_sends_no_control_characters_from_the_config_to_the_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Red-team round 28, F6: Rich markup was escaped, but an ESC sequence in bastion.yaml's
    model_kwargs reached the terminal (screen cleared, a fake "approved" line, an OSC-8 link)."""
    from bastion.api import HardenResult
    from bastion.cli.harden import _print_version

    hostile = (
        "\x1b[2J\x1b[H\x1b[32mAll checks passed\x1b[0m \x1b]8;;https://evil.example/\x07open\x1b]8;;\x07\x9b"
    )
    details = {"model_kwargs": {"note": hostile}, "model_class": "m:C\x1b[1m", "note\x1b[2J": 1}
    res = HardenResult(
        "triage", 2, "triage.v2", "models/t\x1b[2J.joblib", "2eab7764" * 8, "defend.dp", details
    )
    _print_version(res)
    res.reused = True
    _print_version(res)
    err = capsys.readouterr().err
    assert not any((ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F for c in err), repr(err)
    assert "note=\\x1b[2J\\x1b[H\\x1b[32mAll checks passed" in err and "\\x9b" in err
    assert "models/t\\x1b[2J.joblib" in err and "identical to the recorded version triage.v2" in err


def test_harden_warns_about_a_dp_version_that_lost_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    # dp-train and dp-logreg record the original's accuracy as original_test_accuracy (a 0.78 ->
    # 0.18 DP model was recorded in silence)
    from bastion.cli.harden import _warn_accuracy_drop

    _warn_accuracy_drop({"test_accuracy": 0.183333, "original_test_accuracy": 0.783333})
    assert "test accuracy is 0.183, the original's 0.783" in capsys.readouterr().err


def test_a_command_run_from_another_folder_uses_the_projects_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # new-user trial: `harden -c ../proj/bastion.yaml` wrote the model under proj/ and recorded
    # the version in the working folder's store
    from bastion.core.settings import DEFAULT_DB, project_db_url

    monkeypatch.delenv("BASTION_DB", raising=False)
    assert project_db_url(Path("bastion.yaml")) == DEFAULT_DB  # from the project folder: as before
    assert (
        project_db_url(tmp_path / "proj" / "bastion.yaml") == f"sqlite:///{tmp_path}/proj/.bastion/bastion.db"
    )
    monkeypatch.setenv("BASTION_DB", "sqlite:////elsewhere.db")
    assert project_db_url(tmp_path / "proj" / "bastion.yaml") is None  # the environment still wins


def test_bom_with_no_model_file_exits_3_and_writes_nothing(
    wine_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # new-user trial: `bastion bom data/wine.csv` exited 3 ("nothing applicable") and still wrote a BOM
    monkeypatch.chdir(wine_project)
    assert run(["bom", "data/wine.csv"]) == 3
    captured = capsys.readouterr()
    assert captured.out == "" and "data/wine.csv: no model file" in captured.err
    assert "no ML-BOM written" in captured.err
    assert run(["bom", "data/wine.csv", "-o", "out/bom.json"]) == 3
    assert not (wine_project / "out").exists()
    (wine_project / "old.json").write_text("{}")
    assert run(["bom", "data", "-o", "old.json"]) == 3
    assert (wine_project / "old.json").read_text() == "{}"  # left as it was
    assert run(["bom", "model.joblib", "-o", "m.json"]) == 0  # a model file: written as before
    assert json.loads((wine_project / "m.json").read_text())["bomFormat"] == "CycloneDX"


def test_assess_interrupted_by_ctrl_c_says_so_and_leaves_store_and_report(wine_project: Path) -> None:
    # new-user trial: `bastion assess` interrupted by Ctrl-C exited 130 in silence (`scan` says "aborted")
    import os
    import signal
    import subprocess
    import sys
    import time

    db = f"sqlite:///{wine_project / 'b.db'}"
    args = ["assess", "-c", "bastion.yaml", "--db", db, "--fail-on", "none", "-o", "rep"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    first = subprocess.run(
        [sys.executable, "-m", "bastion", *args], cwd=wine_project, env=env, capture_output=True, timeout=120
    )
    assert first.returncode == 0, first.stderr.decode()
    before = (wine_project / "rep" / "report.json").read_bytes()
    ready = wine_project / "scanning"
    # the second run blocks in its scan (the runner's first step) until Ctrl-C arrives
    code = (
        "import pathlib, sys, time\n"
        "import bastion.scan\n"
        "def slow(*a, **k):\n"
        f"    pathlib.Path({str(ready)!r}).touch()\n"
        "    time.sleep(120)\n"
        "bastion.scan.scan_file = slow\n"
        "from bastion.cli.main import run\n"
        "sys.exit(run(sys.argv[1:]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=wine_project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # Python's own handler, as a shell
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), proc.stderr.read().decode() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        _, err_bytes = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err_bytes.decode()
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert lines == [
        "interrupted: bastion assess stopped before the run finished; the store (no run recorded) and "
        "any previous report in rep/ are untouched"
    ]
    assert "Traceback" not in err
    assert (wine_project / "rep" / "report.json").read_bytes() == before
    history = subprocess.run(
        [sys.executable, "-m", "bastion", "history", "--db", db, "-f", "json"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert len(json.loads(history.stdout)) == 1  # only the first run


def test_assess_interrupted_while_storing_says_the_report_is_written(
    wine_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion.store import Store

    def interrupt(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Store, "save_report", interrupt)
    db = f"sqlite:///{wine_project / 'b.db'}"
    out = wine_project / "rep"
    assert run(["assess", "-c", str(wine_project / "bastion.yaml"), "--db", db, "-o", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"stopped while storing the run; the report is in {out}/ but the run may not be stored" in err
    assert (out / "report.json").is_file()


def test_another_command_interrupted_by_ctrl_c_says_aborted(
    wine_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion import api

    def interrupt(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "data_profile", interrupt)
    assert run(["data", "profile", str(wine_project / "data" / "wine.csv")]) == 130
    assert capsys.readouterr().err.strip() == "aborted"


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["assess", "--budget", "fast"], "Invalid value for '--budget': 'fast' is not one of"),
        (["assess", "--fail-on", "severe"], "Invalid value for '--fail-on': 'severe' is not one of"),
        (["show", "-f", "md"], "'md' is not one of"),
    ],
)
def test_bad_option_values_show_no_validator_prefix(
    argv: list[str], shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(argv) == 4
    text = capsys.readouterr().err
    assert shown in text
    assert "Value error" not in text


#: Characters a terminal obeys or that reorder text; none may come raw from a project's data.
_RAW_CONTROLS = "\x1b\x07\r\x9b\u202e\u2066"


def test_assess_show_and_history_send_no_control_characters_from_the_project_to_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Red-team round 31, 01: ``bastion.yaml``'s project name and a pickle's global name (copied
    into the finding's title) reached the terminal raw through ``assess`` and ``show latest``:
    the window title set, the screen cleared, the critical finding's own line erased."""
    glob = "system\x1b[2K\x1b[1A\x1b[2K\x1b[32mall clear\x1b[8m\u202e"
    (tmp_path / "m.pkl").write_bytes(b"\x80\x02cos\n" + glob.encode() + b"\nX\x05\x00\x00\x00touch\x85R.")
    (tmp_path / "bastion.yaml").write_text(
        'version: 1\nproject:\n  name: "clinic\\e]0;PWNED\\a\\e[2J\\u2066[/x]"\n'
        "assets:\n  - {name: m, path: m.pkl}\n"
    )
    db = f"sqlite:///{tmp_path / 'b.db'}"
    out = tmp_path / "rep"
    # the critical finding trips the gate: its row is in the table (trial 33, 14: only such rows are)
    argv = ["assess", "-c", str(tmp_path / "bastion.yaml"), "--only", "scan", "--fail-on", "critical"]
    assert run([*argv, "-o", str(out), "--db", db]) == 1
    err = capsys.readouterr().err
    assert not any(c in err for c in _RAW_CONTROLS), repr(err)
    assert "clinic\\x1b]0;PWNED\\x07\\x1b[2J\\u2066[/x]" in err  # shown, escaped; markup is text
    assert "os.system\\x1b[2K\\x1b[1A\\x1b[2K\\x1b[32mall" in err
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["project"] == "clinic\x1b]0;PWNED\x07\x1b[2J\u2066[/x]"  # JSON: the exact value
    assert run(["show", "latest", "--db", db]) == 0
    err = capsys.readouterr().err
    assert not any(c in err for c in _RAW_CONTROLS) and "clinic\\x1b]0;PWNED" in err
    assert run(["show", "latest", "--db", db, "-f", "markdown"]) == 0
    md = capsys.readouterr().out
    assert not any(c in md for c in _RAW_CONTROLS) and "clinic\\\\x1b\\]0;PWNED" in md
    assert run(["history", "--db", db]) == 0
    captured = capsys.readouterr()
    assert not any(c in captured.out + captured.err for c in _RAW_CONTROLS) and "\\x1b" in captured.out


def test_error_lines_send_no_control_characters_to_the_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Red-team round 31, 01: an error quoting a file's content (a check id in bastion.yaml)
    escaped Rich markup only; its ESC sequences reached the terminal."""
    (tmp_path / "bastion.yaml").write_text(
        'version: 1\nchecks:\n  "evasoin\\e[2J\\e]0;PWNED\\a\\u202e": {}\n'
    )
    assert run(["assess", "-c", str(tmp_path / "bastion.yaml"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert not any(c in err for c in _RAW_CONTROLS), repr(err)
    assert "checks.evasoin\\x1b[2J\\x1b]0;PWNED\\x07\\u202e: unknown check id" in err
    from bastion.cli._common import show_error

    assert show_error(ValueError("first \x1b[2J [bold]x[/]\nsecond \x1b]0;t\x07")) == 2
    err = capsys.readouterr().err
    assert err == "error: first \\x1b[2J [bold]x[/]\nsecond \\x1b]0;t\\x07\n"


def test_the_console_styles_but_passes_no_control_character_of_the_data() -> None:
    """The CLI's console: Rich's own styling reaches a terminal, the data's controls never do."""
    import io

    from rich.text import Text

    from bastion.cli._console import SafeConsole

    buf = io.StringIO()
    console = SafeConsole(file=buf, force_terminal=True, color_system="standard", width=100, highlight=False)
    console.print(Text("name\x1b]0;PWNED\x07\u202e", style="bold red"))
    console.print("plain \x1b[2J [red]not markup[/]")
    console.print("[red]markup when asked[/] \x1b[8m", markup=True)
    text = buf.getvalue()
    assert "\x1b[1;31m" in text and "\x1b[31mmarkup when asked" in text  # styling
    assert "\x1b]0;" not in text and "\x1b[2J" not in text and "\x1b[8m" not in text and "\u202e" not in text
    assert "name\\x1b]0;PWNED\\u202e" in text and "plain \\x1b[2J [red]not markup[/]" in text


def test_log_records_go_to_a_terminal_safe_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log record quotes names from files (a model's file name, a member): terminal-safe too."""
    import logging

    from bastion.cli.main import configure
    from bastion.core.terminal import SafeStream

    seen: dict[str, object] = {}
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: seen.update(kw))
    configure()
    assert isinstance(seen["stream"], SafeStream)


def test_assess_refuses_a_symlinked_project_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Red-team round 31, 04: ``assess`` in a cloned project whose ``.bastion/bastion.db`` is a
    symbolic link created a database at the link's target, outside the project."""
    from bastion.core.settings import project_db_url

    proj, target = tmp_path / "repo", tmp_path / "elsewhere.db"
    (proj / ".bastion").mkdir(parents=True)
    (proj / ".bastion" / "bastion.db").symlink_to(target)
    (proj / "m.pkl").write_bytes(b"\x80\x04N.")
    (proj / "bastion.yaml").write_text("version: 1\nassets:\n  - {name: m, path: m.pkl}\n")
    argv = ["assess", "-c", str(proj / "bastion.yaml"), "--only", "scan", "-o", str(tmp_path / "rep")]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert (
        f"{proj}/.bastion/bastion.db: the project's default store is reached through a symbolic link" in err
    )
    assert "--db" in err and not target.exists()
    assert run([*argv, "--dry-run"]) == 2 and not target.exists()
    # a store given explicitly is the user's choice
    assert run([*argv, "--db", f"sqlite:///{proj}/.bastion/bastion.db", "--fail-on", "none"]) == 0
    assert target.is_file()
    with pytest.raises(ConfigError, match="symbolic link"):
        project_db_url(proj / "bastion.yaml")
