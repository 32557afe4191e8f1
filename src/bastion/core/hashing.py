"""SHA-256 of a file, read in blocks: the one digest every package records for files."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, overload

#: Block size of every streamed file read (1 MiB).
CHUNK = 1 << 20


@overload
def file_sha256(path: str | Path, *, with_size: Literal[False] = ...) -> str: ...


@overload
def file_sha256(path: str | Path, *, with_size: Literal[True]) -> tuple[str, int]: ...


def file_sha256(path: str | Path, *, with_size: bool = False) -> str | tuple[str, int]:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB blocks (memory stays bounded).

    The blocks go through one reused buffer (no allocation per block).

    Args:
        path: the file to hash.
        with_size: also return the number of bytes hashed, as ``(digest, size)`` (lets a
            caller notice a file that changed size since it was last looked at).

    Raises:
        OSError: the file cannot be opened or read (callers turn it into their own error).
    """
    import hashlib  # here: OpenSSL's load costs ~2 ms of start-up to commands that never hash

    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    size = 0
    with Path(path).open("rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            h.update(view[:n])
            size += n
    return (h.hexdigest(), size) if with_size else h.hexdigest()
