"""Helpers shared by the renderers: ordering, number formatting, grouping, ATLAS look-ups."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bastion.core import atlas
from bastion.core.findings import Finding
from bastion.core.report import Report, ReportFinding
from bastion.core.results import CheckError, CheckResult, Skipped
from bastion.core.severity import FAIL_ON_CHOICES, Severity, gates

#: Severities from worst to least bad, the order every renderer lists them in.
SEVERITIES_DESC: tuple[Severity, ...] = tuple(sorted(Severity, key=lambda s: s.rank, reverse=True))

F = TypeVar("F", bound=Finding)


def bastion_version() -> str:
    """The running Bastion's version (``bastion.__version__``)."""
    from bastion import __version__

    return __version__


def sort_findings(findings: Iterable[F]) -> list[F]:
    """Findings worst first, then by rule id, asset and path (a stable, total order)."""
    return sorted(
        findings,
        key=lambda f: (
            -f.severity.rank,
            f.rule_id,
            f.asset or "",
            f.location.path or "",
            f.location.member or "",
            f.location.offset if f.location.offset is not None else -1,
        ),
    )


def top_finding(findings: Sequence[F]) -> F | None:
    """The worst finding of ``findings`` (first in :func:`sort_findings` order), if any."""
    ordered = sort_findings(findings)
    return ordered[0] if ordered else None


def fmt_num(value: float | int | None, digits: int = 4) -> str:
    """A number for people: ``None`` → ``"—"``, ints as is, floats with ``digits`` significant digits."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def fmt_interval(interval: Sequence[float] | None) -> str:
    """A confidence interval as ``[lo, hi]``, or ``""`` when there is none."""
    if not interval:
        return ""
    lo, hi = interval[0], interval[1]
    return f"[{fmt_num(lo)}, {fmt_num(hi)}]"


def fmt_value(value: Any) -> str:
    """Any evidence value as a short string (numbers via :func:`fmt_num`)."""
    if value is None or isinstance(value, (int, float)):
        return fmt_num(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def fmt_location(finding: Finding) -> str:
    """A finding's location in one line: ``path!member@offset``, endpoint, or ``#index``."""
    loc = finding.location
    parts: list[str] = []
    if loc.path:
        parts.append(loc.path)
    if loc.member:
        parts.append(f"!{loc.member}" if parts else loc.member)
    if loc.offset is not None:
        parts.append(f"@{loc.offset}")
    if loc.endpoint:
        parts.append(loc.endpoint if not parts else f" {loc.endpoint}")
    if loc.index is not None:
        parts.append(f"#{loc.index}")
    return "".join(parts)


@dataclass(frozen=True)
class TechniqueRef:
    """An ATLAS technique as shown in a report; ``name`` is ``None`` for an id unknown to the data."""

    id: str
    name: str | None
    url: str


def technique_ref(tid: str) -> TechniqueRef:
    """Look ``tid`` up in the shipped ATLAS data, tolerating ids it does not know."""
    url = f"https://atlas.mitre.org/techniques/{tid}"
    try:
        tech = atlas.technique(tid)
    except KeyError:
        return TechniqueRef(tid, None, url)
    return TechniqueRef(tech.id, tech.name, tech.url)


def severity_counts(findings: Iterable[Finding]) -> dict[str, int]:
    """Findings per severity value, every severity present (worst first)."""
    out = {s.value: 0 for s in SEVERITIES_DESC}
    for f in findings:
        out[f.severity.value] += 1
    return out


@dataclass(frozen=True)
class Gate:
    """The outcome of ``--fail-on`` against a report.

    Attributes:
        fail_on: the threshold (a severity value or ``"none"``).
        tripping: gating findings at or above it.
        incomplete: the run had errors (exit code 2 wins over the gate).
    """

    fail_on: str
    tripping: list[ReportFinding]
    incomplete: bool

    @property
    def passed(self) -> bool:
        """Whether nothing at or above ``fail_on`` gates (errors aside)."""
        return not self.tripping

    def line(self) -> str:
        """One line for people, e.g. ``FAIL: 3 findings at or above medium (1 critical, 2 high)``."""
        if self.fail_on == "none":
            head = "PASS: --fail-on none never fails on findings"
        elif self.tripping:
            counts = severity_counts(self.tripping)
            detail = ", ".join(f"{n} {sev}" for sev, n in counts.items() if n)
            noun = "finding" if len(self.tripping) == 1 else "findings"
            head = f"FAIL: {len(self.tripping)} {noun} at or above {self.fail_on} ({detail})"
        else:
            head = f"PASS: no findings at or above {self.fail_on}"
        if self.incomplete:
            head += "; INCOMPLETE: the run had errors"
        return head


def gate(report: Report, fail_on: str = "medium") -> Gate:
    """Evaluate ``--fail-on`` over ``report``'s gating findings (not waived, not fixed).

    Raises:
        ValueError: ``fail_on`` is not a severity value or ``"none"``.
    """
    if fail_on not in FAIL_ON_CHOICES:
        raise ValueError(f"--fail-on must be one of {', '.join(FAIL_ON_CHOICES)}, got {fail_on!r}")
    tripping = [f for f in report.gating() if gates(f.severity, fail_on)]
    incomplete = (
        report.run.status == "error" or bool(report.errors) or any(c.status == "error" for c in report.checks)
    )
    return Gate(fail_on=fail_on, tripping=sort_findings(tripping), incomplete=incomplete)


@dataclass
class AssetView:
    """Everything a report says about one asset (``name`` ``None``: project-wide)."""

    name: str | None
    checks: list[CheckResult] = field(default_factory=list)
    findings: list[ReportFinding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    errors: list[CheckError] = field(default_factory=list)

    def check_counts(self) -> dict[str, int]:
        """Checks per status: ``ok``, ``skipped``, ``error`` (counting skips/errors not in ``checks``)."""
        out = {"ok": 0, "skipped": 0, "error": 0}
        for c in self.checks:
            out[c.status] += 1
        out["skipped"] += len(self.skipped)
        out["error"] += len(self.errors)
        return out


def asset_views(report: Report) -> list[AssetView]:
    """Group checks, findings, skips and errors by asset, in the report's asset order.

    Assets named by a check or finding but missing from ``report.assets`` come next, in first-seen
    order; project-wide items (asset ``None``) come last. ``report.skipped`` and ``report.errors``
    entries already represented by a check result of the same (check, asset) are not repeated.
    """
    views: dict[str | None, AssetView] = {a.name: AssetView(a.name) for a in report.assets}

    def view(name: str | None) -> AssetView:
        if name not in views:
            views[name] = AssetView(name)
        return views[name]

    seen: set[tuple[str, str | None]] = set()
    for c in report.checks:
        view(c.asset).checks.append(c)
        seen.add((c.id, c.asset))
    for f in sort_findings(report.findings):
        view(f.asset).findings.append(f)
    for s in report.skipped:
        if (s.check, s.asset) not in seen:
            view(s.asset).skipped.append(s)
    for e in report.errors:
        if (e.check, e.asset) not in seen:
            view(e.asset).errors.append(e)
    ordered = [v for k, v in views.items() if k is not None]
    if None in views:
        ordered.append(views[None])
    return ordered


def all_skipped(report: Report) -> list[Skipped]:
    """Every skipped check: ``report.skipped`` plus check results with status ``skipped``, deduplicated."""
    out = list(report.skipped)
    seen = {(s.check, s.asset) for s in out}
    for c in report.checks:
        if c.status == "skipped" and (c.id, c.asset) not in seen:
            out.append(Skipped(check=c.id, asset=c.asset, reason=c.reason or ""))
            seen.add((c.id, c.asset))
    return out


def all_errors(report: Report) -> list[CheckError]:
    """Every errored check: ``report.errors`` plus check results with status ``error``, deduplicated."""
    out = list(report.errors)
    seen = {(e.check, e.asset) for e in out}
    for c in report.checks:
        if c.status == "error" and (c.id, c.asset) not in seen:
            err, _, msg = (c.reason or "error: unknown").partition(": ")
            out.append(CheckError(check=c.id, asset=c.asset, error=err, message=msg or err))
            seen.add((c.id, c.asset))
    return out
