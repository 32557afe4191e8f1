"""``governance.runtime``: runtime evidence — open incidents the guard recorded for an asset.

``bastion guard`` turns every alert into an incident in the store's ``incidents`` table (rule,
severity, ATLAS techniques, key id, numeric evidence). This check reads the open incidents of
each model/endpoint asset (matched by asset name = the guard's ``name``) over the last ``days``
days and turns each incident rule into one finding ``governance.runtime.<incident rule>``
(e.g. ``governance.runtime.guard.extraction.class-coverage``) with the incident's severity (the
highest seen) and ATLAS ids (their union). Evidence: count, first and last seen (UTC ISO),
the key ids involved (at most 20), the source, and the numeric evidence of the newest incident
— never inputs (the guard never stores them in incidents).

Needs the store URL of the run (``ctx.facts["__run__"]["db_url"]``); skipped with a reason when
the run has none. A store whose schema lacks the ``incidents`` table holds no runtime evidence
(metrics 0, a note). Metrics: ``runtime_incidents_open``, ``runtime_incident_rules``,
``runtime_keys_flagged``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from bastion.core.check import Check, CheckContext
from bastion.core.findings import Finding, Location, Threat
from bastion.core.redact import redact_url
from bastion.core.registry import register
from bastion.core.results import CheckResult
from bastion.core.severity import Severity
from bastion.store.errors import StoreError

log = logging.getLogger(__name__)

_MAX_KEYS = 20


class RuntimeParams(BaseModel):
    """Parameters of ``governance.runtime``.

    Attributes:
        days: how far back to look for open incidents.
        max_incidents: the most incidents read per asset (newest first).
    """

    model_config = ConfigDict(extra="forbid")

    days: int = Field(default=30, ge=1, le=3650)
    max_incidents: int = Field(default=100_000, ge=1)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _severity(name: str) -> Severity:
    try:
        return Severity(name)
    except ValueError:
        return Severity.MEDIUM


def read_open_incidents(
    db_url: str, asset: str, *, since: dt.datetime, limit: int
) -> list[dict[str, Any]] | None:
    """Open incidents of ``asset`` created at or after ``since`` (newest first).

    Returns:
        The rows as dicts, or ``None`` when the store holds no incidents table (a SQLite file
        that does not exist is not created).

    Raises:
        StoreError: the database cannot be opened or read.
    """
    from pathlib import Path

    from sqlalchemy import create_engine, inspect, select
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from bastion.store.models import IncidentRow
    from bastion.store.repository import default_url, safe_url

    try:
        url = make_url(default_url(db_url))  # a relative SQLite path resolves as the store does
        if url.get_backend_name() == "sqlite":
            db = url.database or ""
            memory = not db or db == ":memory:" or db.startswith("file:") or "uri" in url.query
            if not memory and not Path(db).is_file():
                return None
        engine = create_engine(url)
    except (SQLAlchemyError, ValueError) as exc:
        raise StoreError(f"governance.runtime: cannot open store {safe_url(db_url)}: {exc}") from exc
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(IncidentRow.__tablename__):
                return None
            stmt = (
                select(*IncidentRow.__table__.c)
                .where(IncidentRow.asset == asset, IncidentRow.status == "open")
                .order_by(IncidentRow.created.desc())
                .limit(limit)
            )
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
    except SQLAlchemyError as exc:
        raise StoreError(f"governance.runtime: cannot read incidents from {safe_url(db_url)}: {exc}") from exc
    finally:
        engine.dispose()
    for r in rows:
        r["created"] = _utc(r["created"])
    return [r for r in rows if r["created"] >= since]


@register("check")
class RuntimeEvidence(Check):
    """Open runtime incidents (guard alerts) of a model or endpoint become findings."""

    id: ClassVar[str] = "governance.runtime"
    title: ClassVar[str] = "Runtime evidence (guard incidents)"
    threat: ClassVar[Threat] = Threat.RUNTIME
    applies_to: ClassVar[frozenset[str]] = frozenset({"model", "endpoint"})
    order: ClassVar[int] = 100
    Params = RuntimeParams
    references: ClassVar[tuple[str, ...]] = ("MITRE ATLAS, https://atlas.mitre.org",)
    threat_model: ClassVar[str] = (
        "Not an attack: evidence that the deployed model was attacked (extraction, evasion probing, "
        "canary hits) as seen by bastion guard in production."
    )
    remediation: ClassVar[str] = (
        "Investigate the keys named in the evidence (audit log: `bastion guard verify-log`), revoke or "
        "rotate them, then close the incident."
    )

    def applicable(self, ctx: CheckContext) -> str | None:
        """Skipped when the run has no store URL."""
        if not ctx.facts.get("__run__", {}).get("db_url"):
            return "no store in this run (facts['__run__']['db_url']); runtime incidents live in the store"
        return None

    def run(self, ctx: CheckContext) -> CheckResult:
        """Read the asset's open incidents and group them by rule into findings."""
        start = time.monotonic()
        params = ctx.params if isinstance(ctx.params, RuntimeParams) else RuntimeParams()
        url = str(ctx.facts.get("__run__", {}).get("db_url"))
        since = dt.datetime.now(dt.UTC) - dt.timedelta(days=params.days)
        rows = read_open_incidents(url, ctx.asset.name, since=since, limit=params.max_incidents)
        notes: dict[str, str] = {"window": f"open incidents of the last {params.days} day(s)"}
        if rows is None:
            notes["runtime_incidents_open"] = "the store holds no incidents table (no guard wrote to it)"
            rows = []
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(str(r["rule_id"]), []).append(r)
        findings = [self._finding(ctx, rule, grp) for rule, grp in sorted(groups.items())]
        keys = {r["key_id"] for r in rows if r["key_id"]}
        return CheckResult(
            id=self.id,
            asset=ctx.asset.name,
            metrics={
                "runtime_incidents_open": float(len(rows)),
                "runtime_incident_rules": float(len(groups)),
                "runtime_keys_flagged": float(len(keys)),
            },
            notes=notes,
            findings=findings,
            seconds=time.monotonic() - start,
        )

    def _finding(self, ctx: CheckContext, rule: str, grp: list[dict[str, Any]]) -> Finding:
        sev = max((_severity(str(r["severity"])) for r in grp), key=lambda s: s.rank)
        atlas = sorted({str(a) for r in grp for a in (r["atlas"] or [])})
        keys = sorted({str(r["key_id"]) for r in grp if r["key_id"]})
        newest = grp[0]  # rows are newest first
        details = newest.get("details") or {}
        numeric = {
            k: v
            for k, v in (details.get("evidence") or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        evidence: dict[str, Any] = {
            "incidents": len(grp),
            "first_seen": min(r["created"] for r in grp).isoformat(),
            "last_seen": max(r["created"] for r in grp).isoformat(),
            "key_ids": keys[:_MAX_KEYS],
            "keys": len(keys),
            "sources": sorted({str(r["source"]) for r in grp}),
        }
        if numeric:
            evidence["latest_evidence"] = numeric
        condition = rule.lower()
        return Finding(
            rule_id=f"{self.id}.{condition}",
            severity=sev,
            threat=self.threat,
            title=f"Runtime: {len(grp)} open incident(s) {rule} on {ctx.asset.name} ({len(keys)} key(s))",
            asset=ctx.asset.name,
            location=Location(path=ctx.asset.path, endpoint=redact_url(ctx.asset.url)),
            evidence=evidence,
            atlas=atlas,
            remediation=self.remediation,
            references=list(self.references),
        )
