"""Group commit of the audit log: requests decided on the event loop share one transaction, each is
answered only after its own record is committed, a failed transaction denies every request of it
(503) and leaves the chain unchanged, and records keep the order the requests were decided in."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
from typing import Any

import httpx
import numpy as np
import pytest
from tests.guard.helpers import MemorySink, SoftmaxTarget, make_config

from bastion.guard.app import create_app
from bastion.guard.audit import GroupCommit
from bastion.guard.config import KeySpec
from bastion.store.audit import AuditEntry, AuditLog
from bastion.store.errors import StoreError

Keys = dict[str, tuple[str, KeySpec]]


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="bastion.guard")


def _entry(i: int) -> AuditEntry:
    return AuditEntry(key_id=f"k{i % 3}", decision="allow", record={"i": i}, created=dt.datetime.now(dt.UTC))


async def _burst(app: Any, secret: str, rows: np.ndarray) -> list[httpx.Response]:
    """Every row sent at once (one request per row), through the ASGI app with its lifespan."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://guard") as c:
            return list(
                await asyncio.gather(
                    *(
                        c.post(
                            "/v1/models/digits/predict",
                            content=json.dumps({"instances": [r.tolist()]}).encode(),
                            headers={"Authorization": f"Bearer {secret}"},
                        )
                        for r in rows
                    )
                )
            )


def test_concurrent_requests_share_transactions_and_every_record_is_in_the_chain(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray], audit_db: str
) -> None:
    store = AuditLog.open(audit_db)
    app = create_app(make_config(keys), store=store, target=target)
    g = app.state.guard
    rows = digits["x_test"][:60]
    replies = asyncio.run(_burst(app, keys["alice"][0], rows))
    assert [r.status_code for r in replies] == [200] * len(rows)
    recs = store.records()
    assert len(recs) == len(rows) and store.verify().ok
    # each answered request's record is in the chain (matched by request id)
    assert {r.json()["request_id"] for r in replies} == {rec["record"]["request_id"] for rec in recs}
    assert g.commits.records == len(rows)
    assert g.commits.batches < len(rows)  # some transactions held several records
    store.close()


def test_a_failed_transaction_denies_each_of_its_requests_and_writes_nothing(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray], audit_db: str
) -> None:
    store = AuditLog.open(audit_db)
    app = create_app(make_config(keys), store=store, target=target)
    real = store._append

    def disk_full(entries: Any, **_: Any) -> list[int]:
        raise StoreError("disk full")

    store._append = disk_full  # type: ignore[method-assign]  # both paths: on the loop and the writer
    bad = asyncio.run(_burst(app, keys["alice"][0], digits["x_test"][:12]))
    assert [r.status_code for r in bad] == [503] * 12
    assert all(r.json()["detail"] == "audit log unavailable; request denied" for r in bad)
    assert all("predictions" not in r.json() for r in bad)  # no answer without a record
    assert store.records() == [] and store.head[0] == -1
    store._append = real  # type: ignore[method-assign]
    good = asyncio.run(_burst(app, keys["alice"][0], digits["x_test"][:5]))
    assert [r.status_code for r in good] == [200] * 5
    assert len(store.records()) == 5 and store.verify().ok
    store.close()


def test_a_sink_without_transactions_gets_each_record_and_a_failed_one_denies_only_its_request(
    keys: Keys, target: SoftmaxTarget, digits: dict[str, np.ndarray]
) -> None:
    sink = MemorySink()
    real = sink.append
    calls = {"n": 0}

    def flaky(**kw: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(**kw)

    sink.append = flaky  # type: ignore[method-assign]
    app = create_app(make_config(keys), store=sink, target=target)
    replies = asyncio.run(_burst(app, keys["alice"][0], digits["x_test"][:8]))
    codes = [r.status_code for r in replies]
    assert codes.count(503) == 1 and codes.count(200) == 7
    assert len(sink.records) == 7
    answered = {r.json()["request_id"] for r in replies if r.status_code == 200}
    assert answered == {rec["request_id"] for rec in sink.records}


def test_group_commit_keeps_the_call_order_and_batches_what_queued_meanwhile(audit_db: str) -> None:
    store = AuditLog.open(audit_db)
    gc = GroupCommit(store)

    async def go() -> list[bool]:
        return list(await asyncio.gather(*(gc.commit(_entry(i)) for i in range(40))))

    assert asyncio.run(go()) == [True] * 40
    recs = store.records()
    assert [r["record"]["i"] for r in recs] == list(range(40))
    assert [r["seq"] for r in recs] == list(range(40)) and store.verify().ok
    assert gc.batches == 1 and gc.records == 40  # all forty were queued in one turn of the loop
    assert asyncio.run(gc.commit(_entry(40))) is True  # a new event loop works too
    assert gc.batches == 2 and len(store.records()) == 41
    store.close()


def test_append_many_is_all_or_nothing(audit_db: str) -> None:
    store = AuditLog.open(audit_db)
    assert store.append_many([_entry(0), _entry(1)]) == [0, 1]
    head = store.head
    # a record that is not JSON (NaN): nothing of the batch is written
    nan = AuditEntry(key_id=None, decision="allow", record={"x": math.nan}, created=dt.datetime.now(dt.UTC))
    with pytest.raises(ValueError):
        store.append_many([_entry(2), nan])
    assert store.head == head and len(store.records()) == 2
    # another writer's row already holds seq 3: the batch's first insert (seq 2) succeeds, its
    # second (seq 3) fails, and the transaction takes the first back
    import sqlite3

    db = audit_db.removeprefix("sqlite:///")
    with sqlite3.connect(db) as raw:
        raw.execute(
            "INSERT INTO audit_log (chain, seq, created, key_id, decision, prev_hash, hash, record) "
            "VALUES ('guard', 3, '2026-01-01 00:00:00.000000', NULL, 'allow', 'x', 'y', '{}')"
        )
    import bastion.store.audit as audit_mod

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(audit_mod, "MAX_APPEND_TRIES", 1)  # no re-chaining: the batch must fail whole
        with pytest.raises(StoreError, match="cannot append"):
            store.append_many([_entry(3), _entry(4)])
    assert [r["seq"] for r in store.records()] == [0, 1, 3]
    assert store.head == head  # unchanged: the failed batch left nothing behind
    assert store.append_many([]) == []
    store.close()


def test_two_writers_on_one_chain_interleave_into_one_verified_chain(audit_db: str) -> None:
    """Guard replicas (or a new guard started before the old one stopped) share a chain."""
    a, b = AuditLog.open(audit_db), AuditLog.open(audit_db)  # both read the empty head
    assert a.append_many([_entry(0), _entry(1)]) == [0, 1]
    assert b.append_many([_entry(2)]) == [2]  # b's head was stale: re-chained after a's records
    assert a.append(key_id="k", decision="allow", record={"i": 3}, created=_entry(3).created) == 3
    assert b.append_many([_entry(4), _entry(5)]) == [4, 5]
    res = a.verify()
    assert res.ok and res.records == 6, res.problems
    assert a.head == (3, a.records()[3]["hash"]) and b.head == (5, res.head_hash)
    for log in (a, b):
        log.close()


def test_a_failed_append_is_logged_with_its_cause_but_no_record_content() -> None:
    from bastion.guard.audit import failure_reason

    exc = StoreError(
        "cannot append to audit log in sqlite:///a.db: (sqlite3.OperationalError) database is locked\n"
        "[SQL: INSERT INTO audit_log (...) VALUES (?)]\n[parameters: ('{\"input\": [0.1, 0.2]}',)]"
    )
    why = failure_reason(exc)
    assert why.startswith("StoreError: cannot append") and "database is locked" in why
    assert "[SQL" not in why and "input" not in why and "0.1" not in why
    assert failure_reason(RuntimeError()) == "RuntimeError"
