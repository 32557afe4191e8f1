"""CycloneDX 1.6 ML-BOM for model files and folders (stdlib only; JSON written directly).

Every scanned model file becomes a ``machine-learning-model`` component with its SHA-256,
detected format, scan verdict and findings count, signature status and a ``modelCard``
(``modelParameters`` from the file and, when present beside it, a Hugging Face-style
``config.json``); data files become ``data`` components. Model or data is decided by
:func:`classify`: a project's ``bastion.yaml`` declarations first, then the file's content.
``cyclonedx-python-lib`` does not model ``modelCard``, so the whole document is serialised here
and validated against the official CycloneDX 1.6 JSON schema in the tests.

Reference: https://cyclonedx.org/docs/1.6/json/ (ML-BOM: ``modelCard``, ``data``).
"""

from __future__ import annotations

import json
import os
import re
import uuid
import zipfile
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bastion.core._log import get_logger
from bastion.core.errors import ConfigError
from bastion.core.hashing import file_sha256
from bastion.core.report import AssetRecord, Report, VersionLineage
from bastion.core.scanning import FileResult, ScanResult, Verdict
from bastion.scan.signing import (
    STATUS_WORDS,
    FolderBundles,
    SignatureStatus,
    check_signature_file,
    default_signature_path,
    signature_status,
)

__all__ = [
    "DATA_SUFFIXES",
    "DATA_WORDS",
    "ProjectKinds",
    "build_bom",
    "classify",
    "project_kinds",
    "report_bom",
    "scan_properties",
]

log = get_logger(__name__)

#: Suffixes of data files listed as ``data`` components.
DATA_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".arrow", ".feather", ".tfrecord", ".avro", ".orc")
_MAX_CONFIG = 1 << 20

#: Words that name data arrays (``x``, ``y``, ``X_train``, ``test_idx``, ``splits`` ...): an
#: ``.npz`` whose every member is named with them, or an ``.npy``/``.npz`` whose file name is, is data.
DATA_WORDS = frozenset(
    {
        *("x", "y", "xs", "ys", "features", "feature", "labels", "label", "target", "targets"),
        *("inputs", "outputs", "data", "dataset", "datasets", "samples", "sample", "images", "texts"),
        *("train", "training", "test", "testing", "val", "valid", "validation", "dev", "eval"),
        *("calib", "calibration", "holdout", "population", "shadow", "reference", "ref"),
        *("member", "members", "nonmember", "nonmembers", "canary", "canaries"),
        *("split", "splits", "fold", "folds", "idx", "index", "indices", "ids", "id", "rows"),
    }
)
#: Words that make a file name data whatever its other words (``digits_splits.npz``).
_STRONG_DATA_WORDS = frozenset({"data", "dataset", "datasets", "split", "splits", "indices"})
_MAX_MEMBERS = 1024  # an .npz with more members is not read for classification (a model, as before)
_MAX_SEARCH = 32  # folders looked at for a bastion.yaml, from PATH up


class ProjectKinds:
    """What a project's ``bastion.yaml`` declares: real paths of its model files and data files."""

    def __init__(self, models: Collection[str] = (), data: Collection[str] = (), source: str | None = None):
        self.models = frozenset(models)
        self.data = frozenset(data)
        self.source = source


def find_project_config(root: str | os.PathLike[str]) -> Path | None:
    """The nearest ``bastion.yaml`` in ``root``'s folder or above it.

    The search stops at the top of a repository (a folder holding ``.git``) and after
    :data:`_MAX_SEARCH` folders. ``None`` when there is none.
    """
    p = Path(os.path.abspath(os.fspath(root)))
    start = p if p.is_dir() else p.parent
    for i, d in enumerate((start, *start.parents)):
        if i >= _MAX_SEARCH:
            break
        cfg = d / "bastion.yaml"
        try:
            if cfg.is_file():
                return cfg
            if (d / ".git").exists():
                break
        except OSError:
            break
    return None


def project_kinds(config: str | os.PathLike[str]) -> ProjectKinds:
    """The model and data files that ``config`` (a ``bastion.yaml``) declares, as real paths.

    Models: ``assets[]`` of kind ``model`` with a ``path``; data: ``assets[]`` of kind ``dataset``
    and ``datasets[].path``/``splits_file``. Paths are relative to the file's folder.

    Raises:
        ConfigError: the file cannot be read or is invalid.
    """
    from bastion.core.config import load_config

    cfg_path = Path(os.fspath(config))
    cfg = load_config(cfg_path)
    base = cfg_path.parent

    def real(rel: str) -> str:
        return os.path.realpath(base / rel)

    models = {real(a.path) for a in cfg.assets if a.kind == "model" and a.path}
    data = {real(a.path) for a in cfg.assets if a.kind == "dataset" and a.path}
    data |= {real(rel) for d in cfg.datasets for rel in (d.path, d.splits_file) if rel is not None}
    return ProjectKinds(models=models, data=data, source=str(cfg_path))


def _words(name: str) -> list[str]:
    """The alphabetic words of a name (``X_train`` → ``x``, ``train``; digits dropped)."""
    return re.findall(r"[a-z]+", name.lower())


def _data_name(name: str) -> bool:
    """Every word of ``name`` is a data word (``x``, ``y_test``, ``train_idx``, ``xtrain``)."""
    words = _words(name)
    return bool(words) and all(w in DATA_WORDS or (w[:1] in "xy" and w[1:] in DATA_WORDS) for w in words)


def _data_file_name(name: str) -> bool:
    stem = name.rsplit(".", 1)[0]
    return _data_name(stem) or any(w in _STRONG_DATA_WORDS for w in _words(stem))


def _npy_arrays(path: Path, fmt: str) -> list[tuple[str, tuple[int, ...], str, bool]] | None:
    """``[(name, shape, descr, numeric)]`` of an ``.npy`` (one, named by the file) or ``.npz``.

    Only the headers are read. ``None``: not readable as such (then the file stays a model).
    """
    from bastion.scan.numpy_scanner import NpyError, descr_info, read_npy_header

    def one(fh: IO[bytes], name: str) -> tuple[str, tuple[int, ...], str, bool]:
        header, _ = read_npy_header(fh)
        info = descr_info(header["descr"])
        numeric = info is not None and not info[1]
        return name, tuple(header["shape"]), str(header["descr"]), numeric

    try:
        if fmt == "npy":
            with path.open("rb") as fh:
                return [one(fh, path.name.rsplit(".", 1)[0])]
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            if not infos or len(infos) > _MAX_MEMBERS or not all(i.filename.endswith(".npy") for i in infos):
                return None
            out = []
            for info in infos:
                with zf.open(info) as member:
                    out.append(one(member, info.filename[: -len(".npy")]))
            return out
    except (OSError, NpyError, zipfile.BadZipFile, ValueError, RuntimeError, NotImplementedError, EOFError):
        return None


def _numeric_arrays_are_data(path: Path, fmt: str) -> bool:
    """An ``.npy``/``.npz`` of plain numeric arrays that are data, by their names or shapes.

    Data when every array is numeric (no object dtype: nothing a pickle could hide in) and either
    every array is named with :data:`DATA_WORDS` (``x``, ``y``, ``X_train``, ``test_idx``), or
    every array is a 1-D integer array (row indices: a splits file), or the file's own name is
    made of data words or holds ``data``/``dataset``/``split(s)``/``indices`` (``digits_splits.npz``,
    ``X_train.npy``). Anything else (``W1``, ``layer0.weight``, ``mean``) is a model's weights.
    """
    arrays = _npy_arrays(path, fmt)
    if not arrays or not all(numeric for *_, numeric in arrays):
        return False
    if _data_file_name(path.name):
        return True
    if fmt == "npz" and all(_data_name(name) for name, *_ in arrays):
        return True
    return all(len(shape) == 1 and descr.lstrip("<>|=")[:1] in "iu" for _, shape, descr, _n in arrays)


def classify(fr: FileResult, kinds: ProjectKinds | None = None) -> str | None:
    """``"model"``, ``"data"`` or ``None`` (not listed) for one scanned file, as ``bastion bom`` decides.

    1. A file the project's ``bastion.yaml`` declares (``kinds``): a model asset is a model; a
       dataset (``datasets[].path``, ``splits_file``, an asset of kind ``dataset``) is data,
       whatever its format (its scan verdict is still reported).
    2. Otherwise by content: an ``.npy``/``.npz`` of plain numeric arrays that are data by
       :func:`_numeric_arrays_are_data` is data; any other file the scanner read (pickle,
       joblib, torch, ONNX, safetensors, GGUF, Keras, HDF5 ... and an ``.npy``/``.npz`` of
       weights or holding object arrays) is a model; a file it skipped is data when its suffix is
       one of :data:`DATA_SUFFIXES` (``.csv``, ``.parquet``, ``.jsonl`` ...), else not listed.
    """
    if kinds is not None and (kinds.data or kinds.models):  # resolved only when something is declared
        real = os.path.realpath(fr.path)
        if real in kinds.data:
            return "data"
        if real in kinds.models:
            return "model" if fr.verdict is not Verdict.SKIPPED else None
    if fr.verdict is Verdict.SKIPPED:
        return "data" if fr.path.lower().endswith(DATA_SUFFIXES) else None
    clean = fr.verdict is Verdict.SAFE and not fr.findings
    if clean and fr.format in ("npy", "npz") and _numeric_arrays_are_data(Path(fr.path), fr.format):
        return "data"
    return "model"


def _prop(name: str, value: object) -> dict[str, str]:
    return {"name": f"bastion:{name}", "value": str(value)}


def scan_properties(fmt: str | None, verdict: str | None, findings: int | None) -> list[dict[str, str]]:
    """What the scan found in a file, as both ML-BOMs write it (``bastion bom`` and ``bom.json``).

    ``bastion:format``, ``bastion:scan.verdict`` and ``bastion:scan.findings`` (the number of
    findings the scan of the file reported); each left out when not known (``None``).
    """
    props = [_prop("format", fmt)] if fmt else []
    if verdict:
        props.append(_prop("scan.verdict", verdict))
    if findings is not None:
        props.append(_prop("scan.findings", findings))
    return props


def _shown(bundle: Path, root: Path) -> str:
    """A bundle's path as a BOM names it: relative to ``root`` (or to its folder), else as is."""
    where = Path(os.path.abspath(bundle))
    top = Path(os.path.abspath(root))
    for base in (top, top.parent) if top.is_dir() else (top.parent,):
        if where.is_relative_to(base):
            return where.relative_to(base).as_posix()
    return str(where)


def _hf_config(folder: Path) -> dict[str, Any]:
    cfg = folder / "config.json"
    try:
        if cfg.is_file() and cfg.stat().st_size <= _MAX_CONFIG:
            doc = json.loads(cfg.read_text(encoding="utf-8"))
            return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}
    return {}


def _model_card(fr: FileResult, folder: Path) -> dict[str, Any]:
    params: dict[str, Any] = {}
    cfg = _hf_config(folder)
    arch = cfg.get("architectures")
    if isinstance(arch, list) and arch and isinstance(arch[0], str):
        params["modelArchitecture"] = arch[0]
    if isinstance(cfg.get("model_type"), str):
        params["architectureFamily"] = cfg["model_type"]
    task = cfg.get("task") or cfg.get("pipeline_tag")
    if isinstance(task, str):
        params["task"] = task
    card: dict[str, Any] = {"properties": scan_properties(fr.format or "unknown", fr.verdict.value, None)}
    if params:
        card["modelParameters"] = params
    if fr.findings:
        card["considerations"] = {
            "technicalLimitations": sorted({f.title for f in fr.findings})[:20],
        }
    return card


def build_bom(
    scan: ScanResult,
    *,
    root: str | os.PathLike[str],
    key: str | os.PathLike[str] | None = None,
    signature: str | os.PathLike[str] | None = None,
    tool_version: str = "0",
    lineage: Mapping[str, VersionLineage] | None = None,
    data_files: Collection[str] = (),
    config: str | os.PathLike[str] | None = None,
    find_config: bool = True,
) -> dict[str, Any]:
    """A CycloneDX 1.6 ML-BOM of a scan.

    Which files are models and which are data: :func:`classify` (the project's declarations,
    then the content). Every file keeps its scan verdict, a data file's too.

    Signature status, per model component (``bastion:signature.status``, ``.reason`` and
    ``.bundle``, the bundle that decided): ``root``'s bundle decides for every file when there is
    one; otherwise each file's ``<file>.sig``, else the bundle of the nearest folder inside
    ``root`` signed as a whole (:class:`FolderBundles`). A folder bundle that fails verification
    fails every file it signs, the reason naming the files that differ (a removed file has no
    component of its own), and a failed bundle of a folder inside ``root`` is also a
    ``bastion:signature.failure`` of ``metadata.component``.

    Args:
        scan: the scan of ``root`` (its files become components).
        root: the model file or folder the BOM describes (its signature status is checked).
        key: a public key to verify the signature with (``None``: status ``unverified`` when a
            signature exists).
        signature: the signature path (default ``<root>.sig``). Named, it must exist, and it
            decides for ``root`` and every file in it (no ``<file>.sig`` or folder bundle does).
        tool_version: Bastion's version, for ``metadata.tools``.
        lineage: ``{sha256: lineage}`` of files that are recorded hardened model versions: such
            a file's component carries it as in :func:`report_bom` (``version``,
            ``pedigree.ancestors``, ``bastion:lineage.*``).
        data_files: real paths of files that are data sets (a project's ``datasets[].path`` and
            ``splits_file``): ``data`` components whatever their format (an ``.npz`` of arrays is
            data there), with their scan verdict as properties.
        config: the project's ``bastion.yaml`` whose ``assets``/``datasets`` decide model or
            data.
        find_config: without ``config``, use the nearest ``bastion.yaml`` in ``root``'s folder
            or above it (up to the top of the repository): ``bastion bom data/`` of a project. A
            found file that cannot be read or is invalid is warned about and adds nothing.

    Returns:
        The BOM as a JSON-ready dict.

    Raises:
        ConfigError: ``config`` cannot be read or is invalid; ``signature`` names no file.
    """
    root_p = Path(os.fspath(root))
    if signature is not None:  # the bundle named decides for PATH and every file in it: it must be there
        check_signature_file(signature)
    folder = root_p if root_p.is_dir() else root_p.parent
    folders = FolderBundles(root_p, key, signature=signature)
    if root_p.is_dir():
        status, why = folders.folder_status(root_p)
    else:
        status, why = signature_status(root_p, key=key, signature=signature)
    root_bundle = Path(os.fspath(signature)) if signature is not None else default_signature_path(root_p)
    kinds = _kinds(root_p, config, find_config, data_files)
    components: list[dict[str, Any]] = []
    for i, fr in enumerate(scan.files):
        path = Path(fr.path)
        try:
            rel = str(path.relative_to(root_p)) if root_p.is_dir() else path.name
        except ValueError:
            rel = fr.path
        hashes = [{"alg": "SHA-256", "content": fr.sha256}] if fr.sha256 else []
        kind = classify(fr, kinds)
        if kind == "data":
            data: dict[str, Any] = {
                "type": "data",
                "bom-ref": f"data-{i}",
                "name": rel,
                "hashes": hashes or _hash(path),
            }
            if fr.verdict is not Verdict.SKIPPED:
                data["properties"] = scan_properties(
                    fr.format or "unknown", fr.verdict.value, len(fr.findings)
                )
            components.append({**data, "data": [{"type": "dataset", "name": rel}]})
        elif kind == "model":
            bundle: Path | None
            if not root_p.is_dir():  # a file: its bundle (the one named, or <file>.sig)
                f_status, f_why = status, why
                bundle = root_bundle if status is not SignatureStatus.UNSIGNED else None
            elif status is not SignatureStatus.UNSIGNED:  # the folder's own bundle decides for all
                f_status, f_why, bundle = folders.status_in(root_p, path)
            else:  # ``<file>.sig`` (the layout ``bastion assess`` verifies), else a folder inside
                f_status, f_why, bundle = folders.file_status(path)
            props = [
                *scan_properties(fr.format or "unknown", fr.verdict.value, len(fr.findings)),
                _prop("signature.status", _status_word(f_status, key)),
            ]
            if bundle is not None:
                props.append(_prop("signature.bundle", _shown(bundle, root_p)))
            f_why = _status_reason(f_status, f_why, key)
            if f_why and root_p.is_dir():
                props.append(_prop("signature.reason", f_why[:500]))
            if fr.reason:
                props.append(_prop("scan.reason", fr.reason[:500]))
            comp: dict[str, Any] = {
                "type": "machine-learning-model",
                "bom-ref": f"model-{i}",
                "name": rel,
                "hashes": hashes,
                "properties": props,
                "modelCard": _model_card(fr, path.parent if root_p.is_dir() else folder),
            }
            recorded = (lineage or {}).get(fr.sha256 or "")
            if recorded is not None:
                _add_lineage(comp, recorded)
            components.append(comp)
    root_props = [_prop("signature.status", _status_word(status, key))]
    why = _status_reason(status, why, key)
    if why:
        root_props.append(_prop("signature.reason", why[:500]))
    own = folders.bundle_of(folders.root) if root_p.is_dir() else None
    for failed, reason in folders.failed():  # a folder inside root signed as a whole that fails
        if failed != own:
            root_props.append(_prop("signature.failure", reason[:500]))  # the reason names the bundle
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "bastion", "version": tool_version}]},
            "component": {
                "type": "machine-learning-model" if root_p.is_file() else "application",
                "bom-ref": "root",
                "name": root_p.name or str(root_p),
                "properties": root_props,
            },
        },
        "components": components,
        "dependencies": [{"ref": "root", "dependsOn": [c["bom-ref"] for c in components]}],
    }


#: ``bastion:signature.status`` of a signed file that was not checked because no key was given.
NOT_CHECKED = "unverified"


def _status_word(status: SignatureStatus, key: object) -> str:
    """The word a BOM gives a signature status: the report's, but ``unverified`` for "no key given".

    A signature that exists but was not checked because ``bastion bom`` ran without ``--key`` is
    not an error: ``unverified``. With a key, a signature that cannot be checked (an unreadable
    bundle or file, a missing extra) stays ``error``; a bundle that is not one is ``failed``.
    """
    if status is SignatureStatus.UNVERIFIED and key is None:
        return NOT_CHECKED
    return STATUS_WORDS[status.value]


def _status_reason(status: SignatureStatus, why: str | None, key: object) -> str | None:
    if status is SignatureStatus.UNVERIFIED and key is None:
        return "not checked: a signature exists but no public key was given (--key)"
    return why


def _kinds(
    root: Path, config: str | os.PathLike[str] | None, find: bool, data_files: Collection[str]
) -> ProjectKinds:
    """The project declarations that apply to ``root``: ``config``'s, or the nearest one's."""
    cfg = Path(os.fspath(config)) if config is not None else (find_project_config(root) if find else None)
    kinds = ProjectKinds(data=data_files)
    if cfg is None:
        return kinds
    try:
        found = project_kinds(cfg)
    except ConfigError as exc:
        if config is not None:  # given: bad input
            raise
        # ``api.model_bom`` reads the top-of-PATH one itself and has warned about it already
        own = root.is_dir() and cfg == Path(os.path.abspath(root)) / "bastion.yaml"
        (log.debug if own else log.warning)("model and data files of %s not used for the BOM: %s", cfg, exc)
        return kinds
    return ProjectKinds(models=found.models, data=found.data | kinds.data, source=found.source)


def _hash(path: Path) -> list[dict[str, str]]:
    try:
        digest = file_sha256(path)
    except OSError:
        return []
    return [{"alg": "SHA-256", "content": digest}]


def report_bom(report: Report, *, tool_version: str = "0") -> dict[str, Any]:
    """A CycloneDX 1.6 ML-BOM of an assessment: what ``bastion assess`` writes as ``bom.json``.

    Every model asset (files, their hardened versions and endpoints) becomes a
    ``machine-learning-model`` component with its SHA-256 as assessed, the format the scanner
    detected, the scan verdict and findings count (:func:`scan_properties`, as ``bastion bom``
    writes them) and the signature status (``assets[].signature``); every dataset asset becomes a
    ``data`` component with its SHA-256 and, from the ``governance.data-sources`` notes, its
    registered version (``version``), version id, Merkle root, source, licence, owner and lineage
    (``bastion:provenance.*`` properties). A model version
    trained on a dataset of the report (``lineage.trained_models``) references it in
    ``modelCard.modelParameters.datasets`` and in ``dependencies``. A hardened version
    (``assets[].lineage``) carries its version number (``version``), the model it was derived
    from with that file's hash (``pedigree.ancestors``, and ``pedigree.notes``: the procedure and
    any ε spent) and ``bastion:lineage.*`` properties (procedure, parameters, ε spent, δ, store
    ids, creation time, datasets); its original lists it in ``pedigree.descendants``, and the
    datasets it was recorded as trained on are referenced as above. Nothing is
    re-read from disk: the BOM states exactly what the report judged. The serial number derives
    from the run id, so one run always yields the same BOM.

    Args:
        report: the assessment report.
        tool_version: Bastion's version, for ``metadata.tools``.

    Returns:
        The BOM as a JSON-ready dict (valid against the CycloneDX 1.6 JSON schema).
    """
    scanned: dict[str, str] = {}
    scan_findings: dict[str, int] = {}  # the findings of each file's scan, as ``bastion bom`` counts them
    for check in report.checks:
        if check.id.startswith("scan.") and check.asset and check.notes.get("format"):
            scanned[check.asset] = str(check.notes["format"])
            scan_findings[check.asset] = len(check.findings)
    provenance = _provenance(report)
    trained_on: dict[str, list[str]] = {}
    for ds_name, notes in provenance.items():
        for t in _json_list(notes.get("lineage.trained_models")):
            if isinstance(t.get("model"), str):
                trained_on.setdefault(t["model"], []).append(f"asset-{ds_name}")
    names = {rec.name for rec in report.assets}
    components: list[dict[str, Any]] = []
    for rec in report.assets:
        hashes = [{"alg": "SHA-256", "content": rec.sha256}] if rec.sha256 else []
        ref = f"asset-{rec.name}"
        if rec.kind == "dataset":
            data: dict[str, Any] = (
                {
                    "type": "dataset",
                    "name": rec.name,
                    "contents": _contents(rec.path),
                }
                if rec.path
                else {"type": "dataset", "name": rec.name}
            )
            notes = provenance.get(rec.name, {})
            if notes.get("provenance.source"):
                data["description"] = f"source: {notes['provenance.source']}"[:1000]
            comp_d: dict[str, Any] = {
                "type": "data",
                "bom-ref": ref,
                "name": rec.name,
                "hashes": hashes,
                "data": [data],
                "properties": [_prop("kind", rec.kind)]
                + ([_prop("path", rec.path)] if rec.path else [])
                + ([_prop("owner", rec.owner)] if rec.owner else [])
                + _provenance_props(notes),
            }
            if notes.get("provenance.version"):
                comp_d["version"] = notes["provenance.version"]
            components.append(comp_d)
            continue
        if rec.kind not in ("model", "endpoint"):
            continue
        fmt = scanned.get(rec.name) or rec.format
        props = [_prop("kind", rec.kind)]
        for name, value in (
            ("path", rec.path),
            ("url", rec.url),
            ("framework", rec.framework),
            ("owner", rec.owner),
        ):
            if value:
                props.append(_prop(name, value))
        props += scan_properties(fmt, rec.scan_verdict, scan_findings.get(rec.name))
        for name, value in (
            ("signature.status", rec.signature),
            ("signature.reason", (rec.signature_detail or "")[:500] or None),
        ):
            if value:
                props.append(_prop(name, value))
        card_props = scan_properties(fmt, rec.scan_verdict, None)
        comp: dict[str, Any] = {
            "type": "machine-learning-model",
            "bom-ref": ref,
            "name": rec.name,
            "hashes": hashes,
            "properties": props,
        }
        if rec.lineage is not None:
            _add_lineage(comp, rec.lineage)
        descendants = [
            _version_ref(v, v.lineage)
            for v in report.assets
            if v.lineage is not None and v.lineage.version_of == rec.name
        ]
        if descendants:
            comp.setdefault("pedigree", {})["descendants"] = descendants
        by_version_id = {n.get("provenance.version_id"): d for d, n in provenance.items()}
        recorded = [] if rec.lineage is None else rec.lineage.datasets
        trained = [
            r
            for r in dict.fromkeys(
                [
                    *trained_on.get(rec.name, []),
                    *(f"asset-{by_version_id.get(d) or d}" for d in recorded),
                ]
            )
            if r.removeprefix("asset-") in names
        ]
        # what the scan found in the file, as ``bastion bom`` writes it (the model's own risks)
        file_risks = sorted(
            {f.title for f in report.findings if f.asset == rec.name and f.rule_id.startswith("scan.")}
        )
        if card_props or trained or file_risks:
            card: dict[str, Any] = {}
            if trained:
                card["modelParameters"] = {"datasets": [{"ref": r} for r in trained]}
            if card_props:
                card["properties"] = card_props
            if file_risks:
                card["considerations"] = {"technicalLimitations": file_risks[:20]}
            comp["modelCard"] = card
        components.append(comp)
    serial = (
        uuid.UUID(hex=report.run.id)
        if _is_hex_uuid(report.run.id)
        else uuid.uuid5(uuid.NAMESPACE_URL, report.run.id)
    )
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": report.run.started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "bastion", "version": tool_version}]},
            "component": {
                "type": "application",
                "bom-ref": "project",
                "name": report.run.project or "project",
                "properties": [_prop("run", report.run.id), _prop("run.status", report.run.status)],
            },
        },
        "components": components,
        "dependencies": [{"ref": "project", "dependsOn": [c["bom-ref"] for c in components]}]
        + [
            {
                "ref": c["bom-ref"],
                "dependsOn": [d["ref"] for d in c["modelCard"]["modelParameters"]["datasets"]],
            }
            for c in components
            if "modelParameters" in c.get("modelCard", {})
        ],
    }


def _add_lineage(comp: dict[str, Any], lineage: VersionLineage) -> None:
    """Put a hardened version's lineage on its component (CycloneDX 1.6).

    ``version`` is ``N``; ``pedigree.ancestors`` is the model it was derived from (the original
    asset, version 1, or a recorded parent version) with its SHA-256 as scanned before
    hardening, and ``pedigree.notes`` says how; what has no standard field (procedure,
    parameters, ε spent, δ, store ids, datasets) goes in ``bastion:lineage.*`` properties.
    """
    comp["version"] = str(lineage.version)
    parent: dict[str, Any] = {
        "type": "machine-learning-model",
        "name": lineage.version_of,
        "version": "1" if lineage.parent_id is None else "unknown",
        "properties": [_prop("asset", lineage.version_of)]
        + ([_prop("lineage.id", lineage.parent_id)] if lineage.parent_id else []),
    }
    if lineage.parent_sha256:
        parent["hashes"] = [{"alg": "SHA-256", "content": lineage.parent_sha256}]
    how = f"derived from {lineage.version_of} by bastion harden {lineage.procedure or 'unknown'}"
    if lineage.epsilon_spent is not None:
        how += f" with (ε={lineage.epsilon_spent:g}, δ={lineage.delta or 0:g})-differential privacy"
    comp["pedigree"] = {"ancestors": [parent], "notes": how}
    props = [
        _prop("lineage.version_of", lineage.version_of),
        _prop("lineage.version", lineage.version),
        _prop("lineage.id", lineage.id),
        _prop("lineage.created", lineage.created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")),
    ]
    for name, value in (
        ("lineage.procedure", lineage.procedure),
        ("lineage.parent_id", lineage.parent_id),
        ("lineage.parent_sha256", lineage.parent_sha256),
        ("lineage.epsilon_spent", lineage.epsilon_spent),
        ("lineage.delta", lineage.delta),
    ):
        if value is not None:
            props.append(_prop(name, value))
    if lineage.datasets:
        props.append(_prop("lineage.datasets", ", ".join(lineage.datasets)))
    for key, value in sorted(lineage.params.items()):
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        props.append(_prop(f"lineage.param.{key}", text[:500]))
    comp["properties"].extend(props)


def _version_ref(rec: AssetRecord, lineage: VersionLineage) -> dict[str, Any]:
    """A hardened version as a ``pedigree.descendants`` entry of its original."""
    out: dict[str, Any] = {
        "type": "machine-learning-model",
        "name": rec.name,
        "version": str(lineage.version),
        "properties": [_prop("asset", rec.name), _prop("lineage.procedure", lineage.procedure or "unknown")],
    }
    if rec.sha256:
        out["hashes"] = [{"alg": "SHA-256", "content": rec.sha256}]
    return out


#: Provenance notes of ``governance.data-sources`` copied into a data component's properties.
_PROVENANCE_PROPS = (
    "provenance.version_id",
    "provenance.version",
    "provenance.merkle_root",
    "provenance.source",
    "provenance.licence",
    "provenance.owner",
    "provenance.registered",
)


def _provenance(report: Report) -> dict[str, dict[str, str]]:
    """``{dataset: notes}`` of the ``governance.data-sources`` results that ran."""
    return {
        c.asset: c.notes
        for c in report.checks
        if c.id == "governance.data-sources" and c.asset and c.status == "ok"
    }


def _provenance_props(notes: dict[str, str]) -> list[dict[str, str]]:
    props = [_prop(k, notes[k]) for k in _PROVENANCE_PROPS if notes.get(k)]
    chain = _json_list(notes.get("provenance.lineage"))
    if chain:
        props.append(_prop("provenance.lineage", " <- ".join(str(v.get("id")) for v in chain)))
    return props


def _json_list(raw: str | None) -> list[dict[str, Any]]:
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        return []
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _contents(path: str) -> dict[str, Any]:
    return {"properties": [_prop("path", path)]}


def _is_hex_uuid(text: str) -> bool:
    try:
        uuid.UUID(hex=text)
    except ValueError:
        return False
    return True
