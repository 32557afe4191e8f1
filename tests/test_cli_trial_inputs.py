"""New-user trial: empty paths, a reader that goes away mid-output, malformed ``--allow``, an empty scan.

A. ``bastion sign ""`` signed the current folder into ``../<folder>.sig`` (exit 0); ``verify``,
   ``scan`` and ``bom`` ran on the current folder: an empty path is now a usage error (4) on
   every command, naming the argument.
B. ``bastion scan many -f json | head -c 5`` exited 0 with no error under ``PYTHONUNBUFFERED``:
   the unbuffered stdout took 64 KiB of the write and dropped the rest. Now exit 2, one line.
C. ``--allow 'x.'`` (``.x``, ``mypkg..x``, ``1abc.X``, ``a-b.C``, a trailing dot) was accepted and
   matched nothing: now exit 2 naming the entry.
D. ``bastion scan emptydir`` printed an empty table and ``0 file(s): `` (nothing after the colon).
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.keys import write_ec_keypair

from bastion.cli import _common, scan_cmd
from bastion.cli import main as cli
from bastion.cli.main import run
from bastion.core.errors import ConfigError
from bastion.scan.policy import PicklePolicy, Verdictish, check_allow_entries

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
ENV.update(OMP_NUM_THREADS="1", PYTHONPATH=SRC)
#: ``bastion`` as the console script runs it (``run()`` without argv: its own process).
CONSOLE = "import sys; from bastion.cli.main import run; sys.argv[0] = 'bastion'; run()"
CLEAN = pickle.dumps({"weights": [1, 2, 3]}, protocol=4)


def _bastion(args: list[str], cwd: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CONSOLE, *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **kw,
    )


# --- A. an empty path is a usage error ------------------------------------------------------


def _walk(cmd: Any, name: str, parent: Any) -> Any:
    import typer._click as click

    if hasattr(cmd, "list_commands"):
        ctx = click.Context(cmd, parent=parent, info_name=name)
        for sub in cmd.list_commands(ctx):
            yield from _walk(cmd.get_command(ctx, sub), f"{name} {sub}", ctx)
    else:
        yield name, cmd


def test_every_path_argument_and_option_goes_through_the_one_check() -> None:
    """Every Typer command's ``Path`` parameter is parsed by ``cli_path``; ``scan``'s argparse too."""
    from typer.main import get_command

    from bastion.cli._app import app

    seen: list[str] = []
    for name, cmd in _walk(get_command(app), "bastion", None):
        for param in cmd.params:
            desc = getattr(param, "type_descriptor", None)
            if desc is None or "Path" not in str(desc.annotation):
                continue
            seen.append(f"{name} {param.name}")
            assert desc.parameter_info.parser is _common.cli_path, f"{name} {param.name}"
    # the commands of the trial, and one of each kind of path option, are among them
    for expected in ("bastion sign path", "bastion sign key", "bastion verify path", "bastion bom path"):
        assert expected in seen
    assert {"bastion init directory", "bastion assess config", "bastion data profile dataset"} <= set(seen)
    assert {"bastion guard serve config", "bastion harden output", "bastion bom output"} <= set(seen)
    path_actions = [
        a for a in scan_cmd.build_parser()._actions if a.dest in {"paths", "output", "config", "rules"}
    ]
    assert len(path_actions) == 4 and all(a.type is scan_cmd._path for a in path_actions)


def test_cli_path_refuses_only_the_empty_string() -> None:
    with pytest.raises(ValueError, match="empty"):
        _common.cli_path("")
    assert _common.cli_path(".") == Path(".")
    assert _common.cli_path(" ") == Path(" ")  # a name, however odd
    default = Path("bastion.yaml")
    assert _common.cli_path(default) is default  # a Typer default passes as is


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """``/tmp/…/e/proj`` holding ``clean.pkl`` and a key pair, as in the trial."""
    proj = tmp_path / "e" / "proj"
    proj.mkdir(parents=True)
    (proj / "clean.pkl").write_bytes(CLEAN)
    write_ec_keypair(proj / "key.pem", proj / "pub.pem")
    return proj


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["sign", "", "--key", "key.pem"], "'path'"),
        (["verify", "", "--key", "pub.pem"], "'path'"),
        (["bom", ""], "'path'"),
        (["scan", ""], "argument PATH"),
        (["scan", "--", ""], "argument PATH"),
        (["scan", "clean.pkl", "--", ""], "argument PATH"),
    ],
)
def test_an_empty_path_is_a_usage_error_in_the_console_script(
    project: Path, args: list[str], named: str
) -> None:
    before = sorted(p.name for p in project.parent.rglob("*"))
    res = _bastion(args, project)
    assert res.returncode == 4, res.stderr
    assert named in res.stderr and "empty; give a path ('.' for the current folder)" in res.stderr
    assert res.stdout == ""  # no scan result, no BOM
    assert sorted(p.name for p in project.parent.rglob("*")) == before  # no proj.sig beside proj


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["sign", "clean.pkl", "--key", ""], "'--key' / '-k'"),
        (["sign", "clean.pkl", "--key", "key.pem", "--signature", ""], "'--signature' / '-s'"),
        (["verify", "clean.pkl", "--key", ""], "'--key' / '-k'"),
        (["bom", "clean.pkl", "-o", ""], "'--output' / '-o'"),
        (["bom", "clean.pkl", "--key", ""], "'--key' / '-k'"),
        (["scan", "clean.pkl", "-o", ""], "argument -o/--output"),
        (["scan", "clean.pkl", "-c", ""], "argument -c/--config"),
        (["scan", "clean.pkl", "--rules", ""], "argument --rules"),
        (["init", ""], "'directory'"),
        (["demo", ""], "'directory'"),
        (["assess", "-c", ""], "'--config' / '-c'"),
        (["assess", "-o", ""], "'--output' / '-o'"),
        (["assess", "--dry-run", "-c", ""], "'--config' / '-c'"),
        (["show", "latest", "-f", "json", "-o", ""], "'--output' / '-o'"),
        (["harden", "pgd-at", "-c", ""], "'--config' / '-c'"),
        (["harden", "pgd-at", "-o", ""], "'--output' / '-o'"),
        (["guard", "serve", "-c", ""], "'--config' / '-c'"),
        (["guard", "fit", "-o", ""], "'--output' / '-o'"),
        (["guard", "fit", "-o", "out", "--sign-key", ""], "'--sign-key'"),
        (["guard", "honeytokens", "--out", ""], "'--out' / '-o'"),
        (["guard", "verify-log", "-c", ""], "'--config' / '-c'"),
        (["data", "profile", ""], "'dataset'"),
        (["data", "profile", "d.csv", "--save", ""], "'--save'"),
        (["data", "validate", "", "--against", "p.json"], "'dataset'"),
        (["data", "validate", "d.csv", "--against", ""], "'--against'"),
        (["data", "register", ""], "'dataset'"),
        (["data", "verify", ""], "'dataset'"),
        (["data", "verify", "d.csv", "-o", ""], "'--output' / '-o'"),
        (["data", "sanitize", "", "--remove", "1"], "'dataset'"),
        (["data", "sanitize", "d.csv", "--remove", "1", "--to", ""], "'--to'"),
    ],
)
def test_an_empty_path_is_a_usage_error_on_every_command(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    named: str,
) -> None:
    monkeypatch.chdir(project)
    before = sorted(p.name for p in project.parent.rglob("*"))
    assert run(args) == 4
    captured = capsys.readouterr()
    assert named in captured.err and "empty; give a path" in captured.err, captured.err
    assert captured.out == ""
    assert sorted(p.name for p in project.parent.rglob("*")) == before


# --- B. a reader that goes away mid-output --------------------------------------------------


def _models(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        (folder / f"m{i:04d}.pkl").write_bytes(pickle.dumps({"layer": i}, protocol=4))
    return folder


def _head_c5(args: list[str], cwd: Path, python: list[str], env: dict[str, str]) -> tuple[int, bytes, str]:
    """Run ``bastion ARGS | head -c 5``: read 5 bytes of its stdout, close the pipe, wait."""
    proc = subprocess.Popen(
        [*python, "-c", CONSOLE, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    head = proc.stdout.read(5)
    proc.stdout.close()  # the reader went away, the output far from written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    return proc.wait(timeout=120), head, err


#: An unbuffered stdout, as the trial had it: ``PYTHONUNBUFFERED=1`` or ``python -u``.
UNBUFFERED = [
    pytest.param([sys.executable], {**ENV, "PYTHONUNBUFFERED": "1"}, id="PYTHONUNBUFFERED"),
    pytest.param([sys.executable, "-u"], ENV, id="python-u"),
]


@pytest.mark.parametrize(("python", "env"), UNBUFFERED)
def test_scan_json_to_a_reader_that_goes_away_is_exit_2_with_one_line(
    tmp_path: Path, python: list[str], env: dict[str, str]
) -> None:
    folder = _models(tmp_path / "many", 1000)  # ~200 KB of JSON: more than a pipe holds
    full = subprocess.run(
        [*python, "-c", CONSOLE, "scan", str(folder), "-f", "json"], env=env, capture_output=True, check=False
    )
    assert full.returncode == 0 and len(full.stdout) > 3 * 65536  # read to the end: all of it
    rc, head, err = _head_c5(["scan", str(folder), "-f", "json"], tmp_path, python, env)
    assert head == b'{\n  "'
    assert rc == 2, err
    lines = err.splitlines()
    assert "error: cannot write the output to stdout: Broken pipe" in lines
    assert lines.count("error: cannot write the output to stdout: Broken pipe") == 1
    assert "Traceback" not in err and "internal error" not in err


@pytest.mark.parametrize(("python", "env"), UNBUFFERED)
def test_bom_to_a_reader_that_goes_away_is_exit_2_with_one_line(
    tmp_path: Path, python: list[str], env: dict[str, str]
) -> None:
    folder = _models(tmp_path / "many", 300)  # ~280 KB of CycloneDX
    rc, head, err = _head_c5(["bom", str(folder)], tmp_path, python, env)
    assert head.startswith(b"{")
    assert rc == 2, err
    assert err.count("error: cannot write the output to stdout: Broken pipe") == 1, err
    assert "Traceback" not in err and "internal error" not in err


class _GoneReader(io.StringIO):
    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize(("code", "expected"), [(0, 2), (1, 2), (3, 2), (130, 130)])
def test_output_left_unwritten_at_exit_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], code: int, expected: int
) -> None:
    """The exit flush: Python's own would print a traceback and exit 120."""
    monkeypatch.setattr(sys, "stdout", _GoneReader())
    assert cli._flush_stdout(code) == expected
    assert capsys.readouterr().err == "error: cannot write the output to stdout: Broken pipe\n"


# --- C. malformed --allow entries -----------------------------------------------------------

#: The trial's entries: each matched nothing and was accepted.
MALFORMED = ["x.", ".x", "mypkg..x", "1abc.X", "a-b.C", "mypkg.layers.MyBlock."]
VALID = ["mypkg.layers.MyBlock", "mypkg.*", "_private.mod.Name", "paquet.modèle.Réseau", "π.*", " mypkg.Net "]


@pytest.mark.parametrize("entry", MALFORMED)
def test_a_malformed_allow_entry_is_an_error_naming_it(entry: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_allow_entries([entry, "mypkg.Good"])
    assert repr(entry) in str(info.value) and "'mypkg.Good'" not in str(info.value)
    with pytest.raises(ConfigError):
        PicklePolicy(allow=[entry])


def test_only_the_malformed_entries_are_listed_and_valid_ones_match() -> None:
    with pytest.raises(ConfigError) as info:
        check_allow_entries([*VALID, *MALFORMED, "mypkg.*.*", "*", "mypkg", ""])
    text = str(info.value)  # every problem listed
    for entry in [*MALFORMED, "mypkg.*.*", "*", "mypkg", ""]:
        assert f"allow entry {entry!r} is not" in text
    for entry in VALID:  # dotted Python identifiers, Unicode ones included (str.isidentifier)
        assert f"allow entry {entry!r}" not in text
    policy = PicklePolicy(allow=VALID)
    for module, name in [
        ("mypkg.layers", "MyBlock"),
        ("mypkg.other", "Thing"),
        ("_private.mod", "Name"),
        ("paquet.modèle", "Réseau"),
        ("π.sub", "Net"),
    ]:
        assert policy.judge(module, name).kind is Verdictish.ALLOWED, (module, name)


def test_bastion_scan_allow_malformed_exits_2_listing_every_entry(tmp_path: Path) -> None:
    (tmp_path / "clean.pkl").write_bytes(CLEAN)
    bad = ["x.", ".x", "mypkg..x", "1abc.X", "a-b.C", "mypkg.layers.MyBlock."]
    args = ["scan", "clean.pkl", *(a for entry in bad for a in ("--allow", entry))]
    res = _bastion([*args, "--allow", "mypkg.layers.MyBlock"], tmp_path)
    assert res.returncode == 2, res.stderr
    for entry in bad:
        assert f"allow entry {entry!r} is not 'module.Name' or 'module.*'" in res.stderr
    assert "'mypkg.layers.MyBlock' is not" not in res.stderr
    ok = _bastion(["scan", "clean.pkl", "--allow", "mypkg.layers.MyBlock", "--allow", "_private.*"], tmp_path)
    assert ok.returncode == 0, ok.stderr


# --- D. an empty folder ---------------------------------------------------------------------


def test_scan_of_an_empty_folder_says_nothing_to_scan(tmp_path: Path) -> None:
    (tmp_path / "emptydir").mkdir()
    res = _bastion(["scan", "emptydir"], tmp_path)
    assert res.returncode == 3
    assert res.stderr.splitlines() == ["0 file(s): nothing to scan"]  # no empty table
    as_json = _bastion(["scan", "emptydir", "-f", "json"], tmp_path)
    assert as_json.returncode == 3 and as_json.stderr.splitlines() == ["0 file(s): nothing to scan"]
