"""Learn a dataset's schema and profile (types, ranges, categories, missing rates, class balance).

A :class:`Profile` is plain JSON (never pickle), versioned: :func:`save_profile` writes it and
keeps every earlier version beside it (``<stem>.v<N>.json``). CSV files are streamed in chunks
of ``chunksize`` rows (pandas), so a file larger than memory is profiled in one pass; npz files
are profiled per array (shape, dtype, range: the image shape and pixel range of image data).

A column is ``number`` when every non-missing cell parses as a finite number (``integer`` when
all are whole), else ``category`` when it has at most ``max_categories`` distinct values, else
``text``. The label column (``label=``) also gets the class balance.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bastion.core.errors import ConfigError, require
from bastion.core.files import same_file

#: Profile JSON schema version.
PROFILE_SCHEMA = "1"


def _ordered(lo: float | None, hi: float | None) -> None:
    """A hand-edited profile is checked on load: ``min ≤ max`` when both are set."""
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"min {lo:g} is above max {hi:g}")


class ColumnProfile(BaseModel):
    """One column: its kind, range or categories, and missing rate."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["number", "integer", "category", "text"]
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = Field(default=None, ge=0.0)
    categories: list[str] | None = None
    missing_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    count: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _range(self) -> ColumnProfile:
        _ordered(self.min, self.max)
        return self


class ArrayProfile(BaseModel):
    """One npz array: shape per row, dtype and value range."""

    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: str
    row_shape: list[int]
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _range(self) -> ArrayProfile:
        _ordered(self.min, self.max)
        return self


class Profile(BaseModel):
    """A dataset's learnt schema and profile.

    Attributes:
        schema_version: the profile format version.
        version: this profile's version (1, 2, ... as :func:`save_profile` writes new ones).
        dataset: the file profiled (name only). format: ``csv`` or ``npz``.
        rows: row count. label: the label column/array, if any.
        columns: per CSV column. arrays: per npz array.
        class_balance: label value -> share of rows.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: str = PROFILE_SCHEMA
    version: int = 1
    dataset: str
    format: Literal["csv", "npz"]
    rows: int = Field(ge=0)
    label: str | None = None
    columns: list[ColumnProfile] = Field(default_factory=list)
    arrays: list[ArrayProfile] = Field(default_factory=list)
    class_balance: dict[str, float] = Field(default_factory=dict)

    def column(self, name: str) -> ColumnProfile | None:
        """The profile of column ``name``, or ``None``."""
        return next((c for c in self.columns if c.name == name), None)


class _Acc:
    """Streaming accumulator of one CSV column."""

    def __init__(self, max_categories: int) -> None:
        self.n = 0
        self.missing = 0
        self.numeric = True
        self.whole = True
        self.lo = math.inf
        self.hi = -math.inf
        self.s = 0.0
        self.s2 = 0.0
        self.values: dict[str, int] = {}
        self.max_categories = max_categories
        self.too_many = False

    def add(self, col: Any) -> None:
        pd = require("pandas", "data")
        self.n += int(col.size)
        miss = col.isna()
        self.missing += int(miss.sum())
        present = col[~miss]
        if self.numeric:
            num = pd.to_numeric(present, errors="coerce")
            if num.isna().any() or not np.all(np.isfinite(num.to_numpy(dtype=np.float64))):
                self.numeric = False
            elif num.size:
                arr = num.to_numpy(dtype=np.float64)
                self.lo = min(self.lo, float(arr.min()))
                self.hi = max(self.hi, float(arr.max()))
                self.s += float(arr.sum())
                self.s2 += float((arr * arr).sum())
                self.whole = self.whole and bool(np.all(arr == np.round(arr)))
        if not self.too_many:
            for v, k in present.astype(str).value_counts().items():
                self.values[str(v)] = self.values.get(str(v), 0) + int(k)
            if len(self.values) > self.max_categories:
                self.too_many = True
                self.values = {}

    def result(self, name: str) -> ColumnProfile:
        miss = self.missing / self.n if self.n else 0.0
        present = self.n - self.missing
        if self.numeric and present:
            mean = self.s / present
            std = math.sqrt(max(0.0, self.s2 / present - mean * mean))
            kind: Literal["number", "integer"] = "integer" if self.whole else "number"
            cats = sorted(self.values) if kind == "integer" and not self.too_many else None
            return ColumnProfile(
                name=name,
                kind=kind,
                min=self.lo,
                max=self.hi,
                mean=mean,
                std=std,
                categories=cats,
                missing_rate=miss,
                count=self.n,
            )
        if not self.too_many:
            return ColumnProfile(
                name=name, kind="category", categories=sorted(self.values), missing_rate=miss, count=self.n
            )
        return ColumnProfile(name=name, kind="text", missing_rate=miss, count=self.n)


def check_delimiter(p: Path, header: list[str], expected: int) -> None:
    """Refuse a one-column header holding another delimiter: the file is not comma-separated.

    Args:
        p: the file (for the message).
        header: its column names as read.
        expected: how many columns it should have (the check applies from 2).

    Raises:
        ConfigError: naming the delimiter found (rather than listing every column as missing).
    """
    if len(header) != 1 or expected < 2:
        return
    for sep, name in ((";", "';'"), ("\t", "a tab"), ("|", "'|'")):
        if sep in header[0]:
            raise ConfigError(
                f"{p}: the header is one column split by {name}, not by commas; "
                "Bastion reads comma-separated CSV (convert the file, e.g. with pandas' sep=)"
            )


def malformed_csv(path: Path, exc: Exception) -> ConfigError:
    """The error for a CSV pandas could not tokenise, naming the 1-based line of the file.

    pandas' own message counts records (a quoted cell holding a newline is one), and its chunk
    reader gives no row at all: the file is read again with :mod:`csv` to find the first record
    with more cells than the header, and its first physical line is named (the header is line 1).
    """
    msg = str(exc).strip()
    found = _first_long_record(path)
    if found is not None:
        line, want, got = found
        return ConfigError(
            f"{path}: malformed CSV at line {line} (1-based line of the file; the header is line 1): "
            f"{got} fields, the header has {want}"
        )
    m = re.search(r"\bline (\d+)", msg)
    where = f" at record {m.group(1)} (1-based, the header is 1)" if m else ""
    return ConfigError(f"{path}: malformed CSV{where}: {msg}")


def _first_long_record(path: Path) -> tuple[int, int, int] | None:
    """``(first line, header width, width)`` of the first record wider than the header, if any."""
    try:
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as fh:
            reader = csv.reader(fh, skipinitialspace=True)
            width: int | None = None
            last = 0
            for rec in reader:
                start, last = last + 1, reader.line_num
                if not rec:
                    continue
                if width is None:
                    width = len(rec)
                elif len(rec) > width:
                    return start, width, len(rec)
    except (OSError, csv.Error):
        return None
    return None


def read_csv_chunks(path: Path, *, chunksize: int) -> Any:
    """An iterator of string-typed pandas chunks of a CSV file.

    Raises:
        ConfigError: the file is missing, unreadable or not CSV (the file named).
    """
    pd = require("pandas", "data")
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        return pd.read_csv(path, dtype=str, chunksize=chunksize, skipinitialspace=True)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read as CSV: {exc}") from None


def profile_dataset(
    path: str | Path, *, label: str | None = None, chunksize: int = 50_000, max_categories: int = 50
) -> Profile:
    """Profile a CSV (streamed) or npz file.

    Args:
        path: the dataset file (``.csv`` or ``.npz``).
        label: the label column (CSV) or array (npz); ``None``: no class balance.
        chunksize: CSV rows read at a time.
        max_categories: most distinct values a column may have to count as categorical.

    Raises:
        ConfigError: unreadable or malformed file, unknown format, ``label`` not found
            (file and column named), or no data row (a header-only CSV, an npz of empty arrays).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _profile_npz(p, label)
    if suffix != ".csv":
        raise ConfigError(f"{p}: unsupported format {suffix or '(none)'!r}; expected .csv or .npz")
    pd = require("pandas", "data")
    accs: dict[str, _Acc] = {}
    order: list[str] = []
    rows = 0
    try:
        for chunk in read_csv_chunks(p, chunksize=chunksize):
            if not order:
                order = [str(c) for c in chunk.columns]
                check_delimiter(p, order, 2)
                accs = {c: _Acc(max_categories) for c in order}
                if label is not None and label not in accs:
                    raise ConfigError(f"{p}: label column {label!r} not found; columns: {', '.join(order)}")
            rows += len(chunk)
            for c in order:
                accs[c].add(chunk[c])
    except pd.errors.ParserError as exc:
        raise malformed_csv(p, exc) from None
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{p}: empty file (no header row)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    if rows == 0:
        raise ConfigError(f"{p}: no data rows (a header only); nothing to profile")
    cols = [accs[c].result(c) for c in order]
    balance: dict[str, float] = {}
    if label is not None and rows:
        lab = accs[label]
        if not lab.too_many:
            balance = {k: v / rows for k, v in sorted(lab.values.items())}
    return Profile(dataset=p.name, format="csv", rows=rows, label=label, columns=cols, class_balance=balance)


def _profile_npz(p: Path, label: str | None) -> Profile:
    from bastion.data.datasets import _open_npz, _read_bytes

    arrays = _open_npz(_read_bytes(p, "dataset"), str(p))
    if not arrays:
        raise ConfigError(f"{p}: no arrays")
    if label is not None and label not in arrays:
        raise ConfigError(f"{p}: label array {label!r} not found; arrays: {', '.join(sorted(arrays))}")
    out: list[ArrayProfile] = []
    rows = 0
    for name in sorted(arrays):
        a = arrays[name]
        if a.ndim == 0:
            continue
        rows = max(rows, int(a.shape[0]))
        num = a.dtype.kind in "biuf" and a.size > 0
        out.append(
            ArrayProfile(
                name=name,
                dtype=str(a.dtype),
                row_shape=[int(d) for d in a.shape[1:]],
                min=float(np.min(a)) if num else None,
                max=float(np.max(a)) if num else None,
            )
        )
    if rows == 0:
        raise ConfigError(f"{p}: no data rows (every array is empty); nothing to profile")
    balance: dict[str, float] = {}
    if label is not None:
        vals, counts = np.unique(arrays[label], return_counts=True)
        balance = {str(v.item()): int(k) / int(counts.sum()) for v, k in zip(vals, counts, strict=True)}
    return Profile(dataset=p.name, format="npz", rows=rows, label=label, arrays=out, class_balance=balance)


def check_profile_path(path: str | Path, *, dataset: str | Path | None = None) -> None:
    """Preflight of :func:`save_profile` at ``path``, before any pass over the data.

    Args:
        path: where the profile will be saved.
        dataset: the file being profiled; the profile never replaces it.

    Raises:
        ConfigError: ``path`` is the dataset (red-team round 28, F1: ``--save d.csv`` replaced
            the dataset with its profile), a symbolic link, a folder or special file, an
            existing file that is not a Bastion data profile, or its folder cannot be written.
    """
    p = Path(path)
    if dataset is not None and same_file(p, Path(dataset)):
        raise ConfigError(
            f"{p}: is the dataset being profiled; saving the profile there would replace it "
            f"(give another path, e.g. {Path(dataset).with_suffix('.profile.json')})"
        )
    _next_version(p)
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    probe = parent / f".bastion-probe-{os.getpid()}-{id(p):x}"
    try:  # created and removed at once: the folder takes a new file (F8: checked before profiling)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot save the profile there: {exc.strerror or exc}") from None


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _version_files(p: Path) -> dict[int, Path]:
    """The earlier versions kept beside ``p`` (``<stem>.v<N>.json``, links too), by ``N``."""
    try:
        names = os.listdir(p.parent)
    except OSError:  # no folder yet: no version
        return {}
    pattern = re.compile(re.escape(p.stem) + r"\.v([0-9]{1,9})\.json")
    return {int(m.group(1)): p.parent / n for n in names if (m := pattern.fullmatch(n))}


def _next_version(p: Path) -> int:
    """The version the next profile saved at ``p`` gets: above ``p``'s and every kept one.

    Raises:
        ConfigError: ``p`` is a symbolic link, not a regular file, or not a profile.
    """
    from bastion.core.files import read_config_bytes

    if p.is_symlink():
        raise ConfigError(
            f"{p}: is a symbolic link; a profile is never written through one (give a file's own path)"
        )
    k = 0
    if p.exists():
        data = read_config_bytes(p, what="data profile")
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or "schema_version" not in doc or type(doc.get("version")) is not int:
            raise ConfigError(
                f"{p}: exists and is not a Bastion data profile; a profile never replaces it "
                "(give another path, or remove the file)"
            )
        k = doc["version"]
    return max([k, *_version_files(p)]) + 1


def save_profile(
    profile: Profile, path: str | Path, *, before_write: Callable[[Profile], object] | None = None
) -> Profile:
    """Write ``profile`` to ``path`` as JSON, as the next version; earlier versions are kept.

    If ``path`` holds a profile of version ``k``, the new one gets ``k + 1`` (or one more than
    the highest ``<stem>.v<N>.json`` beside it) and is also written to ``<stem>.v<k+1>.json``
    (the old one stays at ``<stem>.v<k>.json``). A version file is always a new file, never
    one that exists (a symbolic link planted there is neither followed nor replaced: red-team
    round 28, F2); ``path`` is replaced atomically (temporary file, then rename).

    Args:
        profile: the profile.
        path: the profile file.
        before_write: called with the profile as it will be written (its ``version`` set)
            before anything is written; if it raises, nothing is written (``bastion data
            profile`` prints the profile there, so a failed output leaves no new version).

    Returns:
        The profile as written (its ``version`` set).

    Raises:
        ConfigError: the profile cannot be written (nothing is left of the new version), or
            ``path`` is refused (see :func:`check_profile_path`).
    """
    from bastion.core.files import replace_file

    p = Path(path)
    version = _next_version(p)
    written = profile.model_copy(update={"version": version})
    if before_write is not None:
        before_write(written)
    data = written.model_dump_json(indent=1).encode("utf-8")
    versioned = p.with_name(f"{p.stem}.v{version}.json")
    created = False
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(versioned, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        except FileExistsError:
            raise ConfigError(
                f"{versioned}: exists (written meanwhile); a profile version is never overwritten"
            ) from None
        created = True
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        replace_file(p, data)
    except OSError as exc:
        if created:
            versioned.unlink(missing_ok=True)
        raise ConfigError(f"{p}: cannot save the profile: {exc.strerror or exc}") from None
    except BaseException:  # Ctrl-C too: no version file is left half-written
        if created:
            versioned.unlink(missing_ok=True)
        raise
    return written


def load_profile(path: str | Path) -> Profile:
    """Read a profile JSON file.

    Raises:
        ConfigError: missing, not JSON, or not a profile (the file named).
    """
    from pydantic import ValidationError

    p = Path(path)
    try:
        return Profile.model_validate_json(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: profile not found") from None
    except ValidationError as exc:
        errs = exc.errors()
        if errs and errs[0]["type"] == "json_invalid":
            raise ConfigError(f"{p}: not a Bastion data profile: not JSON ({errs[0]['msg']})") from None
        shown = [f"{'.'.join(str(x) for x in e['loc']) or '(document)'}: {e['msg']}" for e in errs[:10]]
        if len(errs) > 10:
            shown.append(f"… and {len(errs) - 10} more")
        raise ConfigError(
            f"{p}: not a Bastion data profile (make one with `bastion data profile`)", shown
        ) from None
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{p}: not a valid profile: {first}") from None
