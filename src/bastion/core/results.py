"""Results: what a check or a whole run produced."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bastion.core.budget import BudgetUsage
from bastion.core.findings import Finding


class Series(BaseModel):
    """A curve, e.g. robust accuracy vs ε: ``x`` and ``y`` of equal length."""

    model_config = ConfigDict(extra="forbid")

    x: list[float]
    y: list[float | None]
    x_label: str = ""
    y_label: str = ""
    log_x: bool = False
    log_y: bool = False


class CheckError(BaseModel):
    """A plugin that crashed on an asset; recorded, the run goes on."""

    model_config = ConfigDict(extra="forbid")

    check: str
    asset: str | None = None
    error: str
    message: str


class Skipped(BaseModel):
    """A check that did not run, with the reason."""

    model_config = ConfigDict(extra="forbid")

    check: str
    asset: str | None = None
    reason: str


class CheckResult(BaseModel):
    """The outcome of one check: one (plugin id, asset) pair.

    Attributes:
        metrics: snake_case names with parameters after ``@`` (``robust_accuracy@eps=0.1``);
            ``None`` where a value cannot be resolved (the reason in ``notes``).
        intervals: confidence intervals ``[low, high]`` of rates and AUCs, keyed as ``metrics``.
        series: curves, so any report can be re-rendered from the store.
        notes: per-metric remarks, e.g. why a metric is null.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    asset: str | None = None
    status: Literal["ok", "skipped", "error"] = "ok"
    reason: str | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = Field(default_factory=dict)
    series: dict[str, Series] = Field(default_factory=dict)
    notes: dict[str, str] = Field(default_factory=dict)
    budget_used: BudgetUsage | None = None
    seconds: float = 0.0
    findings: list[Finding] = Field(default_factory=list)


class RunResult(BaseModel):
    """Everything a run produced: findings, errors and skipped checks, plus per-check results."""

    model_config = ConfigDict(extra="forbid")

    findings: list[Finding] = Field(default_factory=list)
    errors: list[CheckError] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)
    checks: list[CheckResult] = Field(default_factory=list)

    def add(self, result: CheckResult) -> None:
        """Record one check's result, filing its findings, error or skip."""
        self.checks.append(result)
        self.findings.extend(result.findings)
        if result.status == "skipped":
            self.skipped.append(Skipped(check=result.id, asset=result.asset, reason=result.reason or ""))
        elif result.status == "error":
            err, _, msg = (result.reason or "error: unknown").partition(": ")
            self.errors.append(CheckError(check=result.id, asset=result.asset, error=err, message=msg))
