"""The scan's fast paths: one read for small files, a hash thread for large ones, worker choice."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import threading
import zipfile
from pathlib import Path

import pytest
from tests.scan._factories import os_system_payload
from typer.testing import CliRunner

from bastion.core import hashing
from bastion.core.hashing import file_sha256
from bastion.core.scanning import Verdict
from bastion.scan import engine, scan_paths


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _big_pickle(path: Path, payload: int = 300_000) -> Path:
    path.write_bytes(pickle.dumps({"w": bytes(range(256)) * (payload // 256), "n": 3}, protocol=4))
    return path


def _torch_like_zip(path: Path, evil: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", evil)
        zf.writestr("archive/data/0", os.urandom(200_000))
        zf.writestr("archive/version", "3\n")
    return path


def test_hash_streams_through_one_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(100_003))
    assert file_sha256(p, with_size=True) == (_sha(p), 100_003)
    monkeypatch.setattr(hashing, "CHUNK", 4096)  # many blocks through the one buffer
    assert file_sha256(p, with_size=True) == (_sha(p), 100_003)
    assert file_sha256(p) == _sha(p)


@pytest.mark.parametrize("threshold", [1, 1 << 40])
def test_large_file_hashed_in_a_thread_gives_the_same_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marker: Path, threshold: int
) -> None:
    """Whether hashed beside the scan (thread) or from the bytes read once, the record is the same."""
    monkeypatch.setattr(engine, "_THREAD_HASH_MIN", threshold)
    safe = _big_pickle(tmp_path / "big.pkl")
    evil = _torch_like_zip(tmp_path / "evil.pt", os_system_payload(marker))
    res = scan_paths([safe, evil])
    by = {Path(f.path).name: f for f in res.files}
    assert by["big.pkl"].verdict == Verdict.SAFE
    assert by["evil.pt"].verdict == Verdict.MALICIOUS
    for name, f in by.items():
        assert f.sha256 == _sha(tmp_path / name)
        assert f.size == (tmp_path / name).stat().st_size
    assert not [t for t in threading.enumerate() if t.name == "bastion-hash"]


def test_file_changing_during_the_scan_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _big_pickle(tmp_path / "big.pkl")
    monkeypatch.setattr(engine, "_THREAD_HASH_MIN", 1)
    monkeypatch.setattr(engine, "file_sha256", lambda path, with_size: ("0" * 64, path.stat().st_size + 7))
    fr = scan_paths([p]).files[0]
    assert fr.verdict == Verdict.ERROR
    assert fr.reason is not None and "changed while being scanned" in fr.reason


def test_auto_jobs_runs_few_files_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        (tmp_path / f"m{i}.pkl").write_bytes(pickle.dumps({"i": i}))

    def no_pool(*_a: object, **_k: object) -> None:
        raise AssertionError("a process pool was started for 5 files")

    monkeypatch.setattr("concurrent.futures.ProcessPoolExecutor", no_pool)
    res = scan_paths([tmp_path], jobs=0)
    assert [f.verdict for f in res.files] == [Verdict.SAFE] * 5
    assert engine._auto_workers(5) == 1
    assert engine._auto_workers(engine.POOL_MIN_FILES - 1) == 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    assert engine._auto_workers(engine.POOL_MIN_FILES * 1000) == cpus


def test_auto_jobs_pool_matches_serial(tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "_auto_workers", lambda total: 2)
    for i in range(40):
        data = os_system_payload(marker) if i % 7 == 0 else pickle.dumps({"i": i, "w": [0.5] * i})
        (tmp_path / f"m{i:02d}.pkl").write_bytes(data)
    serial = scan_paths([tmp_path], jobs=1)
    auto = scan_paths([tmp_path], jobs=0)
    assert [f.model_dump() for f in auto.files] == [f.model_dump() for f in serial.files]
    assert sum(f.verdict == Verdict.MALICIOUS for f in auto.files) == 6


def test_pool_splits_work_between_this_process_and_workers(
    tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With N workers this process scans the first share and N-1 processes the rest, in order."""
    for i in range(11):
        data = os_system_payload(marker) if i in (0, 10) else pickle.dumps({"i": i})
        (tmp_path / f"m{i:02d}.pkl").write_bytes(data)
    in_parent: list[str] = []
    real = engine._scan_one

    def spy(display: str, *args: object, **kwargs: object) -> object:
        in_parent.append(Path(display).name)
        return real(display, *args, **kwargs)  # type: ignore[arg-type]

    serial = scan_paths([tmp_path], jobs=1)
    monkeypatch.setattr(engine, "_scan_one", spy)
    seen: list[int] = []
    par = scan_paths([tmp_path], jobs=3, progress=lambda done, total, _p: seen.append(done))
    assert [f.model_dump() for f in par.files] == [f.model_dump() for f in serial.files]
    assert seen == list(range(1, 12))
    assert in_parent == ["m00.pkl", "m01.pkl", "m02.pkl"]  # 11 // 3 files; workers (forked) not seen


def test_jobs_are_capped_per_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``jobs`` above MAX_JOBS_PER_CPU per CPU starts that many processes at most, and says so."""
    for i in range(11):
        (tmp_path / f"m{i:02d}.pkl").write_bytes(pickle.dumps({"i": i}))
    in_parent: list[str] = []
    real = engine._scan_one

    def spy(display: str, *args: object, **kwargs: object) -> object:
        in_parent.append(Path(display).name)
        return real(display, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_scan_one", spy)
    monkeypatch.setattr(engine, "_cpus", lambda: 1)
    with caplog.at_level("WARNING", logger="bastion.scan.engine"):
        res = scan_paths([tmp_path], jobs=5000)
    assert [f.verdict.value for f in res.files] == ["safe"] * 11
    assert len(in_parent) == 11 // engine.MAX_JOBS_PER_CPU  # this process's share of 4 workers
    assert "jobs=5000 capped at 4" in caplog.text


def test_fork_only_when_single_threaded() -> None:
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("fork is used on Linux only")
    if threading.active_count() == 1:
        assert engine._start_method() == "fork"
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        assert engine._start_method() in ("forkserver", "spawn")
    finally:
        stop.set()
        t.join()


def test_symlinked_root_and_real_root_scan_each_file_once(tmp_path: Path) -> None:
    real = tmp_path / "models"
    (real / "sub").mkdir(parents=True)
    (real / "a.pkl").write_bytes(pickle.dumps([1]))
    (real / "sub" / "b.pkl").write_bytes(pickle.dumps([2]))
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    res = scan_paths([link, real])
    assert [Path(f.path).name for f in res.files] == ["a.pkl", "b.pkl"]
    reals: dict[str, str] = {}
    list(engine._walk(link, reals))
    assert sorted(reals.values()) == sorted(
        os.path.realpath(p) for p in (real / "a.pkl", real / "sub" / "b.pkl")
    )


def test_cli_scan_hashes_only_with_hash_flag(tmp_path: Path) -> None:
    """``bastion scan`` records SHA-256s with ``--hash`` only (like picklescan/modelscan, which never
    hash); the API (and so ``bom``/``assess``) hashes by default."""
    from bastion.cli.main import app

    for i in range(3):
        (tmp_path / f"m{i}.pkl").write_bytes(pickle.dumps({"i": i}))
    res = CliRunner().invoke(app, ["scan", str(tmp_path), "-f", "json"])
    assert res.exit_code == 0, res.output
    assert [f["sha256"] for f in json.loads(res.stdout)["files"]] == [None, None, None]
    res = CliRunner().invoke(app, ["scan", str(tmp_path), "-f", "json", "--hash"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [f["sha256"] for f in doc["files"]] == [_sha(tmp_path / f"m{i}.pkl") for i in range(3)]
    res = CliRunner().invoke(app, ["scan", str(tmp_path), "-f", "json", "--no-hash"])
    assert [f["sha256"] for f in json.loads(res.stdout)["files"]] == [None, None, None]
    api_digests = [f.sha256 for f in scan_paths([tmp_path]).files]
    assert api_digests == [_sha(tmp_path / f"m{i}.pkl") for i in range(3)]
    bad = CliRunner().invoke(app, ["scan", str(tmp_path), "-j", "-1"])
    assert bad.exit_code != 0


def test_small_file_scan_reads_from_memory(tmp_path: Path, marker: Path) -> None:
    """A small file is read once; nested containers still work from the in-memory copy."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("model.pkl", os_system_payload(marker))
    p = tmp_path / "wrapped.zip"
    p.write_bytes(inner.getvalue())
    fr = scan_paths([p]).files[0]
    assert fr.verdict == Verdict.MALICIOUS
    assert fr.sha256 == _sha(p)


def test_small_file_growing_while_read_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    class _ShrunkStat:
        def __getattr__(self, name: str) -> object:
            return getattr(os, name)

        def fstat(self, fd: int) -> SimpleNamespace:
            real = os.fstat(fd)
            return SimpleNamespace(st_size=real.st_size - 1, st_mode=real.st_mode)

    p = tmp_path / "m.pkl"
    p.write_bytes(pickle.dumps({"a": 1}))
    monkeypatch.setattr(engine, "os", _ShrunkStat())
    fr = scan_paths([p]).files[0]
    assert fr.verdict == Verdict.ERROR
    assert fr.reason is not None and "changed while being scanned" in fr.reason


def test_worker_records_round_trip_and_a_cut_record_is_dropped(tmp_path: Path, marker: Path) -> None:
    """A forked worker's records travel as length-prefixed frames (marshal, or pickle with findings);
    a frame cut short by the worker's death ends the records read, the whole ones are kept."""
    (tmp_path / "evil.pkl").write_bytes(os_system_payload(marker))
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps({"a": [1.0]}))
    (tmp_path / "note.txt").write_text("not a model")
    records = engine.scan_records([tmp_path], jobs=1, digest=False).files
    assert [r.verdict for r in records] == [Verdict.MALICIOUS, Verdict.SKIPPED, Verdict.SAFE]
    frames = [engine._encode(r) for r in records]
    assert [f[4:5] for f in frames] == [b"p", b"m", b"m"]  # pickle only for the record with findings
    for cut in (0, 1, 4, len(frames[2]) - 1):
        fd = engine._records_file()
        data = b"".join(frames)
        os.write(fd, data[: len(data) - cut] if cut else data)
        got = engine._read_records(fd, 3)
        assert got == (records if cut == 0 else records[:2])
    assert not marker.exists()
