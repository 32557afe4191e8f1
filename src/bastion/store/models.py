"""SQLAlchemy 2 tables of the store: runs, their assets, check results and findings.

``runs.report`` holds the whole :class:`bastion.core.report.Report` as JSON, so any report
re-renders exactly; the other columns and tables repeat what queries need (history, trends,
inventory) without parsing it. Nothing here holds raw records: only what the report holds.

The schema is created and upgraded by the Alembic migrations in ``migrations/versions``; a
test checks that they match these models. A change here needs a new migration.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: Constraint and index names are fixed by convention, so migrations and models agree.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every store table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class RunRow(Base):
    """One run (``assess``, ``scan`` …): its outcome, and its whole report as JSON.

    ``started`` is stored in UTC (SQLite drops the zone; the repository puts it back).
    """

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str | None] = mapped_column(String(255))
    command: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    started: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    seconds: Mapped[float] = mapped_column(Float)
    schema_version: Mapped[str] = mapped_column(String(32))
    bastion_version: Mapped[str] = mapped_column(String(64))
    config_hash: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int | None] = mapped_column(Integer)
    budget: Mapped[str | None] = mapped_column(String(32))
    fail_on: Mapped[str | None] = mapped_column(String(16))
    max_severity: Mapped[str | None] = mapped_column(String(16))
    counts: Mapped[dict[str, int]] = mapped_column(JSON)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)

    assets: Mapped[list[AssetRow]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )
    check_results: Mapped[list[CheckResultRow]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )
    findings: Mapped[list[FindingRow]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (
        Index("ix_runs_started", "started"),
        Index("ix_runs_project_started", "project", "started"),
    )


class AssetRow(Base):
    """An asset as assessed in one run; ``sha256`` pins the file that was judged."""

    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    path: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    format: Mapped[str | None] = mapped_column(String(64))
    framework: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(255))
    sha256: Mapped[str | None] = mapped_column(String(64))
    scan_verdict: Mapped[str | None] = mapped_column(String(16))

    run: Mapped[RunRow] = relationship(back_populates="assets")

    __table_args__ = (
        Index("ix_assets_run_id", "run_id"),
        Index("ix_assets_sha256", "sha256"),
    )


class CheckResultRow(Base):
    """The outcome of one check (plugin id, asset) in one run, with metrics and curves."""

    __tablename__ = "check_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), ForeignKey("runs.id", ondelete="CASCADE"))
    check_id: Mapped[str] = mapped_column(String(255))
    asset: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    intervals: Mapped[dict[str, Any]] = mapped_column(JSON)
    series: Mapped[dict[str, Any]] = mapped_column(JSON)
    budget_used: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    seconds: Mapped[float] = mapped_column(Float)

    run: Mapped[RunRow] = relationship(back_populates="check_results")

    __table_args__ = (Index("ix_check_results_run_id", "run_id"),)


class FindingRow(Base):
    """A finding as reported in one run, with its fingerprint, baseline state and waiver flag."""

    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), ForeignKey("runs.id", ondelete="CASCADE"))
    fingerprint: Mapped[str] = mapped_column(String(64))
    rule_id: Mapped[str] = mapped_column(String(255))
    severity: Mapped[str] = mapped_column(String(16))
    threat: Mapped[str] = mapped_column(String(32))
    asset: Mapped[str | None] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(Text)
    location: Mapped[dict[str, Any]] = mapped_column(JSON)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    atlas: Mapped[list[str]] = mapped_column(JSON)
    state: Mapped[str | None] = mapped_column(String(16))
    waived: Mapped[bool] = mapped_column(Boolean)

    run: Mapped[RunRow] = relationship(back_populates="findings")

    __table_args__ = (
        Index("ix_findings_run_id", "run_id"),
        Index("ix_findings_fingerprint", "fingerprint"),
    )


class AuditRecordRow(Base):
    """One record of the guard's hash-chained, append-only audit log.

    ``hash`` is SHA-256 over ``prev_hash`` and the canonical JSON of ``record``; ``seq`` is
    gap-free per ``chain`` (one chain per guard deployment), so an edited, inserted or deleted
    record breaks the chain. ``record`` never holds raw inputs (hashes and summaries only).
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str | None] = mapped_column(String(128))
    decision: Mapped[str] = mapped_column(String(32))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    record: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_audit_log_chain_seq", "chain", "seq", unique=True),
        Index("ix_audit_log_key_id", "key_id"),
    )


class ModelVersionRow(Base):
    """A version of a model asset written by ``bastion harden`` (or registered), with lineage.

    ``details`` holds the procedure and its parameters (e.g. PGD-AT ε, DP-SGD (ε, δ) spent),
    ``datasets`` the dataset versions that trained it.
    """

    __tablename__ = "model_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    asset: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    path: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    procedure: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    datasets: Mapped[list[str]] = mapped_column(JSON)

    __table_args__ = (Index("ix_model_versions_asset_version", "asset", "version", unique=True),)


class DatasetVersionRow(Base):
    """A registered dataset version: file hashes, a Merkle root over rows, source, licence, owner."""

    __tablename__ = "dataset_versions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    merkle_root: Mapped[str] = mapped_column(String(64))
    files: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str | None] = mapped_column(Text)
    licence: Mapped[str | None] = mapped_column(String(255))
    owner: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ix_dataset_versions_dataset_version", "dataset", "version", unique=True),)


class IncidentRow(Base):
    """A runtime alert or an incident raised from one (guard alerts, canary hits, ...)."""

    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(64))
    asset: Mapped[str | None] = mapped_column(String(255))
    key_id: Mapped[str | None] = mapped_column(String(128))
    rule_id: Mapped[str] = mapped_column(String(255))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    atlas: Mapped[list[str]] = mapped_column(JSON)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("ix_incidents_created", "created"), Index("ix_incidents_asset", "asset"))
