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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers are Linux only")
def test_a_worker_that_dies_gives_its_files_an_error_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    for i in range(6):
        (folder / f"m{i}.pkl").write_bytes(pickle.dumps({"i": i}))
    parent = os.getpid()
    real = engine._scan_one

    def dies_in_a_child(display: str, *args: object, **kwargs: object) -> object:
        if os.getpid() != parent:
            os._exit(7)
        return real(display, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_scan_one", dies_in_a_child)
    res = engine.scan_records([folder], jobs=2)
    assert [f.verdict for f in res.files] == [Verdict.SAFE] * 3 + [Verdict.ERROR] * 3
    assert all("worker process failed" in (f.reason or "") for f in res.files[3:])
    assert res.exit_code() == 2


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
