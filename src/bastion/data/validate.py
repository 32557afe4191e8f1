"""Validate a new dataset against a learnt :class:`~bastion.data.profile.Profile`; list every violation.

The schema part is pandera's (``DataFrameSchema`` built from the profile: each known column,
its type, range ``[min, max]`` widened by ``tolerance`` of the span, categories, whether missing
values were seen, and ``strict`` so an unknown column is a violation). CSV files are streamed in
chunks; every violation names the row (0-based data row, the header excluded), the column, the
rule and the cell as written; a CSV pandas cannot tokenise is named by its 1-based file line (the
header is line 1). npz files are checked per array (presence, dtype kind, row shape, value range).

Rules: ``column-unknown``, ``column-missing``, ``label-missing``, ``type:number``,
``type:integer``, ``not-null``, ``range``, ``category``, ``array-missing``, ``array-shape``,
``array-dtype``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import ConfigError, require
from bastion.data.profile import Profile, check_delimiter, malformed_csv, read_csv_chunks

_RULES = {"not_nullable": "not-null", "in_range": "range", "isin": "category"}


@dataclass(frozen=True)
class Violation:
    """One violation: the row (``None`` for a whole-column or whole-array rule), column, rule, value."""

    row: int | None
    column: str | None
    rule: str
    value: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def build_schema(profile: Profile, *, tolerance: float = 0.0) -> Any:
    """The pandera ``DataFrameSchema`` of a CSV profile (values already coerced to numbers).

    Args:
        profile: a CSV profile.
        tolerance: ranges are widened by this fraction of each column's span on both sides.
    """
    pa = require("pandera.pandas", "data")
    cols: dict[str, Any] = {}
    for c in profile.columns:
        checks = []
        is_label = c.name == profile.label and c.categories is not None
        if c.kind in ("number", "integer") and c.min is not None and c.max is not None and not is_label:
            pad = tolerance * (c.max - c.min)
            checks.append(pa.Check.in_range(c.min - pad, c.max + pad, name="range"))
        if c.kind == "category" and c.categories is not None:  # text values (a text label too)
            checks.append(pa.Check.isin(c.categories, name="category"))
        elif is_label and c.categories is not None:  # a numeric label: its classes, as numbers
            checks.append(pa.Check.isin([float(v) for v in c.categories], name="category"))
        dtype = float if c.kind in ("number", "integer") else str
        cols[c.name] = pa.Column(dtype, checks=checks, nullable=c.missing_rate > 0, required=False)
    return pa.DataFrameSchema(cols, strict=False)


def validate_dataset(
    path: str | Path,
    profile: Profile,
    *,
    chunksize: int = 50_000,
    tolerance: float = 0.0,
    limit: int = 100_000,
) -> list[Violation]:
    """Every violation of ``profile`` in the file at ``path`` (up to ``limit``).

    Raises:
        ConfigError: the file cannot be read or parsed (file named), its format is not the
            profile's, or it has no data row (a header-only CSV, an npz of empty arrays).
    """
    p = Path(path)
    fmt = p.suffix.lower().lstrip(".")
    if fmt != profile.format:
        raise ConfigError(f"{p}: a .{fmt} file, but the profile is of a {profile.format} dataset")
    if fmt == "npz":
        return _validate_npz(p, profile, tolerance)
    pd = require("pandas", "data")
    pa = require("pandera.pandas", "data")
    schema = build_schema(profile, tolerance=tolerance)
    known = {c.name: c for c in profile.columns}
    out: list[Violation] = []
    offset = 0
    try:
        for chunk in read_csv_chunks(p, chunksize=chunksize):
            if offset == 0:
                header = [str(c) for c in chunk.columns]
                check_delimiter(p, header, len(known))
                out += [Violation(None, c, "column-unknown") for c in header if c not in known]
                for c in known:
                    if c not in header:
                        rule = "label-missing" if c == profile.label else "column-missing"
                        out.append(Violation(None, c, rule))
            df = chunk[[c for c in chunk.columns if c in known]].copy()
            df.index = range(offset, offset + len(df))
            raw = df.copy()  # the cells as written: what --show-values prints (``7``, not ``7.0``)
            typed: set[tuple[int, str]] = set()
            for c in df.columns:
                prof = known[c]
                if prof.kind not in ("number", "integer"):
                    continue
                num = pd.to_numeric(df[c], errors="coerce")
                bad = df[c].notna() & (num.isna() | ~np.isfinite(num.astype(float)))
                for i in df.index[bad]:
                    out.append(Violation(int(i), c, "type:number", str(df.at[i, c])))
                    typed.add((int(i), c))
                num = num.where(~bad)
                if prof.kind == "integer":
                    frac = num.notna() & (num != num.round())
                    for i in df.index[frac]:
                        out.append(Violation(int(i), c, "type:integer", str(df.at[i, c])))
                df[c] = num.astype(float)
            try:
                schema.validate(df, lazy=True)
            except pa.errors.SchemaErrors as exc:
                fc = exc.failure_cases
                for rec in fc.to_dict("records"):
                    col = rec.get("column")
                    idx = rec.get("index")
                    check = str(rec.get("check"))
                    rule = _RULES.get(check.split("(")[0], check.split("(")[0])
                    if idx is None or (isinstance(idx, float) and np.isnan(idx)):
                        continue
                    if rule == "not-null" and (int(idx), str(col)) in typed:
                        continue
                    value = _cell(raw, int(idx), col, rec.get("failure_case"), known)
                    out.append(Violation(int(idx), None if col is None else str(col), rule, value))
            offset += len(chunk)
            if len(out) >= limit:
                break
    except pd.errors.ParserError as exc:
        raise malformed_csv(p, exc) from None
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{p}: empty file (no header row)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    if offset == 0:
        raise ConfigError(f"{p}: no data rows (a header only); nothing to validate")
    out.sort(key=lambda v: (-1 if v.row is None else v.row, v.column or "", v.rule))
    return out[:limit]


def _cell(raw: Any, row: int, col: Any, failed: Any, known: dict[str, Any]) -> str:
    """A failing cell as the file wrote it (else pandera's value, whole numbers without ``.0``).

    pandera reports the value converted to float (``7.0`` for a label written ``7``); a whole
    number of an integral column (``integer`` kind, or a numeric label) is printed as an integer.
    """
    if col in raw.columns and row in raw.index:
        text = raw.at[row, col]
        if isinstance(text, str):
            return text
    prof = known.get(str(col))
    integral = prof is not None and (prof.kind == "integer" or prof.categories is not None)
    if integral and isinstance(failed, float) and failed.is_integer():
        return str(int(failed))
    return str(failed)


def _validate_npz(p: Path, profile: Profile, tolerance: float) -> list[Violation]:
    from bastion.data.datasets import _open_npz, _read_bytes

    arrays = _open_npz(_read_bytes(p, "dataset"), str(p))
    if not any(a.ndim and a.shape[0] for a in arrays.values()):
        raise ConfigError(f"{p}: no data rows (no array has a row); nothing to validate")
    out: list[Violation] = []
    for name in sorted(arrays):
        if name not in {a.name for a in profile.arrays}:
            out.append(Violation(None, name, "column-unknown"))
    for ap in profile.arrays:
        if ap.name not in arrays:
            out.append(
                Violation(None, ap.name, "label-missing" if ap.name == profile.label else "array-missing")
            )
            continue
        a = arrays[ap.name]
        if [int(d) for d in a.shape[1:]] != ap.row_shape:
            out.append(Violation(None, ap.name, "array-shape", str(tuple(a.shape[1:]))))
            continue
        if np.dtype(ap.dtype).kind != a.dtype.kind:
            out.append(Violation(None, ap.name, "array-dtype", str(a.dtype)))
            continue
        if ap.min is None or ap.max is None or a.dtype.kind not in "biuf":
            continue
        if ap.name == profile.label and profile.class_balance:
            allowed = [float(k) for k in profile.class_balance]
            miss = np.flatnonzero(~np.isin(a.astype(np.float64), allowed))
            out += [Violation(int(i), ap.name, "category", str(a[i].item())) for i in miss]
            continue
        pad = tolerance * (ap.max - ap.min)
        flat = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(-1, 1)
        bad = np.flatnonzero(((flat < ap.min - pad) | (flat > ap.max + pad)).any(axis=1))
        out += [Violation(int(i), ap.name, "range") for i in bad]
    return out
