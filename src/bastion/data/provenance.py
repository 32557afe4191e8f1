"""Dataset provenance: a content hash of every file and a Merkle root over every row.

:func:`build_manifest` walks a dataset (a file, or a folder of files), hashes each file
(SHA-256, streamed) and each row -- a CSV data line (text, line ending stripped), or row ``i``
of every npz array with the file's row count -- into a SHA-256 leaf; the leaves form a binary
Merkle tree (an odd node is paired with itself) whose root covers every row of every file in
order. Per-row digests (the first 8 bytes of each leaf) are kept so :func:`diff_manifests`
names every changed, added or removed row; beyond ``max_row_digests`` rows per file only the
root is kept and a change is reported for the file.

Memory is bounded for large files: rows are streamed, the Merkle root is folded as the leaves
arrive (:class:`MerkleBuilder` keeps one pending node per tree level), and the row digests are
packed 8 bytes a row (``row_digests_b64``: base64 of the packed digests; 1.2 M rows take
9.6 MB, 12.8 MB as text) and compared as ``uint64`` arrays. Older manifests that stored
``row_digests`` (a list of 16-hex strings) still compare.

Only ``bastion.core`` is imported; storage lives in :mod:`bastion.store.provenance`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import ConfigError
from bastion.core.hashing import file_sha256 as sha256_of_file

#: Row digests stored per file at most (8 bytes a row: 16 M rows take 128 MB).
MAX_ROW_DIGESTS = 16_000_000
#: Bytes of each row's leaf kept as its digest.
DIGEST_BYTES = 8


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


class MerkleBuilder:
    """The root :func:`merkle_root` would give, folded as leaves arrive (memory: one node a level).

    The tree pairs nodes left to right and pairs an odd last node with itself, level by level.
    """

    def __init__(self) -> None:
        self._pending: list[bytes | None] = []
        self.count = 0

    def add(self, leaf: bytes) -> None:
        """Append one raw 32-byte leaf digest."""
        self.count += 1
        node, level = leaf, 0
        while True:
            if level == len(self._pending):
                self._pending.append(node)
                return
            left = self._pending[level]
            if left is None:
                self._pending[level] = node
                return
            self._pending[level] = None
            node = _node(left, node)
            level += 1

    def root(self) -> str:
        """Hex root over every leaf added; the hash of b"" when none was."""
        if self.count == 0:
            return hashlib.sha256(b"").hexdigest()
        carry: bytes | None = None
        for level, left in enumerate(self._pending):
            higher = any(p is not None for p in self._pending[level + 1 :])
            nodes = [n for n in (left, carry) if n is not None]
            if len(nodes) == 2:
                carry = _node(nodes[0], nodes[1])
            elif nodes:
                if not higher:
                    return nodes[0].hex()
                carry = _node(nodes[0], nodes[0])  # an odd last node is paired with itself
        assert carry is not None
        return carry.hex()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks.

    Raises:
        ConfigError: the file cannot be read (named).
    """
    try:
        return sha256_of_file(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def iter_row_leaves(path: Path) -> Iterator[bytes] | None:
    """Leaf digests of the rows of a CSV (streamed) or npz file, one at a time; ``None`` for others.

    Raises:
        ConfigError: a CSV that is not UTF-8 or an unreadable npz (file and row named), while iterating.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_leaves(path)
    if suffix == ".npz":
        return _npz_leaves(path)
    return None


def _csv_leaves(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as fh:
            fh.readline()  # header
            for n, raw in enumerate(fh):
                line = raw.rstrip(b"\r\n")
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    raise ConfigError(f"{path}: row {n} is not UTF-8 text") from None
                yield _leaf(line)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _npz_leaves(path: Path) -> Iterator[bytes]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in sorted(npz.files)}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"{path}: not a readable npz archive: {exc}") from None
    if not arrays:
        return
    n = max((a.shape[0] for a in arrays.values() if a.ndim), default=0)
    rowed = [a for a in arrays.values() if a.ndim and a.shape[0] == n]
    for i in range(n):
        yield _leaf(b"".join(np.ascontiguousarray(a[i]).tobytes() for a in rowed))


def row_leaves(path: Path) -> list[bytes] | None:
    """Leaf digests of the rows of a CSV or npz file as a list; ``None`` for other files.

    Raises:
        ConfigError: a CSV that is not UTF-8 or an unreadable npz (file and row named).
    """
    it = iter_row_leaves(path)
    return None if it is None else list(it)


def pack_digests(packed: bytes) -> str:
    """Base64 text of packed 8-byte row digests (``FileEntry.row_digests_b64``)."""
    return base64.b64encode(packed).decode("ascii")


def entry_digests(entry: dict[str, Any]) -> np.ndarray | None:
    """A stored file entry's row digests as ``uint64 (rows,)``, or ``None`` when none were kept.

    Reads ``row_digests_b64`` (packed), else the older ``row_digests`` (16-hex strings).
    """
    packed = entry.get("row_digests_b64")
    if isinstance(packed, str):
        return np.frombuffer(base64.b64decode(packed), dtype=">u8").astype(np.uint64)
    old = entry.get("row_digests")
    if isinstance(old, list):
        return np.array([int(h, 16) for h in old], dtype=np.uint64)
    return None


@dataclass
class FileEntry:
    """One file of a dataset: its hash, size, rows and their Merkle root."""

    path: str
    sha256: str
    size: int
    rows: int | None = None
    merkle_root: str | None = None
    row_digests_b64: str | None = None
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


#: Files Bastion writes beside a dataset: a data profile (``bastion data profile``: ``<stem>.profile.json``
#: and its kept versions ``<stem>.profile.v<N>.json``) and a sanitised copy (``bastion data sanitize``:
#: ``<stem>.sanitised-<k>.<ext>``, registered as a version of its own).
_OWN_OUTPUTS = {
    "data profiles": re.compile(r"\.profile(?:\.v[0-9]+)?\.json$"),
    "sanitised copies": re.compile(r"\.sanitised-[0-9]+\.[^./]+$"),
}
#: A splits file (``<stem>_splits.npz``): row indices of the dataset beside it, not a dataset.
_SPLITS = re.compile(r"[_-]splits\.npz$")


def folder_grouping(root: Path, names: list[str]) -> tuple[list[str], bool, dict[str, list[str]]]:
    """What a folder registered as one dataset groups: ``(data files, mixed, Bastion's own outputs)``.

    ``names``: the files' paths relative to ``root``. Data files are CSV and npz files that are
    neither Bastion's outputs nor splits files; ``mixed``: they are not shards of one dataset
    (CSV files with different header lines, npz files with different arrays, or both kinds); the
    outputs are by kind (``"data profiles"``, ``"sanitised copies"``). Every file stays part of
    the dataset (hashed, compared by ``verify``): this only says what the folder holds (trial 30,
    L3: a folder's profiles, sanitised copies and two datasets were registered together as one
    dataset, with no word said).
    """
    own: dict[str, list[str]] = {}
    data: list[str] = []
    for name in names:
        kind = next((k for k, rx in _OWN_OUTPUTS.items() if rx.search(name)), None)
        if kind is not None:
            own.setdefault(kind, []).append(name)
        elif name.lower().endswith((".csv", ".npz")) and not _SPLITS.search(name.lower()):
            data.append(name)
    mixed = len({_layout(root / n) for n in data}) > 1
    return data, mixed, own


def _layout(path: Path) -> tuple[str, ...]:
    """What a data file's rows look like: a CSV's header line, an npz's array names."""
    try:
        if path.suffix.lower() == ".csv":
            with path.open("rb") as fh:
                return ("csv", fh.readline(65536).rstrip(b"\r\n").decode("utf-8", "replace"))
        with zipfile.ZipFile(path) as zf:
            return ("npz", *sorted(zf.namelist()))
    except (OSError, zipfile.BadZipFile, ValueError):
        return ("unreadable", str(path))


def build_manifest(
    path: str | Path, *, max_row_digests: int = MAX_ROW_DIGESTS, rows_required: bool = True
) -> Manifest:
    """Hash every file and row of the dataset at ``path`` (a file or a folder).

    Args:
        path: the file or folder.
        max_row_digests: rows per file beyond which only the file's Merkle root is kept.
        rows_required: a file whose rows cannot be read (a ``.csv`` that is not UTF-8 text) is
            an error; ``False`` (``verify``): it keeps its SHA-256, size and mode only, so a
            registered CSV replaced by binary bytes is a changed file, not an error.

    Raises:
        ConfigError: missing path, unreadable file (named).
    """
    root = Path(path)
    files = dataset_files(root)
    entries: dict[str, FileEntry] = {}
    whole = MerkleBuilder()
    for f in files:
        rel = f.name if root.is_file() else f.relative_to(root).as_posix()
        leaves = iter_row_leaves(f)
        entry = FileEntry(
            path=rel, sha256=file_sha256(f), size=f.stat().st_size, mode=os.stat(f).st_mode & 0o777
        )
        rows_read = False
        if leaves is not None:
            tree = MerkleBuilder()
            packed: bytearray | None = bytearray()
            try:
                for lf in leaves:
                    tree.add(lf)
                    whole.add(lf)
                    if packed is not None:
                        if tree.count > max_row_digests:
                            packed = None  # too many rows: the root only
                        else:
                            packed += lf[:DIGEST_BYTES]
                rows_read = True
            except ConfigError:
                if rows_required:
                    raise
            if rows_read:
                entry.rows = tree.count
                entry.merkle_root = tree.root()
                if packed is not None:
                    entry.row_digests_b64 = pack_digests(bytes(packed))
        if not rows_read:
            whole.add(bytes.fromhex(entry.sha256))
        entries[rel] = entry
    return Manifest(root=str(root), merkle_root=whole.root(), files=entries)


@dataclass
class Change:
    """One difference between a registered manifest and the files now.

    Attributes:
        kind: ``file-changed``, ``file-added``, ``file-removed``, ``mode-changed`` (permission
            bits), ``row-changed``, ``row-added`` or ``row-removed``.
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
        if before.get("mode") and now.mode and before["mode"] != now.mode:  # e.g. made world-writable
            out.append(Change("mode-changed", path))
        if before.get("sha256") == now.sha256:
            continue
        out.append(Change("file-changed", path))
        a, b = entry_digests(before), entry_digests(now.as_dict())
        if a is None or b is None:
            continue
        out.extend(_row_changes(path, a, b, limit - len(out)))
        if len(out) >= limit:
            break
    return out[:limit]


def _row_changes(path: str, a: np.ndarray, b: np.ndarray, limit: int) -> list[Change]:
    """Rows changed in place (same count), else rows whose digest vanished or appeared.

    ``a`` and ``b`` are ``uint64`` row digests; compared with numpy (no per-row Python objects
    beyond the ``limit`` changes listed).
    """
    if a.size == b.size:
        return [Change("row-changed", path, int(i)) for i in np.flatnonzero(a != b)[: max(limit, 0)]]
    removed = np.flatnonzero(~np.isin(a, b))[: max(limit, 0)]
    out = [Change("row-removed", path, int(i)) for i in removed]
    added = np.flatnonzero(~np.isin(b, a))[: max(limit - len(out), 0)]
    out += [Change("row-added", path, int(i)) for i in added]
    return out
