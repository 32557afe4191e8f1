"""SHA-256 of a file, read in blocks: the one digest every package records for files."""

from __future__ import annotations

import hashlib
from pathlib import Path

#: Block size of every streamed file read (1 MiB).
CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB blocks (memory stays bounded).

    Raises:
        OSError: the file cannot be opened or read (callers turn it into their own error).
    """
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()
