"""The run store on SQLite: round trip, listing, lookup, atomic writes, errors, preflight."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, select, text

from bastion.core.errors import BastionError, ConfigError
from bastion.core.report import Report
from bastion.core.settings import DEFAULT_DB
from bastion.core.severity import Severity
from bastion.store import (
    AmbiguousRun,
    RunNotFound,
    RunSummary,
    Store,
    StoreError,
    default_url,
    head_revision,
    preflight,
    safe_url,
)
from bastion.store.models import AssetRow, CheckResultRow, FindingRow, RunRow

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
UNREACHABLE = "postgresql+psycopg://u:secret@127.0.0.1:1/x"


@pytest.fixture
def store(sqlite_url: str) -> Iterator[Store]:
    with Store.open(sqlite_url) as s:
        yield s


def _count(store: Store, model: Any) -> int:
    with store._engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_open_creates_the_sqlite_folder_and_schema(sqlite_url: str, tmp_path: Path) -> None:
    assert not (tmp_path / "nested").exists()
    with Store.open(sqlite_url) as store:
        store.check()
        assert store.list_runs() == []
    assert (tmp_path / "nested" / ".bastion" / "bastion.db").is_file()
    with create_engine(sqlite_url).connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()


def test_round_trip_is_exact(store: Store, make_report: Callable[..., Report]) -> None:
    report = make_report()
    run_id = store.save_report(report, fail_on="medium")
    assert run_id == report.run.id
    again = store.get_report(run_id)
    assert again == report
    assert again.model_dump_json() == report.model_dump_json()
    assert again.checks[0].intervals["robust_accuracy@eps=0.1"] == (0.08, 0.17)
    assert again.findings[2].waiver is not None and again.findings[2].waiver.expires == dt.date(2027, 1, 1)


def test_rows_hold_queryable_columns(store: Store, make_report: Callable[..., Report]) -> None:
    report = make_report()
    store.save_report(report, fail_on="high")
    with store._engine.connect() as conn:
        run = conn.execute(select(RunRow)).one()
        assets = conn.execute(select(AssetRow).order_by(AssetRow.id)).all()
        checks = conn.execute(select(CheckResultRow).order_by(CheckResultRow.id)).all()
        findings = conn.execute(select(FindingRow).order_by(FindingRow.id)).all()
    assert (run.project, run.command, run.status, run.seed, run.budget, run.fail_on) == (
        "clinic",
        "assess",
        "ok",
        7,
        "quick",
        "high",
    )
    assert run.config_hash == "ab" * 32 and run.schema_version == report.schema_version
    assert run.max_severity == "critical"
    # the waived medium finding does not count
    assert run.counts == {"info": 0, "low": 0, "medium": 0, "high": 1, "critical": 1}
    assert [(a.name, a.sha256, a.scan_verdict) for a in assets] == [
        ("triage-model", "cd" * 32, "malicious"),
        ("api", None, None),
    ]
    assert checks[0].check_id == "evasion.pgd"
    assert checks[0].metrics == {"robust_accuracy@eps=0.1": 0.12, "clean_accuracy": 0.97, "asr": None}
    assert checks[0].intervals == {"robust_accuracy@eps=0.1": [0.08, 0.17]}
    assert checks[0].series["roc"]["y"] == [0.0, None, 1.0]
    assert checks[0].budget_used["queries"] == 12000
    assert (checks[1].status, checks[1].reason, checks[1].budget_used) == ("skipped", "label-only", None)
    assert [(f.rule_id, f.state, f.waived) for f in findings] == [
        ("scan.pickle.denied-global", "new", False),
        ("evasion.pgd.low-robust-accuracy", "unchanged", False),
        ("membership.lira.high-tpr", None, True),
    ]
    assert findings[0].fingerprint == report.findings[0].fingerprint
    assert findings[0].location["member"] == "archive/data.pkl"
    assert findings[0].atlas == ["AML.T0011.000"]


def test_non_finite_metrics_are_stored_as_null(store: Store, make_report: Callable[..., Report]) -> None:
    report = make_report()
    report.checks[0].metrics["loss"] = math.nan
    report.checks[0].metrics["ratio"] = math.inf
    store.save_report(report)
    again = store.get_report(report.run.id)
    assert again.checks[0].metrics["loss"] is None and again.checks[0].metrics["ratio"] is None


def test_naive_started_is_taken_as_utc_and_listing_is_timezone_aware(
    store: Store, make_report: Callable[..., Report]
) -> None:
    store.save_report(make_report(started=dt.datetime(2026, 1, 1, 8, 0)))
    store.save_report(
        make_report(started=dt.datetime(2026, 1, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))))
    )
    runs = store.list_runs()
    assert [r.started for r in runs] == [
        dt.datetime(2026, 1, 1, 8, 0, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 1, 7, 30, tzinfo=dt.UTC),
    ]


def test_list_runs_newest_first_with_limit_and_project(
    store: Store, make_report: Callable[..., Report]
) -> None:
    ids = {}
    for hours, project in [(2, "a"), (0, "b"), (5, "a"), (1, "a")]:
        report = make_report(started=T0 + dt.timedelta(hours=hours), project=project)
        ids[hours] = store.save_report(report)
    runs = store.list_runs()
    assert all(isinstance(r, RunSummary) for r in runs)
    assert [r.id for r in runs] == [ids[5], ids[2], ids[1], ids[0]]
    assert [r.id for r in store.list_runs(limit=2)] == [ids[5], ids[2]]
    assert [r.id for r in store.list_runs(project="a")] == [ids[5], ids[2], ids[1]]
    assert store.list_runs(project="nobody") == []
    top = runs[0]
    assert top.started == T0 + dt.timedelta(hours=5) and top.started.tzinfo is not None
    assert (top.status, top.command, top.project, top.seconds) == ("ok", "assess", "a", 12.5)
    assert top.max_severity is Severity.CRITICAL and top.counts["high"] == 1
    assert len(store.list_runs(limit=None)) == 4
    with pytest.raises(ConfigError):
        store.list_runs(limit=0)


def test_lookup_by_full_id_prefix_and_latest(store: Store, make_report: Callable[..., Report]) -> None:
    a = make_report("abcd1111" + "0" * 24, started=T0)
    b = make_report("abcd2222" + "0" * 24, started=T0 + dt.timedelta(minutes=1))
    c = make_report("ffff9999" + "0" * 24, started=T0 - dt.timedelta(days=1))
    for r in (a, b, c):
        store.save_report(r)
    assert store.get_report(a.run.id) == a
    assert store.get_report("abcd1") == a
    assert store.get_report("ffff") == c
    assert store.get_report("latest") == b
    assert store.resolve("  abcd2  ") == b.run.id

    with pytest.raises(AmbiguousRun) as amb:
        store.get_report("abcd")
    assert amb.value.candidates == [b.run.id, a.run.id]
    assert a.run.id in str(amb.value) and b.run.id in str(amb.value)

    with pytest.raises(RunNotFound, match=r"'abc'.*at least 4"):
        store.get_report("abc")
    with pytest.raises(RunNotFound, match="'0123456'") as missing:
        store.get_report("0123456")
    assert missing.value.ref == "0123456"
    assert isinstance(missing.value, StoreError) and isinstance(missing.value, BastionError)
    # LIKE wildcards in a reference are literal
    with pytest.raises(RunNotFound):
        store.get_report("abcd%")
    with pytest.raises(RunNotFound):
        store.get_report("ab__")


@pytest.mark.parametrize("ref", ["\udcff\udcfe", "é", "zzzz", "abcd-1", "0" * 65, "latest1", ""])
def test_a_reference_that_cannot_be_a_run_id_is_not_found(
    store: Store, make_report: Callable[..., Report], ref: str
) -> None:
    # red-team round 22 F9: `show $'\xff\xfe'` (surrogates) ended in "internal error:
    # UnicodeEncodeError" from the driver; a reference that is not hex (or 'latest') is not sent
    store.save_report(make_report("abcd1111" + "0" * 24))
    with pytest.raises(RunNotFound, match="not found") as err:
        store.get_report(ref)
    assert err.value.ref == ref.strip()
    assert store.get_report("abcd1111").run.id.startswith("abcd1111")  # a real prefix still works


def test_list_runs_limit_has_an_upper_bound(store: Store) -> None:
    from bastion.store.repository import MAX_LIST_LIMIT

    assert store.list_runs(limit=MAX_LIST_LIMIT) == []
    with pytest.raises(ConfigError, match="limit must be 1 to 1000000"):
        store.list_runs(limit=MAX_LIST_LIMIT + 1)
    with pytest.raises(ConfigError):
        store.list_runs(limit=10**23)  # was an OverflowError inside SQLite


def test_latest_on_empty_store_is_not_found(store: Store) -> None:
    with pytest.raises(RunNotFound, match="no runs stored"):
        store.get_report("latest")


def test_previous_run(store: Store, make_report: Callable[..., Report]) -> None:
    assert store.previous_run("clinic") is None
    old = make_report(started=T0)
    new = make_report(started=T0 + dt.timedelta(hours=1))
    scan = make_report(started=T0 + dt.timedelta(hours=2), command="scan")
    other = make_report(started=T0 + dt.timedelta(hours=3), project="other")
    loose = make_report(started=T0 + dt.timedelta(hours=4), project=None)
    for r in (old, new, scan, other, loose):
        store.save_report(r)
    assert store.previous_run("clinic") == scan
    assert store.previous_run("clinic", command="assess") == new
    assert store.previous_run("clinic", before=new.run.id) == old
    assert store.previous_run("clinic", before=old.run.id) is None
    assert store.previous_run(None) == loose
    with pytest.raises(RunNotFound):
        store.previous_run("clinic", before="deadbeef")


def test_duplicate_run_id_is_refused_and_keeps_the_first(
    store: Store, make_report: Callable[..., Report]
) -> None:
    first = make_report("d00d" * 8)
    store.save_report(first)
    second = make_report("d00d" * 8, project="changed")
    with pytest.raises(StoreError, match="already stored"):
        store.save_report(second)
    assert store.get_report("d00d") == first
    assert _count(store, FindingRow) == len(first.findings)


def test_a_write_failing_halfway_writes_nothing(store: Store, make_report: Callable[..., Report]) -> None:
    inserted: list[str] = []

    def runs_inserted(_mapper: Any, _conn: Any, target: RunRow) -> None:
        inserted.append(target.id)

    def boom(_mapper: Any, _conn: Any, _target: FindingRow) -> None:
        raise RuntimeError("disk on fire")

    event.listen(RunRow, "after_insert", runs_inserted)
    event.listen(FindingRow, "before_insert", boom)
    try:
        report = make_report()
        # any error while saving is a store error naming the run and the cause
        with pytest.raises(StoreError, match=r"cannot save run .*: RuntimeError: disk on fire") as err:
            store.save_report(report)
        assert isinstance(err.value.__cause__, RuntimeError)
    finally:
        event.remove(FindingRow, "before_insert", boom)
        event.remove(RunRow, "after_insert", runs_inserted)
    assert inserted == [report.run.id]  # the runs row was written before the failure
    for model in (RunRow, AssetRow, CheckResultRow, FindingRow):
        assert _count(store, model) == 0
    # and the store still works afterwards
    store.save_report(report)
    assert store.get_report("latest") == report


def test_a_failing_database_write_is_a_store_error(
    store: Store, make_report: Callable[..., Report], monkeypatch: pytest.MonkeyPatch
) -> None:
    with store._engine.begin() as conn:
        conn.execute(text("DROP TABLE findings"))
    with pytest.raises(StoreError, match="cannot save run") as err:
        store.save_report(make_report())
    assert "\n" not in str(err.value)
    assert _count(store, RunRow) == 0


def test_a_value_past_the_database_integer_range_is_a_store_error(
    store: Store, make_report: Callable[..., Report]
) -> None:
    # red-team round 22 F6: a seed >= 2**63 ended the run in "internal error: OverflowError" after
    # all its work; any error while saving is a StoreError, and nothing is written
    report = make_report()
    report = report.model_copy(
        update={"reproducibility": report.reproducibility.model_copy(update={"seed": 10**26})}
    )
    with pytest.raises(StoreError, match=r"cannot save run .*: OverflowError") as err:
        store.save_report(report)
    assert "\n" not in str(err.value)
    assert _count(store, RunRow) == 0


def test_fail_on_is_validated(store: Store, make_report: Callable[..., Report]) -> None:
    with pytest.raises(ConfigError, match="fail_on"):
        store.save_report(make_report(), fail_on="severe")


def test_unreachable_postgres_is_a_quick_store_error_without_password() -> None:
    t0 = time.monotonic()
    with pytest.raises(StoreError) as err:
        Store.open(UNREACHABLE)
    assert time.monotonic() - t0 < 10
    message = str(err.value)
    assert "secret" not in message
    assert "\n" not in message
    assert "postgresql+psycopg://u:***@127.0.0.1:1/x" in message
    with pytest.raises(StoreError) as err2:
        preflight(UNREACHABLE)
    assert "secret" not in str(err2.value)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("not a url", "invalid database URL"),
        ("nosuchdialect://u:pw@h/x", "invalid database URL"),
    ],
)
def test_invalid_urls(url: str, match: str) -> None:
    with pytest.raises(StoreError, match=match) as err:
        Store.open(url)
    assert "pw" not in str(err.value)


def test_safe_url_masks_passwords() -> None:
    assert safe_url(UNREACHABLE) == "postgresql+psycopg://u:***@127.0.0.1:1/x"
    assert safe_url("sqlite:///a/b.db") == "sqlite:///a/b.db"
    assert "hunter2" not in safe_url("weird scheme://me:hunter2@host")


@pytest.mark.parametrize("key", ["password", "sslpassword", "passfile", "api_key", "token"])
def test_safe_url_masks_password_query_parameters(key: str) -> None:
    # red-team round 22 F7: libpq takes the password as ?password=; it was printed in the error
    masked = safe_url(f"postgresql://alice@127.0.0.1:1/bastion?{key}=S3cretPW2&sslmode=require")
    assert "S3cretPW2" not in masked
    assert f"{key}=***" in masked and "sslmode=require" in masked and "alice@127.0.0.1:1" in masked


def test_unreachable_postgres_with_a_query_password_is_an_error_without_it() -> None:
    url = "postgresql+psycopg://alice@127.0.0.1:1/bastion?password=S3cretPW2"
    for attempt in (lambda: Store.open(url), lambda: preflight(url)):
        with pytest.raises(StoreError) as err:
            attempt()
        assert "S3cretPW2" not in str(err.value)
        assert "password=***" in str(err.value)


def test_reason_masks_query_secrets_a_driver_echoes() -> None:
    from bastion.store.repository import _reason

    url = "postgresql://alice@h/db?password=S3cretPW2"
    text = _reason(
        RuntimeError(
            "auth failed for dsn 'password=S3cretPW2 host=h' (postgresql://alice@h/db?password=S3cretPW2)"
        ),
        url,
    )
    assert "S3cretPW2" not in text and "***" in text
    assert _reason(RuntimeError("bad password 'ab'"), "postgresql://alice@h/db?password=ab") == "RuntimeError"


def test_preflight_writes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/a/b/bastion.db"
    preflight(url)
    assert list(tmp_path.iterdir()) == []

    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a folder"):
        preflight(f"sqlite:///{tmp_path}/file/sub/bastion.db")

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    before = junk.read_bytes()
    with pytest.raises(StoreError, match="cannot open database"):
        preflight(f"sqlite:///{junk}")
    assert junk.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "junk.db"]


def test_preflight_accepts_a_good_store_and_refuses_a_newer_schema(
    sqlite_url: str, make_report: Callable[..., Report]
) -> None:
    with Store.open(sqlite_url) as store:
        store.save_report(make_report())
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    before = db.read_bytes()
    preflight(sqlite_url)
    assert db.read_bytes() == before

    with create_engine(sqlite_url).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError, match="newer than this Bastion"):
        preflight(sqlite_url)
    with pytest.raises(StoreError, match="upgrade bastion-ml"):
        Store.open(sqlite_url)


def test_a_read_only_store_at_head_opens_and_reads(
    sqlite_url: str, make_report: Callable[..., Report]
) -> None:
    report = make_report()
    with Store.open(sqlite_url) as store:
        store.save_report(report)
    path = sqlite_url.removeprefix("sqlite:///")
    with Store.open(f"sqlite:///file:{path}?mode=ro&uri=true") as ro:
        assert ro.get_report("latest") == report
        with pytest.raises(StoreError, match="readonly"):
            ro.save_report(make_report())


def test_check_notices_a_dropped_schema(store: Store) -> None:
    store.check()
    with store._engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
    with pytest.raises(StoreError, match="schema revision None"):
        store.check()


def test_default_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASTION_DB", raising=False)
    assert DEFAULT_DB == "sqlite:///.bastion/bastion.db"
    assert default_url() == f"sqlite:///{tmp_path}/.bastion/bastion.db"
    monkeypatch.setenv("BASTION_DB", "sqlite:///runs/x.db")
    assert default_url() == f"sqlite:///{tmp_path}/runs/x.db"
    assert default_url("postgresql+psycopg://u:pw@h/db") == "postgresql+psycopg://u:pw@h/db"
    assert default_url("sqlite:////abs/y.db") == "sqlite:////abs/y.db"
    assert default_url("sqlite://") == "sqlite://"


def test_open_without_url_uses_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASTION_DB", raising=False)
    with Store.open() as store:
        assert store.url == f"sqlite:///{tmp_path}/.bastion/bastion.db"
    assert (tmp_path / ".bastion" / "bastion.db").is_file()


def test_preflight_refuses_a_read_only_store_before_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # new-user trial: assess ran every check, then lost its report to "readonly database"
    import bastion.store.repository as repo

    url = f"sqlite:///{tmp_path / 'bastion.db'}"
    Store.open(url).close()
    preflight(url)
    path = str(tmp_path / "bastion.db")
    real = repo.os.access
    # root ignores file modes: the permission answer is simulated, the check is real
    monkeypatch.setattr(repo.os, "access", lambda p, mode: False if str(p) == path else real(p, mode))
    with pytest.raises(StoreError, match="read-only"):
        preflight(url)


@pytest.mark.parametrize(
    "linked", [".bastion", ".bastion/bastion.db", ".bastion/bastion.db-journal", ".bastion/bastion.db-wal"]
)
def test_a_symlinked_default_store_is_refused_unless_given_explicitly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linked: str
) -> None:
    """Red-team round 31, 04: a cloned project's ``.bastion`` (or ``bastion.db``, or its journal)
    was a symbolic link, and opening the default store created or wrote a database wherever it
    pointed, outside the project."""
    project, outside = tmp_path / "repo", tmp_path / "elsewhere"
    (project / ".bastion").mkdir(parents=True)
    outside.mkdir()
    if linked == ".bastion":
        (project / ".bastion").rmdir()
        (project / ".bastion").symlink_to(outside)
    else:
        (project / linked).symlink_to(outside / Path(linked).name)
    monkeypatch.chdir(project)
    monkeypatch.delenv("BASTION_DB", raising=False)
    for attempt in (
        Store.open,
        lambda: Store.open(DEFAULT_DB),
        lambda: Store.open_read_only(DEFAULT_DB),
        lambda: preflight(DEFAULT_DB),
        default_url,
    ):
        with pytest.raises(
            ConfigError, match=f"^{linked}: the project's default store is reached through a sym"
        ):
            attempt()
    assert list(outside.iterdir()) == []  # nothing created or written there
    if linked.endswith(("-journal", "-wal")):
        return  # (SQLite itself will not open a database whose journal is a link)
    # given explicitly, it is the user's choice
    monkeypatch.setenv("BASTION_DB", DEFAULT_DB)
    Store.open().close()
    monkeypatch.delenv("BASTION_DB")
    Store.open(f"sqlite:///{project / '.bastion' / 'bastion.db'}").close()
    assert list(outside.iterdir()) != []  # written where the user's link points
