"""``bastion init``: discover model files and datasets in a folder and write a starter config.

Model files are recognised by the scanner (magic bytes; nothing is loaded). CSV files and
npz files holding only numeric arrays named like ``x``/``y`` become datasets; an npz of 1-D
integer arrays named ``train``/``test`` … (``<stem>_splits.npz``) is the ``splits_file`` of the
dataset ``<stem>.*`` beside it, never a model asset. The starter
file validates against the config model; what cannot be known without loading a model
(input shape, classes) is taken from the datasets found and marked for review.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import zipfile
from pathlib import Path
from typing import Any

from bastion.core.config import parse_config
from bastion.core.errors import ConfigError

log = logging.getLogger(__name__)

_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".bastion", "bastion-report"}


def _config_format(scan_format: str) -> tuple[str | None, str | None]:
    """(format, framework) for bastion.yaml from the scanner's format; (None, None) if not loadable.

    A file Bastion cannot load as a target is still scanned and governed.
    """
    layers = scan_format.split("+")
    inner = layers[-1]
    if inner == "torchscript":
        return "torchscript", "torch"
    if inner.startswith("pytorch"):
        return "torch", "torch"
    if "joblib" in layers:
        return "joblib", "sklearn"
    if inner == "pickle" and len(layers) == 1:
        return "pickle", "sklearn"
    if inner == "onnx":
        return "onnx", "onnx"
    return None, None


_LABEL_NAMES = ("label", "labels", "target", "y", "class", "diagnosis", "outcome")


def _files(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return out


def _npz_dataset(path: Path) -> dict[str, Any] | None:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError):
        return None
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as arrs:
            arrays = {n: arrs[n] for n in names}
    except (ValueError, OSError):
        return None  # object arrays or unreadable: not a dataset we read
    xk = next((n for n in ("x", "X", "features", "data") if n in arrays), None)
    yk = next((n for n in ("y", "labels", "label", "target") if n in arrays), None)
    if xk is None:
        return None
    x = arrays[xk]
    info: dict[str, Any] = {"features": xk, "n_features": int(np.prod(x.shape[1:])) if x.ndim > 1 else 1}
    if yk is not None:
        info["label"] = yk
        info["classes"] = len(np.unique(arrays[yk]))
    return info


def _npz_splits(path: Path) -> bool:
    """Whether ``path`` is a splits file: only 1-D integer arrays, among them ``train`` or ``test``."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as arrs:
            if not {"train", "test"} & set(arrs.files):  # decided by the names: nothing loaded
                return False
            arrays = {n: arrs[n] for n in arrs.files}
    except (ValueError, OSError, zipfile.BadZipFile):
        return False
    return all(a.ndim == 1 and np.issubdtype(a.dtype, np.integer) for a in arrays.values())


def _csv_dataset(path: Path) -> dict[str, Any] | None:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            rows = [r for _, r in zip(range(2000), reader, strict=False)]
    except (OSError, UnicodeDecodeError, StopIteration, csv.Error):
        return None
    if len(header) < 2:
        return None
    label = next((h for h in header if h.strip().lower() in _LABEL_NAMES), header[-1])
    j = header.index(label)
    classes = len({r[j] for r in rows if len(r) > j})
    return {"label": label, "n_features": len(header) - 1, "classes": classes}


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return s or "asset"


def discover(root: Path) -> dict[str, Any]:
    """What ``root`` holds: ``{"models": [...], "datasets": [...]}`` with paths relative to ``root``."""
    from bastion.core.scanning import Verdict
    from bastion.scan import scan_file

    models, datasets = [], []
    splits: dict[str, str] = {}  # "<folder>/<stem>" of the dataset -> its splits file
    for f in _files(root):
        rel = f.relative_to(root).as_posix()
        if f.suffix.lower() == ".csv":
            info = _csv_dataset(f)
            if info:
                datasets.append({"name": _slug(f.stem), "path": rel, **info})
            continue
        if f.suffix.lower() == ".npz":
            info = _npz_dataset(f)
            if info:
                if not f.stem.endswith("_splits"):
                    datasets.append({"name": _slug(f.stem), "path": rel, **info})
                continue
            if _npz_splits(f):  # row indices, not a model: the splits_file of <stem>.* beside it
                stem = f.stem.removesuffix("_splits").removesuffix("-splits")
                splits[(f.parent / stem).relative_to(root).as_posix()] = rel
                continue
        if f.name == "profile.npz" and (f.parent / "profile.json").is_file():
            continue  # a guard artefact (bastion guard fit), not a model
        fr = scan_file(f)
        if fr.verdict != Verdict.SKIPPED and fr.format:
            models.append(
                {"name": _slug(f.stem), "path": rel, "format": fr.format, "verdict": fr.verdict.value}
            )
    for d in datasets:
        key = Path(d["path"]).with_suffix("").as_posix()
        if key in splits:
            d["splits_file"] = splits[key]
    return {"models": models, "datasets": datasets}


def _q(value: object) -> str:
    """A YAML-safe scalar: JSON strings are valid YAML double-quoted scalars (escapes included)."""
    return json.dumps(value, ensure_ascii=True)


def _tokens(path: str) -> set[str]:
    """Name tokens of a path's stem (``models/wine_tree.joblib`` -> ``{"wine", "tree"}``)."""
    stem = Path(path).name.split(".")[0].lower()
    return {t for t in re.split(r"[^a-z0-9]+", stem) if t and t not in _GENERIC}


#: Name parts that say nothing about which data a model was trained on.
_GENERIC = frozenset(
    {"model", "models", "data", "dataset", "train", "test", "final", "best", "v1", "v2", "clf"}
)


def _match_dataset(model: dict[str, Any], datasets: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The dataset a model most likely goes with: shared name parts, then the same folder.

    ``wine_tree.joblib`` goes with ``wine.csv`` and ``digits_cnn.pt`` with ``digits.npz``;
    with no clue, the first dataset (the starter marks every pairing for review).
    """
    if not datasets:
        return None
    mt, folder = _tokens(model["path"]), Path(model["path"]).parent

    def score(d: dict[str, Any]) -> tuple[int, int]:
        return len(mt & _tokens(d["path"])), int(Path(d["path"]).parent == folder)

    best = max(datasets, key=score)  # max keeps the first of equals
    if len(datasets) > 1 and score(best) == (0, 0):
        return None  # no clue: a wrong guess (a 3-class model on a 2-class set) fails later, less clearly
    return best


def render_starter(found: dict[str, Any], project: str) -> str:
    """The starter ``bastion.yaml`` text for what :func:`discover` found.

    Every value taken from a file name is quoted, so a name cannot inject YAML.
    """
    lines = [
        "# Starter config written by `bastion init`. Review every line marked REVIEW.",
        "version: 1",
        "project:",
        f"  name: {_q(_slug(project))}",
        "  owner: null        # REVIEW: the accountable team",
        "seed: 0",
    ]
    used: set[str] = set()

    def unique(name: str) -> str:
        base, n = name, 2
        while name in used:
            name = f"{base}-{n}"
            n += 1
        used.add(name)
        return name

    for d in found["datasets"]:
        d["name"] = unique(d["name"])
    lines.append("assets:" if found["models"] else "assets: []")
    for m in found["models"]:
        name = unique(m["name"])
        fmt, framework = _config_format(str(m["format"]))
        lines += [
            f"  - name: {_q(name)}",
            "    kind: model",
            f"    path: {_q(m['path'])}",
            f"    owner: null      # REVIEW (scanner verdict when discovered: {m['verdict']})",
        ]
        if m["verdict"] in ("malicious", "suspicious", "error"):  # said on stderr too, not only here
            log.warning(
                "%s: the scanner judged it %s; `bastion scan %s` shows why; it is never loaded unless safe",
                m["path"],
                m["verdict"],
                m["path"],
            )
        if fmt is None:
            lines.append("    # scanned and governed only: Bastion cannot load this format as a target")
            continue
        lines += [f"    format: {fmt}", f"    framework: {framework}"]
        ds0 = _match_dataset(m, found["datasets"])
        if ds0 is None and found["datasets"]:
            names = ", ".join(d["name"] for d in found["datasets"][:8])
            lines += [
                f"    # dataset: ...      # REVIEW: the data it is evaluated on, one of: {names}",
                "    # num_classes: ...  # REVIEW, with input: {shape: [...]}",
            ]
        if ds0 is not None:
            others = [d["name"] for d in found["datasets"] if d is not ds0]
            hint = f" (others found: {', '.join(others[:5])})" if others else ""
            lines += [
                f"    dataset: {_q(ds0['name'])}     # REVIEW: the data it is evaluated on{hint}",
                f"    num_classes: {max(2, int(ds0.get('classes') or 2))}",
                "    input:",
                f"      shape: [{int(ds0['n_features'])}]    # REVIEW: one sample's shape",
            ]
        if framework == "torch" and fmt != "torchscript":
            lines.append(
                '    # model_class: "your_package.module:YourModel"   # REVIEW: needed for a state_dict'
            )
    lines.append("datasets:" if found["datasets"] else "datasets: []")
    for d in found["datasets"]:
        lines += [f"  - name: {_q(d['name'])}", f"    path: {_q(d['path'])}"]
        if d.get("label"):
            lines.append(f"    label: {_q(d['label'])}")
        if d.get("features") and d["path"].endswith(".npz"):
            lines.append(f"    features: {_q(d['features'])}")
        lines.append("    owner: null      # REVIEW")
        if d.get("splits_file"):
            lines.append(f"    splits_file: {_q(d['splits_file'])}   # REVIEW: found beside it")
        else:
            lines += [
                "    # REVIEW: record the row indices of your real splits (never a seed), e.g.",
                "    # splits: {train: [0, 1, ...], test: [...]}   or   splits_file: splits.npz",
            ]
    lines += ["checks: {}", "scan:", "  allow: []", ""]
    return "\n".join(lines)


def write_starter(root: Path, *, force: bool = False) -> Path:
    """Discover ``root`` and write ``root/bastion.yaml``.

    Raises:
        ConfigError: ``root`` is not a folder, or ``bastion.yaml`` exists and ``force`` is false.
    """
    if not root.is_dir():
        raise ConfigError(f"{root}: not a folder")
    target = root / "bastion.yaml"
    if target.exists() and not force:
        raise ConfigError(f"{target}: already exists (use --force to overwrite)")
    text = render_starter(discover(root), root.resolve().name)
    import yaml

    parse_config(yaml.safe_load(text), source=str(target))  # the starter must validate
    tmp = target.with_name(f".bastion.yaml.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target
