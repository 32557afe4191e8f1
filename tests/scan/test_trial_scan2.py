"""Regressions from the second new-user robustness trial of ``bastion scan`` (after the speed round)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from bastion.cli import scan_cmd
from bastion.core._scan_records import Verdict
from bastion.report.json_out import escape_surrogates
from bastion.scan import engine

EVIL = (  # pickle.dumps of a __reduce__ returning (os.system, ("true",)); never loaded
    b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94"
    b"\x93\x94\x8c\x04true\x94\x85\x94R\x94."
)
CLEAN = pickle.dumps({"weights": [1, 2, 3]}, protocol=4)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(engine.__file__).parents[2])}


def _bastion(args: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """``bastion`` as the console script runs (``run()`` with no argv: the ``_exit_now`` path)."""
    code = "import sys; from bastion.cli.main import run; sys.argv[0] = 'bastion'; run()"
    return subprocess.run([sys.executable, "-c", code, *args], env=ENV, timeout=60, check=False, **kw)


def test_file_replaced_by_fifo_after_walk_is_error_not_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.pkl").write_bytes(CLEAN)
    (tmp_path / "b.pkl").write_bytes(CLEAN)
    target = tmp_path / "b.pkl"
    real = engine._scan_one

    def swap(display: str, path: Any, *a: Any, **k: Any) -> Any:
        if os.fspath(path) == str(target):
            target.unlink()
            os.mkfifo(target)  # listed as a file by the walk, a FIFO when read: open() used to block
        return real(display, path, *a, **k)

    monkeypatch.setattr(engine, "_scan_one", swap)
    box: dict[str, Any] = {}
    t = threading.Thread(
        target=lambda: box.update(r=engine.scan_records([tmp_path], jobs=1, digest=False)), daemon=True
    )
    t.start()
    t.join(20)
    if t.is_alive():  # unblock the stuck open() before failing
        fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(5)
        pytest.fail("the scan blocked on a FIFO that replaced a listed file")
    files = {Path(f.path).name: f for f in box["r"].files}
    assert files["a.pkl"].verdict is Verdict.SAFE
    assert files["b.pkl"].verdict is Verdict.ERROR
    assert "no longer a regular file" in (files["b.pkl"].reason or "")


def test_background_hash_is_of_the_file_scanned_even_if_path_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "_THREAD_HASH_MIN", 64)  # take the large-file (threaded hash) path
    scanned = pickle.dumps(list(range(2000)), protocol=4)
    other = bytearray(scanned)
    other[-10] ^= 0xFF  # same size, other bytes: a size check cannot tell them apart
    path, newer = tmp_path / "m.pkl", tmp_path / "newer.pkl"
    path.write_bytes(scanned)
    newer.write_bytes(bytes(other))
    real_fstat = os.fstat
    swapped: list[int] = []

    def fstat(fd: int) -> os.stat_result:
        if not swapped:
            swapped.append(fd)
            os.replace(newer, path)  # after the scan opened the file, before it is hashed
        return real_fstat(fd)

    monkeypatch.setattr(engine.os, "fstat", fstat)
    rec = engine.scan_records([path], jobs=1, digest=True).files[0]
    assert swapped
    assert rec.verdict is Verdict.SAFE
    assert rec.sha256 == hashlib.sha256(scanned).hexdigest()  # not the replacement's digest
    assert rec.size == len(scanned)


def test_escape_surrogates_keeps_json_valid_and_round_trips() -> None:
    name = os.fsdecode(b"models/evil\xff\xfe.pkl")
    text = escape_surrogates(json.dumps({"path": name, "ok": "ünï ✓"}, ensure_ascii=False))
    text.encode("utf-8")  # valid UTF-8 now
    back = json.loads(text)
    assert os.fsencode(back["path"]) == b"models/evil\xff\xfe.pkl"
    assert back["ok"] == "ünï ✓"
    assert escape_surrogates('{"a": "plain"}') == '{"a": "plain"}'


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_non_utf8_file_name_writes_json_and_sarif(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    try:
        with open(os.path.join(os.fsencode(folder), b"evil\xff.pkl"), "wb") as fh:
            fh.write(EVIL)
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / f"out.{fmt}"
    assert scan_cmd.main(["models", "-f", fmt, "-o", str(out)]) == 1  # was an internal error (exit 2)
    doc = json.loads(out.read_bytes().decode("utf-8"))
    if fmt == "json":
        assert [os.fsencode(f["path"]) for f in doc["files"]] == [b"models/evil\xff.pkl"]
        assert doc["files"][0]["verdict"] == "malicious"
    else:
        run = doc["runs"][0]
        assert [a["location"]["uri"] for a in run["artifacts"]] == ["models/evil%FF.pkl"]
        assert (
            run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            == "models/evil%FF.pkl"
        )


@pytest.fixture()
def clean_dir(tmp_path: Path) -> Path:
    d = tmp_path / "clean"
    d.mkdir()
    (d / "m.pkl").write_bytes(CLEAN)
    return d


def test_stdout_that_cannot_be_written_is_exit_2_with_one_line(clean_dir: Path) -> None:
    r, w = os.pipe()
    os.close(r)  # a reader that went away (``| head``): every write is a broken pipe
    try:
        broken = _bastion(["scan", str(clean_dir), "-f", "json"], stdout=w, stderr=subprocess.PIPE)
    finally:
        os.close(w)
    assert broken.returncode == 2, broken.stderr
    assert b"cannot write the output to stdout" in broken.stderr
    assert b"internal error" not in broken.stderr and b"Traceback" not in broken.stderr
    if os.path.exists("/dev/full"):
        with open("/dev/full", "wb") as full:
            res = _bastion(["scan", str(clean_dir), "-f", "sarif"], stdout=full, stderr=subprocess.PIPE)
        assert res.returncode == 2 and b"No space left" in res.stderr, res.stderr
    closed = subprocess.run(
        [
            "/bin/sh",
            "-c",
            f'"{sys.executable}" -c "from bastion.cli.main import run; run()" scan "{clean_dir}" -f json >&-',
        ],
        env=ENV,
        capture_output=False,
        stderr=subprocess.PIPE,
        timeout=60,
        check=False,
    )
    assert closed.returncode == 2 and b"stdout is closed" in closed.stderr, closed.stderr


def test_closed_or_full_stderr_keeps_the_scan_exit_code(clean_dir: Path, tmp_path: Path) -> None:
    # stderr carries people's output only: losing it must not turn a clean scan into exit 1
    sh = f'"{sys.executable}" -c "from bastion.cli.main import run; run()" scan'
    for redirect in ("2>&-", "2>/dev/full"):
        ok = subprocess.run(
            ["/bin/sh", "-c", f'{sh} "{clean_dir}" {redirect}'], env=ENV, timeout=60, check=False
        )
        assert ok.returncode == 0, redirect
        missing = subprocess.run(
            ["/bin/sh", "-c", f'{sh} "{tmp_path}/nope" {redirect}'], env=ENV, timeout=60, check=False
        )
        assert missing.returncode == 2, redirect
    out = tmp_path / "o.json"
    res = subprocess.run(
        ["/bin/sh", "-c", f'{sh} "{clean_dir}" -f json -o "{out}" 2>&- >&-'], env=ENV, timeout=60, check=False
    )
    assert res.returncode == 0
    assert json.loads(out.read_text())["files"][0]["verdict"] == "safe"


def test_an_output_that_cannot_be_written_is_refused_before_the_scan(tmp_path: Path) -> None:
    """``-o`` under a regular file: exit 2 naming ``--output``, before any file is scanned."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.pkl").write_bytes(b"\x80\x04K\x01.")
    blocker = tmp_path / "report.json"
    blocker.write_text("{}")
    res = _bastion(
        ["scan", str(tmp_path / "m"), "-f", "json", "-o", str(blocker / "out.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert res.returncode == 2
    err = res.stderr.decode()
    assert "--output" in err and "file(s)" not in err  # no scan summary: it never started
    assert blocker.read_text() == "{}"
