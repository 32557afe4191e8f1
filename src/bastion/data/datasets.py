"""Load a project dataset (CSV or npz) with its recorded splits, safely and with clear errors.

A dataset named in ``bastion.yaml`` (:class:`bastion.core.config.Dataset`) is read once: the
file's bytes are hashed (SHA-256) and the same bytes are parsed, so the recorded hash is the
hash of what was loaded. Nothing is ever unpickled: npz files are opened with
``allow_pickle=False`` and object arrays are rejected.

Formats (chosen by file suffix):

* ``.csv`` -- a header row, then one row per sample. ``label`` names the label column;
  ``features`` lists the feature columns (every other column when omitted). Every feature
  cell must be a finite number and every label an integer class.
* ``.npz`` -- ``features`` names the input array (default ``"x"``), ``label`` the label array
  (default ``"y"``; optional when not named). Inputs may be flat ``(N, F)`` or already shaped.

Splits come from ``splits`` (inline lists of row indices) and/or ``splits_file`` (an npz of
1-D integer arrays, one per split). A split naming a row outside the file is an error; a row in
both ``train`` and ``test`` is kept and recorded in :attr:`LoadedDataset.warnings`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import logging
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bastion.core.check import Split
from bastion.core.config import Dataset
from bastion.core.errors import ConfigError

log = logging.getLogger(__name__)

#: Suffixes :func:`load_dataset` reads.
FORMATS: tuple[str, ...] = (".csv", ".npz")


#: Bytes :func:`sniff_format` reads from the head of a file.
SNIFF_BYTES = 65536


def sniff_format(head: bytes) -> str | None:
    """The format of a dataset file by its first bytes (never its suffix), or None.

    ``"npz"`` (a zip archive), ``"pickle"`` (the PROTO opcode of pickle protocol 2 to 5: never
    a dataset), ``"csv"`` (UTF-8 text, no NUL byte); None for anything else.
    """
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "npz"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if b"\x00" in head:
        return None
    try:  # incremental: the head may end inside a multi-byte character
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    return "csv"


def dataset_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a dataset file (CSV or npz, judged by content), or None.

    A pickle (or anything else) is refused before the run (new-user trial 30, L7: a dataset
    asset pointing at a pickle was skipped quietly); nothing is unpickled to find out.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    fmt = sniff_format(head)
    if fmt == "pickle":
        return f"{path} is a pickle; a dataset is CSV or npz, never a pickle (it is not loaded)"
    if fmt is None:
        return f"{path} is neither CSV (UTF-8 text) nor npz (a zip archive)"
    return None


@dataclass
class LoadedDataset:
    """A dataset in memory, with its recorded splits.

    Attributes:
        name: the dataset's name in ``bastion.yaml``.
        path: the file that was read.
        x: inputs, float32, shape ``(N, *input_shape)`` (``(N, F)`` when no shape was given).
        y: integer labels ``(N,)`` int64, or ``None`` for unlabelled data.
        feature_names: one name per flat feature (CSV column names; ``f0``, ``f1``, ... for npz).
        sha256: hex SHA-256 of the file's bytes.
        splits: named splits (``train``, ``test``, ...), each holding its rows and their indices.
        warnings: non-fatal problems found while loading (e.g. rows in both train and test).
    """

    name: str
    path: Path
    x: np.ndarray
    y: np.ndarray | None
    feature_names: list[str]
    sha256: str
    splits: dict[str, Split] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def all(self) -> Split:
        """The whole file as one split (``index`` = ``0..N-1``)."""
        return Split(x=self.x, y=self.y, index=np.arange(len(self), dtype=np.int64))

    def split(self, name: str) -> Split:
        """The split called ``name``; ``"all"`` is the whole file unless a split has that name.

        Raises:
            ConfigError: no such split; the message lists the recorded ones.
        """
        if name in self.splits:
            return self.splits[name]
        if name == "all":
            return self.all()
        known = ", ".join(sorted(self.splits)) or "none"
        raise ConfigError(f"dataset {self.name!r}: no split named {name!r}; recorded splits: {known}")

    def context_data(self) -> dict[str, Split]:
        """Every recorded split plus ``"all"`` (the whole file): what ``CheckContext.data`` holds."""
        out = dict(self.splits)
        out.setdefault("all", self.all())
        return out


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def load_dataset(ds: Dataset, *, base_dir: Path, input_shape: tuple[int, ...] | None = None) -> LoadedDataset:
    """Read a dataset file and its splits.

    Args:
        ds: the dataset entry of ``bastion.yaml``.
        base_dir: folder ``ds.path`` and ``ds.splits_file`` are relative to.
        input_shape: one sample's shape as the model takes it (``(1, 8, 8)``); flat rows are
            reshaped to it. ``None`` keeps the file's shape.

    Returns:
        The loaded dataset: ``x`` float32 ``(N, *input_shape)``, ``y`` int64 ``(N,)`` or ``None``.

    Raises:
        ConfigError: the file or splits file is missing or unreadable, an unsupported format,
            an object array, a non-numeric or non-finite cell (row and column named), a label
            that is not an integer, a split index out of range (split and index named), or
            rows that do not fit ``input_shape`` (dataset, file and both shapes named).
    """
    path = Path(base_dir) / ds.path
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"dataset {ds.name!r}: {path}: unsupported format {suffix or '(no suffix)'!r}; "
            f"expected one of {', '.join(FORMATS)}"
        )
    raw = _read_bytes(path, f"dataset {ds.name!r}")
    if sniff_format(raw[:SNIFF_BYTES]) == "pickle":
        what = "an npz" if suffix == ".npz" else "a CSV"
        raise ConfigError(
            f"dataset {ds.name!r}: {path}: not {what} file: a pickle "
            "(a dataset is CSV or npz, never a pickle)"
        )
    digest = sha256_bytes(raw)
    if suffix == ".csv":
        x, y, names = _parse_csv(raw, ds, path)
    else:
        x, y, names = _parse_npz(raw, ds, path)
    if input_shape is not None:
        x = _reshape(x, tuple(int(d) for d in input_shape), ds, path)
    loaded = LoadedDataset(name=ds.name, path=path, x=x, y=y, feature_names=names, sha256=digest)
    _attach_splits(loaded, ds, Path(base_dir))
    log.debug("loaded dataset %s: %d rows, shape %s, sha256 %s", ds.name, len(loaded), x.shape, digest)
    return loaded


# -- reading ---------------------------------------------------------------------------


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what}: file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what}: {path} is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None


def _parse_csv(raw: bytes, ds: Dataset, path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    where = f"dataset {ds.name!r}: {path}"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ConfigError(f"{where}: empty file (no header row)") from None
    except csv.Error as exc:
        raise ConfigError(f"{where}: malformed CSV header: {exc}") from None
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise ConfigError(f"{where}: column names repeated: {', '.join(dupes)}")
    col = {h: i for i, h in enumerate(header)}

    if ds.label is not None and ds.label not in col:
        raise ConfigError(f"{where}: label column {ds.label!r} not found; columns: {', '.join(header)}")
    if ds.features is None:
        features = [h for h in header if h != ds.label]
    else:
        features = [ds.features] if isinstance(ds.features, str) else list(ds.features)
        missing = [f for f in features if f not in col]
        if missing:
            raise ConfigError(
                f"{where}: feature column(s) {', '.join(map(repr, missing))} not found; "
                f"columns: {', '.join(header)}"
            )
        if ds.label is not None and ds.label in features:
            raise ConfigError(f"{where}: label column {ds.label!r} is also listed as a feature")
    if not features:
        raise ConfigError(f"{where}: no feature columns")
    fidx = [col[f] for f in features]
    lidx = col[ds.label] if ds.label is not None else None

    rows: list[list[float]] = []
    labels: list[int] = []
    try:
        for r, row in enumerate(reader):
            line = r + 2  # 1-based file line; the header is line 1
            if not row or all(not c.strip() for c in row):
                continue  # blank line
            if len(row) != len(header):
                raise ConfigError(
                    f"{where}: row {r} (line {line}) has {len(row)} cells, the header has {len(header)}"
                )
            values: list[float] = []
            for name, i in zip(features, fidx, strict=True):
                values.append(_number(row[i], where, r, line, name))
            rows.append(values)
            if lidx is not None:
                labels.append(_label(row[lidx], where, r, line, header[lidx]))
    except csv.Error as exc:
        raise ConfigError(f"{where}: malformed CSV: {exc}") from None
    if not rows:
        raise ConfigError(f"{where}: no data rows")
    x = np.asarray(rows, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int64) if lidx is not None else None
    return x, y, features


def _number(cell: str, where: str, r: int, line: int, column: str) -> float:
    s = cell.strip()
    try:
        v = float(s)
    except ValueError:
        # the cell's value is not echoed: it may be a patient record (findings cite rows, never data)
        raise ConfigError(
            f"{where}: row {r} (line {line}), column {column!r}: not a number ({len(s)} characters)"
        ) from None
    if not math.isfinite(v):
        raise ConfigError(f"{where}: row {r} (line {line}), column {column!r}: non-finite value")
    return v


def _label(cell: str, where: str, r: int, line: int, column: str) -> int:
    s = cell.strip()
    try:
        v = float(s)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or v != int(v):
        raise ConfigError(
            f"{where}: row {r} (line {line}), label column {column!r}: not an integer "
            "class label (encode classes as 0..K-1)"
        )
    return int(v)


def _parse_npz(raw: bytes, ds: Dataset, path: Path) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    where = f"dataset {ds.name!r}: {path}"
    if isinstance(ds.features, list):
        if len(ds.features) != 1:
            raise ConfigError(f"{where}: features must name one array in an npz file, got {ds.features}")
        xname = ds.features[0]
    else:
        xname = ds.features or "x"
    yname = ds.label or "y"
    arrays = _open_npz(raw, where)
    if xname not in arrays:
        raise ConfigError(
            f"{where}: no array {xname!r} (features); arrays: {', '.join(sorted(arrays)) or 'none'}"
        )
    x = _numeric(arrays[xname], where, xname)
    if x.ndim == 0:
        raise ConfigError(f"{where}: array {xname!r} is a scalar, expected one row per sample")
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ConfigError(f"{where}: array {xname!r} holds a non-finite value at row {int(bad[0])}")
    y: np.ndarray | None = None
    if yname in arrays:
        yv = _numeric(arrays[yname], where, yname)
        if yv.ndim != 1 or yv.shape[0] != x.shape[0]:
            raise ConfigError(
                f"{where}: label array {yname!r} has shape {tuple(yv.shape)}, expected ({x.shape[0]},)"
            )
        if not np.all(np.isfinite(yv)) or not np.all(yv == np.round(yv)):
            bad_rows = np.flatnonzero(~np.isfinite(yv) | (yv != np.round(yv)))
            raise ConfigError(
                f"{where}: label array {yname!r}: row {int(bad_rows[0])} is not an integer class label"
            )
        y = yv.astype(np.int64)
    elif ds.label is not None:
        raise ConfigError(
            f"{where}: no array {yname!r} (label); arrays: {', '.join(sorted(arrays)) or 'none'}"
        )
    x = x.astype(np.float32)
    names = [f"f{i}" for i in range(int(np.prod(x.shape[1:])))]
    return x, y, names


def _open_npz(raw: bytes, where: str) -> dict[str, np.ndarray]:
    """Every array of an npz archive, never unpickling; object arrays are rejected."""
    if not raw.startswith(b"PK"):
        raise ConfigError(f"{where}: not an npz (zip) archive")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            out: dict[str, np.ndarray] = {}
            for key in npz.files:
                try:
                    out[key] = npz[key]
                except ValueError as exc:
                    if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                        raise ConfigError(
                            f"{where}: array {key!r} is an object array (needs pickle); "
                            "store numeric arrays only"
                        ) from None
                    raise ConfigError(f"{where}: array {key!r} cannot be read: {exc}") from None
            return out
    except ConfigError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"{where}: not a readable npz archive: {exc}") from None


def _numeric(arr: np.ndarray, where: str, name: str) -> np.ndarray:
    if arr.dtype.kind not in "biuf":
        raise ConfigError(f"{where}: array {name!r} has dtype {arr.dtype}, expected numbers")
    return arr.astype(np.float64) if arr.dtype.kind == "b" else arr


def _reshape(x: np.ndarray, shape: tuple[int, ...], ds: Dataset, path: Path) -> np.ndarray:
    if tuple(x.shape[1:]) == shape:
        return x
    per_row = int(np.prod(x.shape[1:]))
    if per_row != int(np.prod(shape)):
        raise ConfigError(
            f"dataset {ds.name!r}: {path}: rows of shape {tuple(x.shape[1:])} ({per_row} values) "
            f"do not fit the model's input shape {shape} ({int(np.prod(shape))} values)"
        )
    return x.reshape((x.shape[0], *shape))


# -- splits ----------------------------------------------------------------------------


def _attach_splits(loaded: LoadedDataset, ds: Dataset, base_dir: Path) -> None:
    n = len(loaded)
    named: dict[str, np.ndarray] = {
        k: np.asarray(v, dtype=np.int64).reshape(-1) for k, v in ds.splits.items()
    }
    if ds.splits_file is not None:
        spath = base_dir / ds.splits_file
        where = f"dataset {ds.name!r}: splits file {spath}"
        raw = _read_bytes(spath, f"dataset {ds.name!r}: splits file")
        for key, arr in _open_npz(raw, where).items():
            if key in named:
                raise ConfigError(f"{where}: split {key!r} is also given inline under splits")
            if arr.dtype.kind not in "iu":
                raise ConfigError(f"{where}: split {key!r} has dtype {arr.dtype}, expected integers")
            if arr.ndim != 1:
                raise ConfigError(f"{where}: split {key!r} has shape {tuple(arr.shape)}, expected 1-D")
            idx = arr.astype(np.int64)
            if np.unique(idx).size != idx.size:
                raise ConfigError(f"{where}: split {key!r} repeats row indices")
            named[key] = idx
    for key, idx in named.items():
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise ConfigError(
                f"dataset {ds.name!r}: split {key!r}: row index {int(bad[0])} is out of range "
                f"(the file {loaded.path} has {n} rows, indices 0..{n - 1})"
            )
        loaded.splits[key] = Split(x=loaded.x[idx], y=None if loaded.y is None else loaded.y[idx], index=idx)
    if "train" in named and "test" in named:
        both = np.intersect1d(named["train"], named["test"])
        if both.size:
            msg = (
                f"dataset {ds.name!r}: {both.size} row(s) are in both train and test "
                f"(first: {', '.join(str(int(i)) for i in both[:10])})"
            )
            loaded.warnings.append(msg)
            log.warning("%s", msg)
