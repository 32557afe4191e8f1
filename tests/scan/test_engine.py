"""The facade: folder walking, symlinks, results, registry, robustness on random bytes."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.scan._factories import global_call, os_system_payload

from bastion.core.registry import scanners
from bastion.core.scanning import FileResult, ScanResult, Verdict
from bastion.scan import scan_file, scan_paths
from bastion.scan.base import Scanner
from bastion.scan.builtin import load_builtin_scanners


def test_builtin_scanners_are_registered() -> None:
    load_builtin_scanners()
    ids = {"scan.pickle", "scan.pytorch", "scan.joblib", "scan.numpy", "scan.archive", "scan.onnx"}
    assert ids <= set(scanners)
    for pid in ids:
        cls = scanners.get(pid)
        assert issubclass(cls, Scanner)
        assert cls.formats
        assert cls.references
        assert isinstance(cls.sniff(b"\x80\x04", "x.pkl"), bool)


def test_folder_scan_is_recursive_sorted_and_complete(tmp_path: Path, marker: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "evil.pkl").write_bytes(os_system_payload(marker))
    (tmp_path / "b" / "model.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    (tmp_path / "a" / "deep" / "evil.pkl").write_bytes(os_system_payload(marker))
    (tmp_path / "a" / "mine.pkl").write_bytes(global_call("mymodule", "Net"))
    (tmp_path / "README.md").write_text("# models\n")
    result = scan_paths([tmp_path])
    assert isinstance(result, ScanResult)
    paths = [f.path for f in result.files]
    assert paths == sorted(paths)
    verdicts = {Path(f.path).relative_to(tmp_path).as_posix(): f.verdict for f in result.files}
    assert verdicts == {
        "README.md": Verdict.SKIPPED,
        "a/deep/evil.pkl": Verdict.MALICIOUS,
        "a/mine.pkl": Verdict.SUSPICIOUS,
        "b/model.pkl": Verdict.SAFE,
    }
    assert result.exit_code("medium") == 1
    assert result.exit_code("none") == 0


def test_file_result_fields(tmp_path: Path) -> None:
    data = pickle.dumps({"a": 1})
    path = tmp_path / "m.pkl"
    path.write_bytes(data)
    fr = scan_file(path)
    assert isinstance(fr, FileResult)
    assert fr.path == str(path)
    assert fr.sha256 == hashlib.sha256(data).hexdigest()
    assert fr.size == len(data)
    assert fr.format == "pickle"
    assert fr.verdict is Verdict.SAFE
    assert fr.reason is None
    FileResult.model_validate_json(fr.model_dump_json())  # serialises


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinks_are_not_followed_outside(tmp_path: Path, marker: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.pkl").write_bytes(os_system_payload(marker))
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.pkl").write_bytes(pickle.dumps([1]))
    os.symlink(outside / "evil.pkl", root / "link-out.pkl")
    os.symlink(outside, root / "dir-out")
    os.symlink(root / "ok.pkl", root / "link-in.pkl")
    os.symlink(root / "missing", root / "broken.pkl")
    result = scan_paths([root])
    by_name = {Path(f.path).name: f for f in result.files}
    assert by_name["link-out.pkl"].verdict is Verdict.SKIPPED
    assert "outside" in (by_name["link-out.pkl"].reason or "")
    assert by_name["dir-out"].verdict is Verdict.SKIPPED
    assert by_name["broken.pkl"].verdict is Verdict.SKIPPED
    assert by_name["ok.pkl"].verdict is Verdict.SAFE
    # the in-folder link points at a file scanned at its own path
    assert by_name["link-in.pkl"].verdict is Verdict.SKIPPED
    assert all(f.verdict is not Verdict.MALICIOUS for f in result.files)


def test_only_skipped_files_exit_3(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello\n")
    assert scan_paths([tmp_path]).exit_code() == 3


def test_error_exit_code_wins(tmp_path: Path, marker: Path) -> None:
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps(list(range(20)))[:10])
    (tmp_path / "evil.pkl").write_bytes(os_system_payload(marker))
    assert scan_paths([tmp_path]).exit_code() == 2


def test_scan_core_needs_only_the_standard_library(tmp_path: Path) -> None:
    (tmp_path / "m.pkl").write_bytes(pickle.dumps({"a": [1, 2]}))
    code = (
        "import sys; from bastion.scan import scan_paths; "
        f"r = scan_paths([{str(tmp_path)!r}]); "
        "heavy = [m for m in ('torch', 'numpy', 'onnx', 'sklearn', 'joblib') if m in sys.modules]; "
        "print(r.files[0].verdict.value, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "safe []"


_names = st.sampled_from(
    ["blob", "x.pkl", "model.pt", "a.joblib", "w.npy", "b.npz", "m.onnx", "t.tar.gz", "r.txt"]
)
_magic = st.sampled_from(
    [
        b"",
        b"\x80\x04\x95",
        b"PK\x03\x04",
        b"\x93NUMPY\x01\x00",
        b"\x1f\x8b",
        b"BZh91AY&SY",
        b"\xfd7zXZ\x00",
        b"x\x9c",
        b"ZF0x",
        b"\x08\x07\x12",
        b"(lp0\n",
        b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.",
    ]
)


@settings(max_examples=150)
@given(magic=_magic, body=st.binary(max_size=400), name=_names)
def test_random_bytes_always_give_a_file_result(magic: bytes, body: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / name
        path.write_bytes(magic + body)
        fr = scan_file(path)
    assert isinstance(fr, FileResult)
    assert fr.verdict in set(Verdict)
    if fr.verdict in (Verdict.ERROR, Verdict.SKIPPED):
        assert fr.reason
    assert "internal scanner error" not in (fr.reason or "")


def test_an_unreadable_folder_is_an_error_never_a_skip(
    tmp_path: Path, marker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder the scanner cannot list may hold anything: ``error`` (exit 2), so a CI gate fails.

    (Tests run as root, which reads a mode-000 folder anyway, so listing it is made to fail.)
    """
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "evil.pkl").write_bytes(os_system_payload(marker))
    (root / "ok.pkl").write_bytes(pickle.dumps([1]))
    real_scandir = os.scandir

    def scandir(path: object) -> object:
        if Path(str(path)).name == "sub":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[call-overload]

    import bastion.scan.engine as engine

    monkeypatch.setattr(engine.os, "scandir", scandir)
    result = scan_paths([root])
    by_name = {Path(f.path).name: f for f in result.files}
    assert by_name["sub"].verdict is Verdict.ERROR
    assert "unreadable folder" in (by_name["sub"].reason or "") and "Permission denied" in (
        by_name["sub"].reason or ""
    )
    assert by_name["ok.pkl"].verdict is Verdict.SAFE
    assert result.exit_code("medium") == 2
    assert not marker.exists()
