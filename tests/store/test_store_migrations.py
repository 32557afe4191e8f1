"""Alembic migrations match the models; stored reports of older schema versions are migrated."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, MetaData, String, create_engine, inspect, text, update

from bastion.core.report import REPORT_SCHEMA_VERSION, Report
from bastion.store import (
    Store,
    StoreError,
    alembic_config,
    head_revision,
    migrate_report,
    report_versions,
    upgrade,
)
from bastion.store.models import Base, RunRow

from .conftest import open_in_processes_at_once

TABLES = {
    "runs",
    "assets",
    "check_results",
    "findings",
    "alembic_version",
    "audit_log",
    "model_versions",
    "dataset_versions",
    "incidents",
}


def _diff(url: str, metadata: MetaData) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(ctx, metadata))
    finally:
        engine.dispose()


def test_migrations_match_the_models_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    assert upgrade(url) == head_revision()
    assert _diff(url, Base.metadata) == []


def test_the_comparison_would_see_a_drift(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    upgrade(url)
    drifted = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["runs"].append_column(Column("extra", String(8)))
    diff = _diff(url, drifted)
    assert [d[0] for d in diff] == ["add_column"] and diff[0][3].name == "extra"


def test_upgrade_is_idempotent_and_downgrade_reverts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    upgrade(url)
    upgrade(url)
    engine = create_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) == TABLES
        index_names = {ix["name"] for ix in inspect(engine).get_indexes("findings")}
        assert {"ix_findings_run_id", "ix_findings_fingerprint"} <= index_names
        assert "ix_runs_started" in {ix["name"] for ix in inspect(engine).get_indexes("runs")}
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()
    upgrade(url)
    assert _diff(url, Base.metadata) == []


def test_migrate_report_is_identity_at_the_current_version(make_report: Callable[..., Report]) -> None:
    data = make_report().model_dump(mode="json")
    assert data["schema_version"] == REPORT_SCHEMA_VERSION == "1.6.0"
    assert migrate_report(data) == data


def test_migrate_report_1_0_0_gains_signature_fields(make_report: Callable[..., Report]) -> None:
    data = make_report().model_dump(mode="json")
    assert data["assets"], "the fixture report should have assets"
    old = copy.deepcopy(data)
    old["schema_version"] = "1.0.0"
    for asset in old["assets"]:
        del asset["signature"], asset["signature_detail"], asset["lineage"]
    del old["run"]["scope"], old["baseline_run"]
    new = migrate_report(old)
    assert new["schema_version"] == "1.6.0" and new["run"]["scope"] is None and new["baseline_run"] is None
    assert all(a["lineage"] is None for a in new["assets"])
    assert all(a["signature"] is None and a["signature_detail"] is None for a in new["assets"])
    assert Report.model_validate(new) == Report.model_validate(data)


def test_migrate_report_1_2_0_gains_version_lineage(make_report: Callable[..., Report]) -> None:
    """A report stored by schema 1.2.0 (no ``lineage`` on its assets) loads; lineage reads unknown."""
    data = make_report().model_dump(mode="json")
    old = copy.deepcopy(data)
    old["schema_version"] = "1.2.0"
    for asset in old["assets"]:
        del asset["lineage"]
    del old["baseline_run"]
    new = migrate_report(old)
    assert new["schema_version"] == "1.6.0"
    assert all("lineage" in a and a["lineage"] is None for a in new["assets"])
    assert Report.model_validate(new) == Report.model_validate(data)


def test_migrate_report_1_3_0_gains_baseline_run(make_report: Callable[..., Report]) -> None:
    """A report stored by schema 1.3.0 (its baseline named by id only) loads; baseline_run reads unknown."""
    data = make_report().model_dump(mode="json")
    old = copy.deepcopy(data)
    old["schema_version"] = "1.3.0"
    del old["baseline_run"]
    new = migrate_report(old)
    assert new["schema_version"] == "1.6.0" and new["baseline_run"] is None
    assert Report.model_validate(new) == Report.model_validate(data)


def test_migrate_report_1_4_0_gains_the_scan_allow_lists(make_report: Callable[..., Report]) -> None:
    """A report stored by schema 1.4.0 (allow-list additions not recorded) loads; they read unknown."""
    data = make_report().model_dump(mode="json")
    old = copy.deepcopy(data)
    old["schema_version"] = "1.4.0"
    del old["run"]["scan_allow"], old["run"]["scan_allow_cli"]
    new = migrate_report(old)
    assert new["schema_version"] == "1.6.0"
    assert new["run"]["scan_allow"] is None and new["run"]["scan_allow_cli"] is None
    assert Report.model_validate(new) == Report.model_validate(data)


def test_migrate_report_1_5_0_gains_the_runs_gate(make_report: Callable[..., Report]) -> None:
    """A report stored by schema 1.5.0 (``--fail-on`` not in the report) loads; the gate reads unknown."""
    data = make_report().model_dump(mode="json")
    old = copy.deepcopy(data)
    old["schema_version"] = "1.5.0"
    del old["run"]["fail_on"]
    new = migrate_report(old)
    assert new["schema_version"] == "1.6.0" and new["run"]["fail_on"] is None
    assert Report.model_validate(new) == Report.model_validate(data)


def _fake_older_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend 0.9.0 lacked ``bastion_version`` and 0.9.0 -> 0.9.5 -> current upgrades exist."""

    def add_bastion_version(data: dict[str, Any]) -> dict[str, Any]:
        data.setdefault("bastion_version", "0.0.0+unknown")
        return data

    def rename_baseline(data: dict[str, Any]) -> dict[str, Any]:
        data["baseline"] = data.pop("baseline_id", None)
        return data

    monkeypatch.setitem(report_versions.STEPS, "0.9.0", ("0.9.5", add_bastion_version))
    monkeypatch.setitem(report_versions.STEPS, "0.9.5", (REPORT_SCHEMA_VERSION, rename_baseline))


def test_migrate_report_applies_steps_in_order(
    make_report: Callable[..., Report], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_older_version(monkeypatch)
    current = make_report()
    old = current.model_dump(mode="json")
    old["schema_version"] = "0.9.0"
    del old["bastion_version"]
    old["baseline_id"] = old.pop("baseline")
    frozen = copy.deepcopy(old)
    new = migrate_report(old)
    assert old == frozen  # the input is not mutated
    assert new["schema_version"] == REPORT_SCHEMA_VERSION
    migrated = Report.model_validate(new)
    assert migrated.bastion_version == "0.0.0+unknown"
    assert migrated.baseline == current.baseline
    assert migrated.model_copy(update={"bastion_version": current.bastion_version}) == current


def test_migrate_report_refuses_unknown_versions(make_report: Callable[..., Report]) -> None:
    data = make_report().model_dump(mode="json")
    with pytest.raises(StoreError, match="newer than this Bastion"):
        migrate_report({**data, "schema_version": "1.7.0"})
    with pytest.raises(StoreError, match=r"no upgrade from report schema_version 0\.1\.0"):
        migrate_report({**data, "schema_version": "0.1.0"})
    with pytest.raises(StoreError, match="invalid schema_version"):
        migrate_report({**data, "schema_version": "one"})


def test_stored_older_report_is_migrated_on_read(
    sqlite_url: str, make_report: Callable[..., Report], monkeypatch: pytest.MonkeyPatch
) -> None:
    report = make_report()
    with Store.open(sqlite_url) as store:
        store.save_report(report)
        old = report.model_dump(mode="json")
        old["schema_version"] = "0.9.0"
        del old["bastion_version"]
        old["baseline_id"] = old.pop("baseline")
        with store._engine.begin() as conn:
            conn.execute(update(RunRow).where(RunRow.id == report.run.id).values(report=old))

        with pytest.raises(StoreError, match=f"stored run {report.run.id}.*no upgrade"):
            store.get_report("latest")

        _fake_older_version(monkeypatch)
        again = store.get_report(report.run.id)
        assert again.schema_version == REPORT_SCHEMA_VERSION
        assert again.bastion_version == "0.0.0+unknown"
        assert again.findings == report.findings and again.checks == report.checks


def test_a_stored_report_that_does_not_validate_is_a_store_error(
    sqlite_url: str, make_report: Callable[..., Report]
) -> None:
    report = make_report()
    with Store.open(sqlite_url) as store:
        store.save_report(report)
        broken = report.model_dump(mode="json")
        broken["run"]["status"] = "exploded"
        with store._engine.begin() as conn:
            conn.execute(update(RunRow).values(report=broken))
        with pytest.raises(StoreError, match=r"not a valid report: run\.status"):
            store.get_report("latest")
        with store._engine.begin() as conn:
            conn.execute(text("UPDATE runs SET report = '[1, 2]'"))
        with pytest.raises(StoreError, match="holds no report object"):
            store.get_report("latest")


def test_concurrent_processes_migrate_one_after_the_other(tmp_path: Path) -> None:
    for trial in range(3):
        url = f"sqlite:///{tmp_path}/race{trial}/bastion.db"
        assert open_in_processes_at_once(url, 4) == ["ok"] * 4
        assert _diff(url, Base.metadata) == []


def test_concurrent_threads_migrate_one_after_the_other(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/threads/bastion.db"
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def go() -> None:
        barrier.wait()
        try:
            Store.open(url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert _diff(url, Base.metadata) == []


def test_open_read_only_reads_a_current_store_and_never_writes(tmp_path: Path) -> None:
    from bastion.store import Store

    url = f"sqlite:///{tmp_path}/ro.db"
    assert Store.open_read_only(url) is None and not (tmp_path / "ro.db").exists()  # nothing created
    upgrade(url)
    before = (tmp_path / "ro.db").read_bytes()
    st = Store.open_read_only(url)
    assert st is not None
    with st:
        assert st.list_runs() == []
    engine = create_engine(url)
    try:  # an older schema is not read (a run would migrate it first) and stays as it was
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "-1")
        older = (tmp_path / "ro.db").read_bytes()
    finally:
        engine.dispose()
    assert older != before and Store.open_read_only(url) is None
    assert (tmp_path / "ro.db").read_bytes() == older
