"""Regressions of red-team round 13 (containers): each file got ``safe`` or ``skipped`` before.

M1 a joblib/xz file of two compressed streams of different kinds; M2 joblib's old ``ZF`` header
spelt as ``int(field, 16)`` reads it; M3 a zlib joblib file with bytes after its stream;
M4 a zip appended to (or written into) a file of another format; M5 a chat template reaching
``os`` through a generator's frame; M6 a tar symlink chain that writes outside the folder;
M7 a tar member of an unknown type; M8 an ``.npz`` member named like a folder. The files are
built here and never loaded, except by ``tarfile`` and ``zipfile`` to show what they read.
"""

from __future__ import annotations

import io
import lzma
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from tests.scan._pickles import tar as _tar

from bastion.scan import scan_file
from bastion.scan.archive_scanner import _resolve
from bastion.scan.gguf_scanner import template_findings


def _payload(cmd: str = "true") -> bytes:
    data = cmd.encode()
    return b"\x80\x02cos\nsystem\n(X" + struct.pack("<I", len(data)) + data + b"tR."


def _scan(tmp_path: Path, name: str, data: bytes) -> tuple[str, list[str]]:
    path = tmp_path / name
    path.write_bytes(data)
    res = scan_file(path)
    return res.verdict.value, [f.rule_id for f in res.findings]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("model.joblib", lzma.compress(b"") + lzma.compress(_payload(), format=lzma.FORMAT_ALONE)),
        ("model.dat", lzma.compress(b"", format=lzma.FORMAT_ALONE) + lzma.compress(_payload())),
    ],
)
def test_m1_lzma_streams_of_both_kinds_are_all_read(tmp_path: Path, name: str, data: bytes) -> None:
    # joblib and lzma.open read every stream (FORMAT_AUTO), the payload in the second one
    with lzma.LZMAFile(io.BytesIO(data)) as fh:
        assert fh.read() == _payload()
    verdict, rules = _scan(tmp_path, name, data)
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules


def test_m1_a_model_named_wrapper_without_a_model_is_an_error(tmp_path: Path) -> None:
    assert _scan(tmp_path, "model.joblib.xz", lzma.compress(b"just text"))[0] == "error"
    assert _scan(tmp_path, "notes.txt.xz", lzma.compress(b"just text"))[0] == "skipped"


@pytest.mark.parametrize("field", ["0X%x", "%x", "  0x%x", "+0x%x"])
def test_m2_zf_length_in_every_spelling_int_accepts(tmp_path: Path, field: str) -> None:
    body = _payload()
    data = b"ZF" + (field % len(body)).encode().ljust(19) + zlib.compress(body)
    verdict, rules = _scan(tmp_path, "model.dat", data)
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules


def test_m2_a_file_merely_starting_with_zf_is_not_joblib(tmp_path: Path) -> None:
    assert _scan(tmp_path, "notes.dat", b"ZFxyz is a plain text file\n")[0] == "skipped"


def test_m3_bytes_after_the_zlib_stream_are_an_error_whatever_the_name(tmp_path: Path) -> None:
    data = zlib.compress(b"") + zlib.compress(pickle.dumps("x" * 100, protocol=2))
    res = scan_file(_write(tmp_path, "model.dat", data))
    assert res.verdict.value == "error" and "after the end of the zlib stream" in (res.reason or "")
    # one whole stream, as joblib writes it: scanned as usual
    assert _scan(tmp_path, "clf.dat", zlib.compress(pickle.dumps({"w": [1.0]}, protocol=2)))[0] == "safe"


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


_NPY_DICT = b"{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }"
_NPY_HEAD = b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + _NPY_DICT.ljust(117) + b"\n"


def _skops_zip(payload: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("schema.json", '{"__class__": "dict", "__module__": "builtins", "content": {}}')
        z.writestr("payload.pkl", payload)
    return buf.getvalue()


@pytest.mark.parametrize(
    "prefix",
    [
        b"\x89HDF\r\n\x1a\n" + b"\0" * 504,  # HDF5 superblock signature
        b"GGUF" + struct.pack("<IQQ", 3, 0, 0),  # an empty GGUF
        _NPY_HEAD + b"\0" * 16,
    ],
    ids=["hdf5", "gguf", "npy"],
)
def test_m4_a_zip_appended_to_another_format_is_scanned_by_name(tmp_path: Path, prefix: bytes) -> None:
    data = prefix + _skops_zip(_payload())
    assert zipfile.is_zipfile(io.BytesIO(data))  # what skops.io and Keras look at
    verdict, rules = _scan(tmp_path, "model.skops", data)
    assert verdict == "malicious" and "scan.archive.appended-zip" in rules


def test_m4_a_zip_written_into_another_file_with_whole_file_offsets(tmp_path: Path) -> None:
    path = _write(tmp_path, "model.skops", b"\x89HDF\r\n\x1a\n" + b"\0" * 504)
    with zipfile.ZipFile(path, "a") as z:  # appends a zip whose offsets count the HDF5 bytes
        z.writestr("payload.pkl", _payload())
    res = scan_file(path)
    assert res.verdict.value == "malicious"
    assert {"scan.archive.appended-zip", "scan.pickle.denied-global"} <= {f.rule_id for f in res.findings}


def test_m4_a_file_without_a_zip_at_its_tail_has_no_finding(tmp_path: Path) -> None:
    data = pickle.dumps({"note": b"PK\x05\x06 looks like an end record"}, protocol=4)
    assert _scan(tmp_path, "model.pkl", data) == ("safe", [])


@pytest.mark.parametrize(
    "template",
    [
        "{{ (messages|map('string')).gi_frame.f_globals.random._os.spawnlp(0, 'sh', 'sh', '-c', 'id') }}",
        "{{ cycler.next.f_back }}",
        "{{ messages._secret }}",
    ],
)
def test_m5_frame_and_private_attributes_are_template_injection(template: str) -> None:
    assert any(sev.name == "HIGH" for _, sev, _ in template_findings(template))


def test_m5_an_ordinary_chat_template_passes() -> None:
    tpl = (
        "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message.content }}"
        "{% if loop.last %}{{ eos_token }}{% endif %}{% endfor %}"
    )
    assert template_findings(tpl) == []


def test_m6_a_symlink_chain_out_of_the_folder_is_path_traversal(tmp_path: Path) -> None:
    data = _tar(
        [
            ("model.pkl", tarfile.REGTYPE, None, pickle.dumps({"w": [1.0]}, protocol=2)),
            ("a", tarfile.SYMTYPE, ".", None),
            ("a/a/b", tarfile.SYMTYPE, "../..", None),
            ("a/a/b/pwned", tarfile.REGTYPE, None, b"outside\n"),
        ]
    )
    verdict, rules = _scan(tmp_path, "model.tar", data)
    assert verdict == "malicious" and "scan.archive.path-traversal" in rules


def test_m6_links_that_stay_inside_pass(tmp_path: Path) -> None:
    data = _tar(
        [
            ("v1/model.pkl", tarfile.REGTYPE, None, pickle.dumps({"w": [1.0]}, protocol=2)),
            ("latest", tarfile.SYMTYPE, "v1", None),
            ("v1/alias.pkl", tarfile.SYMTYPE, "model.pkl", None),
            ("latest/extra.txt", tarfile.REGTYPE, None, b"notes\n"),
        ]
    )
    assert _scan(tmp_path, "model.tar", data) == ("safe", [])


def test_m6_resolve_follows_links_in_every_component() -> None:
    links = {"a": ".", "b": "../..", "loop": "loop"}
    assert _resolve("a/a/x", links) == "x"
    assert _resolve("b/x", links) is None
    assert _resolve("loop/x", links) is None  # a cycle never ends inside
    assert _resolve("c/../d", links) == "d"
    assert _resolve("../d", links) is None


def test_m7_a_member_of_an_unknown_type_is_scanned_like_a_file(tmp_path: Path) -> None:
    data = _tar([("storages", tarfile.REGTYPE, None, b"\x80\x02K\x00."), ("pickle", b"Z", None, _payload())])
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:  # tarfile hands its data out as a file's
        fh = tf.extractfile("pickle")
        assert fh is not None and fh.read() == _payload()
    verdict, rules = _scan(tmp_path, "ckpt.pt", data)
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules


def test_m8_an_npz_member_named_like_a_folder_is_scanned(tmp_path: Path) -> None:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header = header + " " * (64 - 10 - len(header) - 1) + "\n"
    obj = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + _payload()
    good = io.BytesIO()
    np.save(good, np.arange(3.0))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.npy", good.getvalue())
        z.writestr("w/", obj)
    with np.load(io.BytesIO(buf.getvalue()), allow_pickle=True) as npz:
        assert "w/" in npz.files  # numpy lists it, and would unpickle it
    verdict, rules = _scan(tmp_path, "weights.npz", buf.getvalue())
    assert verdict == "malicious" and "scan.pickle.denied-global" in rules
