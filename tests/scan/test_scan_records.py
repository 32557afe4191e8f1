"""The scanner's plain records (no pydantic on ``bastion scan -f json``) and the forked workers:
the same results, the same bytes, as the pydantic contract."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from tests.scan._factories import os_system_payload

from bastion.core._scan_records import FileRecord, ScanRecords
from bastion.core.scanning import FileResult, ScanResult, Verdict
from bastion.report.json_out import json_safe, scan_to_dict, scan_to_json
from bastion.scan import engine, scan_paths


def _mixed_folder(tmp_path: Path, marker: Path, n: int = 9) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    for i in range(n):
        data = os_system_payload(marker) if i % 4 == 0 else pickle.dumps({"i": i, "w": [0.5, math.pi] * i})
        (d / f"m{i:02d}.pkl").write_bytes(data)
    (d / "notes.txt").write_text("not a model")
    (d / "broken.pkl").write_bytes(b"\x80\x04\x95")
    return d


def test_records_convert_to_the_same_models(tmp_path: Path, marker: Path) -> None:
    folder = _mixed_folder(tmp_path, marker)
    records = engine.scan_records([folder], jobs=1)
    result = scan_paths([folder], jobs=1)
    assert isinstance(records, ScanRecords) and all(isinstance(f, FileRecord) for f in records.files)
    assert isinstance(result, ScanResult) and all(isinstance(f, FileResult) for f in result.files)
    assert records.to_result().model_dump() == result.model_dump()
    # every record converts to a model that validates as the contract says
    for fr in result.files:
        assert FileResult.model_validate(fr.model_dump()) == fr
    verdicts = {Path(f.path).name: f.verdict for f in records.files}
    assert verdicts["m00.pkl"] is Verdict.MALICIOUS and verdicts["m01.pkl"] is Verdict.SAFE
    assert verdicts["notes.txt"] is Verdict.SKIPPED and verdicts["broken.pkl"] is Verdict.ERROR
    for fail_on in ("critical", "high", "medium", "low", "info", "none"):
        assert records.exit_code(fail_on) == result.exit_code(fail_on)
    with pytest.raises(ValueError, match="fail_on must be one of"):
        records.exit_code("severe")


def test_json_of_records_is_the_json_of_the_model(tmp_path: Path, marker: Path) -> None:
    folder = _mixed_folder(tmp_path, marker)
    records = engine.scan_records([folder], jobs=1)
    result = scan_paths([folder], jobs=1)
    for scan in (records, result):
        text = scan_to_json(scan, version="9.9")
        assert text == json.dumps(json_safe(scan_to_dict(scan, version="9.9")), indent=2, ensure_ascii=False)
    assert scan_to_json(records, version="9.9") == scan_to_json(result, version="9.9")
    assert scan_to_json(ScanRecords(), version="1") == json.dumps(
        {"schema_version": "1.0.0", "bastion_version": "1", "files": []}, indent=2
    )


def test_forked_workers_match_the_serial_scan(tmp_path: Path, marker: Path) -> None:
    folder = _mixed_folder(tmp_path, marker, n=23)
    serial = engine.scan_records([folder], jobs=1)
    for jobs in (2, 4):
        par = engine.scan_records([folder], jobs=jobs)
        assert par == serial


def test_a_process_pool_matches_the_serial_scan_with_another_thread(tmp_path: Path, marker: Path) -> None:
    """With a thread alive, fork is unsafe: the scan takes a process pool, and closes it cleanly."""
    import threading

    folder = _mixed_folder(tmp_path, marker, n=23)
    serial = engine.scan_records([folder], jobs=1)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        assert engine._start_method() != "fork"
        assert engine.scan_records([folder], jobs=2) == serial  # closing a finished pool crashed
    finally:
        stop.set()
        t.join()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers are Linux only")
@pytest.mark.parametrize(("poison", "how"), [("m3", "exit status 7"), ("m4", "killed by signal 9")])
def test_a_worker_that_dies_costs_only_the_file_it_was_scanning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, poison: str, how: str
) -> None:
    import signal

    folder = tmp_path / "models"
    folder.mkdir()
    for i in range(6):
        (folder / f"m{i}.pkl").write_bytes(pickle.dumps({"i": i}))
    (folder / "m5.pkl").write_bytes(os_system_payload(tmp_path / "canary"))
    parent = os.getpid()
    real = engine._scan_one

    def dies_in_a_child(display: str, *args: object, **kwargs: object) -> object:
        if os.getpid() != parent and display.endswith(f"{poison}.pkl"):
            if how.startswith("killed"):
                os.kill(os.getpid(), signal.SIGKILL)  # e.g. the kernel's out-of-memory killer
            os._exit(7)
        return real(display, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_scan_one", dies_in_a_child)
    res = engine.scan_records([folder], jobs=2)  # this process: m0-m2; the child: m3-m5
    by = {Path(f.path).stem: f for f in res.files}
    assert by[poison].verdict is Verdict.ERROR
    assert by[poison].reason == f"internal error: the worker process died while scanning this file ({how})"
    # the records written before the death are kept; the files after it are scanned here
    assert {k: f.verdict.value for k, f in by.items() if k != poison} == {
        **{f"m{i}": "safe" for i in range(5) if f"m{i}" != poison},
        "m5": "malicious",
    }
    assert res.exit_code() == 2 and not (tmp_path / "canary").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers are Linux only")
def test_a_crash_in_a_worker_is_an_error_verdict_for_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    for i in range(4):
        (folder / f"m{i}.pkl").write_bytes(pickle.dumps({"i": i}))
    parent = os.getpid()
    real = engine._scan_one

    def crashes_on_m3(display: str, *args: object, **kwargs: object) -> object:
        if os.getpid() != parent and display.endswith("m3.pkl"):
            raise RuntimeError("boom")
        return real(display, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_scan_one", crashes_on_m3)
    res = engine.scan_records([folder], jobs=2)
    assert [f.verdict for f in res.files] == [Verdict.SAFE] * 3 + [Verdict.ERROR]
    assert res.files[3].reason == "internal error: RuntimeError: boom"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers are Linux only")
def test_when_no_worker_can_start_this_process_scans_everything(
    tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _mixed_folder(tmp_path, marker)
    serial = engine.scan_records([folder], jobs=1)

    def refused(*_a: object, **_k: object) -> tuple[int, int]:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(engine, "_fork_child", refused)
    assert engine.scan_records([folder], jobs=2) == serial
    assert "could not start worker processes" in caplog.text


def test_stopping_early_kills_and_reaps_the_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    for i in range(8):
        (folder / f"m{i}.pkl").write_bytes(pickle.dumps({"i": i}))
    started: list[int] = []
    real_fork = engine._fork_child

    def spy(*args: object, **kwargs: object) -> tuple[int, int]:
        pid, fd = real_fork(*args, **kwargs)  # type: ignore[arg-type]
        started.append(pid)
        return pid, fd

    parent = os.getpid()
    real = engine._scan_one

    def interrupted(display: str, *args: object, **kwargs: object) -> object:
        if os.getpid() == parent:
            raise KeyboardInterrupt
        return real(display, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_fork_child", spy)
    monkeypatch.setattr(engine, "_scan_one", interrupted)
    if engine._start_method() != "fork":
        pytest.skip("forked workers only where fork is used")
    with pytest.raises(KeyboardInterrupt):
        engine.scan_records([folder], jobs=3)
    assert len(started) == 2
    for pid in started:  # reaped already: nothing left to wait for
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_json_scan_of_clean_files_imports_no_pydantic(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    for i in range(3):
        (folder / f"m{i}.pkl").write_bytes(pickle.dumps({"i": i}, protocol=4))
    out = tmp_path / "scan.json"
    code = (
        "import sys\n"
        "from bastion.cli.main import run\n"
        f"rc = run(['scan', {str(folder)!r}, '-f', 'json', '-o', {str(out)!r}])\n"
        "print(rc, sorted(m for m in ('pydantic', 'multiprocessing', 'tempfile') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.split() == ["0", "[]"]
    doc = json.loads(out.read_text())
    assert [f["verdict"] for f in doc["files"]] == ["safe"] * 3
    # the same document as the API's pydantic result renders
    api = scan_paths([folder], digest=False)
    api.bastion_version = doc["bastion_version"]
    assert out.read_text() == scan_to_json(api)


def test_registry_and_scanners_load_without_pydantic() -> None:
    code = (
        "import sys\n"
        "from bastion.core.registry import Plugin\n"
        "from bastion.scan.engine import _scanners\n"
        "_scanners()\n"
        "before = 'pydantic' in sys.modules\n"
        "from bastion.core.registry import NoParams\n"
        "print(before, Plugin.Params is NoParams, NoParams.__name__)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.split() == ["False", "True", "NoParams"]


def test_a_file_past_max_seconds_is_an_error_and_keeps_what_was_found(tmp_path: Path, marker: Path) -> None:
    from bastion.scan import ScanLimits

    # a denied call first, then 20,000 opcodes of list building: the clock stops it midway
    body = b"".join(b"]0" for _ in range(20_000))
    evil = os_system_payload(marker)
    (tmp_path / "slow.pkl").write_bytes(evil[:-1] + b"0" + body + b"N.")  # drop STOP, keep going
    (tmp_path / "clean.pkl").write_bytes(b"\x80\x04" + body + b"N.")
    fast = scan_paths([tmp_path])
    assert [f.verdict for f in fast.files] == [Verdict.SAFE, Verdict.MALICIOUS]  # no limit hit
    res = scan_paths([tmp_path], limits=ScanLimits(max_seconds=1e-9))
    by = {Path(f.path).name: f for f in res.files}
    assert by["clean.pkl"].verdict is Verdict.ERROR
    assert "time limit: not fully scanned within 1e-09 s (ScanLimits.max_seconds)" in (
        by["clean.pkl"].reason or ""
    )
    # malicious wins over error: the denied call reached before the deadline is reported
    assert by["slow.pkl"].verdict is Verdict.MALICIOUS and "time limit" in (by["slow.pkl"].reason or "")
    assert res.exit_code() == 2 and not marker.exists()


def test_shared_tuples_do_not_blow_up_the_nested_pickle_search(tmp_path: Path) -> None:
    """A 400 KB pickle whose argument tree, unfolded through the memo, is N^4 items."""
    import struct
    import time

    put = lambda i: b"r" + struct.pack("<I", i)  # noqa: E731
    get = lambda i: b"j" + struct.pack("<I", i)  # noqa: E731
    n = 20_000
    p = b"\x80\x02K\x01" + put(0) + b"0"
    for level in range(1, 5):
        p += b"(" + get(level - 1) * n + b"t" + put(level) + b"0"
    (tmp_path / "blobwalk.pkl").write_bytes(p + b"c_pickle\nloads\n(" + get(4) + b"tR.")
    t0 = time.monotonic()
    res = scan_paths([tmp_path / "blobwalk.pkl"])
    assert time.monotonic() - t0 < 10  # hung for ever before the walk was bounded
    assert res.files[0].verdict is Verdict.MALICIOUS  # _pickle.loads is denied


def test_a_limit_reached_later_in_an_archive_keeps_the_earlier_finding(tmp_path: Path, marker: Path) -> None:
    import io
    import tarfile

    from bastion.scan import ScanLimits

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("a_evil.pkl", os_system_payload(marker)), ("b_big.bin", bytes(2 << 20))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    (tmp_path / "m.tar").write_bytes(buf.getvalue())
    res = scan_paths([tmp_path / "m.tar"], limits=ScanLimits(max_decompressed_bytes=1 << 20))
    fr = res.files[0]
    assert fr.verdict is Verdict.MALICIOUS and "decompression" in (fr.reason or "")
    assert not marker.exists()


def test_a_memo_without_end_is_an_error_not_gigabytes(tmp_path: Path) -> None:
    import time

    from bastion.scan import ScanLimits
    from bastion.scan.pickle_vm import MAX_MEMO

    # memo entries without end (a 64 MiB stream of MEMOIZE)
    (tmp_path / "memo.pkl").write_bytes(b"\x80\x04K\x00" + b"\x94" * (MAX_MEMO + 10) + b".")
    t0 = time.monotonic()
    res = scan_paths([tmp_path], limits=ScanLimits(max_seconds=20))
    assert time.monotonic() - t0 < 20
    by = {Path(f.path).name: f for f in res.files}
    assert by["memo.pkl"].verdict is Verdict.ERROR and "memo over" in (by["memo.pkl"].reason or "")


def test_a_dtype_whose_fields_share_one_sub_dtype_is_sized_once_per_object() -> None:
    """60 levels, each naming the level below twice: 2^60 walks unless each dtype is sized once."""
    import time

    from bastion.scan.pickle_vm import Global, GlobalRef, Obj, PDict, dtype_info

    g = Global(GlobalRef(module="numpy", name="dtype", offset=0, opcode="GLOBAL"))
    node = Obj(func=g, args=("f8",), kwargs=None, opcode="REDUCE", offset=0)
    for _ in range(60):
        fields = PDict(items=[("a", (node, 0)), ("b", (node, 8))])
        state = (3, "|", None, None, fields, 16, 1, 0)
        node = Obj(func=g, args=("V16",), kwargs=None, opcode="REDUCE", offset=0, state=state)
    t0 = time.monotonic()
    assert dtype_info(node) == (16, False)
    assert time.monotonic() - t0 < 1.0
