"""The run store: save reports, list runs, read any report back.

Any SQLAlchemy URL works; SQLite (the default, ``.bastion/bastion.db`` in the current folder) and
PostgreSQL (``postgresql+psycopg://…``, the ``sql`` extra) are tested. Opening a store runs the
Alembic migrations to head. Every error is a :class:`StoreError` with one line naming the URL
without its credentials (the password, and ``?password=``, ``sslpassword``, ``passfile`` and every
other query parameter :func:`bastion.core.redact.is_secret_name` calls secret, masked ``***``),
and the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sqlite3
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from bastion.core.errors import ConfigError, MissingExtraError
from bastion.core.redact import redact_text, redact_url, url_secrets
from bastion.core.report import Report
from bastion.core.settings import DEFAULT_DB, check_default_store, load_settings
from bastion.core.severity import FAIL_ON_CHOICES, Severity
from bastion.store.errors import AmbiguousRun, RunNotFound, StoreError
from bastion.store.models import AssetRow, CheckResultRow, FindingRow, RunRow
from bastion.store.report_versions import migrate_report

logger = logging.getLogger(__name__)

#: Seconds to wait for a database server to accept a connection.
CONNECT_TIMEOUT_S = 5
#: Shortest id prefix ``get_report`` accepts.
MIN_PREFIX = 4
#: Most runs :meth:`Store.list_runs` lists at once (``bastion history -n``).
MAX_LIST_LIMIT = 1_000_000
#: What a run reference can be besides ``latest``: a run id (uuid4 hex, at most 64 characters
#: like the column) or a prefix of one. Anything else cannot name a run and is not sent to the
#: database (a reference that is not UTF-8 could not even be encoded for it).
_RUN_REF = re.compile(r"[0-9a-fA-F]{1,64}")
#: Where the Alembic environment and revisions live (inside the package; no ``alembic.ini``).
MIGRATIONS_DIR = Path(__file__).parent / "migrations"

_ASSET_COLUMNS = ("name", "kind", "path", "url", "format", "framework", "owner", "sha256", "scan_verdict")
_TIMEOUT_BACKENDS = ("postgresql", "mysql", "mariadb")
#: Serialises migrations within a process: Alembic's ``context`` is process-global.
_MIGRATION_LOCK = threading.Lock()
#: PostgreSQL advisory-lock key held while migrating ("bastion" in ASCII).
_PG_LOCK_KEY = 0x62617374696F6E


class RunSummary(BaseModel):
    """One line of ``bastion history``.

    Attributes:
        id: the run id (uuid4 hex).
        started: when the run started, timezone-aware UTC.
        status: ``ok`` or ``error`` (incomplete).
        command: ``assess``, ``scan`` …
        project: the project name, if any.
        seconds: wall-clock duration.
        counts: gating findings per severity.
        max_severity: highest gating severity (``None``: no gating finding).
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    started: dt.datetime
    status: str
    command: str
    project: str | None
    seconds: float
    counts: dict[str, int]
    max_severity: Severity | None


# --------------------------------------------------------------------------- URLs


def safe_url(url: str | URL) -> str:
    """``url`` as a string with its credentials masked (``***``), safe for messages and logs.

    The password, and every password-like query parameter (libpq's ``?password=``,
    ``sslpassword``, ``passfile``, and whatever :func:`bastion.core.redact.redact_url` treats
    as secret), are masked.
    """
    try:
        return redact_url(make_url(url).render_as_string(hide_password=True))
    except (ArgumentError, ValueError, TypeError):
        return redact_url(str(url))


def default_url(db: str | None = None) -> str:
    """The store URL: ``db`` (``--db``), else ``BASTION_DB``, else ``DEFAULT_DB``.

    A relative SQLite path is resolved against the current folder, as MLflow keeps ``./mlruns``.

    Raises:
        StoreError: the URL does not parse.
        ConfigError: the default store is reached through a symbolic link
            (:func:`bastion.core.settings.check_default_store`).
    """
    url = load_settings(db_url=db).db_url
    return _resolve_sqlite(_store_url(url)).render_as_string(hide_password=False)


def _refuse_linked_default(url: str) -> None:
    """:func:`~bastion.core.settings.check_default_store` of the current folder when ``url`` is the default.

    The default store (``DEFAULT_DB``, ``.bastion/bastion.db`` in the current folder) is not
    followed through a symbolic link; the same URL given in ``BASTION_DB`` is the user's choice.

    Raises:
        ConfigError: it is reached through a symbolic link.
    """
    if url == DEFAULT_DB and os.environ.get("BASTION_DB") != url:
        check_default_store(".")


def _store_url(url: str) -> URL:
    """``url`` parsed, once :func:`_refuse_linked_default` has passed it (every store entry point).

    Raises:
        ConfigError: the default store is reached through a symbolic link.
        StoreError: ``url`` is not a database URL.
    """
    _refuse_linked_default(url)
    return _parse(url)


def _parse(url: str | URL) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError, TypeError) as exc:
        hint = ""
        if "://" not in str(url):  # a plain path, as people often type it
            hint = f" (a database URL, e.g. sqlite:///{url} for a SQLite file)"
        raise StoreError(f"invalid database URL {safe_url(url)}: {_reason(exc, str(url))}{hint}") from exc


def _sqlite_file(u: URL) -> Path | None:
    """The database file of a SQLite URL, or ``None`` (not SQLite, in memory, or URI mode)."""
    if u.get_backend_name() != "sqlite":
        return None
    db = u.database
    if not db or db == ":memory:" or db.startswith("file:") or _truthy(u.query.get("uri")):
        return None
    return Path(db)


def _truthy(value: str | tuple[str, ...] | None) -> bool:
    if isinstance(value, tuple):
        value = value[-1] if value else None
    return value is not None and value.lower() in ("1", "true", "yes", "on")


def _resolve_sqlite(u: URL) -> URL:
    path = _sqlite_file(u)
    if path is None or path.is_absolute():
        return u
    return u.set(database=os.path.abspath(path))


def _reason(exc: BaseException, url: str) -> str:
    """One line explaining ``exc``, with the URL's password and secret query values removed."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    reason = lines[0] if lines else type(orig).__name__
    secrets = {value for _, value in url_secrets(url)}
    try:
        password = make_url(url).password
    except (ArgumentError, ValueError, TypeError):
        password = None
    if password:
        secrets.add(str(password))
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            reason = reason.replace(secret, "***")
        elif secret in reason:
            # a short secret cannot be masked without mangling the text: drop the driver's words
            return type(orig).__name__
    return redact_text(reason)


def _error(action: str, url: str, exc: BaseException) -> StoreError:
    return StoreError(f"{action} {safe_url(url)}: {_reason(exc, url)}")


# --------------------------------------------------------------------------- engines, migrations


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite would otherwise commit before DDL; SQLAlchemy's "begin" event then owns the transaction.
    dbapi_connection.isolation_level = None


def server_connect_args(u: URL, *, application_name: str | None = None) -> dict[str, Any]:
    """Driver options for a database server: a connect timeout; on PostgreSQL, TCP keepalives.

    ``connect_timeout`` (:data:`CONNECT_TIMEOUT_S`) for PostgreSQL, MySQL and MariaDB, and on
    PostgreSQL keepalives (a peer gone from the network is noticed in about 25 s, not the
    kernel's two hours) and ``application_name`` (shown in ``pg_stat_activity``). Options the
    URL sets itself are left to it. Empty for SQLite.
    """
    args: dict[str, Any] = {}
    backend = u.get_backend_name()
    if backend in _TIMEOUT_BACKENDS and "connect_timeout" not in u.query:
        args["connect_timeout"] = CONNECT_TIMEOUT_S
    if backend == "postgresql":
        own: dict[str, Any] = {
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        if application_name is not None:
            own["application_name"] = application_name
        args.update({k: v for k, v in own.items() if k not in u.query})
    return args


def _make_engine(u: URL, raw: str, *, create_dirs: bool, exclusive: bool = False) -> Engine:
    """An engine for ``u``; ``exclusive`` (SQLite): every transaction is ``BEGIN IMMEDIATE``.

    ``exclusive`` makes a SQLite migration one transaction (DDL included) that holds the write
    lock from its first statement, so concurrent processes migrate one after the other.
    """
    connect_args = server_connect_args(u)
    backend = u.get_backend_name()
    path = _sqlite_file(u)
    if path is not None and create_dirs:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _error("cannot create the folder of", raw, exc) from exc
    try:
        engine = create_engine(u, connect_args=connect_args, pool_pre_ping=True)
    except ImportError as exc:
        raise MissingExtraError(exc.name or u.get_driver_name(), "sql") from exc
    except (ArgumentError, SQLAlchemyError, TypeError) as exc:
        raise _error("invalid database URL", raw, exc) from exc
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        if exclusive:
            event.listen(engine, "connect", _sqlite_driver_autocommit)
            event.listen(engine, "begin", _sqlite_begin_immediate)
    return engine


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for the store's migrations, built in code (no ``alembic.ini``).

    Args:
        connection: an open connection the migrations run on (``config.attributes["connection"]``).
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest Alembic revision this Bastion ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships revisions
        raise StoreError(f"no store migrations found in {MIGRATIONS_DIR}")
    return head


def _current_revision(conn: Connection, url: str) -> str | None:
    """The database's revision; raises if it is one this Bastion does not know (a newer one)."""
    current = MigrationContext.configure(conn).get_current_revision()
    if current is not None:
        script = ScriptDirectory.from_config(alembic_config())
        known = {rev.revision for rev in script.walk_revisions()}
        if current not in known:
            raise StoreError(
                f"database {safe_url(url)} has schema revision {current}, newer than this "
                f"Bastion knows ({head_revision()}); upgrade bastion-ml"
            )
    return current


def _migrate(conn: Connection, url: str) -> str:
    head = head_revision()
    current = _current_revision(conn, url)
    if current != head:
        logger.info("store %s: migrating schema %s -> %s", safe_url(url), current, head)
        command.upgrade(alembic_config(conn), "head")
    return head


def _upgrade_engine(u: URL, url: str, engine: Engine) -> str:
    """Migrate the database of ``engine`` to head, safely against concurrent migrators.

    A database already at head is only read. Otherwise, within a process a lock serialises
    migrations (Alembic's context is global); across processes, SQLite migrates under
    ``BEGIN IMMEDIATE`` on a dedicated engine, PostgreSQL under a transaction-scoped advisory
    lock; the loser then finds the schema at head.
    """
    try:
        with engine.connect() as conn:  # the usual case: already at head, nothing to lock or write
            head = head_revision()
            if _current_revision(conn, url) == head:
                return head
    except SQLAlchemyError as exc:
        raise _error("cannot open database", url, exc) from exc
    own = _sqlite_file(u) is not None
    mig = _make_engine(u, url, create_dirs=False, exclusive=True) if own else engine
    try:
        with _MIGRATION_LOCK, mig.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            return _migrate(conn, url)
    except SQLAlchemyError as exc:
        raise _error("cannot open database", url, exc) from exc
    finally:
        if own:
            mig.dispose()


def upgrade(url: str) -> str:
    """Bring the database at ``url`` to the newest schema (creating it if empty).

    Safe to run from several processes at once: one migrates, the others wait and find it done.

    Args:
        url: any SQLAlchemy URL; a SQLite file's folder is created.

    Returns:
        The head revision id.

    Raises:
        StoreError: the database is unreachable or the migration failed.
        MissingExtraError: the URL's driver is not installed.
        ConfigError: the default store is reached through a symbolic link.
    """
    u = _store_url(url)
    engine = _make_engine(u, url, create_dirs=True)
    try:
        return _upgrade_engine(u, url, engine)
    finally:
        engine.dispose()


def preflight(url: str) -> None:
    """Check that ``url`` names a usable store, writing nothing (no file, no table, no row).

    For a SQLite file: an existing file must open read-only as a database; a missing one needs a
    writable folder (or one that can be created). Other databases must accept a connection.
    A schema newer than this Bastion knows is an error.

    Raises:
        StoreError: the URL is invalid, the database unreachable, or the file unusable.
        MissingExtraError: the URL's driver is not installed.
        ConfigError: the default store is reached through a symbolic link.
    """
    u = _store_url(url)
    path = _sqlite_file(u)
    if path is not None:
        path = Path(os.path.abspath(path))
        if not path.exists():
            _check_creatable(path, url)
            return
        if not path.is_file():
            raise StoreError(f"cannot open database {safe_url(url)}: {path} is not a file")
        # a run writes its results at the end: a read-only file (or a folder where SQLite cannot
        # make its journal) would lose them after all the work; say so before it starts
        if not os.access(path, os.W_OK):
            raise StoreError(f"cannot write database {safe_url(url)}: {path} is read-only")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise StoreError(
                f"cannot write database {safe_url(url)}: its folder {path.parent} is not writable"
            )
        uri = path.as_uri() + "?mode=ro"

        def _read_only() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True, timeout=CONNECT_TIMEOUT_S)

        engine = create_engine("sqlite://", creator=_read_only)
        probe = "SELECT count(*) FROM sqlite_master"
    else:
        engine = _make_engine(u, url, create_dirs=False)
        probe = "SELECT count(*) FROM sqlite_master" if u.get_backend_name() == "sqlite" else "SELECT 1"
    try:
        with engine.connect() as conn:
            conn.execute(text(probe))
            _current_revision(conn, url)
            conn.rollback()
    except SQLAlchemyError as exc:
        raise _error("cannot open database", url, exc) from exc
    finally:
        engine.dispose()


def _check_creatable(path: Path, url: str) -> None:
    folder = path.parent
    while not folder.exists():
        if folder.parent == folder:
            break
        folder = folder.parent
    if not folder.is_dir():
        raise StoreError(f"cannot create database {safe_url(url)}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(f"cannot create database {safe_url(url)}: {folder} is not writable")


# --------------------------------------------------------------------------- the store


def _utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC; a naive value is taken to be UTC already (SQLite drops the zone)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


class Store:
    """The run store over one database. Open it with :meth:`Store.open`.

    Example:
        >>> store = Store.open("sqlite:///.bastion/bastion.db")  # doctest: +SKIP
        >>> run_id = store.save_report(report)  # doctest: +SKIP
        >>> store.get_report(run_id[:8]) == report  # doctest: +SKIP
        True
    """

    def __init__(self, *, engine: Engine, url: str) -> None:
        """Store an engine whose database is already at the head revision; use :meth:`open`."""
        self._engine = engine
        self._url = url

    @classmethod
    def open(cls, url: str | None = None) -> Store:
        """Connect to ``url`` and bring its schema to head.

        Args:
            url: any SQLAlchemy URL; ``None`` → :func:`default_url`. A SQLite file's folder is
                created; servers get a connect timeout of ``CONNECT_TIMEOUT_S`` seconds.

        Raises:
            StoreError: the URL is invalid, the database unreachable, or the migration failed.
            MissingExtraError: the URL's driver is not installed (``pip install 'bastion-ml[sql]'``).
            ConfigError: the default store is reached through a symbolic link
                (:func:`bastion.core.settings.check_default_store`).
        """
        url = url if url is not None else default_url()
        u = _store_url(url)
        engine = _make_engine(u, url, create_dirs=True)
        try:
            _upgrade_engine(u, url, engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine=engine, url=url)

    @classmethod
    def open_read_only(cls, url: str | None = None) -> Store | None:
        """The store at ``url`` as it is, read only: ``None`` when there is none yet or it is older.

        Nothing is created, migrated or written (``bastion assess --dry-run`` reads the recorded
        model versions this way): a SQLite file is opened with ``mode=ro``; a database whose
        schema is not at the head revision is not read (``None``), since a real run would
        migrate it first.

        Raises:
            StoreError: the database is unreachable or its schema newer than this Bastion knows.
            ConfigError: the default store is reached through a symbolic link.
        """
        url = url if url is not None else default_url()
        u = _store_url(url)
        path = _sqlite_file(u)
        if path is not None:
            path = Path(os.path.abspath(path))
            if not path.is_file():
                return None
            uri = path.as_uri() + "?mode=ro"
            engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True))
        else:
            engine = _make_engine(u, url, create_dirs=False)
        try:
            with engine.connect() as conn:
                current = _current_revision(conn, url)
        except SQLAlchemyError as exc:
            engine.dispose()
            raise _error("cannot open database", url, exc) from exc
        if current != head_revision():
            engine.dispose()
            return None
        return cls(engine=engine, url=url)

    @property
    def url(self) -> str:
        """The store's URL with its password masked."""
        return safe_url(self._url)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for the store's own modules: versions, audit, provenance)."""
        return self._engine

    def check(self) -> None:
        """Check the database still answers and is at the head revision; writes nothing.

        Raises:
            StoreError: it does not answer, or its schema is not the head revision.
        """
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                current = _current_revision(conn, self._url)
        except SQLAlchemyError as exc:
            raise _error("cannot reach database", self._url, exc) from exc
        if current != head_revision():
            raise StoreError(
                f"database {self.url} is at schema revision {current}, expected {head_revision()}"
            )

    def save_report(self, report: Report, *, fail_on: str | None = None) -> str:
        """Store ``report`` and its assets, check results and findings in one transaction.

        Args:
            report: the whole report; stored as JSON (NaN and infinities become ``null``) and
                as rows for queries. Its ``run.id`` is the run's key.
            fail_on: the ``--fail-on`` gate the run used, if any.

        Returns:
            The run id.

        Raises:
            StoreError: a run with that id is already stored, or the write failed, whatever the
                driver raised (nothing is written).
            ConfigError: ``fail_on`` is not one of ``FAIL_ON_CHOICES``.
        """
        if fail_on is not None and fail_on not in FAIL_ON_CHOICES:
            raise ConfigError(f"fail_on must be one of {', '.join(FAIL_ON_CHOICES)}, got {fail_on!r}")
        run_id = report.run.id
        try:
            row = _run_row(report, fail_on)
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                if session.get(RunRow, run_id) is not None:
                    raise StoreError(f"run {run_id} is already stored in {self.url}")
                session.add(row)
        except StoreError:
            raise
        except SQLAlchemyError as exc:
            raise _error(f"cannot save run {run_id} to", self._url, exc) from exc
        except Exception as exc:
            # anything else the driver raises (a value past the database's integer range is an
            # OverflowError, not a DBAPI error) is a store error too, never an "internal error"
            raise StoreError(
                f"cannot save run {run_id} to {self.url}: {type(exc).__name__}: {_reason(exc, self._url)}"
            ) from exc
        logger.info("stored run %s in %s", run_id, self.url)
        return run_id

    def list_runs(self, limit: int | None = 20, project: str | None = None) -> list[RunSummary]:
        """Stored runs, newest first.

        Args:
            limit: at most this many, 1 to :data:`MAX_LIST_LIMIT` (``None``: all).
            project: only runs of this project.

        Raises:
            ConfigError: ``limit`` is out of range.
            StoreError: the read failed.
        """
        stmt = select(
            RunRow.id,
            RunRow.started,
            RunRow.status,
            RunRow.command,
            RunRow.project,
            RunRow.seconds,
            RunRow.counts,
            RunRow.max_severity,
        ).order_by(RunRow.started.desc(), RunRow.id.desc())
        if project is not None:
            stmt = stmt.where(RunRow.project == project)
        if limit is not None:
            if not 1 <= limit <= MAX_LIST_LIMIT:
                raise ConfigError(f"limit must be 1 to {MAX_LIST_LIMIT}, got {limit}")
            stmt = stmt.limit(limit)
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(stmt).all()
        except SQLAlchemyError as exc:
            raise _error("cannot read runs from", self._url, exc) from exc
        return [
            RunSummary(
                id=r.id,
                started=_utc(r.started),
                status=r.status,
                command=r.command,
                project=r.project,
                seconds=r.seconds,
                counts=dict(r.counts or {}),
                max_severity=Severity(r.max_severity) if r.max_severity else None,
            )
            for r in rows
        ]

    def resolve(self, ref: str) -> str:
        """The full id of the run ``ref`` names: a full id, a unique prefix (≥ 4 chars), or ``latest``.

        Raises:
            RunNotFound: nothing matches, the prefix is too short, or ``ref`` cannot be a run id
                (not hexadecimal, e.g. not ASCII or not even UTF-8); the database is not asked.
            AmbiguousRun: the prefix matches several runs; the message lists them.
            StoreError: the read failed.
        """
        ref = ref.strip()
        if ref != "latest" and not _RUN_REF.fullmatch(ref):
            raise RunNotFound(
                f"run {ref!r} not found in {self.url}: a run is named by its id (hexadecimal), "
                "a unique prefix of it, or 'latest'",
                ref,
            )
        try:
            with self._engine.connect() as conn:
                if ref == "latest":
                    found = conn.execute(
                        select(RunRow.id).order_by(RunRow.started.desc(), RunRow.id.desc()).limit(1)
                    ).scalar_one_or_none()
                    if found is None:
                        raise RunNotFound(f"no runs stored in {self.url}", ref)
                    return found
                exact = conn.execute(select(RunRow.id).where(RunRow.id == ref)).scalar_one_or_none()
                if exact is not None:
                    return exact
                if len(ref) < MIN_PREFIX:
                    raise RunNotFound(
                        f"run {ref!r} not found in {self.url}: give the full id, "
                        f"at least {MIN_PREFIX} characters of it, or 'latest'",
                        ref,
                    )
                ids = list(
                    conn.execute(
                        select(RunRow.id)
                        .where(RunRow.id.startswith(ref, autoescape=True))
                        .order_by(RunRow.started.desc(), RunRow.id.desc())
                        .limit(6)
                    ).scalars()
                )
        except SQLAlchemyError as exc:
            raise _error("cannot read runs from", self._url, exc) from exc
        if not ids:
            raise RunNotFound(f"run {ref!r} not found in {self.url}", ref)
        if len(ids) > 1:
            shown = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "")
            raise AmbiguousRun(
                f"run prefix {ref!r} is ambiguous in {self.url}: matches {shown}", ref, ids[:5]
            )
        return ids[0]

    def get_report(self, ref: str) -> Report:
        """The stored report of run ``ref``, migrated to the current ``schema_version``.

        Args:
            ref: a full run id, a unique prefix of one (at least 4 characters), or ``latest``.

        Raises:
            RunNotFound: nothing matches.
            AmbiguousRun: the prefix matches several runs.
            StoreError: the read failed, or the stored report cannot be read by this Bastion.
        """
        run_id = self.resolve(ref)
        try:
            with self._engine.connect() as conn:
                row = conn.execute(select(RunRow.report, RunRow.fail_on).where(RunRow.id == run_id)).one()
        except SQLAlchemyError as exc:
            raise _error(f"cannot read run {run_id} from", self._url, exc) from exc
        return self._to_report(run_id, row.report, fail_on=row.fail_on)

    def previous_run(
        self, project: str | None, *, before: str | None = None, command: str | None = None
    ) -> Report | None:
        """The newest stored run of ``project`` (e.g. the baseline for the next run), if any.

        Args:
            project: the project name (``None``: runs without a project).
            before: a run id; only runs that started before it (and are not it) count.
            command: only runs of this command (``assess``, ``scan``).

        Raises:
            RunNotFound: ``before`` is not a stored run.
            StoreError: the read failed.
        """
        stmt = select(RunRow.id, RunRow.report, RunRow.fail_on)
        stmt = stmt.where(RunRow.project.is_(None) if project is None else RunRow.project == project)
        if command is not None:
            stmt = stmt.where(RunRow.command == command)
        try:
            with self._engine.connect() as conn:
                if before is not None:
                    started = conn.execute(
                        select(RunRow.started).where(RunRow.id == before)
                    ).scalar_one_or_none()
                    if started is None:
                        raise RunNotFound(f"run {before!r} not found in {self.url}", before)
                    stmt = stmt.where(RunRow.started < started, RunRow.id != before)
                row = conn.execute(stmt.order_by(RunRow.started.desc(), RunRow.id.desc()).limit(1)).first()
        except SQLAlchemyError as exc:
            raise _error("cannot read runs from", self._url, exc) from exc
        return None if row is None else self._to_report(row.id, row.report, fail_on=row.fail_on)

    def close(self) -> None:
        """Release the database connections."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        """Use as a context manager; closes on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        self.close()

    def __repr__(self) -> str:
        """``Store('<url without password>')``."""
        return f"Store({self.url!r})"

    def _to_report(self, run_id: str, data: Any, *, fail_on: str | None = None) -> Report:
        if isinstance(data, str):  # a driver that hands JSON back as text
            data = json.loads(data)
        if not isinstance(data, dict):
            raise StoreError(f"stored run {run_id} in {self.url} holds no report object")
        try:
            stored_run = data.get("run")
            # a run stored before schema 1.6.0 kept its gate only in the row's fail_on column; a
            # later one records its own (None included: the round trip stays exact)
            before_gate = isinstance(stored_run, dict) and "fail_on" not in stored_run
            data = migrate_report(data)
            run = data.get("run")
            if before_gate and isinstance(run, dict) and fail_on in FAIL_ON_CHOICES:
                run["fail_on"] = fail_on
            return Report.model_validate(data)
        except StoreError as exc:
            raise StoreError(f"stored run {run_id} in {self.url}: {exc}") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise StoreError(
                f"stored run {run_id} in {self.url} is not a valid report: {where}: {first['msg']}"
            ) from exc


def _run_row(report: Report, fail_on: str | None) -> RunRow:
    """The rows for ``report``; built from its JSON form so every value is JSON-safe."""
    data: dict[str, Any] = json.loads(report.model_dump_json())
    max_sev = report.max_severity()
    row = RunRow(
        id=report.run.id,
        project=report.run.project,
        command=report.run.command,
        status=report.run.status,
        started=_utc(report.run.started),
        seconds=report.run.seconds,
        schema_version=report.schema_version,
        bastion_version=report.bastion_version,
        config_hash=report.reproducibility.config_hash,
        seed=report.reproducibility.seed,
        budget=report.run.budget,
        fail_on=fail_on,
        max_severity=max_sev.value if max_sev is not None else None,
        counts=report.counts(),
        report=data,
    )
    row.assets = [AssetRow(**{k: asset.get(k) for k in _ASSET_COLUMNS}) for asset in data["assets"]]
    row.check_results = [
        CheckResultRow(
            check_id=check["id"],
            asset=check["asset"],
            status=check["status"],
            reason=check["reason"],
            metrics=check["metrics"],
            intervals=check["intervals"],
            series=check["series"],
            budget_used=check["budget_used"],
            seconds=check["seconds"],
        )
        for check in data["checks"]
    ]
    row.findings = [
        FindingRow(
            fingerprint=finding["fingerprint"],
            rule_id=finding["rule_id"],
            severity=finding["severity"],
            threat=finding["threat"],
            asset=finding["asset"],
            title=finding["title"],
            location=finding["location"],
            evidence=finding["evidence"],
            atlas=finding["atlas"],
            state=finding["state"],
            waived=finding["waiver"] is not None,
        )
        for finding in data["findings"]
    ]
    return row
