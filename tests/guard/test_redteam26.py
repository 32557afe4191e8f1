"""Red-team round 26, finding 03 and the round-24 leftovers: a stalled audit database.

A stalled store (PostgreSQL whose processes stop answering: a failover, a frozen VM) held every
request decided meanwhile in memory with no bound, ``/readyz`` hung with it, a deferred incident
that failed was dropped at once, and webhook drops were not in ``/metrics``.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import httpx
import numpy as np
import pytest
from tests.guard.helpers import (
    MemorySink,
    SoftmaxTarget,
    make_config,
    serve,
    stop_audit_backends,
    wait_until_serving,
)

from bastion.guard.app import Guard, create_app
from bastion.guard.audit import IncidentWriter
from bastion.guard.config import KeySpec
from bastion.store.audit import AuditLog
from bastion.store.errors import StoreBusy

Keys = dict[str, tuple[str, KeySpec]]
PREDICT = "/v1/models/digits/predict"


def _hdr(keys: Keys, kid: str = "bob") -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[kid][0]}"}


def _body(rows: Any) -> bytes:
    return json.dumps({"instances": np.asarray(rows).reshape(len(rows), -1).tolist()}).encode()


class StallingSink(MemorySink):
    """A store that never commits on the loop and whose writer blocks until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.waiting = threading.Event()

    def append_many_nowait(self, entries: list[Any]) -> list[int]:
        raise StoreBusy("stalled")

    def append_many(self, entries: list[Any]) -> list[int]:
        self.waiting.set()
        self.release.wait(30)
        return [
            self.append(key_id=e.key_id, decision=e.decision, record=e.record, created=e.created)
            for e in entries
        ]


def _burst(base: str, keys: Keys, body: bytes, n: int) -> tuple[list[threading.Thread], list[httpx.Response]]:
    answers: list[httpx.Response] = []

    def one() -> None:
        answers.append(httpx.post(f"{base}{PREDICT}", content=body, headers=_hdr(keys), timeout=30))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, answers


def test_a_stalled_store_holds_at_most_max_inflight_requests_and_readyz_says_so(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray]
) -> None:
    sink = StallingSink()
    app = create_app(make_config(keys, limits={"max_inflight": 5}), store=sink, target=target)
    body = _body(digits["x_test"][:1])
    with serve(app) as base, httpx.Client(base_url=base, timeout=10) as c:
        threads, answers = _burst(base, keys, body, 9)
        assert sink.waiting.wait(10)
        deadline = time.monotonic() + 10
        while len(answers) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        # the four beyond the bound are refused at once, before any decision (no record)
        assert sorted(r.status_code for r in answers) == [503] * 4
        assert all(r.headers["Retry-After"] == "1" for r in answers)
        assert "limit of requests in flight" in answers[0].json()["detail"]
        time.sleep(2.2)  # the writer's oldest batch is now older than WRITER_LAG_READY_S
        t0 = time.monotonic()
        ready = c.get("/readyz")
        assert time.monotonic() - t0 < 1.0
        assert ready.status_code == 503
        info = ready.json()
        assert info["ready"] is False and info["inflight"] == 5 and info["audit_writer_lag_s"] >= 2.0
        assert "max_inflight" in info["reason"]
        assert c.get("/healthz").status_code == 200
        assert "bastion_guard_shed_total 4.0" in c.get("/metrics").text
        sink.release.set()
        for t in threads:
            t.join(30)
        assert sorted(r.status_code for r in answers) == [200] * 5 + [503] * 4
        assert c.get("/readyz").json()["ready"] is True
    assert len(sink.records) == 5  # the held requests, each recorded; the refused ones never decided


def test_readyz_answers_not_ready_within_its_deadline_when_a_check_hangs(
    keys: Keys, target: SoftmaxTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bastion.guard.app as guard_app

    monkeypatch.setattr(guard_app, "READY_DEADLINE_S", 0.5)
    g = Guard(make_config(keys), target=target, store=MemorySink())
    stuck = threading.Event()
    g.ready = lambda: stuck.wait(20) or {"ready": True}  # type: ignore[method-assign]
    app = create_app(make_config(keys), guard=g)
    try:
        with serve(app) as base:
            t0 = time.monotonic()
            r = httpx.get(f"{base}/readyz", timeout=10)
            took = time.monotonic() - t0
    finally:
        stuck.set()
    assert r.status_code == 503 and took < 2.0
    assert r.json() == {
        "ready": False,
        "reason": "readiness checks did not finish in 0.5 s (database or upstream silent)",
    }


def test_a_write_probe_that_never_returns_is_reported_not_its_stale_answer(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bastion.store.audit as store_audit

    monkeypatch.setattr(store_audit, "PROBE_STALL_S", 0.2)
    log = AuditLog.open(f"sqlite:///{tmp_path / 'a.db'}")
    assert log.writable() is None  # answered: ok
    release = threading.Event()
    log._writable = lambda: release.wait(20) and None  # type: ignore[method-assign]
    log._probe_at = -1e9  # the cached answer has expired
    t = threading.Thread(target=log.writable)
    t.start()
    try:
        time.sleep(0.05)
        assert log.writable() is None  # a probe just started: its last answer stands
        time.sleep(0.3)
        why = log.writable()
        assert why is not None and "no answer to a write probe for" in why
    finally:
        release.set()
        t.join(10)
        log.close()


class _FlakySink:
    """``add_incident`` raising StoreBusy on the loop; in the writer: ``fail`` failures, then ok."""

    def __init__(self, fail: int = 0, block: threading.Event | None = None) -> None:
        self.fail, self.block, self.calls = fail, block, 0
        self.started = threading.Event()
        self.incidents: list[dict[str, Any]] = []

    def add_incident(self, *, wait: bool = True, **kw: Any) -> None:
        if not wait:
            raise StoreBusy("locked")
        self.calls += 1
        self.started.set()
        if self.block is not None:
            self.block.wait(20)
        if self.fail:
            self.fail -= 1
            raise OSError("database down")
        self.incidents.append(kw)


def test_a_failed_deferred_incident_is_retried_then_written() -> None:
    sink = _FlakySink(fail=2)
    w = IncidentWriter(sink, retry_for=5.0, backoff=0.01)
    w.record(rule_id="guard.honeytoken.hit")
    w.close(timeout=5)
    assert [i["rule_id"] for i in sink.incidents] == ["guard.honeytoken.hit"]
    assert sink.calls == 3 and w.failed == 0 and w.dropped == 0


def test_the_incident_queue_is_bounded_and_close_gives_up_on_a_stalled_store() -> None:
    block = threading.Event()
    sink = _FlakySink(block=block)
    w = IncidentWriter(sink, max_pending=2)
    try:
        w.record(rule_id="r0")
        assert sink.started.wait(5)  # the writer holds r0, stalled
        for i in range(1, 5):
            w.record(rule_id=f"r{i}")
        assert (w.deferred, w.dropped) == (3, 2)  # r1 and r2 wait; r3 and r4 do not fit
        t0 = time.monotonic()
        w.close(timeout=0.3)
        assert time.monotonic() - t0 < 2.0  # shutdown is not held hostage by the database
    finally:
        block.set()
    assert w._thread.drain(5)
    assert [i["rule_id"] for i in sink.incidents] == ["r0"]  # the one the database was taking
    assert w.failed == 2  # r1 and r2: given up at close, counted (and logged), never written late


def test_an_idle_writer_thread_exits_and_starts_again_on_demand() -> None:
    from bastion.guard.audit import SerialThread

    ran: list[int] = []
    t = SerialThread("t", idle=0.1)
    assert t.submit(lambda: ran.append(1)) and t.drain(5)
    deadline = time.monotonic() + 5
    while t._thread is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert t._thread is None  # no thread left behind by a guard that was never closed
    assert t.submit(lambda: ran.append(2)) and t.drain(5)
    assert ran == [1, 2]


@pytest.mark.postgres
def test_round27_02_sigterm_stops_the_guard_while_its_postgres_store_is_stalled(
    pg_database: str, project: Any
) -> None:
    import subprocess
    import sys

    from tests.guard.helpers import free_port, write_guard_yaml

    from bastion import api

    info = api.guard_fit(project / "bastion.yaml", asset="digits", out=project / "profile")
    secret, _ = write_guard_yaml(project, info["sha256"])
    cfg = json.loads((project / "guard.yaml").read_text())
    cfg["audit"] = {"db": pg_database}
    cfg["server"] = {"shutdown_timeout": 4}
    (project / "guard.yaml").write_text(json.dumps(cfg))
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bastion", "guard", "serve", "-c", "guard.yaml", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    body = {"instances": np.zeros((1, 64)).tolist()}
    pids: list[int] = []
    try:
        wait_until_serving(proc, url)
        assert (
            httpx.post(
                f"{url}/v1/models/digits/predict", json=body, headers={"X-API-Key": secret}
            ).status_code
            == 200
        )
        pids = stop_audit_backends(pg_database)
        held = threading.Thread(
            target=lambda: httpx.post(
                f"{url}/v1/models/digits/predict", json=body, headers={"X-API-Key": secret}, timeout=30
            ),
            daemon=True,
        )
        held.start()
        time.sleep(1.0)  # its record waits for the stalled database
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert took < 8.0, (took, err)  # it stopped only once the database came back before
    assert "audit batches not written" in err and "stopped; audit head" in err
    res = AuditLog.open(pg_database).verify()
    assert res.ok and res.records == 1, res.problems  # the held request was never answered: no record needed


def test_metrics_count_dropped_webhooks_and_lost_incidents(keys: Keys, target: SoftmaxTarget) -> None:
    g = Guard(make_config(keys), target=target, store=MemorySink())
    g.webhooks.dropped, g.webhooks.failed = 3, 1
    g.incidents.failed, g.incidents.dropped = 2, 5
    for _ in range(2):  # a second scrape adds nothing
        g.refresh_gauges()
        text = g.metrics.render()[0].decode()
        assert "bastion_guard_webhooks_dropped_total 3.0" in text
        assert "bastion_guard_webhooks_failed_total 1.0" in text
        assert "bastion_guard_incidents_lost_total 7.0" in text


def test_server_connect_args_set_timeouts_and_keepalives_unless_the_url_does() -> None:
    from sqlalchemy.engine import make_url

    from bastion.store.repository import server_connect_args

    pg = server_connect_args(make_url("postgresql+psycopg://u@h/db"), application_name="bastion-audit-guard")
    assert pg == {
        "connect_timeout": 5,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "application_name": "bastion-audit-guard",
    }
    own = server_connect_args(make_url("postgresql+psycopg://u@h/db?keepalives_idle=60&connect_timeout=2"))
    assert "keepalives_idle" not in own and "connect_timeout" not in own and own["keepalives"] == 1
    assert server_connect_args(make_url("sqlite:///x.db")) == {}
    assert server_connect_args(make_url("mysql+pymysql://u@h/db")) == {"connect_timeout": 5}


@pytest.mark.postgres
def test_a_stalled_postgres_audit_store_bounds_held_requests_and_recovers(
    pg_database: str, keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray]
) -> None:
    """The guard's own PostgreSQL backends are SIGSTOPped (as round 26 did to the whole server)."""

    store = AuditLog.open(pg_database)
    app = create_app(make_config(keys, limits={"max_inflight": 4}), store=store, target=target)
    body = _body(digits["x_test"][:1])
    with serve(app) as base, httpx.Client(base_url=base, timeout=10) as c:
        for _ in range(2):
            assert c.post(PREDICT, content=body, headers=_hdr(keys)).status_code == 200
        pids = stop_audit_backends(pg_database)  # the guard's connections carry its name
        try:
            threads, answers = _burst(base, keys, body, 7)
            deadline = time.monotonic() + 10
            while len(answers) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sorted(r.status_code for r in answers) == [503] * 3  # refused at once
            time.sleep(2.2)
            t0 = time.monotonic()
            ready = c.get("/readyz")
            assert time.monotonic() - t0 < 4.0 and ready.status_code == 503  # it hung 20 s before
            assert c.get("/healthz").status_code == 200
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        for t in threads:
            t.join(30)
        assert sorted(r.status_code for r in answers) == [200] * 4 + [503] * 3
    store.close()
    res = AuditLog.open(pg_database).verify()
    assert res.ok and res.records == 6, res.problems


def test_clients_dripping_their_bodies_hold_no_in_flight_slot(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray]
) -> None:
    import socket
    from urllib.parse import urlparse

    app = create_app(make_config(keys, limits={"max_inflight": 2}), store=MemorySink(), target=target)
    body = _body(digits["x_test"][:1])
    with serve(app) as base:
        u = urlparse(base)
        socks = []
        try:
            for _ in range(4):  # more than max_inflight, each stopping half-way through its body
                s = socket.create_connection((u.hostname, u.port), timeout=5)
                head = (
                    f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Authorization: Bearer {keys['alice'][0]}\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                s.sendall(head + body[: len(body) // 2])
                socks.append(s)
            time.sleep(0.3)
            r = httpx.post(f"{base}{PREDICT}", content=body, headers=_hdr(keys), timeout=10)
            assert r.status_code == 200, r.text
        finally:
            for s in socks:
                s.close()


def test_round27_01_canaries_match_near_rounding_ties_and_negative_zero(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray]
) -> None:
    """A canary made from the operator's float64 row matches what the guard sees (float32, ±0)."""
    from bastion.guard.canary import canary_hash

    base = digits["x_test"][3].astype(np.float64).copy()
    tie = base.copy()
    tie[5] = 0.12345  # a 4-decimal tie: float64 rounds down, its float32 rounds up
    zero = base.copy()  # digits rows hold zeros; the request writes them as -0.0
    cents = base.copy()
    cents[9] = 0.56  # 1234.56-like values differ between the float64 and float32 paths at 4 dp
    canaries = [{"id": f"c{i}", "sha256": canary_hash(r)} for i, r in enumerate((tie, zero, cents))]
    g = Guard(make_config(keys, canaries=canaries), target=target, store=MemorySink())
    sent = [tie, np.where(zero == 0.0, -0.0, zero), cents]
    for i, row in enumerate(sent):
        body = json.dumps({"instances": [row.tolist()]}).encode()
        assert (b"-0.0" in body) == (i == 1)
        r = g.handle("digits", _hdr(keys, ("alice", "bob", "eve")[i]), body)  # a hit opens its breaker
        assert r.status == 200
        assert g.alert_counts.get("guard.canary.hit") == i + 1, (i, g.alert_counts)


def test_a_retried_incident_whose_first_try_committed_is_not_recorded_twice(tmp_path: Any) -> None:
    import datetime as dt

    log = AuditLog.open(f"sqlite:///{tmp_path / 'a.db'}")
    inc = {
        "rule_id": "guard.honeytoken.hit",
        "severity": "critical",
        "asset": "digits",
        "key_id": "k",
        "atlas": ["AML.T0024"],
        "details": {},
        "created": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }
    iid = "ab" * 16
    assert log.add_incident(**inc, incident_id=iid) == iid
    assert log.add_incident(**inc, incident_id=iid) == iid  # the retry of a try that committed
    assert [i["id"] for i in log.incidents()] == [iid]
    assert log.add_incident(**inc) != iid and len(log.incidents()) == 2
    log.close()


def test_trial30_a_huge_integer_is_422_not_malformed_json(keys: Keys, target: SoftmaxTarget) -> None:
    g = Guard(make_config(keys), target=target, store=MemorySink())
    body = b'{"instances": [[' + b"9" * 5000 + b"]]}"
    r = g.handle("digits", _hdr(keys), body)
    assert r.status == 422 and r.body["detail"] == [
        {"field": "(body)", "reason": "a number has too many digits"}
    ]
    assert g.handle("digits", _hdr(keys), b'{"instances": [[1, }').status == 400
