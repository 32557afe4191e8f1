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
import unicodedata
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


#: Latin letters Unicode does not decompose into a base letter and a mark, as usually spelled in ASCII.
_LATIN = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "SS",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "ł": "l",
        "Ł": "L",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "þ": "th",
        "Þ": "Th",
        "ı": "i",
    }
)


def _ascii(text: str) -> str:
    """``text`` with accented Latin letters spelled in ASCII (``ïris`` -> ``iris``, ``ß`` -> ``ss``).

    Other characters (a script with no ASCII spelling: ``データ``) are left as they are.
    """
    decomposed = unicodedata.normalize("NFKD", text.translate(_LATIN))
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def _slug(text: str, fallback: str = "asset") -> str:
    """A valid asset name (``core.config``'s ASCII rule: ``[A-Za-z0-9][A-Za-z0-9_.-]*``) made from ``text``.

    Accented Latin letters are transliterated (trial 30, L4: ``ïris model`` became ``ris-model``);
    what has no ASCII spelling becomes ``-``; a name left with no letter or digit is ``fallback``.
    """
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", _ascii(text)).strip("-._")
    return s if re.search(r"[A-Za-z0-9]", s) else fallback


def _lossy(text: str) -> bool:
    """Whether :func:`_slug` drops letters or digits of ``text`` (a script with no ASCII spelling)."""
    return any(c.isalnum() and not c.isascii() for c in _ascii(text))


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
                datasets.append({**_named(f.stem, "dataset"), "path": rel, **info})
            continue
        if f.suffix.lower() == ".npz":
            info = _npz_dataset(f)
            if info:
                if not f.stem.endswith("_splits"):
                    datasets.append({**_named(f.stem, "dataset"), "path": rel, **info})
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
                {**_named(f.stem, "model"), "path": rel, "format": fr.format, "verdict": fr.verdict.value}
            )
    for d in datasets:
        key = Path(d["path"]).with_suffix("").as_posix()
        if key in splits:
            d["splits_file"] = splits[key]
    return {"models": models, "datasets": datasets}


def _named(stem: str, kind: str) -> dict[str, Any]:
    """``{"name": …}`` for a file's stem, with ``"name_from"`` when letters were dropped from it."""
    named: dict[str, Any] = {"name": _slug(stem, kind)}
    if _lossy(stem):
        named["name_from"] = stem
    return named


def _q(value: object) -> str:
    r"""A YAML double-quoted scalar that reads as the text it holds, and cannot inject YAML.

    A JSON string is a valid YAML double-quoted scalar; letters of any script are kept as they
    are (trial 30, L4: every path was written as ``"\u30e2…/\u00efris model.joblib"``),
    and what YAML would not read back as written -- controls, DEL, separators (U+2028 is a line
    break to YAML), format characters, surrogates (undecodable file names) -- is escaped.
    """
    text = json.dumps(value, ensure_ascii=False)
    return "".join(_escaped(c) if _unsafe(c) else c for c in text)


def _unsafe(c: str) -> bool:
    return c == "\x7f" or (not c.isascii() and unicodedata.category(c)[0] in "CZ")


def _escaped(c: str) -> str:
    return ascii(c)[1:-1]  # \xNN, \uNNNN or \UNNNNNNNN, which YAML reads (as core.terminal's)


def _tokens(path: str) -> set[str]:
    """Name tokens of a path's stem (``models/wine_tree.joblib`` -> ``{"wine", "tree"}``)."""
    stem = _ascii(Path(path).name.split(".")[0]).lower()
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


def _from(found: dict[str, Any]) -> str:
    """A REVIEW comment when the name lost letters of the file's (no ASCII spelling), else ``""``."""
    stem = found.get("name_from")
    if not stem:
        return ""
    return f"    # REVIEW: a name for {_q(stem)} (names are ASCII letters, digits, _ . -)"


def render_starter(found: dict[str, Any], project: str) -> str:
    """The starter ``bastion.yaml`` text for what :func:`discover` found.

    Every value taken from a file name is quoted, so a name cannot inject YAML.
    """
    lines = [
        "# Starter config written by `bastion init`. Review every line marked REVIEW.",
        "version: 1",
        "project:",
        f"  name: {_q(_slug(project, 'project'))}",
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
            f"  - name: {_q(name)}{_from(m)}",
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
        lines += [f"  - name: {_q(d['name'])}{_from(d)}", f"    path: {_q(d['path'])}"]
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
