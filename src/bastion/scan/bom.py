"""CycloneDX 1.6 ML-BOM for model files and folders (stdlib only; JSON written directly).

Every scanned model file becomes a ``machine-learning-model`` component with its SHA-256,
detected format, scan verdict and findings count, signature status and a ``modelCard``
(``modelParameters`` from the file and, when present beside it, a Hugging Face-style
``config.json``); data files (``.csv``, ``.parquet``, ``.jsonl`` ...) become ``data`` components.
``cyclonedx-python-lib`` does not model ``modelCard``, so the whole document is serialised here
and validated against the official CycloneDX 1.6 JSON schema in the tests.

Reference: https://cyclonedx.org/docs/1.6/json/ (ML-BOM: ``modelCard``, ``data``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.core.hashing import file_sha256
from bastion.core.report import AssetRecord, Report, VersionLineage
from bastion.core.scanning import FileResult, ScanResult, Verdict
from bastion.scan.signing import (
    STATUS_WORDS,
    FolderBundles,
    SignatureStatus,
    signature_check,
    signature_status,
)

__all__ = ["DATA_SUFFIXES", "build_bom", "report_bom"]

#: Suffixes of data files listed as ``data`` components.
DATA_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".arrow", ".feather", ".tfrecord", ".avro", ".orc")
_MAX_CONFIG = 1 << 20


def _prop(name: str, value: object) -> dict[str, str]:
    return {"name": f"bastion:{name}", "value": str(value)}


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
    card: dict[str, Any] = {
        "properties": [_prop("format", fr.format or "unknown"), _prop("scan.verdict", fr.verdict.value)]
    }
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
) -> dict[str, Any]:
    """A CycloneDX 1.6 ML-BOM of a scan.

    Args:
        scan: the scan of ``root`` (its files become components).
        root: the model file or folder the BOM describes (its signature status is checked).
        key: a public key to verify the signature with (``None``: status ``unverified`` when a
            signature exists).
        signature: the signature path (default ``<root>.sig``).
        tool_version: Bastion's version, for ``metadata.tools``.
        lineage: ``{sha256: lineage}`` of files that are recorded hardened model versions: such
            a file's component carries it as in :func:`report_bom` (``version``,
            ``pedigree.ancestors``, ``bastion:lineage.*``).
        data_files: real paths of files that are data sets (a project's ``datasets[].path`` and
            ``splits_file``): ``data`` components whatever their format (an ``.npz`` of arrays is
            data there), with their scan verdict as properties.

    Returns:
        The BOM as a JSON-ready dict.
    """
    root_p = Path(os.fspath(root))
    status, why, changed = signature_check(root_p, key=key, signature=signature)
    per_file = root_p.is_dir() and status is SignatureStatus.UNSIGNED  # files signed one by one, if at all
    folder = root_p if root_p.is_dir() else root_p.parent
    folders = FolderBundles(root_p, key)
    components: list[dict[str, Any]] = []
    for i, fr in enumerate(scan.files):
        path = Path(fr.path)
        try:
            rel = str(path.relative_to(root_p)) if root_p.is_dir() else path.name
        except ValueError:
            rel = fr.path
        hashes = [{"alg": "SHA-256", "content": fr.sha256}] if fr.sha256 else []
        if data_files and os.path.realpath(path) in data_files:
            scanned = [
                _prop("format", fr.format or "unknown"),
                _prop("scan.verdict", fr.verdict.value),
                _prop("scan.findings", len(fr.findings)),
            ]
            data: dict[str, Any] = {
                "type": "data",
                "bom-ref": f"data-{i}",
                "name": rel,
                "hashes": hashes or _hash(path),
            }
            if fr.verdict is not Verdict.SKIPPED:
                data["properties"] = scanned
            components.append({**data, "data": [{"type": "dataset", "name": rel}]})
        elif fr.verdict is not Verdict.SKIPPED:
            if per_file:  # ``<file>.sig`` beside each file (the layout ``bastion assess`` verifies)
                f_status, f_why = signature_status(path, key=key)
                if f_status is SignatureStatus.UNSIGNED:  # or a folder inside root signed as a whole
                    f_status, f_why, _ = folders.status_of(path)
            elif status is SignatureStatus.INVALID and changed is not None:  # the folder's own bundle
                bad = rel in changed
                f_status = SignatureStatus.INVALID if bad else SignatureStatus.VERIFIED
                f_why = why if bad else None
            else:
                f_status, f_why = status, why
            props = [
                _prop("format", fr.format or "unknown"),
                _prop("scan.verdict", fr.verdict.value),
                _prop("scan.findings", len(fr.findings)),
                _prop("signature.status", STATUS_WORDS[f_status.value]),
            ]
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
        elif path.name.lower().endswith(DATA_SUFFIXES):
            components.append(
                {
                    "type": "data",
                    "bom-ref": f"data-{i}",
                    "name": rel,
                    "hashes": hashes or _hash(path),
                    "data": [{"type": "dataset", "name": rel}],
                }
            )
    root_props = [_prop("signature.status", STATUS_WORDS[status.value])]
    if why:
        root_props.append(_prop("signature.reason", why[:500]))
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
    detected, the scan verdict, the signature status (``assets[].signature``) and its gating
    findings count; every dataset asset becomes a ``data`` component with its SHA-256 and, from the
    ``governance.data-sources`` notes, its registered version (``version``), version id, Merkle
    root, source, licence, owner and lineage (``bastion:provenance.*`` properties). A model version
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
    for check in report.checks:
        if check.id.startswith("scan.") and check.asset and check.notes.get("format"):
            scanned[check.asset] = str(check.notes["format"])
    provenance = _provenance(report)
    trained_on: dict[str, list[str]] = {}
    for ds_name, notes in provenance.items():
        for t in _json_list(notes.get("lineage.trained_models")):
            if isinstance(t.get("model"), str):
                trained_on.setdefault(t["model"], []).append(f"asset-{ds_name}")
    names = {rec.name for rec in report.assets}
    counts: dict[str, int] = {}
    for f in report.gating():
        if f.asset:
            counts[f.asset] = counts.get(f.asset, 0) + 1
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
            ("format", fmt),
            ("framework", rec.framework),
            ("owner", rec.owner),
            ("scan.verdict", rec.scan_verdict),
            ("signature.status", rec.signature),
            ("signature.reason", (rec.signature_detail or "")[:500] or None),
        ):
            if value:
                props.append(_prop(name, value))
        props.append(_prop("findings", counts.get(rec.name, 0)))
        card_props = [_prop(n, v) for n, v in (("format", fmt), ("scan.verdict", rec.scan_verdict)) if v]
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
