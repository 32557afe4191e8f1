"""Allocation bombs: a few bytes of pickle that ask an allowed constructor for gigabytes on load."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest

from bastion.scan import scan_file
from bastion.scan.pickle_vm import MAX_ALLOCATION, requested_bytes


def _global(module: str, name: str) -> bytes:
    """SHORT_BINUNICODE module, SHORT_BINUNICODE name, STACK_GLOBAL."""

    def text(t: str) -> bytes:
        return b"\x8c" + bytes([len(t)]) + t.encode()

    return text(module) + text(name) + b"\x93"


def _long(n: int) -> bytes:
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data  # LONG1


RANGE = _global("builtins", "range")
BOMBS = {
    "bytes": _global("builtins", "bytes") + _long(2**40) + b"\x85R.",
    "bytearray": _global("builtins", "bytearray") + _long(2**31) + b"\x85R.",
    "bytes-of-range": _global("builtins", "bytes") + RANGE + _long(2**33) + b"\x85R\x85R.",
    "list-of-range": _global("builtins", "list") + RANGE + _long(10**10) + b"\x85R\x85R.",
    "set-of-stepped-range": _global("builtins", "set")
    + _global("builtins", "range")
    + b"K\x00"
    + _long(10**12)
    + b"K\x03\x87R\x85R.",
    "numpy-reconstruct": _global("numpy.core.multiarray", "_reconstruct")
    + _global("numpy", "ndarray")
    + _long(10**6)
    + _long(10**6)
    + b"\x86C\x01b\x87R.",
    "numpy-ndarray": _global("numpy", "ndarray") + _long(10**12) + b"\x85R.",
    "torch-storage": _global("torch", "FloatStorage") + _long(10**12) + b"\x85R.",
    "torch-tensor": _global("torch", "FloatTensor") + _long(10**5) + _long(10**5) + b"\x86R.",
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_allocation_bombs_are_reported(tmp_path: Path, name: str) -> None:
    data = b"\x80\x04" + BOMBS[name]
    import pickletools

    pickletools.dis(data, out=io.StringIO())
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(data)
    res = scan_file(path)
    assert res.verdict.value == "suspicious", res
    (f,) = res.findings
    assert f.rule_id == "scan.pickle.allocation-bomb" and f.severity.value == "medium"
    assert "GiB when the file is loaded" in f.title
    assert "https://atlas.mitre.org/techniques/AML.T0029" in f.references


@pytest.mark.parametrize(
    "obj",
    [
        np.zeros((1000, 100)),
        np.arange(10**6, dtype=np.int8),
        list(range(1000)),
        bytearray(b"x" * 10_000),
        {"w": np.ones(5, dtype=np.float32), "n": 10**15},
    ],
    ids=["ndarray", "int8", "list", "bytearray", "state"],
)
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_real_objects_are_not_bombs(tmp_path: Path, obj: object, protocol: int) -> None:
    path = tmp_path / "real.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    res = scan_file(path)
    assert res.verdict.value == "safe", res.findings


def test_small_sizes_and_unknown_arguments_are_not_bombs(tmp_path: Path) -> None:
    assert requested_bytes("builtins", "bytes", (1024,)) == 1024
    assert requested_bytes("builtins", "list", (5,)) is None  # list(5) is a TypeError, no allocation
    assert requested_bytes("builtins", "bytes", ("abc", "latin-1")) is None
    assert requested_bytes("numpy", "ndarray", ((-1, 5),)) is None
    assert requested_bytes("torch", "FloatStorage", (True,)) is None
    assert requested_bytes("torch", "Size", (10**12,)) is None
    path = tmp_path / "small.pkl"
    path.write_bytes(b"\x80\x04" + _global("builtins", "bytes") + _long(MAX_ALLOCATION) + b"\x85R.")
    assert scan_file(path).verdict.value == "safe"  # at the limit, not past it
