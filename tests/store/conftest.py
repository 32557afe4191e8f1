"""Fixtures of the store tests: a hand-built report, SQLite URLs, fresh PostgreSQL databases.

The session's PostgreSQL server comes from ``postgres_url`` in ``tests/conftest.py``.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from bastion.core.budget import BudgetUsage
from bastion.core.config import Waiver
from bastion.core.findings import Finding, Location, Threat
from bastion.core.report import AssetRecord, Report, ReportFinding, Reproducibility, RunInfo
from bastion.core.results import CheckError, CheckResult, Series, Skipped
from bastion.core.severity import Severity

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


def build_report(
    run_id: str | None = None,
    *,
    started: dt.datetime = T0,
    project: str | None = "clinic",
    command: str = "assess",
) -> Report:
    """A report with every part filled: assets, checks with metrics/intervals/series, findings."""
    pickle_finding = Finding(
        rule_id="scan.pickle.denied-global",
        severity=Severity.CRITICAL,
        threat=Threat.SUPPLY_CHAIN,
        title="Pickle imports os.system",
        asset="triage-model",
        location=Location(path="models/triage.pt", member="archive/data.pkl", offset=412),
        evidence={"global": "os.system", "opcodes": 3},
        atlas=["AML.T0011.000"],
        remediation="Use safetensors.",
        references=["https://example.org/advisory"],
    )
    evasion_finding = Finding(
        rule_id="evasion.pgd.low-robust-accuracy",
        severity=Severity.HIGH,
        threat=Threat.EVASION,
        title="Robust accuracy 0.12 at eps=0.1",
        asset="triage-model",
        evidence={"robust_accuracy@eps=0.1": 0.12, "clean_accuracy": 0.97},
        atlas=["AML.T0043"],
    )
    waived_finding = Finding(
        rule_id="membership.lira.high-tpr",
        severity=Severity.MEDIUM,
        threat=Threat.PRIVACY,
        title="TPR 0.08 at FPR 0.01",
        asset="triage-model",
    )
    pgd = CheckResult(
        id="evasion.pgd",
        asset="triage-model",
        metrics={"robust_accuracy@eps=0.1": 0.12, "clean_accuracy": 0.97, "asr": None},
        intervals={"robust_accuracy@eps=0.1": (0.08, 0.17)},
        series={
            "robust_accuracy": Series(
                x=[0.0, 0.05, 0.1], y=[0.97, 0.5, 0.12], x_label="eps", y_label="robust accuracy"
            ),
            "roc": Series(x=[1e-4, 1e-2, 1.0], y=[0.0, None, 1.0], log_x=True),
        },
        notes={"asr": "no successful attack"},
        budget_used=BudgetUsage(queries=12000, seconds=3.5, samples=200, exhausted=False),
        seconds=3.6,
        findings=[evasion_finding],
    )
    skipped = CheckResult(
        id="extraction.knockoff", asset="triage-model", status="skipped", reason="label-only"
    )
    return Report(
        bastion_version="0.1.0",
        run=RunInfo(
            id=run_id or uuid.uuid4().hex,
            status="ok",
            started=started,
            seconds=12.5,
            command=command,
            project=project,
            budget="quick",
        ),
        reproducibility=Reproducibility(
            seed=7,
            config_hash="ab" * 32,
            versions={"bastion": "0.1.0", "torch": None, "scikit-learn": "1.5.0"},
        ),
        assets=[
            AssetRecord(
                name="triage-model",
                kind="model",
                path="models/triage.pt",
                format="torch",
                framework="torch",
                owner="ml-team",
                sha256="cd" * 32,
                scan_verdict="malicious",
            ),
            AssetRecord(name="api", kind="endpoint", url="http://127.0.0.1:8000/predict"),
        ],
        checks=[pgd, skipped],
        findings=[
            ReportFinding.of(pickle_finding, state="new"),
            ReportFinding.of(evasion_finding, state="unchanged"),
            ReportFinding.of(
                waived_finding,
                waiver=Waiver(
                    rule_id="membership.lira.high-tpr",
                    asset="triage-model",
                    reason="accepted until retrain",
                    expires=dt.date(2027, 1, 1),
                ),
            ),
        ],
        errors=[
            CheckError(check="poisoning.spectral", asset="triage-model", error="ValueError", message="bad")
        ],
        skipped=[Skipped(check="extraction.knockoff", asset="triage-model", reason="label-only")],
        baseline="0123abcd",
    )


@pytest.fixture
def make_report() -> Callable[..., Report]:
    """The :func:`build_report` factory."""
    return build_report


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """A SQLite URL in a folder that does not exist yet."""
    return f"sqlite:///{tmp_path}/nested/.bastion/bastion.db"


def _open_after(barrier: Any, url: str, results: Any) -> None:
    from bastion.store import Store

    barrier.wait()
    try:
        Store.open(url).close()
        results.put("ok")
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def open_in_processes_at_once(url: str, n: int) -> list[str]:
    """Open the store at ``url`` from ``n`` forked processes released together; their outcomes."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_open_after, args=(barrier, url, results)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        return [results.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
