"""The run store on a real PostgreSQL 15 server (see the ``postgres_url`` fixture)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, func, select, text

from bastion.core.report import Report
from bastion.store import AmbiguousRun, RunNotFound, Store, StoreError, head_revision, preflight
from bastion.store.models import AssetRow, Base, CheckResultRow, FindingRow, RunRow

from .conftest import open_in_processes_at_once

pytestmark = pytest.mark.postgres

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def test_migrations_match_the_models_on_postgres(pg_database: str) -> None:
    preflight(pg_database)  # an empty database is fine, and preflight creates nothing
    engine = create_engine(pg_database)
    try:
        with engine.connect() as conn:
            assert (
                conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar_one()
                == 0
            )
        with Store.open(pg_database) as store:
            store.check()
        with engine.connect() as conn:
            assert (
                conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()
            )
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
            kinds = dict(
                conn.execute(
                    text(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name = 'runs' AND column_name IN ('started', 'report')"
                    )
                ).all()
            )
        assert kinds == {"started": "timestamp with time zone", "report": "json"}
    finally:
        engine.dispose()


def test_round_trip_listing_and_lookup_on_postgres(
    pg_database: str, make_report: Callable[..., Report]
) -> None:
    a = make_report("abcd1111" + "0" * 24, started=T0)
    b = make_report("abcd2222" + "0" * 24, started=T0 + dt.timedelta(hours=1), project="other")
    c = make_report(started=T0.astimezone(dt.timezone(dt.timedelta(hours=-5))) - dt.timedelta(days=1))
    with Store.open(pg_database) as store:
        for r in (a, b, c):
            store.save_report(r, fail_on="medium")
        assert store.get_report(a.run.id) == a
        assert store.get_report("abcd1") == a
        assert store.get_report("latest") == b
        assert store.get_report(c.run.id) == c
        with pytest.raises(AmbiguousRun):
            store.get_report("abcd")
        with pytest.raises(RunNotFound):
            store.get_report("zzzz")
        runs = store.list_runs()
        assert [r.id for r in runs] == [b.run.id, a.run.id, c.run.id]
        assert runs[2].started == c.run.started and runs[2].started.utcoffset() == dt.timedelta(0)
        assert [r.id for r in store.list_runs(project="clinic")] == [a.run.id, c.run.id]
        assert store.previous_run("clinic", before=a.run.id) == c
        with store._engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(FindingRow)).scalar_one() == 9
            metrics = conn.execute(
                select(CheckResultRow.metrics).where(CheckResultRow.run_id == a.run.id).limit(1)
            ).scalar_one()
        assert metrics["robust_accuracy@eps=0.1"] == 0.12
    # reopening an up-to-date database is fine
    with Store.open(pg_database) as store:
        assert len(store.list_runs()) == 3


def test_a_write_failing_halfway_writes_nothing_on_postgres(
    pg_database: str, make_report: Callable[..., Report]
) -> None:
    def boom(_mapper: Any, _conn: Any, _target: Any) -> None:
        raise RuntimeError("fail after the runs row")

    with Store.open(pg_database) as store:
        event.listen(FindingRow, "before_insert", boom)
        try:
            with pytest.raises(StoreError, match="RuntimeError: fail after the runs row"):
                store.save_report(make_report())
        finally:
            event.remove(FindingRow, "before_insert", boom)
        with store._engine.connect() as conn:
            for model in (RunRow, AssetRow, CheckResultRow, FindingRow):
                assert conn.execute(select(func.count()).select_from(model)).scalar_one() == 0


def test_wrong_password_or_database_is_a_store_error(postgres_url: str) -> None:
    missing = postgres_url.replace("postgres@", "postgres:topsecret@").rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(StoreError, match="no_such_db") as err:
        Store.open(missing)
    assert "topsecret" not in str(err.value) and "\n" not in str(err.value)


def test_concurrent_processes_migrate_one_after_the_other_on_postgres(pg_database: str) -> None:
    assert open_in_processes_at_once(pg_database, 3) == ["ok"] * 3
    with Store.open(pg_database) as store:
        store.check()


def test_audit_group_commit_is_one_transaction_all_or_nothing_on_postgres(pg_database: str) -> None:
    from bastion.store.audit import AuditEntry, AuditLog

    def entry(i: int) -> AuditEntry:
        record = {"i": i, "ts": T0.timestamp() + i}  # ``created`` from the same clock reading, as the guard
        return AuditEntry(
            key_id=f"k{i % 2}", decision="allow", record=record, created=T0 + dt.timedelta(seconds=i)
        )

    log = AuditLog.open(pg_database)
    assert log.append_many([entry(i) for i in range(5)]) == [0, 1, 2, 3, 4]
    assert log.append(key_id=None, decision="deny", record={"i": 5}, created=T0) == 5
    head = log.head
    # another writer's row already holds seq 7: the batch's first insert (seq 6) succeeds, its
    # second (seq 7) fails, and the transaction takes the first back
    with log._engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_log (chain, seq, created, key_id, decision, prev_hash, hash, record) "
                "VALUES ('guard', 7, :t, NULL, 'allow', 'x', 'y', '{}')"
            ),
            {"t": T0},
        )
    import bastion.store.audit as audit_mod

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(audit_mod, "MAX_APPEND_TRIES", 1)  # no re-chaining: the batch must fail whole
        with pytest.raises(StoreError, match="cannot append"):
            log.append_many([entry(6), entry(7)])
    assert log.head == head  # nothing of the failed batch is in the chain
    assert [r["seq"] for r in log.records()] == [0, 1, 2, 3, 4, 5, 7]
    assert not any("created" in p for p in log.verify().problems)  # timestamps round-trip exactly
    log.close()
    # two writers (replicas) on one chain: each batch that finds its seq taken is re-chained
    a, b = AuditLog.open(pg_database, chain="replicas"), AuditLog.open(pg_database, chain="replicas")
    assert a.append_many([entry(0), entry(1)]) == [0, 1]
    assert b.append_many([entry(2), entry(3)]) == [2, 3]
    assert a.append_many([entry(4)]) == [4]
    res = b.verify()
    assert res.ok and res.records == 5, res.problems
    assert a.writable() is None
    for w in (a, b):
        w.close()


def test_an_incident_is_never_written_on_the_event_loop_on_postgres(pg_database: str) -> None:
    # red-team round 24: wait=False had no effect on a server database, so one honeytoken hit
    # during an 8 s database stall froze /healthz for 7.9 s; the writer thread writes it instead
    from bastion.store.audit import AuditLog
    from bastion.store.errors import StoreBusy

    log = AuditLog.open(pg_database)
    incident = {
        "rule_id": "guard.honeytoken.hit",
        "severity": "critical",
        "asset": "digits",
        "key_id": "eve",
        "atlas": ["AML.T0024"],
        "details": {},
        "created": T0,
    }
    with pytest.raises(StoreBusy):
        log.add_incident(**incident, wait=False)
    assert log.incidents(asset="digits") == []
    log.add_incident(**incident)  # the writer thread's call (waits as long as it takes)
    assert len(log.incidents(asset="digits")) == 1
