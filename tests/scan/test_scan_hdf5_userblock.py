"""HDF5 files with a user block: the superblock at 512, 1024, 2048 … is still found by magic bytes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.scanning import Verdict
from bastion.scan import scan_file
from bastion.scan.hdf5_scanner import HDF5_MAGIC, superblock_offset

from ._factories import os_system_payload

LAMBDA_MODEL = {
    "class_name": "Sequential",
    "config": {
        "layers": [
            {"class_name": "Lambda", "config": {"function": ["4wEA", None, None], "function_type": "lambda"}}
        ]
    },
}


def _h5(path: Path, userblock: int, config: dict[str, object] | None) -> Path:
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w", userblock_size=userblock) as f:
        f.create_dataset("weights", data=[1.0, 2.0])
        if config is not None:
            f.attrs["model_config"] = json.dumps(config)
    return path


@pytest.mark.parametrize("userblock", [0, 512, 1024, 4096, 65536])
def test_keras_h5_found_after_any_user_block(tmp_path: Path, userblock: int) -> None:
    """Named ``.bin`` (never by extension): the Lambda layer is found whatever the user block."""
    path = _h5(tmp_path / f"model-{userblock}.bin", userblock, LAMBDA_MODEL)
    assert superblock_offset(path.read_bytes(), None) == userblock
    fr = scan_file(path)
    assert (fr.format, fr.verdict) == ("keras-h5", Verdict.MALICIOUS), fr.reason
    assert "scan.hdf5.lambda-layer" in {f.rule_id for f in fr.findings}


def test_harmless_h5_with_user_block_is_safe(tmp_path: Path) -> None:
    fr = scan_file(_h5(tmp_path / "w.h5", 2048, None))
    assert (fr.format, fr.verdict) == ("hdf5", Verdict.SAFE), fr.reason


def test_pickle_hidden_in_user_block_is_scanned(tmp_path: Path, marker: Path) -> None:
    """A polyglot: HDF5 ignores the user block, ``pickle.load`` of the same file would run it."""
    path = _h5(tmp_path / "poly.h5", 1024, None)
    payload = os_system_payload(marker)
    assert len(payload) < 1024
    with path.open("r+b") as fh:
        fh.write(payload)
    fr = scan_file(path)
    assert fr.verdict == Verdict.MALICIOUS, fr.reason
    hits = [f for f in fr.findings if f.rule_id == "scan.pickle.denied-global"]
    assert hits and "user block" in (hits[0].location.member or "")
    assert not marker.exists()


def test_superblock_offset_probes_powers_of_two_only() -> None:
    data = bytearray(8192)
    data[3000 : 3000 + len(HDF5_MAGIC)] = HDF5_MAGIC  # not a valid superblock position
    assert superblock_offset(bytes(data), None) is None
    data[4096 : 4096 + len(HDF5_MAGIC)] = HDF5_MAGIC
    stream = io.BytesIO(bytes(data))
    assert superblock_offset(stream, None, head=bytes(data[:1024])) == 4096
    assert superblock_offset(b"", None) is None


def _superblock_reference(data: bytes) -> int | None:
    """HDF5's search, spelt out: offset 0, then 512, 1024, 2048 …"""
    offset = 0
    while offset + 8 <= len(data):
        if data[offset : offset + 8] == HDF5_MAGIC:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(0, 5000),
    at=st.sampled_from([None, 0, 1, 511, 512, 513, 1024, 2048, 4096]),
    head_len=st.sampled_from([0, 7, 100, 519, 520, 1024, 6000]),
)
def test_superblock_offset_agrees_with_hdf5s_search(size: int, at: int | None, head_len: int) -> None:
    """From the bytes, or from a stream with any head already read: HDF5's own answer."""
    data = bytearray(b"\x01" * size)
    if at is not None and at + 8 <= size:
        data[at : at + 8] = HDF5_MAGIC
    raw = bytes(data)
    want = _superblock_reference(raw)
    assert superblock_offset(raw, None) == want
    assert superblock_offset(io.BytesIO(raw), size, head=raw[:head_len]) == want
    assert superblock_offset(io.BytesIO(raw), None, head=raw[:head_len]) == want
