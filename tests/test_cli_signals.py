"""Ctrl-C and SIGTERM at the edges of a command: one truthful message, the documented exit code.

New-user trial 30, L1: ``sign`` interrupted printed "signed" then "aborted" (130) with the
signature written; ``bom`` interrupted during shutdown died of the signal; ``scan -j N`` stopped
by SIGTERM was killed by the default handler with no message, a worker outliving it.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.keys import write_ec_keypair

from bastion.cli.main import run

SRC = str(Path(__file__).resolve().parents[1] / "src")
ROOT = str(Path(__file__).resolve().parents[1])


def _interrupt(*a: object, **k: object) -> None:
    raise KeyboardInterrupt


@pytest.fixture()
def signed_folder(tmp_path: Path) -> tuple[Path, Path, Path]:
    models = tmp_path / "models"
    models.mkdir()
    for i in range(3):
        (models / f"m{i}.pkl").write_bytes(pickle.dumps({"w": list(range(i + 5))}, protocol=4))
    write_ec_keypair(tmp_path / "key.pem", tmp_path / "key.pub")
    return models, tmp_path / "key.pem", tmp_path / "key.pub"


def test_sign_interrupted_before_the_bundle_is_written_says_nothing_was_signed(
    signed_folder: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bastion import api
    from bastion.scan import signing

    models, key, _ = signed_folder
    sig = models.with_name("models.sig")
    # during the advice scan (it used to come after the signature: "signed", then "aborted")
    monkeypatch.setattr(api, "scan_models", _interrupt)
    assert run(["sign", str(models), "--key", str(key)]) == 130
    assert capsys.readouterr().err.splitlines() == [f"aborted: nothing was signed ({sig} is as it was)"]
    assert not sig.exists()
    monkeypatch.undo()
    # while signing, with an earlier bundle in place: left as it was
    assert run(["sign", str(models), "--key", str(key)]) == 0
    before = sig.read_bytes()
    monkeypatch.setattr(signing, "sign_path", _interrupt)
    assert run(["sign", str(models), "--key", str(key)]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == f"aborted: nothing was signed ({sig} is as it was)"
    assert sig.read_bytes() == before


def test_sign_interrupted_once_the_bundle_is_in_place_says_signed_only(
    signed_folder: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bastion.scan import signing

    models, key, pub = signed_folder
    real = signing.sign_path

    def sign_then_interrupt(*a: object, **k: object) -> Path:
        real(*a, **k)  # type: ignore[arg-type]
        raise KeyboardInterrupt  # Ctrl-C just after the rename, before the command heard back

    monkeypatch.setattr(signing, "sign_path", sign_then_interrupt)
    assert run(["sign", str(models), "--key", str(key)]) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == [f"signed {models} -> {models.with_name('models.sig')}"]
    assert run(["verify", str(models), "--key", str(pub)]) == 0  # the bundle is whole


def _popen(code: str, *args: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, ROOT]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # Python's own handler, as a shell
    )


def test_bom_ignores_ctrl_c_once_the_bom_is_written(signed_folder: tuple[Path, Path, Path]) -> None:
    # Ctrl-C pressed while the process shuts down (atexit handlers, interpreter teardown): it
    # raised KeyboardInterrupt there, or, later in the teardown, killed the process
    models, _, _ = signed_folder
    out = models.parent / "bom.json"
    code = (
        "import atexit, os, signal, sys, time\n"
        "def late():\n"
        "    for _ in range(5):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(0.02)\n"
        "atexit.register(late)\n"
        "sys.argv = ['bastion', *sys.argv[1:]]\n"
        "from bastion.cli.main import run\n"
        "run()\n"
    )
    proc = _popen(code, "bom", str(models), "-o", str(out), cwd=models.parent)
    _, err_bytes = proc.communicate(timeout=120)
    err = err_bytes.decode()
    assert proc.returncode == 0, err
    assert err.splitlines() == ["ML-BOM: 3 model component(s), 0 data"]
    assert out.is_file()


@pytest.mark.timeout(120)
def test_scan_stopped_by_sigterm_stops_its_workers_and_exits_143(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for i in range(12):
        (models / f"m{i:02d}.pkl").write_bytes(pickle.dumps({"i": i}, protocol=4))
    pids, ready = tmp_path / "pids", tmp_path / "ready"
    pids.mkdir()
    # every file takes 0.5 s (a large checkpoint), in this process and in each worker
    code = (
        "import os, pathlib, sys, time\n"
        "import bastion.scan.engine as engine\n"
        "real = engine._scan_one\n"
        "def slow(*a, **k):\n"
        f"    pathlib.Path({str(pids)!r}, str(os.getpid())).touch()\n"
        f"    pathlib.Path({str(ready)!r}).touch()\n"
        "    time.sleep(0.5)\n"
        "    return real(*a, **k)\n"
        "engine._scan_one = slow\n"
        "sys.argv = ['bastion', *sys.argv[1:]]\n"
        "from bastion.cli.main import run\n"
        "run()\n"
    )
    proc = _popen(code, "scan", str(models), "-j", "3", "-f", "json", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(list(pids.iterdir())) >= 3, proc.stderr.read().decode() if proc.stderr else ""
        proc.send_signal(signal.SIGTERM)
        out, err_bytes = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err_bytes.decode()
    assert proc.returncode == 143, err
    assert err.splitlines() == [
        "terminated (SIGTERM): bastion scan stopped; its worker processes were stopped"
    ]
    assert out == b""  # no partial result
    workers = [int(p.name) for p in pids.iterdir() if int(p.name) != proc.pid]
    assert len(workers) >= 2
    for pid in workers:  # killed and reaped by the scan before it exited, not orphaned
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
