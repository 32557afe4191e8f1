"""Regressions of red-team round 16 (the guard): a half-open breaker's trial rejected before the
model wedged the key; a canary row's values reached the audit record with ``log_inputs``; a
stored record with a duplicate JSON key read one way in SQL and another in ``verify-log``."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from tests.guard.helpers import MemorySink, SoftmaxTarget, make_config, quiet_guard_logs, request_body

from bastion.guard.app import Guard
from bastion.guard.canary import canary_hash
from bastion.guard.config import KeySpec
from bastion.guard.response import BreakerState
from bastion.store.audit import AuditEntry, AuditLog

Keys = dict[str, tuple[str, KeySpec]]


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    quiet_guard_logs(caplog)


_body = request_body


def test_04_a_trial_rejected_before_the_model_lets_the_next_request_try(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray]
) -> None:
    now = [1_700_000_000.0]
    cfg = make_config(keys, response={"breaker_after": 1, "breaker_reset_s": 10})
    g = Guard(cfg, target=target, store=MemorySink(), clock=lambda: now[0])
    hdr = {"Authorization": f"Bearer {keys['eve'][0]}"}
    with g._lock:
        g._raise([g._alert("guard.extraction.class-coverage", "eve", {})], now[0])
    assert g.handle("digits", hdr, _body(digits["x_test"][:1])).status == 429
    now[0] += 10.5  # half-open: the next request is the trial, and it is malformed
    assert g.handle("digits", hdr, b'{"instances": [[1, 2]]}').status == 422
    r = g.handle("digits", hdr, _body(digits["x_test"][:1]))  # before the fix: 429 for ever
    breaker = g.policy.posture("eve").breaker
    assert r.status == 200 and breaker is not None and breaker.state == BreakerState.CLOSED


def test_03_a_canary_rows_values_are_never_logged(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray]
) -> None:
    trap, plain = digits["x_test"][0], digits["x_test"][1]
    cfg = make_config(keys, canaries=[{"id": "c", "sha256": canary_hash(trap)}], log_inputs=True)
    sink = MemorySink()
    g = Guard(cfg, target=target, store=sink)
    r = g.handle("digits", {"Authorization": f"Bearer {keys['alice'][0]}"}, _body([trap, plain]))
    assert r.status == 200
    rec = sink.records[-1]
    assert rec["input"][0] is None and rec["input"][1] is not None
    assert "guard.canary.hit" in [a["rule_id"] for a in rec["alerts"]]


def test_01_a_stored_record_with_a_duplicate_key_is_an_edit(tmp_path: Path) -> None:
    import datetime as dt

    path = tmp_path / "audit.db"
    log = AuditLog.open(f"sqlite:///{path}")
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    record = {"status": 200, "ts": created.timestamp()}
    log.append_many([AuditEntry(key_id="k", decision="allow", record=record, created=created)])
    assert log.verify().ok
    log.close()
    with sqlite3.connect(path) as conn:  # SQL's json_extract reads the first "status", Python the last
        conn.execute("""UPDATE audit_log SET record = '{"status":403,' || substr(record, 2)""")
        assert conn.execute("SELECT json_extract(record, '$.status') FROM audit_log").fetchone()[0] == 403
    res = AuditLog.open(f"sqlite:///{path}").verify()
    assert not res.ok and "duplicate keys" in res.problems[0]


def _rewrite_unkeyed(path: Path) -> None:
    """What a writer of the database can do to an unkeyed chain: edit a record, recompute every hash."""
    from bastion.store.audit import GENESIS, canonical, record_hash

    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT id, seq, key_id, decision, record FROM audit_log ORDER BY seq").fetchall()
        prev = GENESIS
        for rid, seq, kid, decision, text in rows:
            rec = json.loads(text)
            rec["status"] = 403
            h = record_hash(prev, "guard", seq, kid, decision, rec)
            conn.execute(
                "UPDATE audit_log SET record=?, prev_hash=?, hash=? WHERE id=?",
                (canonical(rec).decode(), prev, h, rid),
            )
            prev = h


def test_02_a_keyed_chain_cannot_be_recomputed_without_its_key(tmp_path: Path) -> None:
    import datetime as dt

    key = b"k" * 32
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    entries = [
        AuditEntry(
            key_id="k", decision="allow", record={"status": 200, "ts": created.timestamp()}, created=created
        )
        for _ in range(3)
    ]
    for keyed in (False, True):
        path = tmp_path / f"audit-{keyed}.db"
        log = AuditLog.open(f"sqlite:///{path}", key=key if keyed else None)
        log.append_many(entries)
        assert log.verify().ok
        log.close()
        _rewrite_unkeyed(path)
        res = AuditLog.open(f"sqlite:///{path}", key=key if keyed else None).verify()
        # unkeyed: the rewrite passes (only a head kept elsewhere shows it); keyed: caught
        assert res.ok is (not keyed)
    # a keyed chain verified without its key, or with another, fails closed
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    log = AuditLog.open(url, key=key)
    log.append_many(entries)
    log.close()
    assert AuditLog.open(url, key=key).verify().ok
    assert not AuditLog.open(url).verify().ok
    assert not AuditLog.open(url, key=b"z" * 32).verify().ok


def test_02_audit_key_env_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.core.errors import ConfigError
    from bastion.guard.config import audit_key

    assert audit_key(None) is None
    monkeypatch.setenv("GUARD_AUDIT_KEY", "short")
    with pytest.raises(ConfigError, match="GUARD_AUDIT_KEY"):
        audit_key("GUARD_AUDIT_KEY")
    monkeypatch.setenv("GUARD_AUDIT_KEY", "x" * 32)
    assert audit_key("GUARD_AUDIT_KEY") == b"x" * 32


def test_05_one_class_padding_in_fresh_cells_is_exploration() -> None:
    from bastion.guard.config import ExtractionSpec
    from bastion.guard.extraction import ExtractionDetector

    det = ExtractionDetector(ExtractionSpec(), num_classes=10, dims=2)
    z = [[0.0, 0.0]]
    rules: list[str] = []
    # a thief: every query of class 8 in a new cell (the label histogram stays one class)
    for i in range(150):
        rules += [
            a.rule
            for a in det.observe("thief", z=z, cells=[i], labels=[8], margins=[0.9], ood=[False], now=i)
        ]
    assert "exploration" in rules and "class-coverage" not in rules
    # a user: 200 queries about a few cases, reusing their cells
    quiet: list[str] = []
    for i in range(200):
        quiet += [
            a.rule
            for a in det.observe("user", z=z, cells=[i % 12], labels=[3], margins=[0.9], ood=[False], now=i)
        ]
    assert quiet == []


def test_bad_guard_inputs_get_one_clear_error(tmp_path: Path) -> None:
    # new-user trial: an infinite rate (no limit at all) and an empty key id
    from pydantic import ValidationError

    from bastion.guard.access import new_key
    from bastion.guard.config import LimitsSpec

    with pytest.raises(ValidationError, match="finite"):
        LimitsSpec(rate=float("inf"))
    with pytest.raises(ValueError, match="key id ''"):
        new_key("")


def test_round18_03_earlier_ordinary_traffic_does_not_dilute_a_probing_session() -> None:
    from bastion.guard.config import ExtractionSpec
    from bastion.guard.extraction import ExtractionDetector

    det = ExtractionDetector(ExtractionSpec(), num_classes=10, dims=2)
    rng = np.random.default_rng(0)
    rules: list[str] = []
    for i in range(1000):  # ordinary, confident queries about a few cases first
        z = [[float(i % 7), 0.0]]
        rules += [
            a.rule
            for a in det.observe("k", z=z, cells=[i % 7], labels=[3], margins=[0.9], ood=[False], now=i)
        ]
    assert "probing-session" not in rules
    for i in range(250):  # then a decision-boundary walk: near-duplicates with a low margin
        z = (np.array([[0.0, 0.0]]) + rng.normal(0, 0.01, (1, 2))).tolist()
        alerts = det.observe("k", z=z, cells=[0], labels=[3], margins=[0.05], ood=[False], now=1000 + i)
        rules += [a.rule for a in alerts]
    assert "probing-session" in rules


def test_round18_06_a_locked_store_never_stalls_an_alert(tmp_path: Path) -> None:
    import datetime as dt
    import time

    from bastion.guard.audit import IncidentWriter

    path = tmp_path / "audit.db"
    log = AuditLog.open(f"sqlite:///{path}")
    writer = IncidentWriter(log)
    incident = {
        "rule_id": "guard.honeytoken.hit",
        "severity": "critical",
        "asset": "digits",
        "key_id": "k",
        "atlas": ["AML.T0024"],
        "details": {"evidence": {}},
        "created": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # a backup or another writer holds the database
    try:
        started = time.monotonic()
        writer.record(**incident)
        assert time.monotonic() - started < 1.0  # before: the 5 s busy timeout, on the event loop
        assert writer.deferred == 1
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    writer.close()  # the deferred incident is written once the lock is gone
    assert [i["rule_id"] for i in log.incidents()] == ["guard.honeytoken.hit"]
    writer.record(**incident)  # unlocked: written at once
    assert writer.deferred == 1 and len(log.incidents()) == 2
    log.close()
