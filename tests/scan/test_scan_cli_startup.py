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

from bastion.cli import _common
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
    monkeypatch.setattr(cli, "stderr_is_terminal", lambda: False)
    assert cli.run(["scan", str(folder), "-f", "json"]) == 0
    monkeypatch.setattr(cli, "stderr_is_terminal", lambda: True)
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
