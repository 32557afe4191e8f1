"""The guard's hash-chained, append-only audit log and its incidents, over the store's tables.

Each record of a chain (``audit_log``) holds ``seq`` (0, 1, 2 … without gaps), ``prev_hash`` and
``hash = SHA-256(prev_hash ‖ canonical JSON of {chain, seq, key_id, decision, record})``, so
editing, inserting or deleting a record breaks the chain at that point
(:meth:`AuditLog.verify`). The ``created`` column is outside the hash but must equal the
record's hashed ``ts`` (checked by ``verify``); ``id`` is only the row's storage key.
Truncating the newest records is only visible against a head recorded elsewhere
(``expected_head``): the guard logs its head on shutdown and in ``/readyz``.

Alerts become rows of ``incidents``. Nothing here stores raw inputs: callers pass hashes and
summaries. SQLite runs in WAL mode with ``synchronous=NORMAL``: a record committed before the
guard answers survives the guard's process being killed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Text, cast, create_engine, event, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bastion.store.errors import StoreBusy, StoreError
from bastion.store.models import AuditRecordRow, IncidentRow
from bastion.store.repository import safe_url, server_connect_args, upgrade

GENESIS = "0" * 64
#: How often a batch whose ``seq`` another writer took is re-chained before the append fails.
MAX_APPEND_TRIES = 8


#: SQLite page cache of the append connection, in KiB.
APPEND_CACHE_KIB = 256
#: SQLite's busy timeout of appends that may wait (the guard's writer thread, ``append_many``).
BUSY_TIMEOUT_MS = 5000
#: a write probe running longer than this (seconds) means the database is not answering
PROBE_STALL_S = 2.0
#: the audit row insert of the SQLite fast path
_INSERT_SQL = (
    "INSERT INTO audit_log (chain, seq, created, key_id, decision, prev_hash, hash, record) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _is_busy(exc: BaseException) -> bool:
    """SQLite's "database is locked" / "busy": another connection holds the write lock."""
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, sqlite3.OperationalError) and ("locked" in str(orig) or "busy" in str(orig))


def _is_unique_violation(exc: BaseException) -> bool:
    """A ``(chain, seq)`` already taken: SQLite's or PostgreSQL's unique-constraint error."""
    orig = getattr(exc, "orig", exc)
    if isinstance(orig, sqlite3.IntegrityError):
        return "UNIQUE" in str(orig)
    return getattr(orig, "sqlstate", None) == "23505" or "UniqueViolation" in type(orig).__name__


try:  # the C encoder ``json`` uses (absent from a Python built without the accelerator)
    from _json import make_encoder as _make_encoder

    c_make_encoder: Any = _make_encoder
except ImportError:  # pragma: no cover - CPython always has it
    c_make_encoder = None

#: the canonical encoder, built once (``json.dumps`` with these options builds one per call)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces, no NaN; ``json.dumps`` with those options)."""
    return canonical_text(obj).encode()


def canonical_text(obj: Any) -> str:
    """:func:`canonical` as text (ASCII: ``ensure_ascii``); what the audit log stores.

    The guard's usual record is written out by :func:`_guard_record_text`; anything else by the
    C encoder that ``JSONEncoder.encode`` builds for each call, built here directly (the same
    arguments, a fresh circular-reference table each time) without its two Python layers.
    """
    if type(obj) is dict and len(obj) == len(_GUARD_KEYS):
        text = _guard_record_text(obj)
        if text is not None:
            return text
    if c_make_encoder is None:  # a Python without the _json accelerator
        return str(_CANONICAL.encode(obj))
    enc = c_make_encoder({}, _CANONICAL.default, encode_basestring_ascii, None, ":", ",", True, False, False)
    return "".join(enc(obj, 0))


#: the guard's usual record (an answered request that raised no alert): its keys in the order
#: the guard makes them, and those of its output summary
_GUARD_KEYS = (
    "ts",
    "request_id",
    "model",
    "model_sha256",
    "input_sha256",
    "rows",
    "output",
    "alerts",
    "status",
)
_OUTPUT_KEYS = ("labels", "mean_confidence")
_STR_ONLY = frozenset({str})
_INT_ONLY = frozenset({int})
#: JSON of the strings every record repeats (the model's name and SHA-256); bounded
_ESCAPED: dict[str, str] = {}


def _escaped_constant(s: str) -> str:
    """``encode_basestring_ascii(s)``, remembered (for the few strings every record repeats)."""
    e = _ESCAPED.get(s)
    if e is None:
        e = encode_basestring_ascii(s)
        if len(_ESCAPED) >= 64:
            _ESCAPED.clear()
        _ESCAPED[s] = e
    return str(e)


def _guard_record_text(d: dict[Any, Any]) -> str | None:
    """``canonical(d)`` as text for the guard's usual record, else ``None`` (use the encoder).

    The record of a request answered without alerts: exactly the keys of :data:`_GUARD_KEYS` in
    that order (exact ``str``), ``ts`` a finite ``float``, the ids and hashes exact ``str``,
    ``rows`` and ``status`` exact ``int``, ``alerts`` an empty list and ``output`` exactly
    ``{"labels": [exact int, ...], "mean_confidence": finite float}``. Written as the C encoder
    writes it with :func:`canonical`'s options: the keys sorted, ``encode_basestring_ascii`` for
    strings, ``repr`` (``float.__repr__``, ``int.__repr__``) for numbers, no spaces — one
    f-string instead of the encoder's sort, per-key escaping and accumulation (about a third
    fewer instructions). Any other record (a subclass, a NaN, another key) goes to the encoder.
    """
    if tuple(d) != _GUARD_KEYS or frozenset(map(type, d)) != _STR_ONLY:
        return None
    ts, rid, model, msha, isha, rows, output, alerts, status = d.values()
    if (
        type(ts) is not float
        or ts - ts != 0.0  # NaN or infinity: the encoder raises ValueError
        or type(rid) is not str
        or type(model) is not str
        or type(msha) is not str
        or type(isha) is not str
        or type(rows) is not int
        or type(status) is not int
        or type(alerts) is not list
        or alerts
        or type(output) is not dict
        or tuple(output) != _OUTPUT_KEYS
        or frozenset(map(type, output)) != _STR_ONLY
    ):
        return None
    labels, conf = output.values()
    if (
        type(labels) is not list
        or (labels and frozenset(map(type, labels)) != _INT_ONLY)
        or type(conf) is not float
        or conf - conf != 0.0
    ):
        return None
    return (
        f'{{"alerts":[],"input_sha256":{encode_basestring_ascii(isha)},"model":{_escaped_constant(model)},'
        f'"model_sha256":{_escaped_constant(msha)},"output":{{"labels":[{",".join(map(repr, labels))}],'
        f'"mean_confidence":{conf!r}}},"request_id":{encode_basestring_ascii(rid)},"rows":{rows!r},'
        f'"status":{status!r},"ts":{ts!r}}}'
    )


def _hasher(key: bytes | None) -> Any:
    """SHA-256, or HMAC-SHA-256 under ``key`` (a keyed chain: rewriting it needs the key)."""
    return hashlib.sha256() if key is None else hmac.new(key, digestmod=hashlib.sha256)


def _hash_hex(data: bytes, key: bytes | None) -> str:
    """``_hasher(key)`` of ``data`` as hex, in one call (``hmac.digest`` is HMAC's one-shot form)."""
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.digest(key, data, "sha256").hex()


def record_hash(
    prev_hash: str,
    chain: str,
    seq: int,
    key_id: str | None,
    decision: str,
    record: Any,
    *,
    key: bytes | None = None,
) -> str:
    """The chained hash of one record (HMAC-SHA-256 with ``key`` for a keyed chain)."""
    body = {"chain": chain, "seq": seq, "key_id": key_id, "decision": decision, "record": record}
    h = _hasher(key)
    h.update(prev_hash.encode() + canonical(body))
    return str(h.hexdigest())


def _hashed_bytes(
    prev_hash: str, chain_json: str, seq: int, key_id: str | None, decision: str, text: str
) -> bytes:
    """The bytes a record's chained hash covers (:func:`record_hash`), from its canonical text.

    ``prev_hash`` ‖ ``canonical({chain, seq, key_id, decision, record})``: that body's keys sort
    as chain, decision, key_id, record, seq, so its JSON is the parts joined in that order, with
    the record's canonical JSON (``text``, :func:`canonical_text`: the record is encoded once
    per append, for its hash and its stored text) in its place. ``chain_json``: the chain's
    name as JSON. Made as one string and encoded once (UTF-8 of a concatenation is the
    concatenation of the UTF-8s); :meth:`AuditLog.verify` recomputes it with :func:`record_hash`.
    """
    kid = (
        "null" if key_id is None else encode_basestring_ascii(key_id if type(key_id) is str else str(key_id))
    )
    dec = encode_basestring_ascii(decision if type(decision) is str else str(decision))
    return (
        f'{prev_hash}{{"chain":{chain_json},"decision":{dec},"key_id":{kid},"record":{text},"seq":{int(seq)}}}'
    ).encode()


def _created_mismatch(created: dt.datetime | None, record: Any) -> str | None:
    """Why the ``created`` column disagrees with the record's hashed ``ts`` (``None``: it agrees).

    ``created`` sits outside the hash, but the guard writes it from the same clock reading as the
    record's ``ts`` (seconds since the epoch), which the hash covers: a changed ``created`` shows
    as a mismatch. Records without a numeric ``ts`` are not checked.
    """
    ts = record.get("ts") if isinstance(record, dict) else None
    if created is None or isinstance(ts, bool) or not isinstance(ts, int | float):
        return None
    want = dt.datetime.fromtimestamp(ts, dt.UTC)
    got = created if created.tzinfo is not None else created.replace(tzinfo=dt.UTC)
    if abs((got - want).total_seconds()) <= 1e-3:
        return None
    return f"created column ({got.isoformat()}) does not match the record's hashed ts ({want.isoformat()})"


def _stored_text_problem(text: str | None, record: Any) -> str | None:
    """Why a record's stored JSON text could be read as something other than what was hashed.

    The hash covers the record as Python's ``json`` parses it (the last of duplicate keys);
    SQL's JSON functions (SQLite's ``json_extract``) take the first. A stored text with a
    duplicate key, or one that does not parse to the same record, reads two ways: edited.
    """
    if text is None:
        return None

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate key")
        return dict(pairs)

    try:
        parsed = json.loads(text, object_pairs_hook=no_duplicates)
    except (ValueError, TypeError, RecursionError):
        return "stored record text has duplicate keys or is not JSON (record edited)"
    if parsed != record:
        return "stored record text differs from the record read (record edited)"
    return None


def _sqlite_time(t: dt.datetime) -> str:
    """A datetime as SQLAlchemy stores it in SQLite (naive UTC, microseconds)."""
    if t.tzinfo is dt.UTC:  # the guard's case: already UTC (``isoformat``'s digits, written out)
        return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031 - cheaper than isoformat
            t.year,
            t.month,
            t.day,
            t.hour,
            t.minute,
            t.second,
            t.microsecond,
        )
    return t.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


@dataclass(frozen=True)
class AuditEntry:
    """One record to append: who (``key_id``), what was decided, the record itself, when (UTC)."""

    key_id: str | None
    decision: str
    record: dict[str, Any]
    created: dt.datetime


@dataclass
class VerifyResult:
    """Outcome of :meth:`AuditLog.verify`: ``ok``, records read, problems (first 50), the head."""

    ok: bool
    records: int
    problems: list[str] = field(default_factory=list)
    head_seq: int = -1
    head_hash: str = GENESIS
    keyed: bool = False  # the chain was verified with its HMAC key (``audit.key_env``)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "ok": self.ok,
            "records": self.records,
            "problems": self.problems,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
        }


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.close()


class AuditLog:
    """Append to and verify one chain; record incidents. Thread-safe (one writer lock).

    Open with :meth:`open`; the database is migrated to head first.
    """

    def __init__(self, engine: Engine, *, url: str, chain: str, key: bytes | None = None) -> None:
        self._engine = engine
        self._url = url
        self.chain = chain
        self._key = key  # HMAC key of a keyed chain (held outside the database)
        self._lock = threading.Lock()
        self._conn: Any = None  # one connection held for appends (no pool checkout per record)
        self._conn_waits = True  # its busy timeout: BUSY_TIMEOUT_MS (True) or 0
        u = make_url(url)
        db = u.database
        self._probe_lock = threading.Lock()  # writable(): one probe at a time ...
        self._probe_at = -1e9  # ... its answer reused for a second
        self._probe_started = 0.0  # when the probe now running (if any) started (monotonic)
        self._probe_last: str | None = None
        self._sqlite_path = (
            Path(db)
            if u.get_backend_name() == "sqlite" and db and db != ":memory:" and not db.startswith("file:")
            else None
        )
        self._seq, self._head = self._load_head()

    @classmethod
    def open(cls, url: str, *, chain: str = "guard", key: bytes | None = None) -> AuditLog:
        """Open (and migrate) the store at ``url`` for the audit chain ``chain``.

        ``key``: the chain's HMAC key (``audit.key_env``). Without one, a record's hash is plain
        SHA-256: whoever can write the database can recompute the whole chain after an edit,
        and only a head recorded elsewhere (``verify-log --expect-head``) shows it. With one,
        the chain cannot be rewritten without the key; verify it with the same key.

        Raises:
            StoreError: unreachable database or failed migration.
        """
        upgrade(url)
        try:
            u = make_url(url)
            # a server's connect timeout and keepalives (there were none: red-team round 26);
            # the connections are named ``bastion-audit-<chain>`` in ``pg_stat_activity``
            args = server_connect_args(u, application_name=f"bastion-audit-{chain}")
            engine = create_engine(u, connect_args=args, pool_pre_ping=True)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open database {safe_url(url)}: {exc}") from exc
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return cls(engine, url=url, chain=chain, key=key)

    def close(self) -> None:
        """Release the database connections.

        An append stuck on a stalled database holds the writer lock: its connection is then left
        to the process's exit (waited for at most a second), so closing never hangs.
        """
        if self._lock.acquire(timeout=1.0):
            try:
                self._drop_conn()
            finally:
                self._lock.release()
        self._engine.dispose()

    @property
    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the newest record (``(-1, GENESIS)`` when empty)."""
        return self._seq, self._head

    def _load_head(self) -> tuple[int, str]:
        stmt = (
            select(AuditRecordRow.seq, AuditRecordRow.hash)
            .where(AuditRecordRow.chain == self.chain)
            .order_by(AuditRecordRow.seq.desc())
            .limit(1)
        )
        try:
            with self._engine.connect() as conn:
                row = conn.execute(stmt).first()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read audit log in {safe_url(self._url)}: {exc}") from exc
        return (int(row.seq), str(row.hash)) if row else (-1, GENESIS)

    def append(
        self, *, key_id: str | None, decision: str, record: dict[str, Any], created: dt.datetime
    ) -> int:
        """Append one record, committed before returning; return its ``seq``.

        Raises:
            StoreError: the write failed (the chain is unchanged).
        """
        entry = AuditEntry(key_id=key_id, decision=decision, record=record, created=created)
        return self.append_many([entry])[0]

    def append_many_nowait(self, entries: Sequence[AuditEntry]) -> list[int]:
        """:meth:`append_many` only if it needs no wait (the guard calls it on its event loop).

        A local SQLite file not locked by another connection (busy timeout 0).

        Raises:
            StoreBusy: the database is locked, or not a local SQLite file (nothing written: call
                :meth:`append_many` off the loop).
            StoreError, TypeError, ValueError: as :meth:`append_many`.
        """
        if self._sqlite_path is None:
            raise StoreBusy(f"{safe_url(self._url)}: not a local SQLite file")
        return self._append(entries, wait=False)

    def append_many(self, entries: Sequence[AuditEntry]) -> list[int]:
        """Append records in order, all in one transaction (group commit); return their ``seq``.

        Either every record is committed before this returns, or none is (the chain is
        unchanged). One transaction for many records is what lets the guard commit the
        records of concurrent requests together: each request still waits for its own commit.

        Several processes may append to one chain (guard replicas, or a new guard started
        before the old one stopped): a batch that finds its ``seq`` taken (another writer
        appended since this one last read the head) re-reads the head and is chained after it,
        up to :data:`MAX_APPEND_TRIES` times; the chain stays one unbroken sequence.

        Raises:
            StoreError: the write failed (nothing of the batch is in the chain).
            TypeError, ValueError: a record is not JSON (NaN included); nothing is written.
        """
        return self._append(entries, wait=True)

    def _append(self, entries: Sequence[AuditEntry], *, wait: bool) -> list[int]:
        if not entries:
            return []
        # canonical JSON once (TypeError / ValueError (NaN) as record_hash raised them): the text
        # stored and, within the hashed bytes, the text hashed
        texts = [canonical_text(e.record) for e in entries]
        with self._lock:
            for attempt in range(MAX_APPEND_TRIES):
                seqs, hashes = self._chained(entries, texts, self._seq, self._head)
                try:
                    if self._sqlite_path is not None:
                        self._append_sqlite(entries, texts, seqs, hashes, wait=wait)
                    else:
                        if self._conn is None:
                            self._conn = self._engine.connect()
                        with self._conn.begin():
                            self._conn.execute(insert(AuditRecordRow), self._rows(entries, seqs, hashes))
                except (SQLAlchemyError, sqlite3.Error) as exc:
                    if not wait and _is_busy(exc):  # the lock is someone else's: nothing written
                        raise StoreBusy(f"{safe_url(self._url)}: locked") from exc
                    self._drop_conn()
                    if _is_unique_violation(exc) and attempt + 1 < MAX_APPEND_TRIES:
                        # another writer took this seq: chain the batch after its records
                        self._seq, self._head = self._load_head()
                        continue
                    raise StoreError(f"cannot append to audit log in {safe_url(self._url)}: {exc}") from exc
                first = self._seq + 1
                self._seq, self._head = seqs[-1], hashes[-1]
                return list(range(first, self._seq + 1))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _chained(
        self, entries: Sequence[AuditEntry], texts: list[str], seq: int, head: str
    ) -> tuple[list[int], list[str]]:
        """The ``seq`` and ``hash`` of each of ``entries`` chained after ``(seq, head)``.

        ``texts``: each record's canonical JSON. A record's ``prev_hash`` is the hash before it
        (``head`` for the first).
        """
        seqs: list[int] = []
        hashes: list[str] = []
        chain_json, key = str(encode_basestring_ascii(str(self.chain))), self._key
        for e, text in zip(entries, texts, strict=True):
            seq += 1
            head = _hash_hex(_hashed_bytes(head, chain_json, seq, e.key_id, e.decision, text), key)
            seqs.append(seq)
            hashes.append(head)
        return seqs, hashes

    def _rows(
        self, entries: Sequence[AuditEntry], seqs: list[int], hashes: list[str]
    ) -> list[dict[str, Any]]:
        """The table rows of chained ``entries`` (for SQLAlchemy's insert)."""
        rows: list[dict[str, Any]] = []
        prev = self._head
        for e, seq, h in zip(entries, seqs, hashes, strict=True):
            rows.append(
                {
                    "chain": self.chain,
                    "seq": seq,
                    "created": e.created,
                    "key_id": e.key_id,
                    "decision": e.decision,
                    "prev_hash": prev,
                    "hash": h,
                    "record": e.record,
                }
            )
            prev = h
        return rows

    def writable(self) -> str | None:
        """Whether a record could be appended now: ``None``, or why not (for readiness probes).

        SQLite: a write statement that changes nothing (``DELETE … WHERE 0``) inside ``BEGIN
        IMMEDIATE`` … ``ROLLBACK`` — a read-only file, folder or connection (``mode=ro``), or a
        lock held right now, shows. Other databases must answer and not be
        read-only (a hot standby). Writes nothing.
        """
        # one probe at a time, and its answer reused for a second: probes racing each other for
        # the write lock would each see the file "locked" (60 /readyz clients: 503s with nothing
        # locked, red-team round 26)
        now = time.monotonic()
        if now - self._probe_at < 1.0:
            return self._probe_last
        if not self._probe_lock.acquire(blocking=False):
            # a probe is running: a stalled database never answers it, so its last answer (ok
            # before the stall) must not stand for long (red-team round 26)
            running = now - self._probe_started
            if running > PROBE_STALL_S:
                return f"{safe_url(self._url)}: no answer to a write probe for {running:.0f} s"
            return self._probe_last
        try:
            self._probe_started = time.monotonic()
            self._probe_last = self._writable()
            self._probe_at = time.monotonic()
            return self._probe_last
        finally:
            self._probe_lock.release()

    def _writable(self) -> str | None:
        try:
            if self._engine.dialect.name == "sqlite":
                # its own short-lived connection (not one of the pool's, which /readyz floods
                # would use up while an alert's incident waits for one on the event loop: red-team
                # round 26), without the writer lock (round 24), and without waiting: a file
                # locked right now is not ready right now
                raw: Any
                if self._sqlite_path is None or make_url(self._url).query:  # mode=ro and such: as set
                    raw = self._engine.raw_connection()
                else:
                    raw = sqlite3.connect(str(self._sqlite_path), timeout=0, isolation_level=None)
                try:
                    cur = raw.cursor()
                    cur.execute("BEGIN IMMEDIATE")
                    try:
                        cur.execute("DELETE FROM audit_log WHERE 0")
                    finally:
                        cur.execute("ROLLBACK")
                finally:
                    raw.close()
                return None
            from sqlalchemy import text

            with self._engine.connect() as c:
                ro = (
                    c.execute(text("SHOW transaction_read_only")).scalar()
                    if c.dialect.name == "postgresql"
                    else "off"
                )
            return "the database is read-only" if str(ro).lower() == "on" else None
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            return f"{type(exc).__name__}: {str(exc).split('[SQL:')[0].strip()}"

    def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):  # closing a broken connection may fail too
            conn.close()

    def _append_sqlite(
        self,
        entries: Sequence[AuditEntry],
        records_json: list[str],
        seqs: list[int],
        hashes: list[str],
        *,
        wait: bool = True,
    ) -> None:
        """Fast path for a SQLite file: one raw connection, the INSERTs committed together (WAL).

        The connection is in autocommit mode (``isolation_level=None``): a single INSERT is its
        own transaction, committed when ``execute`` returns; several run inside one explicit
        ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on any error). ``records_json`` holds each
        record's canonical JSON (the text its hash covers); ``seqs`` and ``hashes``: the chained
        ``seq`` and ``hash`` of each (:meth:`_chained`, after the current head).
        """
        if self._conn is None:
            conn = sqlite3.connect(str(self._sqlite_path), isolation_level=None, check_same_thread=False)
            _sqlite_pragmas(conn, None)
            # appends touch only the rightmost pages of the table and its two indexes: a small page
            # cache (256 KiB, not SQLite's 2 MiB default) keeps the guard's CPU caches for the model
            conn.execute(f"PRAGMA cache_size=-{APPEND_CACHE_KIB}")
            self._conn = conn
            self._conn_waits = True
        if wait != self._conn_waits:  # the busy timeout of this attempt (0: fail at once if locked)
            self._conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS if wait else 0}")
            self._conn_waits = wait
        chain = self.chain
        params = []
        prev = self._head
        for e, rec, seq, h in zip(entries, records_json, seqs, hashes, strict=True):
            params.append((chain, seq, _sqlite_time(e.created), e.key_id, e.decision, prev, h, rec))
            prev = h
        if len(params) == 1:
            self._conn.execute(_INSERT_SQL, params[0])
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(_INSERT_SQL, params)
            self._conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise

    def records(self) -> list[dict[str, Any]]:
        """Every record of the chain in ``seq`` order (for inspection and tests)."""
        stmt = select(AuditRecordRow).where(AuditRecordRow.chain == self.chain).order_by(AuditRecordRow.seq)
        with self._engine.connect() as conn:
            return [
                dict(r._mapping) for r in conn.execute(stmt.with_only_columns(*AuditRecordRow.__table__.c))
            ]

    def verify(self, *, expected_head: tuple[int | None, str] | None = None) -> VerifyResult:
        """Re-compute the chain; report every edited, inserted, deleted or reordered record.

        Args:
            expected_head: a head ``(seq, hash)`` recorded earlier (the guard logs it on shutdown;
                ``seq`` may be ``None``: found by hash). The chain must still hold that record
                with that hash; one that ends before it, or holds another hash there, was
                truncated or rewritten. Records appended after it are fine.
        """
        res = VerifyResult(ok=True, records=0, keyed=self._key is not None)
        prev, expect_seq = GENESIS, 0
        found_seq: int | None = None
        stmt = (
            select(AuditRecordRow)
            .where(AuditRecordRow.chain == self.chain)
            .order_by(AuditRecordRow.seq, AuditRecordRow.id)
        )
        columns = [*AuditRecordRow.__table__.c, cast(AuditRecordRow.record, Text).label("record_text")]
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(stmt.with_only_columns(*columns)).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read audit log in {safe_url(self._url)}: {exc}") from exc
        for r in rows:
            res.records += 1
            stored = _stored_text_problem(r.record_text, r.record)
            if stored:
                res.problems.append(f"seq {r.seq}: {stored}")
            if r.seq != expect_seq:
                res.problems.append(
                    f"seq {r.seq}: expected seq {expect_seq} (record(s) deleted or inserted before it)"
                )
            if r.prev_hash != prev:
                res.problems.append(f"seq {r.seq}: prev_hash does not match the previous record's hash")
            h = record_hash(r.prev_hash, self.chain, r.seq, r.key_id, r.decision, r.record, key=self._key)
            if h != r.hash:
                res.problems.append(f"seq {r.seq}: content does not match its hash (record edited)")
            created_problem = _created_mismatch(r.created, r.record)
            if created_problem:
                res.problems.append(f"seq {r.seq}: {created_problem}")
            prev, expect_seq = r.hash, r.seq + 1
            res.head_seq, res.head_hash = r.seq, r.hash
            if expected_head is not None and r.hash == expected_head[1]:
                found_seq = r.seq
        if expected_head is not None:
            want_seq, want_hash = expected_head
            if found_seq is None and want_hash == GENESIS:
                found_seq = -1  # an empty chain was recorded: anything after it is fine
            if found_seq is None or (want_seq is not None and found_seq != want_seq):
                at = f"seq {want_seq}" if want_seq is not None else f"hash {want_hash[:12]}…"
                if want_seq is not None and res.head_seq < want_seq:
                    res.problems.append(
                        f"chain ends at seq {res.head_seq}; the recorded head is {at} (truncated)"
                    )
                else:
                    res.problems.append(
                        f"the recorded head ({at}) is not in the chain (truncated or rewritten after it)"
                    )
        res.problems = res.problems[:50]
        res.ok = not res.problems
        return res

    # -- incidents ------------------------------------------------------------------------------
    def add_incident(
        self,
        *,
        rule_id: str,
        severity: str,
        asset: str | None,
        key_id: str | None,
        atlas: list[str],
        details: dict[str, Any],
        created: dt.datetime,
        source: str = "guard",
        wait: bool = True,
        incident_id: str | None = None,
    ) -> str:
        """Record an alert as an open incident; return its id.

        ``incident_id`` (32 hex digits; a fresh one by default) makes a retried write idempotent:
        a write that committed but whose answer was lost is not recorded twice — the retry finds
        its id taken and returns it.

        ``wait=False`` (the guard's event loop): a local SQLite file locked by another
        connection raises :class:`StoreBusy` at once instead of waiting out the busy timeout
        (seconds during which no request would be served); nothing is written. A server
        database cannot promise that (a round trip, a stalled server): it raises
        :class:`StoreBusy` at once too, so that the caller writes from a thread.

        Raises:
            StoreBusy: ``wait=False`` and the database is locked. StoreError: the write failed.
        """
        iid = incident_id or uuid.uuid4().hex
        values = {
            "id": iid,
            "created": created,
            "source": source,
            "asset": asset,
            "key_id": key_id,
            "rule_id": rule_id,
            "severity": severity,
            "status": "open",
            "atlas": list(atlas),
            "details": details,
        }
        sqlite = self._engine.dialect.name == "sqlite"
        if not sqlite and not wait:  # never on the event loop (8 s frozen by a stalled server)
            raise StoreBusy("a server database is written from the incident writer thread")
        try:
            with self._engine.begin() as conn:
                if sqlite and not wait:
                    conn.exec_driver_sql("PRAGMA busy_timeout=0")
                try:
                    conn.execute(insert(IncidentRow), values)
                finally:
                    if sqlite and not wait:  # the pooled connection keeps the usual timeout
                        conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except SQLAlchemyError as exc:
            if not wait and _is_busy(exc):
                raise StoreBusy(f"{safe_url(self._url)}: locked") from exc
            if incident_id is not None and _is_unique_violation(exc) and self._has_incident(iid):
                return iid  # an earlier try committed it
            raise StoreError(f"cannot record incident in {safe_url(self._url)}: {exc}") from exc
        return iid

    def _has_incident(self, iid: str) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(select(IncidentRow.id).where(IncidentRow.id == iid)).first() is not None

    def incidents(self, *, asset: str | None = None) -> list[dict[str, Any]]:
        """Stored incidents, newest first."""
        stmt = select(*IncidentRow.__table__.c).order_by(IncidentRow.created.desc())
        if asset is not None:
            stmt = stmt.where(IncidentRow.asset == asset)
        with self._engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]
