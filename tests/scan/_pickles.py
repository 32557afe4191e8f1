"""Builders of raw pickle opcodes and archives for the scanner's regression tests (never loaded)."""

from __future__ import annotations

import io
import struct
import tarfile


def G(module: str, name: str) -> bytes:
    """``GLOBAL module name``."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def S(text: str) -> bytes:
    """``BINUNICODE text``."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def I(n: int) -> bytes:  # noqa: E743 - the opcode's letter
    """An int: ``BININT`` when it fits, else ``LONG1``."""
    if 0 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def T(*items: bytes) -> bytes:
    """``MARK items TUPLE``."""
    return b"(" + b"".join(items) + b"t"


def CALL(func: bytes, *args: bytes) -> bytes:
    """``func(*args)`` through ``REDUCE``."""
    return func + T(*args) + b"R"


def P(body: bytes, proto: int = 2) -> bytes:
    """A whole stream: ``PROTO``, the body, ``STOP``."""
    return b"\x80" + bytes([proto]) + body + b"."


def tar(members: list[tuple[str, bytes, str | None, bytes | None]]) -> bytes:
    """A tar archive of ``(name, type, link target, data)`` members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, typ, target, data in members:
            ti = tarfile.TarInfo(name)
            ti.type = typ
            if target is not None:
                ti.linkname = target
            if data is not None:
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()
