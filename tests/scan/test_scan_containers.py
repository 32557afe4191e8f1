"""Containers chosen by magic bytes: PyTorch, joblib, numpy, tar/zip and compression wrappers."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import shutil
import zipfile
import zlib
from pathlib import Path

import pytest
from tests.scan._factories import (
    Reduce,
    joblib_bytes,
    npy_object,
    os_system_payload,
    tar_with,
    zip_with,
)

from bastion.core.scanning import Verdict
from bastion.core.severity import Severity
from bastion.scan import ScanLimits, scan_file, scan_paths

SYSTEM = f"{os.system.__module__}.system"


def _has_system(fr) -> bool:  # type: ignore[no-untyped-def]
    return any(f.evidence.get("global") == SYSTEM and f.severity is Severity.CRITICAL for f in fr.findings)


# ------------------------------------------------------------------ harmless real models


def test_real_harmless_models_are_safe(real_models: dict[str, Path]) -> None:
    expected_formats = {
        "sklearn-logreg": "joblib",
        "sklearn-forest-compress3": "zlib+joblib",
        "npy": "npy",
        "npz": "npz",
        "torch-state-dict": "pytorch-zip",
        "torch-legacy": "pytorch-legacy",
        "torch-full-model": "pytorch-zip",
    }
    result = scan_paths(sorted(real_models.values()))
    by_path = {f.path: f for f in result.files}
    for name, path in real_models.items():
        fr = by_path[str(path)]
        assert fr.verdict is Verdict.SAFE, (name, fr.reason, [f.title for f in fr.findings])
        assert [f for f in fr.findings if f.severity >= Severity.MEDIUM] == []
        if name in expected_formats:
            assert fr.format == expected_formats[name], name
    # the scanner saw what these formats really reach
    assert "torch._utils._rebuild_tensor_v2" in by_path[str(real_models["torch-state-dict"])].globals
    assert "joblib.numpy_pickle.NumpyArrayWrapper" in by_path[str(real_models["sklearn-forest"])].globals
    assert "sklearn.tree._tree.Tree" in by_path[str(real_models["sklearn-forest"])].globals
    assert result.exit_code("medium") == 0


# ------------------------------------------------------------------ PyTorch


def test_payload_in_torch_zip_data_pkl(tmp_path: Path, marker: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(3), "x": Reduce(os.system, f"touch {marker}")}, path)
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    assert fr.format == "pytorch-zip"
    hit = next(f for f in fr.findings if f.evidence.get("global") == SYSTEM)
    assert hit.location.member == "evil/data.pkl"
    with zipfile.ZipFile(path) as zf:
        assert zf.read("evil/data.pkl")[hit.location.offset] in (ord("c"), 0x93)


def test_payload_in_another_pkl_member_of_torch_zip(
    tmp_path: Path, real_models: dict[str, Path], marker: Path
) -> None:
    src = real_models.get("torch-state-dict")
    if src is None:
        pytest.skip("torch not installed")
    path = tmp_path / "extra.pt"
    shutil.copy(src, path)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("state_dict/extra/hooks.pkl", os_system_payload(marker))
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    hits = [f for f in fr.findings if f.evidence.get("global") == SYSTEM]
    assert [f.location.member for f in hits] == ["state_dict/extra/hooks.pkl"]


def test_duplicate_data_pkl_is_a_container_trick(tmp_path: Path, marker: Path) -> None:
    benign = pickle.dumps({"w": 1}, protocol=2)
    path = zip_with(
        tmp_path / "dup.pt",
        {"archive/data.pkl": benign, "archive/version": b"3\n"},
        duplicate=("archive/data.pkl", os_system_payload(marker, 2)),
    )
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    rules = {f.rule_id for f in fr.findings}
    assert "scan.pytorch.duplicate-member" in rules
    assert _has_system(fr)  # both copies are scanned


def test_corrupt_torch_zip_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 2)
    fr = scan_file(path)
    assert fr.verdict is Verdict.ERROR
    assert fr.reason and "zip" in fr.reason


def test_truncated_torch_zip_is_an_error(tmp_path: Path, real_models: dict[str, Path]) -> None:
    src = real_models.get("torch-state-dict")
    if src is None:
        pytest.skip("torch not installed")
    data = src.read_bytes()
    path = tmp_path / "half.pt"
    path.write_bytes(data[: len(data) // 2])
    assert scan_file(path).verdict is Verdict.ERROR


def test_legacy_torch_payload(tmp_path: Path, marker: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "legacy-evil.pt"
    torch.save({"x": Reduce(os.system, f"touch {marker}")}, path, _use_new_zipfile_serialization=False)
    fr = scan_file(path)
    assert fr.format == "pytorch-legacy"
    assert fr.verdict is Verdict.MALICIOUS


def test_torch_storage_load_from_bytes_is_denied_and_unpacked(tmp_path: Path, marker: Path) -> None:
    # torch.storage._load_from_bytes(b) runs torch.load(b): deny-listed, and b is scanned too.
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"x": Reduce(os.system, f"touch {marker}")}, buf)
    path = tmp_path / "storage.pkl"
    path.write_bytes(pickle.dumps(Reduce(torch.storage._load_from_bytes, buf.getvalue())))
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    assert any(f.evidence.get("rule") == "deny.torch-storage-bytes" for f in fr.findings)
    nested = [f for f in fr.findings if f.location.member and f.evidence.get("global") == SYSTEM]
    assert nested and "data.pkl" in (nested[0].location.member or "")


# ------------------------------------------------------------------ joblib


@pytest.mark.parametrize(
    ("kwargs", "fmt"),
    [
        ({}, "joblib"),
        ({"compress": 3}, "zlib+joblib"),
        ({"compress": ("gzip", 3)}, "gzip+joblib"),
        ({"compress": ("bz2", 3)}, "bz2+joblib"),
        ({"compress": ("xz", 3)}, "xz+joblib"),
        ({"compress": ("lzma", 3)}, "lzma+joblib"),
    ],
)
def test_payload_after_numpy_buffers_in_joblib(tmp_path: Path, marker: Path, kwargs: dict, fmt: str) -> None:
    np = pytest.importorskip("numpy")
    obj = {"weights": np.arange(1000, dtype=np.float64), "x": Reduce(os.system, f"touch {marker}")}
    path = tmp_path / "evil.joblib"
    path.write_bytes(joblib_bytes(obj, **kwargs))
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS, fr.reason
    assert fr.format == fmt
    assert _has_system(fr)


def test_joblib_raw_buffers_are_skipped_not_parsed(tmp_path: Path) -> None:
    # The raw array bytes spell a protocol-0 os.system payload; skipping them by the computed
    # length means they are never mistaken for opcodes, and the file stays safe.
    np = pytest.importorskip("numpy")
    fake = b"cos\nsystem\n(S'touch /tmp/x'\ntR."
    arrays = {
        "u8": np.frombuffer(fake, dtype=np.uint8).copy(),
        "f32": np.zeros((3, 5), dtype=np.float32),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "unicode": np.array(["abc", "de"]),
        "structured": np.zeros(3, dtype=[("a", "<i4"), ("b", ">f8")]),
        "empty": np.zeros((0, 4)),
        "scalar": np.array(3.5),
        "bool": np.array([True, False]),
    }
    path = tmp_path / "arrays.joblib"
    path.write_bytes(joblib_bytes(arrays))
    fr = scan_file(path)
    assert fr.verdict is Verdict.SAFE, (fr.reason, [f.title for f in fr.findings])
    assert fr.format == "joblib"
    assert "os.system" not in fr.globals


def test_joblib_object_array_nested_pickle(tmp_path: Path, marker: Path) -> None:
    np = pytest.importorskip("numpy")
    arr = np.empty(2, dtype=object)
    arr[0] = "fine"
    arr[1] = Reduce(os.system, f"touch {marker}")
    path = tmp_path / "objarr.joblib"
    path.write_bytes(joblib_bytes({"a": arr, "after": np.arange(3)}))
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    assert _has_system(fr)


def test_joblib_wrong_array_length_is_an_error(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    data = joblib_bytes({"w": np.arange(64, dtype=np.int64)})
    path = tmp_path / "cut.joblib"
    path.write_bytes(data[:200])
    fr = scan_file(path)
    assert fr.verdict is Verdict.ERROR


def test_old_joblib_zfile_format(tmp_path: Path, marker: Path) -> None:
    body = zlib.compress(os_system_payload(marker, 2))
    header = b"ZF" + hex(len(body)).encode().ljust(19)
    path = tmp_path / "old.pkl"
    path.write_bytes(header + body)
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    assert fr.format == "joblib-zfile+pickle"


def test_lz4_joblib_is_unsupported_error(tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    path.write_bytes(b"\x04\x22\x4d\x18" + b"\x00" * 32)
    fr = scan_file(path)
    assert fr.verdict is Verdict.ERROR
    assert fr.reason and "lz4" in fr.reason


# ------------------------------------------------------------------ numpy


def test_object_npy_payload(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "evil.npy"
    path.write_bytes(npy_object(Reduce(os.system, f"touch {marker}")))
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    assert fr.format == "npy"
    hit = next(f for f in fr.findings if f.evidence.get("global") == SYSTEM)
    assert hit.location.offset is not None and hit.location.offset > 64  # after the header


def test_object_npy_member_of_npz(tmp_path: Path, marker: Path) -> None:
    path = zip_with(
        tmp_path / "evil.npz",
        {"a.npy": npy_object("plain"), "b.npy": npy_object(Reduce(os.system, f"touch {marker}"))},
    )
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    assert fr.format == "npz"
    assert {f.location.member for f in fr.findings if f.evidence.get("global") == SYSTEM} == {"b.npy"}


def test_harmless_object_npy_is_safe(tmp_path: Path) -> None:
    path = tmp_path / "strings.npy"
    path.write_bytes(npy_object("just a string"))
    fr = scan_file(path)
    assert fr.verdict is Verdict.SAFE
    assert [f.rule_id for f in fr.findings] == ["scan.numpy.object-array"]


def test_truncated_npy_is_an_error(tmp_path: Path, real_models: dict[str, Path]) -> None:
    data = real_models["npy"].read_bytes()
    path = tmp_path / "cut.npy"
    path.write_bytes(data[:-8])
    fr = scan_file(path)
    assert fr.verdict is Verdict.ERROR
    assert fr.reason and "truncated" in fr.reason


def test_npy_with_code_in_header_is_an_error(tmp_path: Path) -> None:
    header = b"{'descr': __import__('os').system('true'), 'fortran_order': False, 'shape': (1,), }"
    header = header.ljust(118) + b"\n"
    path = tmp_path / "h.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x00" * 8)
    assert scan_file(path).verdict is Verdict.ERROR


# ------------------------------------------------------------------ tar, zip, wrappers


def test_payload_in_tar_gz(tmp_path: Path, marker: Path) -> None:
    path = tar_with(tmp_path / "bundle.tar.gz", {"model/payload.pkl": os_system_payload(marker)}, mode="w:gz")
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    assert fr.format == "gzip+tar"
    hit = next(f for f in fr.findings if f.evidence.get("global") == SYSTEM)
    assert hit.location.member == "gzip:bundle.tar!model/payload.pkl"


@pytest.mark.parametrize("mode", ["w", "w:bz2", "w:xz"])
def test_payload_in_other_tars(tmp_path: Path, marker: Path, mode: str) -> None:
    path = tar_with(
        tmp_path / "b.tar", {"a/readme.txt": b"hello\n", "a/m.pkl": os_system_payload(marker)}, mode=mode
    )
    assert scan_file(path).verdict is Verdict.MALICIOUS


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)],
)
def test_payload_in_compression_wrappers(tmp_path: Path, marker: Path, suffix: str, compress) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / f"model.pkl{suffix}"
    path.write_bytes(compress(os_system_payload(marker)))
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS


def test_zip_inside_tar_inside_gzip(tmp_path: Path, marker: Path) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("deep/m.pkl", os_system_payload(marker))
    path = tar_with(tmp_path / "n.tgz", {"x/inner.zip": inner.getvalue()}, mode="w:gz")
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    hit = next(f for f in fr.findings if f.evidence.get("global") == SYSTEM)
    assert hit.location.member and hit.location.member.endswith("x/inner.zip!deep/m.pkl")


def test_tar_path_traversal_and_links(tmp_path: Path) -> None:
    path = tar_with(
        tmp_path / "t.tar",
        {"../../evil.txt": b"x", "ok/data.csv": b"a,b\n"},
        links={"ok/link": "../../../etc/passwd", "ok/abs": "/etc/shadow", "ok/fine": "data.csv"},
    )
    fr = scan_file(path)
    traversal = [f for f in fr.findings if f.rule_id == "scan.archive.path-traversal"]
    assert {f.evidence["member"] for f in traversal} == {"../../evil.txt", "ok/link", "ok/abs"}
    assert all(f.severity is Severity.HIGH for f in traversal)
    assert fr.verdict is Verdict.MALICIOUS


def test_zip_slip_member(tmp_path: Path) -> None:
    path = zip_with(tmp_path / "z.zip", {"../outside.pkl": pickle.dumps([1])})
    fr = scan_file(path)
    assert fr.verdict is Verdict.MALICIOUS
    assert "scan.archive.path-traversal" in {f.rule_id for f in fr.findings}


def test_archives_without_models_are_skipped(tmp_path: Path) -> None:
    tar = tar_with(tmp_path / "docs.tar.gz", {"README.md": b"# hi\n", "data.csv": b"a,b\n1,2\n"}, mode="w:gz")
    zp = zip_with(tmp_path / "docs.zip", {"notes.txt": b"nothing here"})
    gz = tmp_path / "table.csv.gz"
    gz.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    for p in (tar, zp, gz):
        fr = scan_file(p)
        assert fr.verdict is Verdict.SKIPPED, (p.name, fr.reason)


def test_corrupt_and_truncated_wrappers_are_errors(tmp_path: Path, marker: Path) -> None:
    data = gzip.compress(os_system_payload(marker) * 50)
    gz = tmp_path / "cut.pkl.gz"
    gz.write_bytes(data[: len(data) // 2])
    assert scan_file(gz).verdict is Verdict.ERROR
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"PK\x03\x04garbage" * 10)
    assert scan_file(bad_zip).verdict is Verdict.ERROR


def test_decompression_bomb_is_an_error(tmp_path: Path) -> None:
    big = pickle.dumps(b"\x00" * (4 << 20), protocol=4)
    path = tmp_path / "bomb.pkl.gz"
    path.write_bytes(gzip.compress(big))
    fr = scan_file(path, limits=ScanLimits(max_decompressed_bytes=1 << 20))
    assert fr.verdict is Verdict.ERROR
    assert fr.reason and "decompression bomb" in fr.reason
    fr = scan_file(path, limits=ScanLimits(max_ratio=10.0, ratio_floor=1 << 16))
    assert fr.verdict is Verdict.ERROR
    assert fr.reason and "decompression bomb" in fr.reason
    assert scan_file(path).verdict is Verdict.SAFE  # within the default limits it is just data


def test_zip_bomb_declared_sizes(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.pkl", pickle.dumps(b"\x00" * (2 << 20)))
    fr = scan_file(path, limits=ScanLimits(max_decompressed_bytes=1 << 20))
    assert fr.verdict is Verdict.ERROR
    assert fr.reason and "decompression bomb" in fr.reason


def test_nesting_depth_limit(tmp_path: Path, marker: Path) -> None:
    data = os_system_payload(marker)
    for _ in range(5):
        data = gzip.compress(data)
    path = tmp_path / "deep.gz"
    path.write_bytes(data)
    assert scan_file(path).verdict is Verdict.MALICIOUS
    fr = scan_file(path, limits=ScanLimits(max_depth=2))
    assert fr.verdict is Verdict.ERROR
    assert fr.reason and "nested" in fr.reason
