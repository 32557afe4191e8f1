"""Control 8 (guard side) — audit records and alert delivery.

Every decision becomes one record of the store's hash-chained log
(:class:`bastion.store.audit.AuditLog`, injected): request id, key id, model and its SHA-256,
the SHA-256 of the validated input (never the input itself unless ``log_inputs``), an output
summary (labels, mean top-1 confidence, hardening), the alerts with their ATLAS technique ids
and the actions taken. Alerts also become incidents in the store and are POSTed as JSON to the
configured webhooks by a background thread (bounded queue; a full queue drops and counts).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bastion.store.errors import StoreBusy

log = logging.getLogger(__name__)

#: the validated input's dtype (little-endian float32), whose bytes the audit log hashes
_F4 = np.dtype("<f4")


class AuditSink(Protocol):
    """What the guard needs from the store (``bastion.store.audit.AuditLog`` provides it)."""

    def append(
        self, *, key_id: str | None, decision: str, record: dict[str, Any], created: dt.datetime
    ) -> int:
        """Append one record durably; return its sequence number."""
        ...

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
    ) -> str:
        """Record an incident; return its id."""
        ...

    @property
    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the newest record."""
        ...


@dataclass(frozen=True)
class Alert:
    """One alert: rule id, severity, ATLAS ids, the key, and numeric evidence."""

    rule_id: str
    severity: str
    atlas: tuple[str, ...]
    key_id: str | None
    evidence: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The part stored in an audit record."""
        return {"rule_id": self.rule_id, "severity": self.severity, "atlas": list(self.atlas)}


def input_sha256(x: np.ndarray) -> str:
    """SHA-256 of the validated input's float32 bytes (what the audit log records)."""
    if x.dtype == _F4:  # the guard's rows: ``tobytes`` gives the C-order bytes of any layout
        return hashlib.sha256(x.tobytes()).hexdigest()
    return hashlib.sha256(np.ascontiguousarray(x, dtype="<f4").tobytes()).hexdigest()


class WebhookSender:
    """POSTs alerts to URLs from a daemon thread; never blocks a request.

    Args:
        urls: receivers.
        timeout: seconds per POST.
        maxsize: queue bound (alerts beyond it are dropped and counted in ``dropped``).
    """

    def __init__(self, urls: list[str], *, timeout: float = 2.0, maxsize: int = 1000) -> None:
        self.urls = list(urls)
        self.timeout = float(timeout)
        self._q: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=maxsize)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the sender thread (no-op without URLs)."""
        if self.urls and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="guard-webhooks", daemon=True)
            self._thread.start()

    def submit(self, payload: dict[str, Any]) -> None:
        """Queue one alert payload."""
        if not self.urls:
            return
        try:
            self._q.put_nowait(payload)
        except queue.Full:
            self.dropped += 1

    def stop(self, timeout: float = 2.0) -> None:
        """Deliver what is queued (up to ``timeout``) and stop."""
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout) as client:
            while True:
                item = self._q.get()
                if item is None:
                    return
                for url in self.urls:
                    try:
                        client.post(url, json=item).raise_for_status()
                        self.sent += 1
                    except Exception as exc:  # a receiver's failure never reaches a request
                        self.failed += 1
                        log.warning("webhook POST failed: %s", type(exc).__name__)


class SerialThread:
    """Runs jobs one at a time, in the order given, in one daemon thread started on demand.

    The thread exits after ``idle`` seconds with nothing to do (a guard that is never closed,
    as in tests, leaves no thread behind) and is started again by the next job; being a daemon,
    a thread stuck on a stalled database never keeps the process from exiting. A job must not
    raise.

    Args:
        name: the thread's name.
        maxsize: jobs waiting at most (0: no bound); :meth:`submit` refuses beyond it.
        idle: seconds without a job before the thread exits.
    """

    def __init__(self, name: str, *, maxsize: int = 0, idle: float = 5.0) -> None:
        self.name = name
        self.idle = idle
        self._q: queue.Queue[Any] = queue.Queue(maxsize)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, job: Any) -> bool:
        """Queue ``job`` (a callable of no arguments); ``False`` when the queue is full."""
        with self._lock:
            try:
                self._q.put_nowait(job)
            except queue.Full:
                return False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return True

    def _run(self) -> None:
        while True:
            try:
                job = self._q.get(timeout=self.idle)
            except queue.Empty:
                with self._lock:  # no job can slip in between this check and the exit
                    if self._q.empty():
                        self._thread = None
                        return
                continue
            try:
                job()
            finally:
                self._q.task_done()

    def pending(self) -> int:
        """Jobs submitted and not finished (the one running included)."""
        return int(self._q.unfinished_tasks)

    def drain(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for every submitted job to finish; whether they did."""
        deadline = time.monotonic() + timeout
        with self._q.all_tasks_done:
            while self._q.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._q.all_tasks_done.wait(left)
        return True


class IncidentWriter:
    """Records alerts as incidents in the store without ever stalling the guard's event loop.

    An incident is written at once when the store can take it without waiting; a store locked
    by another connection (a backup, an ``assess`` run), a server database or a stalled one
    would block the loop, so the incident goes to a writer thread that waits instead. Incidents
    are evidence for ``bastion assess``, not part of a request's answer (the alert is in the
    request's audit record, committed before the answer).

    The writer's queue is bounded (``max_pending``): beyond it an incident is dropped, counted in
    ``dropped`` and logged, so a database that stays stalled holds a bounded amount of memory. A
    deferred write that fails (the database down rather than locked) is tried again, 1 s after
    the first failure and doubling up to 30 s apart, for ``retry_for`` seconds, then counted in
    ``failed`` and logged; before, it was dropped at its first failure, and then after 27 s
    while the audit records of a longer stall were all written (red-team rounds 26 and 27).

    Args:
        sink: the store (``AuditLog``: its ``add_incident(wait=False)`` raises ``StoreBusy``).
        max_pending: incidents the writer thread holds at most.
        retry_for: seconds a failing incident is tried for.
        backoff: seconds before the first retry (doubled for each next one, at most 30).
    """

    def __init__(
        self, sink: Any, *, max_pending: int = 1000, retry_for: float = 600.0, backoff: float = 1.0
    ) -> None:
        import inspect

        self.sink = sink
        add = getattr(sink, "add_incident", None)
        # a sink without the option (an in-memory one) never waits
        self._can_defer = add is not None and "wait" in inspect.signature(add).parameters
        self._thread = SerialThread("bastion-incidents", maxsize=max(1, int(max_pending)))
        self._closed = threading.Event()  # set when close() gave up: retries and queued writes stop
        self.retry_for = float(retry_for)
        self.backoff = float(backoff)
        self.deferred = 0
        self.failed = 0
        self.dropped = 0

    def record(self, **incident: Any) -> None:
        """Write one incident now, or hand it to the writer thread if the store would wait."""
        try:
            if self._can_defer:
                self.sink.add_incident(**incident, wait=False)
            else:
                self.sink.add_incident(**incident)
        except StoreBusy:
            self._defer(incident)
        except Exception as exc:
            self.failed += 1
            log.error("incident not recorded: %s", failure_reason(exc))

    def _defer(self, incident: dict[str, Any]) -> None:
        import uuid

        # one id for every try: a try that committed but lost its answer is not written twice
        incident = {**incident, "incident_id": uuid.uuid4().hex}
        if not self._thread.submit(lambda: self._write(incident)):
            self.dropped += 1
            log.error(
                "incident not recorded: %d incidents already wait for the database (rule %s)",
                self._thread.pending(),
                incident.get("rule_id", "?"),
            )
            return
        self.deferred += 1

    def _write(self, incident: dict[str, Any]) -> None:
        wait, tries = self.backoff, 0
        give_up = time.monotonic() + self.retry_for
        while not self._closed.is_set():
            tries += 1
            try:
                self.sink.add_incident(**incident)
                return
            except Exception as exc:
                reason = failure_reason(exc)
            if time.monotonic() + wait > give_up or self._closed.wait(wait):
                break
            wait = min(wait * 2, 30.0)
        else:
            reason = "the guard stopped before the database took it"
        self.failed += 1
        log.error("incident not recorded after %d tries: %s", tries, reason)

    def close(self, timeout: float = 30.0) -> None:
        """Write the deferred incidents, waiting at most ``timeout`` seconds.

        Incidents still waiting after ``timeout`` (a stalled database) are not recorded; each
        is counted in ``failed`` and logged.
        """
        if not self._thread.drain(timeout):
            log.error(
                "%d deferred incidents not recorded: the database took none in %g s",
                self._thread.pending(),
                timeout,
            )
            self._closed.set()


def failure_reason(exc: BaseException) -> str:
    """A loggable reason for a failure (audit append, backend call): the error type and its first line.

    The database driver's text after ``[SQL:`` (the statement and its parameters: record
    content) is cut, only the first line is kept and it is capped at 300 characters, so no
    record or upstream body reaches the log.
    """
    text = str(exc).split("[SQL:", 1)[0].strip().splitlines()
    first = text[0][:300] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class GroupCommit:
    """Commits the audit records of the requests an event loop decides together, in one transaction.

    A request handled on the event loop hands its record to :meth:`commit` and waits until that
    record is committed (a local, unlocked SQLite file is written on the loop; a locked or remote
    database in a writer thread, so the loop never waits on it); it is answered only then, so an
    acknowledged request's record survives a crash of the guard, as with a commit per request.
    The first record queued schedules a flush with ``loop.call_soon``: the requests that are
    ready in the same turn of the loop are decided first, and their records then go into one
    transaction. The per-transaction cost (locks, WAL frames, the syscalls of a commit) is shared
    and nothing waits on a timer: a lone request is written at once. Order is kept: records
    enter the chain in the order :meth:`commit` was called. The same idea as group commit in
    databases (PostgreSQL ``commit_delay``), without the delay.

    Args:
        sink: the audit store; its ``append_many`` (one transaction per batch, all or nothing)
            is used when it has one, else ``append`` for each record of the batch.
        max_batch: records per transaction at most.
    """

    def __init__(self, sink: AuditSink, *, max_batch: int = 256) -> None:
        import asyncio  # here, not in commit(): an import statement costs ~1 us on every call

        self._running_loop = asyncio.get_running_loop
        self.sink = sink
        self.max_batch = int(max_batch)
        self._pending: list[tuple[Any, Any]] = []  # (AuditEntry, future)
        self._scheduled = False
        self._loop: Any = None
        self._writer = SerialThread("bastion-audit")  # batches written off the loop, in order
        #: when each batch handed to the writer and not written yet was handed over (monotonic
        #: seconds; written in order): while any waits, the next batches follow it there
        self._handed: deque[float] = deque()
        self.batches = 0
        self.records = 0

    async def commit(self, entry: Any) -> bool:
        """Queue one ``AuditEntry``; return ``True`` once it is committed, ``False`` if that failed."""
        loop = self._running_loop()
        if loop is not self._loop:  # a new event loop (an app restarted in the same process)
            self._loop, self._pending, self._scheduled = loop, [], False
            self._handed.clear()
        fut = loop.create_future()
        self._pending.append((entry, fut))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return bool(await fut)

    def _flush(self) -> None:
        """Write the queued batches, on the loop or in the writer thread.

        On the loop when the sink can commit without waiting (a local SQLite file that is not
        locked: no thread hop); else in the writer thread, so a locked or remote database never
        stalls the loop (``/healthz`` and every other request keep going). Once a batch goes to
        the writer, the next ones follow it there until it is done (chain order kept).
        """
        self._scheduled = False
        nowait = getattr(self.sink, "append_many_nowait", None)
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            entries = [e for e, _ in batch]
            done = self._try_now(nowait, entries) if nowait is not None and not self._handed else None
            if done is None:  # busy, remote, or batches already waiting in the writer
                self._defer(batch, entries)
                continue
            self._settle(batch, done)

    def _try_now(self, nowait: Any, entries: list[Any]) -> list[bool] | None:
        """Commit on the loop if the sink can without waiting; ``None`` when it would have to wait."""
        try:
            return _all_or_nothing(nowait, entries)
        except StoreBusy:
            return None

    def _defer(self, batch: list[tuple[Any, Any]], entries: list[Any]) -> None:
        loop = self._loop
        self._handed.append(time.monotonic())

        def finished(done: list[bool]) -> None:  # on the loop
            if self._handed:
                self._handed.popleft()
            self._settle(batch, done)

        def job() -> None:  # in the writer thread
            try:
                done = self.write(entries)
            except BaseException:  # write() logs and answers False; this is its last resort
                done = [False] * len(entries)
            with contextlib.suppress(RuntimeError):  # the loop has closed (the guard stopped)
                loop.call_soon_threadsafe(finished, done)

        self._writer.submit(job)

    def _settle(self, batch: list[tuple[Any, Any]], done: list[bool]) -> None:
        self.batches += 1
        self.records += sum(done)
        for (_, fut), ok in zip(batch, done, strict=True):
            if not fut.done():
                fut.set_result(ok)

    def writer_lag(self) -> float:
        """Seconds the oldest batch handed to the writer thread has waited (0.0: none waits).

        A stalled or unreachable database shows here before any request fails: readiness
        reports it (``Guard.ready``), so a load balancer stops sending requests that would wait.
        """
        try:
            return max(0.0, time.monotonic() - self._handed[0])
        except IndexError:  # none waiting (also when the loop emptied it meanwhile)
            return 0.0

    def close(self, timeout: float = 30.0) -> None:
        """Wait at most ``timeout`` seconds for the batches the writer thread holds to be written.

        Batches still waiting after it (a stalled database) are given up: their requests were
        never answered (no record, no answer), so no acknowledged request is missing from the
        chain; the count is logged. The writer is a daemon thread: it never holds the process.
        """
        if not self._writer.drain(timeout):
            log.error(
                "%d audit batches not written: the database took none in %g s (their requests "
                "were not answered)",
                self._writer.pending(),
                timeout,
            )

    def write(self, entries: list[Any]) -> list[bool]:
        """Commit ``AuditEntry`` records now, in this thread; whether each one is committed.

        With the sink's ``append_many`` the batch is all or nothing; a sink without it gets
        each record on its own. A failure is logged (its cause, never the record), not raised.
        """
        many = getattr(self.sink, "append_many", None)
        if many is not None:
            return _all_or_nothing(many, entries)
        done = []
        for e in entries:  # a sink without transactions: each record on its own
            try:
                self.sink.append(key_id=e.key_id, decision=e.decision, record=e.record, created=e.created)
                done.append(True)
            except Exception as exc:
                log.error("audit append failed: %s", failure_reason(exc))
                done.append(False)
        return done


def _all_or_nothing(append: Any, entries: list[Any]) -> list[bool]:
    """Commit a batch with ``append`` (one transaction): every record committed, or none.

    A failure is logged (its cause, never the record) and answered ``False`` for each record, so
    every request of the batch gets 503 (no record, no answer). ``StoreBusy`` (nothing written,
    the caller retries elsewhere) is raised.
    """
    try:
        append(entries)
    except StoreBusy:
        raise
    except Exception as exc:
        log.error("audit append failed: %s", failure_reason(exc))
        return [False] * len(entries)
    return [True] * len(entries)
