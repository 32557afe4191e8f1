"""The report model: what ``bastion assess`` writes as ``report.json`` and stores.

Its JSON Schema is generated into ``docs/report.schema.json``. ``schema_version``
follows semver: an issue that extends the report bumps it and migrates stored runs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.core.config import Waiver
from bastion.core.findings import Finding
from bastion.core.redact import redact_url
from bastion.core.results import CheckError, CheckResult, Skipped
from bastion.core.severity import FAIL_ON_CHOICES, Severity

REPORT_SCHEMA_VERSION = "1.6.0"


class RunScope(BaseModel):
    """What a run was narrowed to (``--only``, ``--skip``, ``--asset``); ``RunInfo.scope``."""

    model_config = ConfigDict(extra="forbid")

    only: list[str] = Field(default_factory=list)
    skip: list[str] = Field(default_factory=list)
    asset: str | None = None

    def describe(self) -> str:
        """The selection as the command line gave it: ``--only evasion --asset digits``."""
        words = [f"--only {p}" for p in self.only] + [f"--skip {p}" for p in self.skip]
        if self.asset is not None:
            words.append(f"--asset {self.asset}")
        return " ".join(words) or "every asset and check"


class RunInfo(BaseModel):
    """Identity and outcome of a run. ``status``: ``ok`` or ``error`` (incomplete).

    ``scope``: the selection the run was narrowed to (``None``: every asset and check). Against
    a baseline, a finding of a check that did not run on its asset is left out, never ``fixed``.

    ``scan_allow``: the project file's ``scan.allow`` entries (only the user's own code);
    ``scan_allow_cli``: the entries typed for the run (``--allow``, ``allow=``; not so limited).
    Each global only one of them let through is an ``info`` finding
    (``scan.pickle.project-allowed`` / ``scan.pickle.user-allowed``). ``None``: not recorded (a
    run stored before schema 1.5.0).

    ``fail_on``: the gate the run was made with (``--fail-on``; ``None``: not recorded, a run
    stored before schema 1.6.0). ``bastion show`` re-renders the gate with it.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    status: Literal["ok", "error"]
    started: dt.datetime
    seconds: float = Field(ge=0)
    command: str = "assess"
    project: str | None = None
    budget: str | None = None
    scope: RunScope | None = None
    scan_allow: list[str] | None = None
    scan_allow_cli: list[str] | None = None
    fail_on: str | None = Field(default=None, pattern="^(" + "|".join(FAIL_ON_CHOICES) + ")$")


class Reproducibility(BaseModel):
    """What is needed to reproduce the run.

    Attributes:
        seed: the project seed.
        config_hash: SHA-256 of the ``bastion.yaml`` bytes (``None`` for a scan without one).
        versions: ``bastion``, ``torch``, ``scikit-learn``, ``atlas`` (``None`` where not installed).
    """

    model_config = ConfigDict(extra="forbid")

    seed: int | None = None
    config_hash: str | None = None
    versions: dict[str, str | None] = Field(default_factory=dict)


class VersionLineage(BaseModel):
    """Where a hardened model version came from: ``AssetRecord.lineage`` of ``<model>.v<N>``.

    What ``bastion harden`` recorded in the store (table ``model_versions``) when it wrote the
    version; ``bastion assess`` copies it into the report of every run that assesses the version.

    Attributes:
        version_of: the original model asset (in ``bastion.yaml``; its file is version 1).
        version: ``N`` (2 and up).
        id: the version's id in the store.
        created: when it was recorded (UTC).
        procedure: the defence that produced it (``defend.pgd-at``, ``defend.dp-train`` ...).
        params: the procedure's validated parameters.
        epsilon_spent: for differentially private procedures (those recording δ: ``dp-train``,
            ``dp-logreg``), the privacy budget ε spent as the procedure accounted it; ``None``
            otherwise (an adversarial-training ε is a perturbation size, in ``params``).
        delta: the δ of that (ε, δ) guarantee; ``None`` for non-private procedures.
        parent_id: the store id of the version it was derived from; ``None``: the original file.
        parent_sha256: SHA-256 of the file it was derived from, as scanned before hardening.
        datasets: what it was trained on: registered dataset version ids (``bastion data
            register``), else dataset names.
        details: everything else the procedure recorded (measured accuracies, noise multiplier,
            accountant, loader fields ``format``/``model_class``/``model_kwargs`` ...).
    """

    model_config = ConfigDict(extra="forbid")

    version_of: str
    version: int = Field(ge=2)
    id: str
    created: dt.datetime
    procedure: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    epsilon_spent: float | None = None
    delta: float | None = None
    parent_id: str | None = None
    parent_sha256: str | None = None
    datasets: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)


class AssetRecord(BaseModel):
    """An asset as assessed: its file hash pins what was judged.

    Attributes:
        url: an endpoint's URL with its credentials masked (:func:`bastion.core.redact.redact_url`).
        scan_verdict: the model scanner's verdict on the file (``safe`` ... ``error``).
        signature: the model file's signature (``<file>.sig``, a Sigstore bundle) checked against
            the project's ``signing.public_key``: ``verified``, ``failed`` (a changed file or bad
            signature), ``unsigned`` (no bundle beside the file) or ``error`` (could not be
            checked, e.g. no key configured); ``None`` for assets that are not model files.
        signature_detail: why, for ``failed`` and ``error``.
        lineage: for a hardened version ``<model>.v<N>`` recorded by ``bastion harden``, where it
            came from (procedure, parameters, ε spent, parent, datasets); ``None`` otherwise.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str
    path: str | None = None
    url: str | None = None
    format: str | None = None
    framework: str | None = None
    owner: str | None = None
    sha256: str | None = None
    scan_verdict: str | None = None
    signature: Literal["verified", "failed", "unsigned", "error"] | None = None
    signature_detail: str | None = None
    lineage: VersionLineage | None = None

    @field_validator("url")
    @classmethod
    def _redacted(cls, v: str | None) -> str | None:
        # an endpoint URL's credentials never reach a report, the BOM or the store
        return redact_url(v)


class ReportFinding(Finding):
    """A finding as reported: with its fingerprint, baseline state and waiver.

    Attributes:
        fingerprint: stable id of (rule, asset, location), for comparing runs.
        state: against ``--baseline``: ``new``, ``unchanged`` or ``fixed``; ``not-in-baseline``
            when the baseline run did not cover it (narrowed by ``--only``/``--skip``/``--asset``
            to exclude its check or asset, and did not run that check on the asset), so it can be
            neither new nor unchanged (``None`` without a baseline).
        waiver: the active waiver that accepts it, if any; waived findings do not gate.
    """

    fingerprint: str
    state: Literal["new", "unchanged", "fixed", "not-in-baseline"] | None = None
    waiver: Waiver | None = None

    @classmethod
    def of(cls, finding: Finding, **extra: Any) -> ReportFinding:
        """Wrap ``finding`` with its fingerprint and ``extra`` fields."""
        return cls(**finding.model_dump(), fingerprint=finding.compute_fingerprint(), **extra)


class Report(BaseModel):
    """A whole assessment report.

    ``baseline`` is the id of the run it was compared with (``--baseline``), and
    ``baseline_run`` that run's identity, time and scope (``scope`` set: it was narrowed).
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: str = REPORT_SCHEMA_VERSION
    bastion_version: str
    run: RunInfo
    reproducibility: Reproducibility = Field(default_factory=Reproducibility)
    assets: list[AssetRecord] = Field(default_factory=list)
    checks: list[CheckResult] = Field(default_factory=list)
    findings: list[ReportFinding] = Field(default_factory=list)
    errors: list[CheckError] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)
    baseline: str | None = None
    baseline_run: RunInfo | None = None

    def gating(self) -> list[ReportFinding]:
        """Findings that count toward ``--fail-on``: not waived, not fixed."""
        return [f for f in self.findings if f.waiver is None and f.state != "fixed"]

    def max_severity(self) -> Severity | None:
        """Highest severity among gating findings."""
        sevs = [f.severity for f in self.gating()]
        return max(sevs) if sevs else None

    def counts(self) -> dict[str, int]:
        """Gating findings per severity."""
        out = {s.value: 0 for s in Severity}
        for f in self.gating():
            out[f.severity.value] += 1
        return out
