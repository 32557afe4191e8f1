"""Model versions written by ``bastion harden``, with lineage (the ``model_versions`` table)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, insert, select

from bastion.store.errors import StoreError
from bastion.store.models import ModelVersionRow
from bastion.store.repository import Store


class ModelVersion(BaseModel):
    """One recorded version of a model asset."""

    model_config = ConfigDict(extra="forbid")

    id: str
    asset: str
    version: int
    parent_id: str | None
    created: dt.datetime
    path: str | None
    sha256: str
    procedure: str | None
    details: dict[str, Any]
    datasets: list[str]


def _out(row: ModelVersionRow) -> ModelVersion:
    created = row.created if row.created.tzinfo else row.created.replace(tzinfo=dt.UTC)
    return ModelVersion(
        id=row.id,
        asset=row.asset,
        version=row.version,
        parent_id=row.parent_id,
        created=created,
        path=row.path,
        sha256=row.sha256,
        procedure=row.procedure,
        details=dict(row.details),
        datasets=list(row.datasets),
    )


def add_version(
    store: Store,
    *,
    asset: str,
    path: str,
    sha256: str,
    procedure: str,
    details: dict[str, Any],
    datasets: list[str],
    parent_id: str | None = None,
) -> ModelVersion:
    """Record a new version of ``asset`` (version numbers start at 2; 1 is the file in ``bastion.yaml``).

    Raises:
        StoreError: the database refused the write.
    """
    try:
        with store.engine.begin() as conn:
            current = conn.execute(
                select(func.max(ModelVersionRow.version)).where(ModelVersionRow.asset == asset)
            ).scalar()
            row = {
                "id": uuid.uuid4().hex,
                "asset": asset,
                "version": int(current or 1) + 1,
                "parent_id": parent_id,
                "created": dt.datetime.now(dt.UTC),
                "path": path,
                "sha256": sha256,
                "procedure": procedure,
                "details": details,
                "datasets": datasets,
            }
            conn.execute(insert(ModelVersionRow).values(**row))
    except Exception as exc:
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"cannot record a version of {asset} in {store.url}: {exc}") from exc
    return ModelVersion(**row)


def find_version(
    store: Store,
    *,
    asset: str,
    sha256: str,
    parent_id: str | None = None,
    parent_sha256: str | None = None,
) -> ModelVersion | None:
    """The oldest recorded version of ``asset`` with these exact bytes and the same parent, or ``None``.

    Same parent: the same ``parent_id`` and, when ``parent_sha256`` is given, the same
    ``details["parent_sha256"]`` (the file it was derived from, as scanned). ``bastion harden``
    reuses such a version instead of recording a duplicate when a deterministic procedure
    produces a byte-identical model again.
    """
    for v in list_versions(store, asset):
        if v.sha256 != sha256 or v.parent_id != parent_id:
            continue
        if parent_sha256 is not None and v.details.get("parent_sha256") != parent_sha256:
            continue
        return v
    return None


def list_versions(store: Store, asset: str | None = None) -> list[ModelVersion]:
    """Recorded versions, oldest first (of one asset, or of all)."""
    from sqlalchemy.orm import Session

    with Session(store.engine) as session:
        q = select(ModelVersionRow).order_by(ModelVersionRow.asset, ModelVersionRow.version)
        if asset is not None:
            q = q.where(ModelVersionRow.asset == asset)
        return [_out(r) for r in session.execute(q).scalars().all()]


def latest_version(store: Store, asset: str) -> ModelVersion | None:
    """The newest recorded version of ``asset``, or ``None``."""
    versions = list_versions(store, asset)
    return versions[-1] if versions else None
