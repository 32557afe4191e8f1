"""Dispatch skips the sniffs a scanner's ``sniff_first_bytes``/``sniff_suffixes`` rule out.

The promise each shipped scanner makes (its sniff accepts only heads starting with one of its
first bytes, or names ending with one of its suffixes) is checked here against heads of every
format the scanner knows, with their first byte replaced by each of the 256 values, against
random heads, and with names in any case; and the dispatch table is checked to pick the same
scanner as asking every scanner in turn.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import pickle
import tarfile
import zipfile
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.scan._formats import gguf_bytes, good_safetensors, pb_field, saved_model_pb

from bastion.scan import base
from bastion.scan.base import Scanner
from bastion.scan.engine import _scanners

SCANNERS = _scanners()
HINTED = [s for s in SCANNERS if s.sniff_first_bytes is not None]

NAMES = [
    "m.pkl",
    "model",
    "M.ONNX",
    "m.ort",
    "saved_model.pb",
    "graph.PBTXT",
    "config.json",
    "Config.JSON",
    "x.json",
    "w.safetensors",
    "a.keras",
    "m.npz",
    "m.pt",
    "",
]


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"a": 1}))
    return buf.getvalue()


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo("m.pkl")
        data = pickle.dumps([1, 2])
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _heads() -> list[bytes]:
    """The first 1024 bytes of one file of each format the scanners know."""
    payload = pickle.dumps({"w": list(range(300))}, protocol=2)
    legacy = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e" + payload[2:]
    formats = [
        *(pickle.dumps({"k": [1.5, "v"]}, protocol=p) for p in range(6)),
        legacy,
        _zip(),
        b"PK\x05\x06" + bytes(18),
        b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (2,), }" + payload,
        gguf_bytes({"general.architecture": "llama"}),
        good_safetensors(),
        b"\x89HDF\r\n\x1a\n" + bytes(600),
        bytes(512) + b"\x89HDF\r\n\x1a\n" + bytes(100),
        zlib.compress(payload),
        b"ZF0x" + zlib.compress(payload),
        lzma.compress(payload, format=lzma.FORMAT_ALONE),
        b"\x04\x22\x4d\x18" + bytes(20),
        gzip.compress(payload),
        bz2.compress(payload),
        lzma.compress(payload),
        _tar(),
        b"7z\xbc\xaf\x27\x1c" + bytes(30),
        b"\x08\x07" + pb_field(7, b"\x0a\x01x") + pb_field(8, b"\x12\x01\x01"),
        saved_model_pb(["Const", "ReadFile"]),
        json.dumps({"class_name": "Sequential", "config": {"layers": []}}).encode(),
        b"",
    ]
    return [f[:1024] for f in formats]


HEADS = _heads()


def _promised(scanner: Scanner, head: bytes, name: str) -> bool:
    """Whether the scanner's hint lets its sniff accept ``head`` named ``name``."""
    firsts = scanner.sniff_first_bytes
    assert firsts is not None
    return (head[:1] != b"" and head[0] in firsts) or name.lower().endswith(
        tuple(x.lower() for x in scanner.sniff_suffixes)
    )


def test_the_shipped_scanners_that_can_promise_do() -> None:
    """Only the scanners whose sniff looks past the first byte (or at the whole stream) ask always."""
    unhinted = {s.id for s in SCANNERS if s.sniff_first_bytes is None}
    assert unhinted == {"scan.archive", "scan.hdf5", "scan.safetensors", "scan.pickle"}


@pytest.mark.parametrize("scanner", HINTED, ids=lambda s: s.id)
def test_no_sniff_accepts_a_first_byte_its_hint_leaves_out(scanner: Scanner) -> None:
    """Every format's head, with every first byte, under every name: accepted only as promised."""
    accepted = 0
    for head in HEADS:
        variants = [head] if not head else [bytes([b]) + head[1:] for b in range(256)]
        for h in variants:
            for name in NAMES:
                if scanner.sniff(h, name):
                    accepted += 1
                    assert _promised(scanner, h, name), (scanner.id, h[:16], name)
    assert accepted  # the scanner accepts its own format's heads: the check above was exercised


@settings(max_examples=300, deadline=None)
@given(head=st.binary(max_size=1100), name=st.sampled_from(NAMES), first=st.integers(0, 255))
def test_no_sniff_accepts_a_random_head_its_hint_leaves_out(head: bytes, name: str, first: int) -> None:
    """Random heads (and each with a chosen first byte): accepted only as promised."""
    for h in (head, bytes([first]) + head[1:]):
        for scanner in HINTED:
            if scanner.sniff(h, name):
                assert _promised(scanner, h, name), (scanner.id, h[:16], name)


def _first_by_asking_all(head: bytes, name: str) -> str | None:
    """The first scanner whose sniff accepts (what dispatch did before the table)."""
    for s in SCANNERS:
        if s.deep_sniff:
            continue  # asked with the stream in dispatch: the same in both
        if s.sniff(head, name):
            return s.id
    return None


def _first_by_table(head: bytes, name: str) -> str | None:
    """The first scanner the dispatch table asks whose sniff accepts."""
    row = base._sniffers(SCANNERS)[head[0] if head else base._EMPTY_HEAD]
    for s, sniff, deep, suffixes in row:
        if deep:
            continue
        if suffixes is not None and not name.lower().endswith(suffixes):
            continue
        if sniff(head, name):
            return s.id
    return None


def test_the_dispatch_table_picks_what_asking_every_scanner_picks() -> None:
    """The same first scanner for every format's head, every first byte, every name."""
    for head in HEADS:
        variants = [head] if not head else [bytes([b]) + head[1:] for b in range(256)]
        for h in variants:
            for name in NAMES:
                assert _first_by_table(h, name) == _first_by_asking_all(h, name), (h[:16], name)


def test_the_table_keeps_the_scanners_order_and_asks_an_unhinted_plugin_always() -> None:
    """A plugin without a hint is in every row; rows keep the priority order; built once per list."""

    class Plugin(Scanner):
        id = "scan.test-plugin"
        priority = 5

        @classmethod
        def sniff(cls, head: bytes, name: str) -> bool:
            return head[4:8] == b"ABCD"

    scanners = [Plugin(), *SCANNERS]
    table = base._sniffers(scanners)
    assert base._sniffers(scanners) is table  # the same list: the table is reused
    assert len(table) == 257
    order = {id(s): i for i, s in enumerate(scanners)}
    for row in table:
        assert row[0][0] is scanners[0]
        positions = [order[id(entry[0])] for entry in row]
        assert positions == sorted(positions)
    assert {e[0].id for e in table[base._EMPTY_HEAD]} == {s.id for s in scanners}
    pickle_row = {e[0].id: e[3] for e in table[0x80]}
    assert "scan.gguf" not in pickle_row and "scan.sevenzip" not in pickle_row
    assert pickle_row["scan.onnx"] == (".onnx", ".ort")  # asked only for its names
    assert pickle_row["scan.pytorch"] is None and pickle_row["scan.pickle"] is None


def test_the_hints_are_well_formed() -> None:
    """First bytes are bytes; suffixes are lower-case name endings starting with a dot."""
    for s in HINTED:
        assert isinstance(s.sniff_first_bytes, bytes)
        for suffix in s.sniff_suffixes:
            assert suffix.startswith(".") and suffix == suffix.lower()
