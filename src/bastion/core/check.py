"""What the planner hands a check, and the base class of every assess-time check.

Scanners, attacks, detectors and governance checks that the planner schedules
subclass :class:`Check`; the context carries the target and data as opaque objects so
``core`` imports nothing of Bastion's other packages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from bastion.core.budget import Budget
from bastion.core.config import Asset, ProjectConfig, Threshold
from bastion.core.findings import Finding, Location
from bastion.core.redact import redact_url
from bastion.core.registry import Plugin
from bastion.core.results import CheckResult

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


@dataclass
class Split:
    """One named split of a dataset.

    Attributes:
        x: inputs, shape ``(N, *input_shape)``, float32.
        y: integer labels ``(N,)``, or ``None`` for unlabelled data.
        index: row indices in the dataset file ``(N,)`` (findings cite these, never the rows).
    """

    x: np.ndarray
    y: np.ndarray | None
    index: np.ndarray


@dataclass
class CheckContext:
    """Everything one check needs for one asset.

    Attributes:
        asset: the asset under test.
        config: the whole project config.
        base_dir: folder of ``bastion.yaml``; asset paths are relative to it.
        budget: the effective budget (preset merged with the check's own).
        params: the plugin's validated ``Params``.
        thresholds: the effective thresholds (the check's config, else the plugin's defaults).
        seed: the project seed.
        target: a ``bastion.targets.Target`` for models and endpoints, else ``None``.
        data: named splits of the asset's dataset (``train``, ``test``, ...), else empty.
        facts: what earlier steps learnt about each asset, keyed by asset name
            (``sha256``, ``scan_verdict``, ``scan_findings``), shared by every check of the run.
            The key ``"__run__"`` holds facts of the whole run, not of an asset:
            ``{"db_url": <the store's SQLAlchemy URL>}``.
        progress: callback taking a fraction in ``[0, 1]``.
    """

    asset: Asset
    config: ProjectConfig
    base_dir: Path
    budget: Budget
    params: BaseModel
    thresholds: list[Threshold]
    seed: int = 0
    target: Any = None
    data: dict[str, Split] = field(default_factory=dict)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: Callable[[float], None] | None = None

    def report_progress(self, fraction: float) -> None:
        """Tell the front end how far along the check is (0..1)."""
        if self.progress is not None:
            self.progress(max(0.0, min(1.0, fraction)))


class Check(Plugin):
    """A plugin the planner can schedule on an asset.

    Subclasses set the ``Plugin`` class attributes, ``default_thresholds`` and
    ``remediation``, and implement :meth:`run`. ``order`` sorts checks within an asset
    (lower first): scanners 0, attacks 50, governance 100.
    """

    default_thresholds: ClassVar[tuple[Threshold, ...]] = ()
    remediation: ClassVar[str] = ""
    order: ClassVar[int] = 50

    def config_skip(self, asset: Asset, params: Any, budget: Budget) -> str | None:
        """The reason the check is skipped on ``asset`` that the project file alone tells, else ``None``.

        Decided from the asset's declaration (framework, tags), the check's validated ``params``
        and its effective ``budget`` only: nothing loaded. The plan (``bastion assess
        --dry-run``, ``bastion.plan``) shows it, and the run skips with the same words (the
        default :meth:`applicable` starts here; an override that does not call it must), so the
        two cannot disagree. The default: nothing.
        """
        return None

    def applicable(self, ctx: CheckContext) -> str | None:
        """``None`` if the check can run on ``ctx``, else the reason it is skipped.

        The default first asks :meth:`config_skip`, then requires the target's capabilities
        (``requires``); override to add data needs.
        """
        reason = self.config_skip(ctx.asset, ctx.params, ctx.budget)
        if reason is not None:
            return reason
        if self.requires:
            if ctx.target is None:
                return "needs a loaded model target"
            offers = frozenset(getattr(ctx.target, "capabilities", frozenset()))
            lacking = [c.value for c in self.requires if c not in offers]
            if lacking:
                offered = ", ".join(sorted(c.value for c in offers)) or "nothing"
                return f"needs {', '.join(lacking)}; target offers {offered}"
        return None

    def preflight(self, ctx: CheckContext) -> list[str]:
        """Problems that make the check's configuration invalid, found before anything runs.

        The runner collects every check's problems on every asset and raises one
        ``ConfigError`` listing them all (e.g. an FPR the user asked for that the sample
        cannot resolve, an ε outside the input range, a budget too small). Empty: fine.
        """
        return []

    def run(self, ctx: CheckContext) -> CheckResult:  # pragma: no cover - abstract
        """Run on one asset and return its result (metrics, series, findings)."""
        raise NotImplementedError

    # -- helpers shared by every check -------------------------------------------------
    def finding(
        self,
        ctx: CheckContext,
        condition: str,
        title: str,
        *,
        severity: Any,
        evidence: dict[str, Any] | None = None,
        location: Location | None = None,
        remediation: str | None = None,
        atlas: list[str] | None = None,
    ) -> Finding:
        """A finding of this check: rule id ``<id>.<condition>``, this plugin's threat and ATLAS ids."""
        return Finding(
            rule_id=f"{self.id}.{condition}",
            severity=severity,
            threat=self.threat,
            title=title,
            asset=ctx.asset.name,
            location=location or Location(path=ctx.asset.path, endpoint=redact_url(ctx.asset.url)),
            evidence=evidence or {},
            atlas=list(atlas if atlas is not None else self.atlas),
            remediation=remediation if remediation is not None else self.remediation,
            references=list(self.references),
        )

    def threshold_findings(
        self, ctx: CheckContext, result: CheckResult, extra_evidence: dict[str, Any] | None = None
    ) -> list[Finding]:
        """Findings for every threshold in ``ctx.thresholds`` that the result's metrics trip.

        A threshold on a metric the result does not have (a typo, a metric of another check)
        can never trip: it is named in ``result.notes["unevaluated_thresholds"]`` (shown in
        every report) and logged as a warning, so a gate that cannot fire is not silent. The
        check's own ``default_thresholds`` are exempt: some gate opt-in metrics (computed only
        when a parameter turns them on), and a run without them is not a misconfiguration.
        """
        out: list[Finding] = []
        missing: list[str] = []
        for th in ctx.thresholds:
            if th.metric not in result.metrics:
                if th not in self.default_thresholds:
                    missing.append(th.metric)
                continue
            value = result.metrics[th.metric]
            if th.trips(value):
                evidence: dict[str, Any] = {th.metric: value, "threshold": f"{th.op} {th.value:g}"}
                if th.metric in result.intervals:
                    evidence["interval"] = list(result.intervals[th.metric])
                evidence.update(extra_evidence or {})
                out.append(
                    self.finding(
                        ctx,
                        th.rule_name(),
                        f"{self.title or self.id}: {th.metric} = {_fmt(value)} ({th.op} {th.value:g})",
                        severity=th.severity,
                        evidence=evidence,
                    )
                )
        if missing and result.status == "ok":
            have = ", ".join(sorted(result.metrics)) or "none"
            result.notes["unevaluated_thresholds"] = (
                f"{', '.join(missing)}: not a metric of this result, so never evaluated (its metrics: {have})"
            )
            unevaluated = ", ".join(missing)
            log.warning("%s on %s: thresholds never evaluated: %s", self.id, ctx.asset.name, unevaluated)
        return out


def _fmt(v: float | None) -> str:
    return "null" if v is None else f"{v:.4g}"
