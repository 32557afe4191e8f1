"""Sanitise a dataset: write a copy without flagged rows; the original is never changed.

The new file is a new dataset version; :func:`bastion.api.data_sanitize` records it in the
store with lineage (``parent_id``) to the version it came from.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from bastion.core.errors import ConfigError


def sanitised_path(path: Path) -> Path:
    """The first free ``<stem>.sanitised-<k><suffix>`` beside ``path``."""
    k = 1
    while True:
        cand = path.with_name(f"{path.stem}.sanitised-{k}{path.suffix}")
        if not cand.exists():
            return cand
        k += 1


def write_without_rows(path: Path, drop: set[int], dest: Path) -> int:
    """Copy a CSV or npz dataset file to ``dest`` without the 0-based data rows in ``drop``.

    The CSV is streamed line by line (the header kept); an npz drops row ``i`` of every array
    with the file's row count. ``dest`` must not exist (the original is never changed).

    Returns:
        Rows written.

    Raises:
        ConfigError: unsupported format, ``dest`` exists, a row out of range, unreadable file.
    """
    if dest.exists():
        raise ConfigError(f"{dest}: already exists; sanitising never overwrites a dataset")
    try:  # as ``-o`` does elsewhere: a missing folder is created
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{dest.parent}: cannot create the folder: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        kept = total = 0
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        with path.open("rb") as src, tmp.open("wb") as out:
            out.write(src.readline())
            for line in src:
                if total not in drop:
                    out.write(line)
                    kept += 1
                total += 1
        bad = sorted(i for i in drop if i < 0 or i >= total)
        if bad:
            tmp.unlink()
            raise ConfigError(f"{path}: rows to remove out of range (file has {total} rows): {bad[:10]}")
        os.replace(tmp, dest)
        return kept
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        n = max((a.shape[0] for a in arrays.values() if a.ndim), default=0)
        bad = sorted(i for i in drop if i < 0 or i >= n)
        if bad:
            raise ConfigError(f"{path}: rows to remove out of range (file has {n} rows): {bad[:10]}")
        keep = np.ones(n, dtype=bool)
        keep[sorted(drop)] = False
        out_arrays = {k: (a[keep] if a.ndim and a.shape[0] == n else a) for k, a in arrays.items()}
        buf = io.BytesIO()
        np.savez(buf, **out_arrays)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, dest)  # never a half-written file at ``dest``
        return int(keep.sum())
    raise ConfigError(f"{path}: cannot sanitise a {suffix or 'suffix-less'} file; expected .csv or .npz")
