"""``bastion scan``'s start-up path: a progress bar on folders (terminal only), Rich loaded only when
it prints, pydantic plugin discovery skipped for the command and restored after it."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.cli import _common, scan_cmd
from bastion.cli import main as cli


def _folder(tmp_path: Path, n: int = 3) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    for i in range(n):
        (d / f"m{i}.pkl").write_bytes(pickle.dumps({"layer": i, "w": [0.5] * 4}, protocol=4))
    return d


def test_folder_scan_shows_a_progress_bar_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rich.console import Console

    screen = io.StringIO()
    monkeypatch.setattr(_common._LazyConsole, "_real", Console(file=screen, force_terminal=True, width=100))
    assert cli.run(["scan", str(_folder(tmp_path)), "-f", "json", "-j", "1"]) == 0
    shown = screen.getvalue()
    assert "scanning" in shown and "3/3" in shown
    assert "3 file(s): 3 safe" in shown  # the summary goes through the same console once it exists


def test_no_progress_bar_off_a_terminal_or_for_single_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bastion.api

    seen: list[object] = []
    orig = bastion.api.scan_models

    def spy(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        seen.append(kwargs.get("progress"))
        return orig(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bastion.api, "scan_models", spy)
    folder = _folder(tmp_path)
    monkeypatch.setattr(scan_cmd, "stderr_is_terminal", lambda: False)
    assert cli.run(["scan", str(folder), "-f", "json"]) == 0
    monkeypatch.setattr(scan_cmd, "stderr_is_terminal", lambda: True)
    assert cli.run(["scan", str(folder / "m0.pkl"), "-f", "json"]) == 0  # a file, not a folder
    assert cli.run(["scan", str(folder), "-f", "json"]) == 0
    assert seen[0] is None and seen[1] is None and callable(seen[2])
    err = capsys.readouterr().err
    assert err.count("3 file(s): 3 safe") == 2 and "1 file(s): 1 safe" in err


def test_stderr_is_terminal_agrees_with_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_common._LazyConsole, "_real", None)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert _common.stderr_is_terminal() is False
    assert _common._LazyConsole._real is None  # decided without building the console
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert _common.stderr_is_terminal() is True  # Rich's own answer under FORCE_COLOR


def test_json_scan_does_not_import_rich_and_restores_the_environment(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 2)
    code = (
        "import os, sys\n"
        "from bastion.cli.main import run\n"
        f"rc = run(['scan', {str(folder)!r}, '-f', 'json', '-o', os.devnull])\n"
        "print(rc, 'rich' in sys.modules, os.environ.get('PYDANTIC_DISABLE_PLUGINS'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    env.pop("PYDANTIC_DISABLE_PLUGINS", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, timeout=60
    )
    assert proc.stdout.split() == ["0", "False", "None"]
    assert proc.stderr == "2 file(s): 2 safe\n"


def test_an_explicit_pydantic_plugin_setting_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "none")
    cli._skip_pydantic_plugins()()
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "none"
    monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS")
    restore = cli._skip_pydantic_plugins()
    assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "__all__"
    restore()
    assert "PYDANTIC_DISABLE_PLUGINS" not in os.environ


def test_scan_runs_without_typer_or_the_report_models(tmp_path: Path) -> None:
    """The console script sends ``scan`` (also after ``--debug``) to argparse before importing Typer."""
    folder = _folder(tmp_path, 2)
    code = (
        "import os, sys\n"
        "from bastion.cli.main import run\n"
        f"rc = run(['--debug', 'scan', {str(folder)!r}, '-f', 'json', '-o', os.devnull, '-j', '1'])\n"
        "heavy = [m for m in ('typer', 'bastion.core.report', 'bastion.core.config') if m in sys.modules]\n"
        "print(rc, heavy)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.split() == ["0", "[]"]
    assert "DEBUG bastion.scan.engine: scanned" in proc.stderr  # --debug applied: debug logs


def test_a_pickle_scan_loads_no_module_it_does_not_use(tmp_path: Path) -> None:
    """Start-up: ``logging``, ``tomllib``, the zip/tar/compression modules, ``shutil`` and ``ast``
    load only when a scan needs them (a warning to log, a user's rule file, an archive, an .npy
    header); no record class is a dataclass (``dataclasses`` imports ``inspect``)."""
    folder = _folder(tmp_path, 2)
    lazy = ("logging", "tomllib", "zipfile", "tarfile", "gzip", "bz2", "lzma", "shutil", "dataclasses", "ast")
    code = (
        "import os, sys\n"
        "from bastion.cli.main import run\n"
        f"rc = run(['scan', {str(folder)!r}, '-f', 'json', '-o', os.devnull, '-j', '1'])\n"
        f"print(rc, [m for m in {lazy!r} if m in sys.modules])\n"
        # a warning still reaches stderr in the CLI's format (logging imported for it)
        f"rc = run(['scan', {str(folder)!r}, '-f', 'json', '-o', os.devnull, '-j', '99999'])\n"
        "print(rc, 'logging' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.splitlines() == ["0 []", "0 True"], proc.stdout
    assert "WARNING bastion.scan.engine: jobs=99999 capped at" in proc.stderr


def test_lazy_logger_drops_only_records_that_could_go_nowhere() -> None:
    code = (
        "import sys\n"
        "from bastion.core._log import configure_later, get_logger\n"
        "log = get_logger('t')\n"
        "log.debug('d %s', 1); log.info('i')\n"
        "print('logging' in sys.modules)\n"
        "configure_later(level=20, format='%(levelname)s %(name)s: %(message)s', stream=sys.stderr)\n"
        "print('logging' in sys.modules)\n"
        "log.debug('not shown'); log.info('shown %s', 2)\n"  # INFO pending: imported for it
        "print('logging' in sys.modules, log.isEnabledFor(20), log.name)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.splitlines() == ["False", "False", "True True t"]
    assert proc.stderr.splitlines() == ["INFO t: shown 2"]


def test_scan_help_and_usage_errors_come_from_the_one_argparse_definition(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.run(["scan", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--format", "--fail-on", "--output", "--allow", "--config", "--jobs", "--rules", "--hash"):
        assert option in out
    assert scan_cmd.SUMMARY in out
    assert cli.run(["scan", "-h"]) == 0
    capsys.readouterr()
    assert cli.run(["scan"]) == 4  # PATH is required
    assert cli.run(["scan", "x", "-j", "-1"]) == 4
    assert cli.run(["scan", "x", "-j", "two"]) == 4
    assert cli.run(["scan", "x", "--form", "json"]) == 4  # no abbreviations (as before)
    assert "Error:" in capsys.readouterr().err
    assert cli.run(["--help"]) == 0  # the Typer group still lists scan with its one-line help
    assert "scan" in capsys.readouterr().out


def test_scan_defaults_and_options_in_any_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = scan_cmd.parse(["m.pkl"])
    assert (args.fmt, args.fail_on, args.jobs, args.digest, args.output, args.allow, args.rules) == (
        "table",
        "medium",
        0,
        False,
        None,
        [],
        [],
    )
    assert scan_cmd.parse(["a", "--hash", "--no-hash"]).digest is False  # the last one wins
    folder = _folder(tmp_path, 2)
    extra = tmp_path / "extra.pkl"
    extra.write_bytes(pickle.dumps([1, 2], protocol=2))
    assert cli.run(["scan", "-f", "json", str(folder), "--hash", str(extra), "-j", "1"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert [Path(f["path"]).name for f in doc["files"]] == ["m0.pkl", "m1.pkl", "extra.pkl"]
    assert all(f["sha256"] for f in doc["files"])


def test_typer_scan_is_a_passthrough(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    res = CliRunner().invoke(cli.app, ["scan", "--help"])
    assert res.exit_code == 0 and "--fail-on" in res.stdout
    res = CliRunner().invoke(cli.app, ["scan", str(_folder(tmp_path, 1)), "-f", "json", "--fail-on", "none"])
    assert res.exit_code == 0 and '"verdict": "safe"' in res.stdout
    assert CliRunner().invoke(cli.app, ["scan", "--bogus", "x"]).exit_code == 4


def test_plugin_loader_stand_in_is_used_only_for_the_scan(tmp_path: Path) -> None:
    """While the scan runs pydantic's plugin loader (and importlib.metadata) is not imported; after
    it, a model built in the same process gets the real loader."""
    folder = _folder(tmp_path, 1)
    code = (
        "import os, sys\n"
        "from bastion.cli.main import run\n"
        f"rc = run(['scan', {str(folder)!r}, '-f', 'json', '-o', os.devnull])\n"
        "during = 'importlib.metadata' in sys.modules\n"
        "import pydantic\n"
        "class M(pydantic.BaseModel):\n"
        "    x: int\n"
        "loader = sys.modules['pydantic.plugin._loader']\n"
        "after = 'importlib.metadata' in sys.modules\n"
        "print(rc, during, M(x=1).x, loader.__file__.endswith('_loader.py'), after)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, timeout=60
    )
    assert proc.stdout.split() == ["0", "False", "1", "True", "True"]


def test_plugin_loader_stand_in_hands_over_when_plugins_are_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = scan_cmd._plugin_loader_stand_in()
    monkeypatch.setitem(sys.modules, scan_cmd._PLUGIN_LOADER, stand_in)
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "__all__")
    assert tuple(stand_in.get_plugins()) == ()
    assert sys.modules[scan_cmd._PLUGIN_LOADER] is stand_in
    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "some-plugin")  # not "all": the real loader answers
    stand_in.get_plugins()
    loaded = sys.modules[scan_cmd._PLUGIN_LOADER]
    assert loaded is not stand_in and loaded.__file__.endswith("_loader.py")


def test_everything_after_a_double_dash_is_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files named like options (`-weird.pkl`, `--help`) are scanned after `--`; PATH stays required."""
    monkeypatch.chdir(tmp_path)
    Path("-weird.pkl").write_bytes(pickle.dumps({"a": 1}))
    Path("--help").write_bytes(pickle.dumps([1]))
    assert [str(p) for p in scan_cmd.parse(["--", "-weird.pkl"]).paths] == ["-weird.pkl"]
    ns = scan_cmd.parse(["a.pkl", "-f", "json", "--", "--help", "-weird.pkl"])
    assert [str(p) for p in ns.paths] == ["a.pkl", "--help", "-weird.pkl"] and ns.fmt == "json"
    assert scan_cmd.main(["-f", "json", "--", "-weird.pkl", "--help"]) == 0
    for argv in ([], ["-f", "json"], ["--"]):
        with pytest.raises(scan_cmd._UsageExit) as exc:
            scan_cmd.parse(argv)
        assert exc.value.code == 4
    assert "PATH [PATH ...]" in scan_cmd.build_parser().format_usage()


def test_console_script_exit_keeps_output_exit_code_and_atexit_handlers(tmp_path: Path) -> None:
    """``bastion scan`` as the console script ends without the interpreter's teardown, but what
    a normal exit does that anyone can see still happens: output flushed, atexit handlers run,
    the scan's exit code."""
    folder = _folder(tmp_path)
    (folder / "evil.pkl").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').close())\n"
        "from bastion.cli.main import run\n"
        f"sys.argv = ['bastion', 'scan', {str(folder)!r}, '-f', 'json']\n"
        "run()\n"
        "print('not reached')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr  # a malicious file: findings at or above medium
    assert "not reached" not in proc.stdout
    import json

    doc = json.loads(proc.stdout)
    assert [f["verdict"] for f in doc["files"]] == ["malicious", "safe", "safe", "safe"]
    assert proc.stderr.strip().endswith("4 file(s): 1 malicious, 3 safe")
    assert marker.exists()


def test_shipped_rules_compiled_copies_are_current() -> None:
    """The compiled rule copies (read instead of the TOML at start-up) are what the TOML gives."""
    from bastion.scan import policy

    for name in policy.COMPILED_RULES:
        with open(policy._compiled_path(name), encoding="utf-8") as fh:
            shipped = fh.read()
        assert shipped == policy.compile_rules(name), (
            f"{name} changed: run python -c 'from bastion.scan.policy import write_compiled_rules; "
            "write_compiled_rules()'"
        )


def test_a_stale_compiled_copy_is_never_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    from bastion.scan import policy

    text = policy.shipped_rules_text("pickle_deny.toml")
    assert policy._compiled_doc("pickle_deny.toml", text) == tomllib.loads(text)
    edited = text.replace('version = "', 'version = "edited-', 1)
    assert edited != text
    monkeypatch.setattr(policy, "shipped_rules_text", lambda name: edited)
    assert policy._compiled_doc("pickle_deny.toml", edited) is None
    version, rules = policy.load_rules("deny")
    assert version.startswith("edited-")
    assert [r.id for r in rules] == [r.id for r in policy.load_rules("deny", text)[1]]
    # a rule file given by the user is always read from its own text
    assert policy.load_rules("deny", edited, source="mine.toml")[0].startswith("edited-")


def _console_scan(setup: str, folder: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``bastion scan FOLDER -f json OPTIONS`` as the console script runs it, after ``setup`` (code)."""
    code = (
        setup
        + "\nfrom bastion.cli.main import run\n"
        + f"sys.argv = ['bastion', 'scan', {str(folder)!r}, '-f', 'json', *{list(options)!r}]\n"
        + "run()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_the_console_script_pauses_garbage_collection_until_the_scanners_are_loaded(
    tmp_path: Path, jobs: str
) -> None:
    """``bastion scan`` in its own process loads its modules with the collector off, then resumes
    it (what exists frozen out of it) before the first file, forked workers included; the
    result is the scan's own."""
    folder = _folder(tmp_path, n=6)
    (folder / "evil.pkl").write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    code = (
        "import gc, sys\n"
        "from bastion.cli import scan_cmd\n"
        "from bastion.scan import engine\n"
        "seen = []\n"
        "resume = scan_cmd._resume_gc\n"
        "def spy():\n"
        "    seen.append(('before', gc.isenabled()))\n"
        "    resume()\n"
        "    seen.append(('after', gc.isenabled(), gc.get_freeze_count() > 1000))\n"
        "scan_cmd._resume_gc = spy\n"
        "scan_one = engine._scan_one\n"
        "def scan_one_spy(*a, **k):\n"
        "    assert gc.isenabled()  # every file, in this process and in the workers\n"
        "    return scan_one(*a, **k)\n"
        "engine._scan_one = scan_one_spy\n"
        "import atexit\n"
        "atexit.register(lambda: sys.stderr.write(f'SEEN {seen}\\n'))\n"
    )
    proc = _console_scan(code, folder, "-j", jobs)
    assert proc.returncode == 1, proc.stderr
    import json

    assert sorted(f["verdict"] for f in json.loads(proc.stdout)["files"]) == ["malicious"] + ["safe"] * 6
    assert "SEEN [('before', False), ('after', True, True)]" in proc.stderr, proc.stderr


def test_a_scan_called_in_process_leaves_garbage_collection_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run(argv)`` (tests, embedding) neither pauses nor freezes the caller's collector."""
    import gc

    called: list[bool] = []
    monkeypatch.setattr(scan_cmd, "_resume_gc", lambda: called.append(True))
    frozen = gc.get_freeze_count()
    assert gc.isenabled()
    assert cli.run(["scan", str(_folder(tmp_path)), "-f", "json", "-j", "1"]) == 0
    assert gc.isenabled() and gc.get_freeze_count() == frozen and not called
    assert _common.state["gc_paused"] is False


def test_a_scan_compiles_no_source(tmp_path: Path) -> None:
    """No ``compile`` from the console script's start to its exit: the first one of a process costs
    ~10 million instructions (typing compiles a NamedTuple's string annotations; the scan path's
    named tuples live in modules without ``from __future__ import annotations``)."""
    folder = _folder(tmp_path, n=4)
    code = (
        "import builtins, sys, atexit\n"
        "calls = []\n"
        "real = builtins.compile\n"
        "def spy(source, filename, *a, **k):\n"
        "    if not str(filename).endswith('.py'):  # a module's source (no .pyc): the import system's\n"
        "        calls.append(repr(source)[:60])\n"
        "    return real(source, filename, *a, **k)\n"
        "builtins.compile = spy\n"
        "atexit.register(lambda: sys.stderr.write(f'COMPILED {calls}\\n'))\n"
    )
    proc = _console_scan(code, folder, "-j", "2")
    assert proc.returncode == 0, proc.stderr
    assert "COMPILED []" in proc.stderr, proc.stderr
