"""A minimal protobuf wire-format reader (stdlib only; not a plugin).

Decodes tags, varints and length-delimited fields of a serialised message without its schema,
so graph op names can be pulled out of a TensorFlow ``saved_model.pb`` without TensorFlow or
generated code. Groups (wire types 3 and 4) are rejected; lengths are bounds-checked.

Reference: https://protobuf.dev/programming-guides/encoding/
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["WireError", "fields", "strings"]


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = 0
    value = 0
    n = len(buf)
    while True:
        if i >= n:
            raise WireError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield ``(field number, wire type, value)``; length-delimited values are ``memoryview`` slices.

    Raises:
        WireError: a malformed tag, varint or length.
    """
    i = 0
    n = len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise WireError("field number 0")
        if wt == 0:
            value, i = _varint(buf, i)
            yield num, wt, value
        elif wt == 1:
            if i + 8 > n:
                raise WireError("truncated fixed64")
            i += 8
            yield num, wt, 0
        elif wt == 2:
            length, i = _varint(buf, i)
            if i + length > n:
                raise WireError(f"length {length} runs past the end of the message")
            yield num, wt, buf[i : i + length]
            i += length
        elif wt == 5:
            if i + 4 > n:
                raise WireError("truncated fixed32")
            i += 4
            yield num, wt, 0
        else:
            raise WireError(f"unsupported wire type {wt}")


def strings(buf: memoryview, number: int) -> list[str]:
    """The UTF-8 string values of field ``number`` (others ignored).

    Raises:
        WireError: malformed message or a value that is not UTF-8.
    """
    out: list[str] = []
    for num, wt, value in fields(buf):
        if num == number and wt == 2 and isinstance(value, memoryview):
            try:
                out.append(bytes(value).decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise WireError(f"field {number} is not UTF-8") from exc
    return out
