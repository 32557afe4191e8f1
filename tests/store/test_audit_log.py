"""The guard's hash-chained audit log: verify detects edited, inserted, deleted and truncated records."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from bastion.store.audit import AuditLog

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _log(tmp_path: Path, n: int = 10) -> tuple[AuditLog, str]:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    log = AuditLog.open(url, chain="g1")
    for i in range(n):
        log.append(
            key_id=f"k{i % 3}", decision="allow", record={"i": i, "input_sha256": "ab" * 32}, created=NOW
        )
    return log, url


def _sql(url: str, stmt: str) -> None:
    eng = create_engine(url)
    with eng.begin() as conn:
        conn.execute(text(stmt))
    eng.dispose()


def test_chain_verifies_and_resumes(tmp_path: Path) -> None:
    log, url = _log(tmp_path)
    res = log.verify()
    assert res.ok and res.records == 10 and res.head_seq == 9
    head = log.head
    log.close()
    again = AuditLog.open(url, chain="g1")  # restart: continues the chain
    assert again.head == head
    again.append(key_id=None, decision="deny", record={"i": 10}, created=NOW)
    assert again.verify().ok and again.verify().records == 11
    other = AuditLog.open(url, chain="g2")  # chains are independent
    assert other.head[0] == -1 and other.verify().ok


def test_edit_detected(tmp_path: Path) -> None:
    log, url = _log(tmp_path)
    _sql(url, 'UPDATE audit_log SET record = \'{"i": 99, "input_sha256": "x"}\' WHERE seq = 4')
    res = log.verify()
    assert not res.ok and any("seq 4" in p and "edited" in p for p in res.problems)
    log2, url2 = _log(tmp_path / "b")
    _sql(url2, "UPDATE audit_log SET key_id = 'mallory' WHERE seq = 2")
    assert not log2.verify().ok


def test_a_changed_created_column_is_detected_against_the_hashed_ts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    log = AuditLog.open(url, chain="g1")
    t = NOW.timestamp() + 0.123456
    for i in range(4):  # as the guard writes them: created from the same reading as the record's ts
        created = dt.datetime.fromtimestamp(t + i, dt.UTC)
        log.append(key_id="k", decision="allow", record={"ts": t + i, "i": i}, created=created)
    log.append(key_id="k", decision="allow", record={"i": 4}, created=NOW)  # no ts: not checked
    assert log.verify().ok
    _sql(url, "UPDATE audit_log SET created = '2020-01-01 00:00:00.000000' WHERE seq = 2")
    res = log.verify()
    assert not res.ok and len(res.problems) == 1
    assert "seq 2: created column (2020-01-01" in res.problems[0] and "hashed ts" in res.problems[0]
    log.close()


def test_delete_and_insert_detected(tmp_path: Path) -> None:
    log, url = _log(tmp_path)
    _sql(url, "DELETE FROM audit_log WHERE seq = 5")
    res = log.verify()
    assert not res.ok and any("expected seq 5" in p for p in res.problems)
    log2, url2 = _log(tmp_path / "b")
    _sql(
        url2,
        "INSERT INTO audit_log (chain, seq, created, key_id, decision, prev_hash, hash, record) "
        "VALUES ('g1', 100, '2025-01-01', 'x', 'allow', 'aa', 'bb', '{}')",
    )
    assert not log2.verify().ok


def test_truncation_needs_the_recorded_head(tmp_path: Path) -> None:
    log, url = _log(tmp_path)
    head = log.head
    _sql(url, "DELETE FROM audit_log WHERE seq >= 8")
    assert log.verify().ok  # a clean prefix verifies on its own ...
    res = log.verify(expected_head=head)  # ... but not against the recorded head
    assert not res.ok and "truncated" in res.problems[0]


def test_incidents(tmp_path: Path) -> None:
    log, _ = _log(tmp_path, 1)
    iid = log.add_incident(
        rule_id="guard.canary.hit",
        severity="critical",
        asset="digits",
        key_id="eve",
        atlas=["AML.T0040"],
        details={"canary": "c1"},
        created=NOW,
    )
    rows = log.incidents(asset="digits")
    assert rows[0]["id"] == iid and rows[0]["status"] == "open" and rows[0]["atlas"] == ["AML.T0040"]


def test_forged_insert_with_recomputed_hash_is_detected(tmp_path: Path) -> None:
    """An attacker who knows the hash rule inserts a well-formed record between seq 3 and 4."""
    import json

    from bastion.store.audit import record_hash

    log, url = _log(tmp_path)
    rows = {r["seq"]: r for r in log.records()}
    forged = {"i": 99, "input_sha256": "cd" * 32}
    h = record_hash(rows[3]["hash"], "g1", 4, "k9", "allow", forged)
    _sql(url, "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 4")  # make room, keep order
    _sql(url, "UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1004")
    _sql(
        url,
        "INSERT INTO audit_log (chain, seq, created, key_id, decision, prev_hash, hash, record) VALUES "
        f"('g1', 4, '2025-01-01 00:00:00', 'k9', 'allow', "
        f"'{rows[3]['hash']}', '{h}', '{json.dumps(forged)}')",
    )
    res = log.verify()
    assert not res.ok and res.records == 11
    # the forged record itself is consistent; the next one no longer chains to its predecessor
    assert any(p.startswith("seq 5") for p in res.problems), res.problems


def test_a_readiness_probe_waiting_on_a_locked_file_does_not_hold_up_appends(tmp_path: Path) -> None:
    # red-team round 24: writable() waited out a backup's lock while holding the writer lock,
    # and the event loop's append waited behind it (/healthz frozen 4.7 s)
    import sqlite3

    log, url = _log(tmp_path, 1)
    backup = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    backup.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
    try:
        started = time.monotonic()
        why = log.writable()  # answers at once (round 26: no waiting on a pooled connection)
        assert why is not None and "locked" in why and time.monotonic() - started < 1.0
        assert log._lock.acquire(timeout=0.2)  # ... and never takes the writer lock
        log._lock.release()
    finally:
        backup.execute("ROLLBACK")
        backup.close()
    assert log.writable() == why  # the answer is reused for a second (probe floods: round 26)
    time.sleep(1.05)
    assert log.writable() is None
