"""Stored runs: history and show."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bastion.core.errors import ConfigError
from bastion.core.redact import redact_url
from bastion.core.report import Report
from bastion.core.settings import load_settings, store_hint

log = logging.getLogger(__name__)


def history(*, db_url: str | None = None, limit: int = 20, project: str | None = None) -> list[Any]:
    """Stored runs, newest first (``RunSummary`` objects).

    Raises:
        StoreError: the database cannot be reached.
    """
    from bastion.store import Store

    url = load_settings(db_url=db_url).db_url
    if not _store_exists(url):
        return []
    st = Store.open(url)
    try:
        return list(st.list_runs(limit=limit, project=project))
    finally:
        st.close()


def _store_exists(url: str) -> bool:
    """False for a SQLite URL whose file does not exist (reading must not create it).

    Raises:
        ConfigError: the SQLite path is a folder.
    """
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:
        return True  # let Store.open report the bad URL
    if u.get_backend_name() == "sqlite":
        db = u.database
        if db and db != ":memory:" and Path(str(db)).is_dir():
            raise ConfigError(f"{redact_url(url)}: {db} is a folder, not a database file")
        return bool(db) and db != ":memory:" and Path(str(db)).is_file()
    return True


def show(run: str, *, db_url: str | None = None) -> Report:
    """Re-load a stored report by run id, unique prefix, or ``latest``.

    Raises:
        StoreError: unknown run or unreachable database.
    """
    from bastion.store import Store

    url = load_settings(db_url=db_url).db_url
    if not _store_exists(url):
        hint = store_hint(db_url)
        raise ConfigError(
            f"no runs recorded yet: no database at {redact_url(url)}" + (f"; {hint}" if hint else "")
        )
    st = Store.open(url)
    try:
        return st.get_report(run)
    finally:
        st.close()
