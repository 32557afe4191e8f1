"""Factories for scanner fixtures: harmless real models and harmless payloads, made by code.

Payloads are written with ``pickle.dumps`` of objects whose ``__reduce__`` names a dangerous
callable; the tests never load them. Every command payload would only ``touch`` a marker file,
so a test can also prove that scanning did not execute anything.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Reduce:
    """An object that pickles as ``fn(*args)``."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn = fn
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.fn, self.args)


def os_system_payload(marker: Path, protocol: int = pickle.DEFAULT_PROTOCOL) -> bytes:
    """``os.system('touch <marker>')`` as a pickle."""
    import os

    return pickle.dumps(Reduce(os.system, f"touch {marker}"), protocol=protocol)


# ---------------------------------------------------------------- hand-written opcode streams


def sbu(text: str) -> bytes:
    """SHORT_BINUNICODE."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def stack_global_via_memo(module: str, name: str, arg: str) -> bytes:
    """Protocol 4: module and name memoised, popped, fetched back with BINGET, then STACK_GLOBAL."""
    return (
        b"\x80\x04"
        + sbu(module)
        + b"\x94"  # MEMOIZE -> 0
        + sbu(name)
        + b"\x94"  # MEMOIZE -> 1
        + b"00"  # POP POP
        + b"h\x00h\x01"  # BINGET 0, BINGET 1
        + b"\x93"  # STACK_GLOBAL
        + sbu(arg)
        + b"\x85"  # TUPLE1
        + b"R."  # REDUCE STOP
    )


def global_call(module: str, name: str, *, protocol: int = 2) -> bytes:
    """``module.name()`` via GLOBAL (protocol <= 3) or STACK_GLOBAL (4+)."""
    head = b"\x80" + bytes([protocol]) if protocol >= 2 else b""
    if protocol >= 4:
        return head + sbu(module) + sbu(name) + b"\x93)R."
    return head + b"c" + module.encode() + b"\n" + name.encode() + b"\n" + b"(tR."


def inst_protocol0(module: str, name: str, arg: str) -> bytes:
    """Protocol 0: MARK, STRING arg, INST module name, STOP."""
    return b"(S'" + arg.encode() + b"'\ni" + module.encode() + b"\n" + name.encode() + b"\n."


# ---------------------------------------------------------------- containers


def zip_with(path: Path, members: dict[str, bytes], *, duplicate: tuple[str, bytes] | None = None) -> Path:
    """A zip with the given members (plus, optionally, a second member under an existing name)."""
    import warnings

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if duplicate is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                zf.writestr(duplicate[0], duplicate[1])
    return path


def tar_with(
    path: Path, members: dict[str, bytes], *, mode: str = "w", links: dict[str, str] | None = None
) -> Path:
    """A tar (``mode`` ``w``, ``w:gz``, ``w:bz2``, ``w:xz``) with files and symlinks."""
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def npy_object(payload_obj: Any) -> bytes:
    """An ``.npy`` of an object array holding ``payload_obj`` (written with numpy)."""
    import numpy as np

    arr = np.empty(2, dtype=object)
    arr[0] = 1
    arr[1] = payload_obj
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def joblib_bytes(obj: Any, **kwargs: Any) -> bytes:
    """``joblib.dump(obj)`` as bytes (through a temporary file; joblib needs a path to compress)."""
    import tempfile

    import joblib

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.joblib"
        joblib.dump(obj, p, **kwargs)
        return p.read_bytes()


def le64(n: int) -> bytes:
    """Little-endian uint64."""
    return struct.pack("<Q", n)
