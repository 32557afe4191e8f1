"""Audit of every dataset's sources: registered, unchanged, owned, licensed, not writable by anyone.

``governance.data-sources`` runs on each dataset asset (``datasets:`` entries) and compares the
files now with the newest version registered in the store (``bastion data register``; table
``dataset_versions``). The store URL comes from ``ctx.facts["__run__"]["db_url"]``. The
version compared is the newest one registered for the same resolved path (else the newest
registered under the dataset's name). The store is only read; a SQLite store that does not
exist yet counts as empty.

Findings (``rule_id`` = ``governance.data-sources.<condition>``):

=================== ======== =============================================================
condition           severity when
=================== ======== =============================================================
``unregistered``    medium   no version of the dataset is registered (no provenance at all)
``hash-changed``    high     a file's SHA-256 differs from the registered one, or a file was
                             added or removed since; ``location.path`` names the file
``missing-owner``   medium   neither the ``datasets:`` entry nor the registration names an owner
``missing-licence`` medium   no registered version records a licence
``world-writable``  high     a data file (or the splits file) is writable by anyone
                             (``stat.S_IWOTH``); ``location.path`` names the file
=================== ======== =============================================================

Metrics: ``registered`` (1/0), ``files_checked``, ``files_changed`` (changed + added +
removed; ``None`` when unregistered), ``world_writable_files``, ``lineage_depth`` (versions
in the registered version's parent chain, itself included; ``None`` when unregistered) and
``trained_models`` (recorded model versions trained on the dataset).

Provenance and lineage go into ``notes`` so they are stored with the report (see
:data:`PROVENANCE_NOTES`): ``provenance.version_id``, ``provenance.dataset``,
``provenance.version``, ``provenance.merkle_root``, ``provenance.source``,
``provenance.licence``, ``provenance.owner``, ``provenance.registered`` (ISO 8601),
``provenance.lineage`` (JSON list, newest first, of ``{id, version, merkle_root, created,
removed_rows}``), and ``lineage.trained_models`` (JSON list of ``{model, asset, version,
procedure, dataset_version, created}``: each model version ``bastion harden`` recorded with one
of this dataset's version ids, or its name when it was unregistered, in its ``datasets``).
"""

from __future__ import annotations

import json
import logging
import stat
import time
from pathlib import Path
from typing import Any, ClassVar

from bastion.core.check import Check, CheckContext
from bastion.core.config import Dataset
from bastion.core.findings import Finding, Location, Threat
from bastion.core.hashing import file_sha256
from bastion.core.registry import register
from bastion.core.results import CheckResult
from bastion.core.severity import Severity

log = logging.getLogger(__name__)


def _files(root: Path) -> dict[str, Path]:
    """``{name as registered: path}``: the file's own name, or paths relative to a folder (hidden skipped)."""
    if root.is_file():
        return {root.name: root}
    if not root.is_dir():
        return {}
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


#: Note keys holding a dataset's provenance (the lineage ones hold JSON lists).
PROVENANCE_NOTES = (
    "provenance.version_id",
    "provenance.dataset",
    "provenance.version",
    "provenance.merkle_root",
    "provenance.source",
    "provenance.licence",
    "provenance.owner",
    "provenance.registered",
    "provenance.lineage",
    "lineage.trained_models",
)


def _registered(db_url: str, name: str, path: Path) -> tuple[Any, list[Any], list[dict[str, Any]]]:
    """``(version, lineage, trained)`` of the dataset at ``path`` (else named ``name``).

    ``version``: the newest registered version or ``None``; ``lineage``: its parent chain, newest
    first; ``trained``: the model versions trained on any version of it (or on ``name``).
    """
    from sqlalchemy.engine import make_url

    u = make_url(db_url)
    if u.get_backend_name() == "sqlite" and (not u.database or not Path(u.database).is_file()):
        return None, [], []
    from bastion.store.provenance import lineage, list_versions
    from bastion.store.repository import Store
    from bastion.store.versions import list_versions as model_versions

    with Store.open(db_url) as store:
        versions = list_versions(store)
        same_path = [v for v in versions if v.details.get("path") == str(path)]
        same_name = [v for v in versions if v.dataset == name]
        chosen = same_path or same_name
        version = max(chosen, key=lambda v: v.created) if chosen else None
        chain = lineage(store, version.id) if version is not None else []
        ids = {v.id: v for v in (*same_path, *same_name, *chain)}
        trained: list[dict[str, Any]] = []
        for mv in model_versions(store):
            used = [d for d in mv.datasets if d in ids or d == name]
            if used:
                trained.append(
                    {
                        "model": f"{mv.asset}.v{mv.version}",
                        "asset": mv.asset,
                        "version": mv.version,
                        "procedure": mv.procedure,
                        "dataset_version": used[0],
                        "created": mv.created.isoformat(),
                    }
                )
    return version, chain, trained


def provenance_notes(version: Any, chain: list[Any], trained: list[dict[str, Any]]) -> dict[str, str]:
    """The :data:`PROVENANCE_NOTES` of a registered ``version`` (``None``: only the trained models)."""
    notes: dict[str, str] = {}
    if version is not None:
        notes["provenance.version_id"] = version.id
        notes["provenance.dataset"] = version.dataset
        notes["provenance.version"] = str(version.version)
        notes["provenance.merkle_root"] = version.merkle_root
        for key, value in (
            ("source", version.source),
            ("licence", version.licence),
            ("owner", version.owner),
        ):
            if value:
                notes[f"provenance.{key}"] = str(value)
        notes["provenance.registered"] = version.created.isoformat()
        notes["provenance.lineage"] = json.dumps(
            [
                {
                    "id": v.id,
                    "version": v.version,
                    "merkle_root": v.merkle_root,
                    "created": v.created.isoformat(),
                    "removed_rows": len(v.details.get("removed_rows") or []),
                }
                for v in chain
            ]
        )
    if trained:
        notes["lineage.trained_models"] = json.dumps(trained)
    return notes


@register("check")
class DataSourcesCheck(Check):
    """Each dataset registered, unchanged since registration, owned, licensed and not world-writable."""

    id: ClassVar[str] = "governance.data-sources"
    title: ClassVar[str] = "Data-source audit"
    threat: ClassVar[Threat] = Threat.GOVERNANCE
    applies_to: ClassVar[frozenset[str]] = frozenset({"dataset"})
    atlas: ClassVar[tuple[str, ...]] = ("AML.T0020", "AML.T0059")
    references: ClassVar[tuple[str, ...]] = (
        "NIST AI RMF 1.0, MAP 4.1 and MANAGE 3.2 (third-party data provenance)",
        "OWASP ML Top 10 2023, ML02 Data Poisoning",
    )
    threat_model: ClassVar[str] = (
        "Anyone who can write to the training data (a shared folder, a compromised source) "
        "can poison it; without recorded provenance a change goes unnoticed."
    )
    remediation: ClassVar[str] = (
        "Register the dataset (`bastion data register DATASET --source ... --licence ... --owner ...`), "
        "verify it before training (`bastion data verify`), and restrict write access to its owner."
    )
    order: ClassVar[int] = 100

    def applicable(self, ctx: CheckContext) -> str | None:
        """Needs the run's store URL and a ``datasets:`` entry for the asset."""
        if not ctx.facts.get("__run__", {}).get("db_url"):
            return "no store URL in the run's facts (facts['__run__']['db_url'])"
        if self._dataset(ctx) is None:
            return f"{ctx.asset.name} is not a datasets: entry"
        return None

    @staticmethod
    def _dataset(ctx: CheckContext) -> Dataset | None:
        return next((d for d in ctx.config.datasets if d.name == ctx.asset.name), None)

    def run(self, ctx: CheckContext) -> CheckResult:
        """Audit the dataset; see the module docstring for findings and metrics."""
        start = time.monotonic()
        ds = self._dataset(ctx)
        assert ds is not None
        db_url = str(ctx.facts["__run__"]["db_url"])
        root = (ctx.base_dir / ds.path).resolve()
        files = _files(root)
        findings: list[Finding] = []
        metrics: dict[str, float | None] = {"files_checked": float(len(files))}
        notes: dict[str, str] = {}

        version, chain, trained = _registered(db_url, ds.name, root)
        metrics["registered"] = 1.0 if version is not None else 0.0
        metrics["lineage_depth"] = float(len(chain)) if version is not None else None
        metrics["trained_models"] = float(len(trained))
        notes.update(provenance_notes(version, chain, trained))
        if version is None:
            metrics["files_changed"] = None
            notes["files_changed"] = "not registered: nothing to compare with"
            notes["lineage_depth"] = "not registered: no recorded lineage"
            findings.append(
                self.finding(
                    ctx,
                    "unregistered",
                    f"dataset {ds.name} ({ds.path}) is not registered: no recorded source, licence or hashes",
                    severity=Severity.MEDIUM,
                    evidence={"dataset": ds.name, "path": ds.path},
                    location=Location(path=ds.path),
                )
            )
        else:
            notes["registered_version"] = f"{version.dataset} v{version.version} ({version.id})"
            changed = self._compare(ctx, ds, version, files, findings)
            metrics["files_changed"] = float(changed)

        owner = ds.owner or (version.owner if version is not None else None)
        if not owner:
            findings.append(
                self.finding(
                    ctx,
                    "missing-owner",
                    f"dataset {ds.name} names no owner",
                    severity=Severity.MEDIUM,
                    evidence={"dataset": ds.name},
                    location=Location(path=ds.path),
                    remediation="Name the accountable owner in bastion.yaml (datasets: owner) "
                    "and when registering the dataset (--owner).",
                )
            )
        if version is None or not version.licence:
            findings.append(
                self.finding(
                    ctx,
                    "missing-licence",
                    f"dataset {ds.name} has no recorded licence",
                    severity=Severity.MEDIUM,
                    evidence={"dataset": ds.name, "registered": version is not None},
                    location=Location(path=ds.path),
                    remediation="Record the dataset's licence: "
                    "`bastion data register DATASET --licence ...`.",
                )
            )

        checked = dict(files)
        if ds.splits_file:
            sp = (ctx.base_dir / ds.splits_file).resolve()
            if sp.is_file():
                checked[ds.splits_file] = sp
        writable = 0
        for rel, p in sorted(checked.items()):
            try:
                mode = p.stat().st_mode
            except OSError as exc:
                notes[f"stat:{rel}"] = str(exc)
                continue
            if mode & stat.S_IWOTH:
                writable += 1
                shown = self._shown(ds, rel)
                findings.append(
                    self.finding(
                        ctx,
                        "world-writable",
                        f"training data file {shown} is writable by anyone (mode {stat.S_IMODE(mode):o})",
                        severity=Severity.HIGH,
                        evidence={"dataset": ds.name, "file": shown, "mode": f"{stat.S_IMODE(mode):o}"},
                        location=Location(path=shown),
                        remediation=f"Remove world write access (`chmod o-w {shown}`) and verify the "
                        "dataset against its registered hashes (`bastion data verify`).",
                    )
                )
        metrics["world_writable_files"] = float(writable)
        result = CheckResult(
            id=self.id, asset=ctx.asset.name, metrics=metrics, notes=notes, findings=findings
        )
        result.findings.extend(self.threshold_findings(ctx, result))
        result.seconds = round(time.monotonic() - start, 4)
        return result

    @staticmethod
    def _shown(ds: Dataset, rel: str) -> str:
        """The file as the project names it (relative to ``bastion.yaml``'s folder)."""
        if rel == ds.splits_file:
            return rel
        base = Path(ds.path)
        return ds.path if base.name == rel else (base / rel).as_posix()

    def _compare(
        self, ctx: CheckContext, ds: Dataset, version: Any, files: dict[str, Path], findings: list[Finding]
    ) -> int:
        """Findings for changed, added and removed files against ``version``; their count."""
        registered: dict[str, Any] = dict(version.files)
        changes: list[tuple[str, str, dict[str, Any]]] = []
        for rel, p in sorted(files.items()):
            entry = registered.get(rel)
            if entry is None:
                changes.append((rel, "added since registration", {}))
                continue
            now = file_sha256(p)
            if now != entry.get("sha256"):
                changes.append(
                    (
                        rel,
                        "changed since registration",
                        {"sha256_registered": entry.get("sha256"), "sha256_now": now},
                    )
                )
        for rel in sorted(set(registered) - set(files)):
            changes.append((rel, "removed since registration", {}))
        for rel, what, extra in changes:
            shown = self._shown(ds, rel)
            findings.append(
                self.finding(
                    ctx,
                    "hash-changed",
                    f"dataset {ds.name}: file {shown} {what} (v{version.version})",
                    severity=Severity.HIGH,
                    evidence={
                        "dataset": ds.name,
                        "file": shown,
                        "change": what,
                        "registered_version": version.version,
                        "registered_id": version.id,
                        **extra,
                    },
                    location=Location(path=shown),
                    remediation="Treat the data as tampered with until explained: compare it with "
                    "its source (`bastion data verify` names changed rows), then re-register it.",
                )
            )
        return len(changes)
