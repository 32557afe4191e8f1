"""Dataset provenance: a content hash of every file and a Merkle root over every row.

:func:`build_manifest` walks a dataset (a file, or a folder of files), hashes each file
(SHA-256, streamed) and each row -- a CSV data line (text, line ending stripped), or row ``i``
of every npz array with the file's row count -- into a SHA-256 leaf; the leaves form a binary
Merkle tree (an odd node is paired with itself) whose root covers every row of every file in
order. Per-row digests (the first 16 hex characters) are kept so :func:`diff_manifests` names
every changed, added or removed row; beyond ``max_row_digests`` rows per file only the root is
kept and a change is reported for the file.

Only ``bastion.core`` is imported; storage lives in :mod:`bastion.store.provenance`.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import ConfigError

#: Row digests stored per file at most.
MAX_ROW_DIGESTS = 1_000_000
_CHUNK = 1 << 20


def merkle_root(leaves: list[bytes]) -> str:
    """Hex SHA-256 Merkle root of ``leaves`` (raw 32-byte digests); the hash of b"" when empty."""
    if not leaves:
        return hashlib.sha256(b"").hexdigest()
    level = leaves
    while len(level) > 1:
        if len(level) % 2:
            level = [*level, level[-1]]
        level = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0].hex()


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks.

    Raises:
        ConfigError: the file cannot be read (named).
    """
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(_CHUNK), b""):
                h.update(block)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return h.hexdigest()


def row_leaves(path: Path) -> list[bytes] | None:
    """Leaf digests of the rows of a CSV (streamed) or npz file; ``None`` for other files.

    Raises:
        ConfigError: a CSV that is not UTF-8 or an unreadable npz (file and row named).
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        out: list[bytes] = []
        try:
            with path.open("rb") as fh:
                fh.readline()  # header
                for n, raw in enumerate(fh):
                    line = raw.rstrip(b"\r\n")
                    try:
                        line.decode("utf-8")
                    except UnicodeDecodeError:
                        raise ConfigError(f"{path}: row {n} is not UTF-8 text") from None
                    out.append(_leaf(line))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        return out
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in sorted(npz.files)}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ConfigError(f"{path}: not a readable npz archive: {exc}") from None
        if not arrays:
            return []
        n = max((a.shape[0] for a in arrays.values() if a.ndim), default=0)
        rowed = [a for a in arrays.values() if a.ndim and a.shape[0] == n]
        return [_leaf(b"".join(np.ascontiguousarray(a[i]).tobytes() for a in rowed)) for i in range(n)]
    return None


@dataclass
class FileEntry:
    """One file of a dataset: its hash, size, rows and their Merkle root."""

    path: str
    sha256: str
    size: int
    rows: int | None = None
    merkle_root: str | None = None
    row_digests: list[str] | None = None
    mode: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)


@dataclass
class Manifest:
    """A dataset's files and the Merkle root over all their rows (files in path order)."""

    root: str
    merkle_root: str
    files: dict[str, FileEntry] = field(default_factory=dict)

    def files_json(self) -> dict[str, Any]:
        """``{relative path: entry dict}`` for storage."""
        return {k: v.as_dict() for k, v in self.files.items()}


def dataset_files(path: Path) -> list[Path]:
    """The files of a dataset: the file itself, or every file under a folder (sorted, hidden skipped).

    Raises:
        ConfigError: the path does not exist or the folder holds no file.
    """
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"{path}: dataset not found")
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise ConfigError(f"{path}: the folder holds no file")
    return files


def build_manifest(path: str | Path, *, max_row_digests: int = MAX_ROW_DIGESTS) -> Manifest:
    """Hash every file and row of the dataset at ``path`` (a file or a folder).

    Raises:
        ConfigError: missing path, unreadable file (named).
    """
    root = Path(path)
    files = dataset_files(root)
    entries: dict[str, FileEntry] = {}
    all_leaves: list[bytes] = []
    for f in files:
        rel = f.name if root.is_file() else f.relative_to(root).as_posix()
        leaves = row_leaves(f)
        entry = FileEntry(
            path=rel, sha256=file_sha256(f), size=f.stat().st_size, mode=os.stat(f).st_mode & 0o777
        )
        if leaves is not None:
            entry.rows = len(leaves)
            entry.merkle_root = merkle_root(leaves)
            if len(leaves) <= max_row_digests:
                entry.row_digests = [lf.hex()[:16] for lf in leaves]
            all_leaves.extend(leaves)
        else:
            all_leaves.append(bytes.fromhex(entry.sha256))
        entries[rel] = entry
    return Manifest(root=str(root), merkle_root=merkle_root(all_leaves), files=entries)


@dataclass
class Change:
    """One difference between a registered manifest and the files now.

    Attributes:
        kind: ``file-changed``, ``file-added``, ``file-removed``, ``row-changed``,
            ``row-added`` or ``row-removed``.
        path: the file.
        row: the 0-based data row (row kinds only).
    """

    kind: str
    path: str
    row: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dict(self.__dict__)


def diff_manifests(old: dict[str, Any], new: Manifest, *, limit: int = 10_000) -> list[Change]:
    """Every changed, added or removed file, and row of a changed file, from ``old`` to ``new``.

    Args:
        old: the stored ``files`` JSON (``{path: entry dict}``).
        new: the manifest of the files now.
        limit: most changes listed.
    """
    out: list[Change] = []
    for path in sorted(set(old) | set(new.files)):
        if path not in new.files:
            out.append(Change("file-removed", path))
            continue
        if path not in old:
            out.append(Change("file-added", path))
            continue
        before, now = old[path], new.files[path]
        if before.get("sha256") == now.sha256:
            continue
        out.append(Change("file-changed", path))
        a, b = before.get("row_digests"), now.row_digests
        if a is None or b is None:
            continue
        out.extend(_row_changes(path, list(a), list(b)))
        if len(out) >= limit:
            break
    return out[:limit]


def _row_changes(path: str, a: list[str], b: list[str]) -> list[Change]:
    """Rows changed in place (same count), else rows whose digest vanished or appeared."""
    if len(a) == len(b):
        return [Change("row-changed", path, i) for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    left, right = set(a), set(b)
    out = [Change("row-removed", path, i) for i, x in enumerate(a) if x not in right]
    out += [Change("row-added", path, i) for i, y in enumerate(b) if y not in left]
    return out
