"""Dataset versions in the store (table ``dataset_versions``): register, look up, lineage.

Each version records the Merkle root over the dataset's rows, the per-file entries
(hash, size, rows, row digests), source, licence, owner and time; ``parent_id`` links a
sanitised version to the one it came from. Hashing is done by :mod:`bastion.data.provenance`
(this module imports only ``bastion.core`` and SQLAlchemy).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bastion.store.errors import StoreError
from bastion.store.models import DatasetVersionRow
from bastion.store.repository import Store


@dataclass
class DatasetVersion:
    """One registered version of a dataset (see :class:`bastion.store.models.DatasetVersionRow`).

    ``reused`` is not stored: :func:`bastion.api.data_sanitize` sets it on a recorded version it
    returns instead of registering an identical new one.
    """

    id: str
    dataset: str
    version: int
    parent_id: str | None
    created: dt.datetime
    merkle_root: str
    files: dict[str, Any]
    source: str | None
    licence: str | None
    owner: str | None
    details: dict[str, Any] = field(default_factory=dict)
    reused: bool = False

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary without the per-row digests."""
        bulky = {"row_digests", "row_digests_b64"}
        files = {k: {kk: vv for kk, vv in v.items() if kk not in bulky} for k, v in self.files.items()}
        return {
            "id": self.id,
            "dataset": self.dataset,
            "version": self.version,
            "parent_id": self.parent_id,
            "created": self.created.isoformat(),
            "merkle_root": self.merkle_root,
            "files": files,
            "source": self.source,
            "licence": self.licence,
            "owner": self.owner,
            "details": self.details,
        }


def _engine(store: Store) -> Any:
    # The Store exposes no public engine; this module is part of the store package.
    return store.engine


def _from_row(r: DatasetVersionRow) -> DatasetVersion:
    created = r.created if r.created.tzinfo else r.created.replace(tzinfo=dt.UTC)
    return DatasetVersion(
        id=r.id,
        dataset=r.dataset,
        version=r.version,
        parent_id=r.parent_id,
        created=created,
        merkle_root=r.merkle_root,
        files=dict(r.files or {}),
        source=r.source,
        licence=r.licence,
        owner=r.owner,
        details=dict(r.details or {}),
    )


def register_version(
    store: Store,
    *,
    dataset: str,
    merkle_root: str,
    files: dict[str, Any],
    source: str | None = None,
    licence: str | None = None,
    owner: str | None = None,
    parent_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> DatasetVersion:
    """Record a new version of ``dataset`` (version = latest + 1).

    Raises:
        StoreError: the write failed, or ``parent_id`` names no stored version.
    """
    try:
        with Session(_engine(store), expire_on_commit=False) as s, s.begin():
            if parent_id is not None and s.get(DatasetVersionRow, parent_id) is None:
                raise StoreError(f"parent dataset version {parent_id} not found in {store.url}")
            latest = s.execute(
                select(func.max(DatasetVersionRow.version)).where(DatasetVersionRow.dataset == dataset)
            ).scalar_one_or_none()
            row = DatasetVersionRow(
                id=uuid.uuid4().hex,
                dataset=dataset,
                version=int(latest or 0) + 1,
                parent_id=parent_id,
                created=dt.datetime.now(dt.UTC),
                merkle_root=merkle_root,
                files=files,
                source=source,
                licence=licence,
                owner=owner,
                details=dict(details or {}),
            )
            s.add(row)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot register dataset {dataset!r} in {store.url}: {exc}") from exc
    return _from_row(row)


def latest_version(store: Store, dataset: str) -> DatasetVersion | None:
    """The newest version of ``dataset``, or ``None``."""
    versions = list_versions(store, dataset)
    return versions[-1] if versions else None


def list_versions(store: Store, dataset: str | None = None) -> list[DatasetVersion]:
    """Versions of ``dataset`` (every dataset when ``None``), oldest first."""
    stmt = select(DatasetVersionRow).order_by(DatasetVersionRow.dataset, DatasetVersionRow.version)
    if dataset is not None:
        stmt = stmt.where(DatasetVersionRow.dataset == dataset)
    try:
        with Session(_engine(store)) as s:
            return [_from_row(r) for r in s.execute(stmt).scalars()]
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read dataset versions from {store.url}: {exc}") from exc


def get_version(store: Store, version_id: str) -> DatasetVersion | None:
    """The version with id ``version_id``, or ``None``."""
    try:
        with Session(_engine(store)) as s:
            r = s.get(DatasetVersionRow, version_id)
            return _from_row(r) if r is not None else None
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read dataset versions from {store.url}: {exc}") from exc


def lineage(store: Store, version_id: str) -> list[DatasetVersion]:
    """The chain from ``version_id`` back to its first ancestor (newest first).

    Raises:
        StoreError: ``version_id`` is unknown, or the chain loops.
    """
    out: list[DatasetVersion] = []
    seen: set[str] = set()
    cur: str | None = version_id
    while cur is not None:
        if cur in seen:
            raise StoreError(f"dataset version lineage loops at {cur}")
        seen.add(cur)
        v = get_version(store, cur)
        if v is None:
            raise StoreError(f"dataset version {cur} not found in {store.url}")
        out.append(v)
        cur = v.parent_id
    return out
