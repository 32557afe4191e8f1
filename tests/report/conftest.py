"""Fixtures for the renderers: a hand-built assessment report and scan, and a headless browser page."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bastion.core.budget import BudgetUsage
from bastion.core.config import Waiver
from bastion.core.findings import Finding, Location, Threat
from bastion.core.report import AssetRecord, Report, ReportFinding, Reproducibility, RunInfo
from bastion.core.results import CheckError, CheckResult, Series, Skipped
from bastion.core.scanning import FileResult, ScanResult, Verdict
from bastion.core.severity import Severity

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MALICIOUS_TITLE = "<script>alert(1)</script>"


def _finding(rule_id: str, severity: Severity, threat: Threat, title: str, **kw: Any) -> Finding:
    return Finding(rule_id=rule_id, severity=severity, threat=threat, title=title, **kw)


def make_findings() -> list[ReportFinding]:
    """Two findings of every severity, plus a waived one, a fixed one and a hostile title."""
    expires = dt.date(2099, 1, 31)
    raw: list[tuple[Finding, dict[str, Any]]] = [
        (
            _finding(
                "scan.pickle.denied-global",
                Severity.CRITICAL,
                Threat.SUPPLY_CHAIN,
                "Pickle calls os.system when loaded",
                asset="diagnosis-model",
                location=Location(path="models/diagnosis.pt", member="archive/data.pkl", offset=42),
                evidence={"global": "os.system", "opcode": "REDUCE"},
                atlas=["AML.T0011.000", "AML.T0010.003"],
                remediation="Do not load this file; re-export the weights as safetensors.",
                references=["https://github.com/mmaitre314/picklescan", "GHSA-xxxx-yyyy"],
            ),
            {"state": "new"},
        ),
        (
            _finding(
                "scan.pickle.denied-global",
                Severity.CRITICAL,
                Threat.SUPPLY_CHAIN,
                "Pickle calls builtins.exec when loaded",
                asset="triage-model",
                location=Location(path="models/triage.pkl", offset=7),
                evidence={"global": "builtins.exec"},
                atlas=["AML.T0011.000"],
                remediation="Do not load this file.",
            ),
            {"state": "unchanged"},
        ),
        (
            _finding(
                "evasion.pgd.low-robust-accuracy",
                Severity.HIGH,
                Threat.EVASION,
                "Robust accuracy 0.12 at eps=0.1 is below 0.5",
                asset="diagnosis-model",
                evidence={"robust_accuracy@eps=0.1": 0.12, "threshold": 0.5, "curve": [0.9, 0.5, 0.12]},
                atlas=["AML.T0015", "AML.T0043"],
                remediation="Adversarially train the model (PGD, TRADES).",
            ),
            {"state": "new"},
        ),
        (
            _finding(
                "membership.lira.high-tpr",
                Severity.HIGH,
                Threat.PRIVACY,
                "Membership inference TPR 0.08 at FPR 0.001",
                asset="triage-model",
                evidence={"tpr@fpr=0.001": 0.08, "auc": 0.71},
                atlas=["AML.T0024.000"],
                remediation="Train with DP-SGD to a target epsilon.",
            ),
            {},
        ),
        (
            _finding(
                "extraction.knockoff.high-fidelity",
                Severity.MEDIUM,
                Threat.EXTRACTION,
                "A clone reaches 0.91 fidelity after 1000 queries",
                asset="triage-api",
                location=Location(endpoint="https://triage.example.org/predict"),
                evidence={"fidelity@queries=1000": 0.91},
                atlas=["AML.T0024.002"],
                remediation="Put the guard in front of the endpoint; rate-limit per client.",
            ),
            {"state": "new"},
        ),
        (
            _finding(
                "data.label-errors.suspect-labels",
                Severity.MEDIUM,
                Threat.POISONING,
                MALICIOUS_TITLE,
                asset="patients-train",
                location=Location(path="data/train.csv", index=17),
                evidence={"suspects": 12, "note": "<b>bold</b>"},
                atlas=["AML.T0020"],
                remediation="Review the flagged rows <img src=x onerror=alert(2)>.",
                references=["javascript:alert(3)"],
            ),
            {},
        ),
        (
            _finding(
                "governance.owner.missing",
                Severity.LOW,
                Threat.GOVERNANCE,
                "Asset has no owner",
                asset="triage-api",
                atlas=[],
                remediation="Name an owner in bastion.yaml.",
            ),
            {},
        ),
        (
            _finding(
                "governance.incident-plan.missing",
                Severity.LOW,
                Threat.GOVERNANCE,
                "The project has no incident plan",
                remediation="Link an incident plan in bastion.yaml.",
            ),
            {"state": "unchanged"},
        ),
        (
            _finding(
                "scan.pickle.unknown-global",
                Severity.INFO,
                Threat.SUPPLY_CHAIN,
                "Pickle references collections.OrderedDict",
                asset="diagnosis-model",
                location=Location(path="models/diagnosis.pt", member="archive/data.pkl", offset=9),
                atlas=["AML.T0011.000"],
            ),
            {},
        ),
        (
            _finding(
                "drift.psi.minor-drift",
                Severity.INFO,
                Threat.RUNTIME,
                "Minor input drift (PSI 0.04)",
                asset="triage-model",
                evidence={"psi": 0.04},
            ),
            {"state": "fixed"},
        ),
        # Waived: a high finding accepted until 2099 — must not gate.
        (
            _finding(
                "evasion.hopskipjump.low-robust-accuracy",
                Severity.HIGH,
                Threat.EVASION,
                "Label-only attack succeeds on 60% of inputs",
                asset="triage-api",
                evidence={"success_rate": 0.6},
                atlas=["AML.T0015"],
                remediation="Adversarial training.",
            ),
            {
                "waiver": Waiver(
                    rule_id="evasion.hopskipjump.low-robust-accuracy",
                    asset="triage-api",
                    reason="Accepted by the CISO until the retrain ships",
                    expires=expires,
                ),
                "state": "unchanged",
            },
        ),
    ]
    return [ReportFinding.of(f, **extra) for f, extra in raw]


def make_checks() -> list[CheckResult]:
    """Checks with metrics, intervals, notes, budgets and series (incl. log axes), a skip, an error."""
    return [
        CheckResult(
            id="evasion.pgd",
            asset="diagnosis-model",
            metrics={
                "clean_accuracy": 0.97,
                "robust_accuracy@eps=0.1": 0.12,
                "robust_accuracy@eps=0.3": None,
            },
            intervals={"clean_accuracy": (0.95, 0.985), "robust_accuracy@eps=0.1": (0.08, 0.17)},
            notes={"robust_accuracy@eps=0.3": "budget exhausted before eps=0.3"},
            series={
                "robust_accuracy": Series(
                    x=[0.0, 0.05, 0.1, 0.2], y=[0.97, 0.5, 0.12, None], x_label="eps", y_label="accuracy"
                ),
                "robust_accuracy_fgsm": Series(
                    x=[0.0, 0.05, 0.1, 0.2], y=[0.97, 0.7, 0.4, 0.2], x_label="eps", y_label="accuracy"
                ),
            },
            budget_used=BudgetUsage(queries=12000, seconds=3.5, samples=100, exhausted=True),
            seconds=3.6,
        ),
        CheckResult(
            id="membership.lira",
            asset="triage-model",
            metrics={"auc": 0.71, "tpr@fpr=0.01": 0.2, "tpr@fpr=0.001": 0.08},
            intervals={"auc": (0.68, 0.74), "tpr@fpr=0.01": (0.15, 0.26), "tpr@fpr=0.001": (0.05, 0.11)},
            series={
                "roc": Series(
                    x=[0.0, 1e-4, 1e-3, 1e-2, 0.1, 1.0],
                    y=[0.0, 0.02, 0.08, 0.2, 0.5, 1.0],
                    x_label="false positive rate",
                    y_label="true positive rate",
                    log_x=True,
                    log_y=True,
                ),
                "calibration": Series(x=[0.1, 0.5, 0.9], y=[0.12, 0.48, 0.85], x_label="p", y_label="freq"),
            },
            seconds=8.0,
        ),
        CheckResult(
            id="extraction.knockoff",
            asset="triage-api",
            metrics={"fidelity@queries=1000": 0.91},
            intervals={"fidelity@queries=1000": (0.88, 0.93)},
            series={
                "fidelity": Series(
                    x=[100, 300, 1000], y=[0.6, 0.8, 0.91], x_label="queries", y_label="fidelity", log_x=True
                )
            },
        ),
        CheckResult(id="governance.controls", asset=None, metrics={"controls_in_place": 3.0}),
        CheckResult(
            id="evasion.pgd",
            asset="triage-api",
            status="skipped",
            reason="needs loss gradients; target is HTTP, label-only",
        ),
        CheckResult(
            id="poisoning.spectral",
            asset="patients-train",
            status="error",
            reason="PluginError: feature extractor failed on row 3",
        ),
    ]


def make_report(**overrides: Any) -> Report:
    data: dict[str, Any] = dict(
        bastion_version="0.1.0",
        run=RunInfo(
            id="run-20250101-abc123",
            status="error",
            started=dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.UTC),
            seconds=42.5,
            project="st-mary-diagnostics",
            budget="quick",
        ),
        reproducibility=Reproducibility(
            seed=1234,
            config_hash="ab" * 32,
            versions={"bastion": "0.1.0", "torch": "2.13.0", "scikit-learn": None, "atlas": "5.6.0"},
        ),
        assets=[
            AssetRecord(
                name="diagnosis-model",
                kind="model",
                path="models/diagnosis.pt",
                format="pytorch-zip",
                framework="torch",
                owner="ml-team",
                sha256="cd" * 32,
                scan_verdict="malicious",
            ),
            AssetRecord(name="triage-model", kind="model", path="models/triage.pkl", sha256="ef" * 32),
            AssetRecord(name="triage-api", kind="endpoint", url="https://triage.example.org/predict"),
            AssetRecord(name="patients-train", kind="dataset", path="data/train.csv"),
        ],
        checks=make_checks(),
        findings=make_findings(),
        errors=[
            CheckError(
                check="poisoning.spectral",
                asset="patients-train",
                error="PluginError",
                message="feature extractor failed on row 3",
            )
        ],
        skipped=[
            Skipped(
                check="evasion.pgd",
                asset="triage-api",
                reason="needs loss gradients; target is HTTP, label-only",
            ),
            Skipped(check="privacy.dp-audit", asset="triage-model", reason="needs a training recipe"),
        ],
        baseline="run-20241201-def456",
    )
    data.update(overrides)
    return Report(**data)


@pytest.fixture
def report_factory() -> Callable[..., Report]:
    """``make_report(**overrides)``: the full report with some top-level fields replaced."""
    return make_report


@pytest.fixture
def report() -> Report:
    """A full assessment report covering every renderer feature."""
    return make_report()


@pytest.fixture(scope="module")
def report_html() -> str:
    """The full report rendered to HTML once per module (plots take a moment)."""
    from bastion.report import report_to_html

    return report_to_html(make_report())


@pytest.fixture
def scan_result() -> ScanResult:
    """A scan with malicious, suspicious, safe, error and skipped files."""
    return ScanResult(
        files=[
            FileResult(
                path="models/evil.pkl",
                format="pickle",
                verdict=Verdict.MALICIOUS,
                sha256="11" * 32,
                size=120,
                findings=[
                    Finding(
                        rule_id="scan.pickle.denied-global",
                        severity=Severity.CRITICAL,
                        threat=Threat.SUPPLY_CHAIN,
                        title="posix.system is called when the pickle loads",
                        location=Location(path="models/evil.pkl", offset=33),
                        evidence={"global": "posix.system"},
                        atlas=["AML.T0011.000"],
                        remediation="Do not load it.",
                    ),
                    Finding(
                        rule_id="scan.pickle.unknown-global",
                        severity=Severity.MEDIUM,
                        threat=Threat.SUPPLY_CHAIN,
                        title="mylib.Thing is not allow-listed",
                        location=Location(path="models/evil.pkl", offset=80),
                        atlas=["AML.T0011.000"],
                    ),
                ],
                globals=["posix.system", "mylib.Thing"],
            ),
            FileResult(
                path="models/model.pt",
                format="pytorch-zip",
                verdict=Verdict.SUSPICIOUS,
                sha256="22" * 32,
                size=4096,
                findings=[
                    Finding(
                        rule_id="scan.pickle.unknown-global",
                        severity=Severity.MEDIUM,
                        threat=Threat.SUPPLY_CHAIN,
                        title="mylib.Net is not allow-listed",
                        location=Location(path="models/model.pt", member="model/data.pkl", offset=12),
                        atlas=["AML.T0011.000"],
                    )
                ],
                globals=["mylib.Net"],
            ),
            FileResult(path="models/ok.npy", format="npy", verdict=Verdict.SAFE, sha256="33" * 32, size=128),
            FileResult(
                path="models/broken.pkl",
                format="pickle",
                verdict=Verdict.ERROR,
                size=3,
                reason="truncated pickle stream at byte 3",
            ),
            FileResult(path="README.md", verdict=Verdict.SKIPPED, size=10, reason="not a model file"),
        ]
    )


@pytest.fixture
def chromium_page(chromium_path: str) -> Iterator[Any]:
    """A Playwright page in headless Chromium.

    ``chromium_path`` (top-level conftest) skips when Chromium is absent, and fails under
    ``CI=true``; a missing Playwright package is treated the same way.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - playwright is a dev dependency
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}:
            pytest.fail("required under CI: playwright (pip install playwright)", pytrace=False)
        pytest.skip("playwright is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()
