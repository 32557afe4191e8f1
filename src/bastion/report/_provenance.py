"""Data provenance and lineage for the HTML report, read from the ``governance.data-sources`` notes.

The data-sources audit stores each dataset's registered version (id, number, Merkle root,
source, licence, owner, registration time), its parent chain (``provenance.lineage``, JSON) and
the model versions ``bastion harden`` trained on it (``lineage.trained_models``, JSON) in its
``CheckResult.notes``. This module turns them into one entry per dataset of the report, so a
stored report re-renders the same section. Only ``bastion.core`` is imported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from bastion.core.report import Report
from bastion.core.results import CheckResult

logger = logging.getLogger(__name__)

#: The check whose notes carry provenance.
CHECK_ID = "governance.data-sources"


@dataclass
class DatasetProvenance:
    """One dataset's provenance as the report recorded it.

    Attributes:
        name: the dataset asset's name.
        path: its path as configured (``None`` when unknown).
        status: ``registered``, ``unregistered`` or ``not-audited`` (the audit did not run).
        reason: why it was not audited (the skip or error reason).
        facts: ``{label: value}`` of the registered version (version id, Merkle root, source ...).
        lineage: the parent chain, newest first: ``{id, version, merkle_root, created, removed_rows}``.
        trained: model versions trained on it: ``{model, asset, version, procedure,
            dataset_version, created, in_report}``.
        anchor: the HTML id of its entry.
    """

    name: str
    path: str | None = None
    status: str = "not-audited"
    reason: str | None = None
    facts: dict[str, str] = field(default_factory=dict)
    lineage: list[dict[str, Any]] = field(default_factory=list)
    trained: list[dict[str, Any]] = field(default_factory=list)
    anchor: str = ""


_FACTS = (
    ("Registered version", "provenance.version"),
    ("Version id", "provenance.version_id"),
    ("Merkle root", "provenance.merkle_root"),
    ("Source", "provenance.source"),
    ("Licence", "provenance.licence"),
    ("Owner", "provenance.owner"),
    ("Registered", "provenance.registered"),
)


def _json_list(notes: dict[str, str], key: str, where: str) -> list[dict[str, Any]]:
    raw = notes.get(key)
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        logger.warning("%s: note %s is not JSON; left out", where, key)
        return []
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def dataset_provenance(report: Report) -> list[DatasetProvenance]:
    """One entry per dataset asset of ``report`` (and per dataset the audit ran on), by name."""
    audits: dict[str, CheckResult] = {c.asset: c for c in report.checks if c.id == CHECK_ID and c.asset}
    names = [a.name for a in report.assets if a.kind == "dataset"]
    names += [n for n in audits if n not in names]
    paths = {a.name: a.path for a in report.assets}
    in_report = {a.name for a in report.assets}
    out: list[DatasetProvenance] = []
    for name in names:
        entry = DatasetProvenance(name=name, path=paths.get(name), anchor=f"provenance-{name}")
        check = audits.get(name)
        if check is None or check.status != "ok":
            entry.reason = (
                check.reason
                if check is not None
                else next(
                    (s.reason for s in report.skipped if s.check == CHECK_ID and s.asset == name),
                    f"{CHECK_ID} did not run in this assessment",
                )
            )
            out.append(entry)
            continue
        notes = check.notes
        entry.status = "registered" if notes.get("provenance.version_id") else "unregistered"
        entry.facts = {label: notes[key] for label, key in _FACTS if notes.get(key)}
        where = f"{CHECK_ID} on {name}"
        entry.lineage = _json_list(notes, "provenance.lineage", where)
        entry.trained = [
            {**t, "in_report": t.get("model") in in_report}
            for t in _json_list(notes, "lineage.trained_models", where)
        ]
        out.append(entry)
    return out


def as_context(entries: list[DatasetProvenance]) -> list[dict[str, Any]]:
    """Plain dicts for the template."""
    return [dict(e.__dict__) for e in entries]
