"""Before/after comparison of model versions for the HTML report.

``bastion assess`` adds each model's latest hardened version as an asset ``<name>.v<N>``
beside the original (tagged ``version-of:<name>``). The report's asset records carry no tags,
so a version is recognised by name: ``<name>.v<N>`` where ``<name>`` is another asset of the
same report. For each such pair this module lists, per check run on both, the key metrics
before and after with their difference, and draws robust accuracy against ε for both.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from bastion.core.report import Report
from bastion.core.results import CheckResult, Series
from bastion.report._plots import series_svg

logger = logging.getLogger(__name__)

_VERSION = re.compile(r"^(?P<base>.+)\.v(?P<n>[0-9]+)$")
_EPS = re.compile(r"^robust_accuracy@eps=(?P<eps>[0-9.eE+-]+)$")
#: Per-ε metrics left out of the table (the robust accuracy per ε is what the table keeps).
_SECONDARY = ("robust_accuracy_drop@", "attack_success_rate@", "median_perturbation@", "queries_per_sample@")
#: At most this many metrics per check in the table.
MAX_METRICS = 10
#: A version whose clean accuracy falls by at least this much (absolute) gets a warning: its other
#: gains (robust accuracy, privacy) may only reflect a model that no longer works.
ACCURACY_DROP_WARNING = 0.10


@dataclass
class MetricRow:
    """One metric before and after.

    Attributes:
        name: the metric name.
        before: its value on the original (``None``: not measured).
        after: its value on the version.
        delta: ``after - before`` when both are known.
    """

    name: str
    before: float | None
    after: float | None
    delta: float | None


@dataclass
class CheckComparison:
    """One check run on both the original and the version."""

    check: str
    rows: list[MetricRow] = field(default_factory=list)


@dataclass
class VersionComparison:
    """An original model and one of its versions in the same report.

    Attributes:
        base: the original asset's name.
        version: the version's asset name (``<base>.v<N>``).
        number: ``N``.
        checks: per-check comparisons, by check id.
        plot: inline SVG of robust accuracy vs ε for both (``None`` without evasion results).
        anchor: the HTML id of the section.
        warnings: e.g. a clean-accuracy fall of :data:`ACCURACY_DROP_WARNING` or more.
    """

    base: str
    version: str
    number: int
    checks: list[CheckComparison] = field(default_factory=list)
    plot: str | None = None
    anchor: str = ""
    warnings: list[str] = field(default_factory=list)


def key_metrics(metrics: dict[str, float | None]) -> list[str]:
    """The metric names worth comparing: all but the secondary per-ε ones, at most :data:`MAX_METRICS`."""
    return [m for m in metrics if not m.startswith(_SECONDARY)][:MAX_METRICS]


def robust_curve(check: CheckResult) -> tuple[list[float], list[float | None]]:
    """``(ε values ascending, robust accuracy)`` from a check's ``robust_accuracy@eps=`` metrics."""
    points: list[tuple[float, float | None]] = []
    for name, value in check.metrics.items():
        m = _EPS.match(name)
        if m is None:
            continue
        try:
            points.append((float(m.group("eps")), value))
        except ValueError:
            continue
    points.sort(key=lambda p: p[0])
    return [p[0] for p in points], [p[1] for p in points]


def _ok(report: Report, asset: str) -> dict[str, CheckResult]:
    return {c.id: c for c in report.checks if c.asset == asset and c.status == "ok"}


def version_pairs(report: Report) -> list[tuple[str, str, int]]:
    """``(base, version, N)`` for every asset ``<base>.v<N>`` whose ``<base>`` is also in the report."""
    names = [a.name for a in report.assets] + [c.asset for c in report.checks if c.asset]
    known = set(names)
    out: dict[str, tuple[str, str, int]] = {}
    for name in names:
        m = _VERSION.match(name)
        if m is not None and m.group("base") in known and name not in out:
            out[name] = (m.group("base"), name, int(m.group("n")))
    return sorted(out.values(), key=lambda t: (t[0], t[2]))


def compare_versions(report: Report, *, plots: bool = True) -> list[VersionComparison]:
    """Before/after comparisons of every model version in ``report`` (empty when there is none)."""
    out: list[VersionComparison] = []
    for base, version, number in version_pairs(report):
        before, after = _ok(report, base), _ok(report, version)
        comp = VersionComparison(
            base=base, version=version, number=number, anchor=f"versions-{base}-v{number}"
        )
        series: dict[str, Series] = {}
        for cid in sorted(set(before) & set(after)):
            b, a = before[cid], after[cid]
            names = key_metrics(b.metrics) + [m for m in key_metrics(a.metrics) if m not in b.metrics]
            rows = []
            for name in names[:MAX_METRICS]:
                vb, va = b.metrics.get(name), a.metrics.get(name)
                delta = va - vb if va is not None and vb is not None else None
                rows.append(MetricRow(name=name, before=vb, after=va, delta=delta))
            if rows:
                comp.checks.append(CheckComparison(check=cid, rows=rows))
            vb, va = b.metrics.get("clean_accuracy"), a.metrics.get("clean_accuracy")
            if vb is not None and va is not None and vb - va >= ACCURACY_DROP_WARNING:
                comp.warnings.append(
                    f"{cid}: clean accuracy fell from {vb:.3g} to {va:.3g}; the version's other figures "
                    "(robust accuracy, privacy) may only reflect a model that no longer works; check it "
                    "is usable before deploying it"
                )
            for who, res in ((base, b), (version, a)):
                xs, ys = robust_curve(res)
                if xs:
                    series[f"{cid} {who}"] = Series(x=xs, y=ys, x_label="ε", y_label="robust accuracy")
        if plots and series:
            try:
                comp.plot = series_svg(
                    series, title=f"robust accuracy vs ε: {base} and {version}", id_prefix=comp.anchor
                )
            except Exception as exc:  # a bad curve must not cost the whole report
                logger.warning("could not plot %s vs %s: %s", base, version, exc)
        out.append(comp)
    return out


def as_context(comparisons: list[VersionComparison]) -> list[dict[str, Any]]:
    """Plain dicts for the template."""
    return [
        {
            "base": c.base,
            "version": c.version,
            "number": c.number,
            "anchor": c.anchor,
            "plot": c.plot,
            "checks": [{"check": cc.check, "rows": cc.rows} for cc in c.checks],
            "warnings": c.warnings,
        }
        for c in comparisons
    ]
