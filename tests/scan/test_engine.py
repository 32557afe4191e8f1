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
def test_file_symlinks_are_followed_wherever_the_file_is(tmp_path: Path, marker: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.pkl").write_bytes(os_system_payload(marker))
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.pkl").write_bytes(pickle.dumps([1]))
    os.symlink(outside / "evil.pkl", root / "link-out.pkl")
    os.symlink(outside / "evil.pkl", root / "link-out-2.pkl")  # the same file, linked twice
    os.symlink(outside, root / "dir-out")
    os.symlink(root / "ok.pkl", root / "link-in.pkl")
    os.symlink(root / "missing", root / "broken.pkl")
    result = scan_paths([root])
    by_name = {Path(f.path).name: f for f in result.files}
    # a model kept elsewhere is what a loader would read through the link: scanned
    # scanned once (the first in sorted order); the second link is listed, never dropped
    assert by_name["link-out-2.pkl"].verdict is Verdict.MALICIOUS
    assert by_name["link-out.pkl"].verdict is Verdict.SKIPPED
    assert by_name["link-out.pkl"].reason == f"symlink to the same file as {root / 'link-out-2.pkl'}"
    assert by_name["dir-out"].verdict is Verdict.SKIPPED
    assert by_name["broken.pkl"].verdict is Verdict.SKIPPED
    assert by_name["ok.pkl"].verdict is Verdict.SAFE
    # the in-folder link points at a file scanned at its own path
    assert by_name["link-in.pkl"].verdict is Verdict.SKIPPED
    assert result.exit_code() == 1
    # a link to a FIFO outside the folder is listed, never opened (open() would block for ever)
    os.mkfifo(outside / "fifo")
    os.symlink(outside / "fifo", root / "fifo.pkl")
    os.symlink("/dev/zero", root / "zero.pkl")
    again = {Path(f.path).name: f for f in scan_paths([root]).files}
    assert again["fifo.pkl"].verdict is Verdict.SKIPPED and again["zero.pkl"].verdict is Verdict.SKIPPED
    assert not marker.exists()


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_a_hugging_face_cache_snapshot_is_scanned_through_its_links(tmp_path: Path, marker: Path) -> None:
    """Every file of a snapshot is a symlink into ``../../blobs`` (huggingface_hub's cache)."""
    import io
    import zipfile

    hf = tmp_path / "models--org--m"
    (hf / "blobs").mkdir(parents=True)
    snap = hf / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", os_system_payload(marker))
        zf.writestr("archive/version", "3")
    (hf / "blobs" / "aa11").write_bytes(buf.getvalue())
    (hf / "blobs" / "bb22").write_text('{"architectures": ["X"]}')
    os.symlink("../../blobs/aa11", snap / "pytorch_model.bin")
    os.symlink("../../blobs/bb22", snap / "config.json")
    result = scan_paths([snap])
    by_name = {Path(f.path).name: f for f in result.files}
    assert by_name["pytorch_model.bin"].verdict is Verdict.MALICIOUS
    assert by_name["config.json"].verdict is Verdict.SKIPPED and result.exit_code() == 1


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


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_link_to_a_fifo_is_listed_not_lost(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.pkl")
    os.symlink("fifo.pkl", tmp_path / "fifolink.pkl")
    res = scan_paths([tmp_path.resolve()])
    assert {Path(f.path).name: f.verdict for f in res.files} == {
        "fifo.pkl": Verdict.SKIPPED,
        "fifolink.pkl": Verdict.SKIPPED,
    }


def test_a_bad_rules_file_lists_every_problem(tmp_path: Path) -> None:
    from bastion.core.errors import ConfigError

    bad = tmp_path / "r.toml"
    bad.write_text('kind = "deny"\n[[rule]]\nid = "x"\n')
    with pytest.raises(ConfigError) as info:
        scan_paths([tmp_path], rules=[bad])
    text = str(info.value) + " ".join(getattr(info.value, "problems", []) or [])
    assert "missing top-level 'version' string" in text and "rule[0]" in text


def test_a_bomb_member_does_not_hide_a_malicious_sibling(tmp_path: Path, marker: Path) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "mix.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("b.bin", bytes(80 << 20))  # ~80 MiB of zeros: above the 1000x ratio
        zf.writestr("z.pkl", os_system_payload(marker))
    res = scan_paths([tmp_path / "mix.zip"])
    fr = res.files[0]
    assert fr.verdict is Verdict.MALICIOUS and fr.format == "zip"
    assert "member 'b.bin'" in (fr.reason or "") and "not scanned" in (fr.reason or "")
    assert not marker.exists()


def test_members_over_the_declared_budget_are_skipped_and_the_rest_still_scanned(
    tmp_path: Path, marker: Path
) -> None:
    import zipfile

    from bastion.scan import ScanLimits

    with zipfile.ZipFile(tmp_path / "big.zip", "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("a.bin", bytes(600_000))
        zf.writestr("b.bin", bytes(600_000))  # would pass the 1 MB budget: not inflated
        zf.writestr("z.pkl", os_system_payload(marker))
    res = scan_paths([tmp_path / "big.zip"], limits=ScanLimits(max_decompressed_bytes=1_000_000))
    fr = res.files[0]
    assert fr.verdict is Verdict.MALICIOUS
    assert "members past the limit not scanned" in (fr.reason or "") and not marker.exists()


def test_a_gguf_header_of_millions_of_strings_minds_the_time_limit(tmp_path: Path) -> None:
    import struct

    from bastion.scan import ScanLimits

    key = b"tokenizer.ggml.tokens"
    n = 200_000
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
    (tmp_path / "m.gguf").write_bytes(head + struct.pack("<IIQ", 9, 8, n) + struct.pack("<Q", 0) * n)
    assert scan_paths([tmp_path / "m.gguf"]).files[0].verdict is not Verdict.ERROR  # in time
    fr = scan_paths([tmp_path / "m.gguf"], limits=ScanLimits(max_seconds=1e-9)).files[0]
    assert fr.verdict is Verdict.ERROR and "time limit" in (fr.reason or "") and fr.format == "gguf"


def test_folder_paths_are_spelled_as_pathlib_spells_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The walk builds paths as strings (no Path per entry): the same text ``str(Path(...))`` gives."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.pkl").write_bytes(pickle.dumps([1]))
    (tmp_path / "b.pkl").write_bytes(pickle.dumps([2]))
    monkeypatch.chdir(tmp_path)
    for root, expected in [
        (".", ["b.pkl", os.path.join("sub", "a.pkl")]),
        ("./sub/", [os.path.join("sub", "a.pkl")]),
        (str(tmp_path) + "/", [str(tmp_path / "b.pkl"), str(tmp_path / "sub" / "a.pkl")]),
    ]:
        res = scan_paths([root], digest=False)
        assert [f.path for f in res.files] == expected
        assert [f.verdict for f in res.files] == [Verdict.SAFE] * len(expected)


def test_worker_records_round_trip_every_field_in_order() -> None:
    """What a forked worker sends (_pack, _encode) comes back as the same record, field by field."""
    from bastion.core._scan_records import FileRecord
    from bastion.core.scanning import Verdict
    from bastion.scan import engine

    # the fields and order _pack and _unpack spell out
    order = ("path", "format", "verdict", "sha256", "size", "findings", "reason", "globals")
    assert FileRecord._fields == order
    rec = FileRecord(
        path="a/b.pkl",
        format="pickle",
        verdict=Verdict.SUSPICIOUS,
        sha256="ab" * 32,
        size=1215,
        reason="why",
        globals=["numpy.dtype", "x.y"],
    )
    frame = engine._encode(rec)
    back = engine._unpack(engine._decode(memoryview(frame)[4:]))
    assert back == rec
    assert [getattr(back, n) for n in FileRecord._fields] == [getattr(rec, n) for n in FileRecord._fields]
    with pytest.raises(ValueError):
        engine._unpack(engine._pack(rec)[:-1])
