"""The HTML report: one self-contained file (inline CSS and SVG plots, no scripts, no URLs loaded).

Rendered with Jinja2 from ``templates/report.html.j2`` (shipped as package data) with
autoescaping on, so text from findings, configs and models cannot inject markup. A
Content-Security-Policy meta tag forbids scripts and every external load as a second line of defence.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from typing import Any

import jinja2

from bastion.core.report import Report, ReportFinding
from bastion.core.results import CheckResult
from bastion.report._common import (
    SEVERITIES_DESC,
    all_errors,
    all_skipped,
    asset_views,
    fmt_interval,
    fmt_location,
    fmt_num,
    fmt_value,
    gate,
    severity_counts,
    sort_findings,
    technique_ref,
)
from bastion.report._exposure import exposure_table
from bastion.report._plots import series_svg
from bastion.report._provenance import as_context as provenance_context
from bastion.report._provenance import dataset_provenance
from bastion.report._versions import as_context, compare_versions

logger = logging.getLogger(__name__)

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bastion.report", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = fmt_num
    env.filters["interval"] = fmt_interval
    env.filters["value"] = fmt_value
    env.filters["location"] = fmt_location
    env.filters["slug"] = slug
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, default=str)
    env.filters["web_url"] = web_url
    env.globals["technique"] = technique_ref
    return env


def slug(text: str | None) -> str:
    """``text`` reduced to characters safe in an HTML id (``-`` for empty)."""
    return _SLUG.sub("-", text or "").strip("-") or "-"


def web_url(url: str) -> str | None:
    """``url`` if it is an ``http(s)`` URL, to be shown as a link; ``None`` otherwise (shown as text)."""
    return url if url.startswith(("https://", "http://")) else None


def plot_key(check: CheckResult) -> str:
    """The ``data-plot`` value of a check's figure: ``check-id/asset`` (``check-id`` without asset)."""
    return f"{check.id}/{check.asset}" if check.asset else check.id


def _plot(check: CheckResult, index: int) -> str | None:
    if not check.series:
        return None
    title = check.id + (f" on {check.asset}" if check.asset else "")
    try:
        return series_svg(check.series, title=title, id_prefix=f"plot{index}")
    except Exception as exc:  # a bad curve must not cost the whole report
        logger.warning("could not plot %s: %s", plot_key(check), exc)
        return None


def _anchors(findings: list[ReportFinding]) -> dict[int, str]:
    """A unique HTML id per finding (by object identity), from its fingerprint."""
    out: dict[int, str] = {}
    used: dict[str, int] = {}
    for f in findings:
        base = "finding-" + slug(f.fingerprint)
        n = used.get(base, 0)
        used[base] = n + 1
        out[id(f)] = base if n == 0 else f"{base}-{n}"
    return out


def _finding_row(f: ReportFinding, anchors: dict[int, str]) -> dict[str, Any]:
    return {
        "f": f,
        "anchor": anchors[id(f)],
        "techniques": [technique_ref(t) for t in f.atlas],
        "location": fmt_location(f),
    }


def report_context(report: Report, *, fail_on: str = "medium") -> dict[str, Any]:
    """The template context :func:`report_to_html` renders (useful to custom templates).

    Raises:
        ValueError: ``fail_on`` is not a severity value or ``"none"``.
    """
    verdict = gate(report, fail_on)
    ordered = sort_findings(report.findings)
    anchors = _anchors(ordered)
    plots: dict[int, str | None] = {}
    for i, check in enumerate(report.checks):
        plots[id(check)] = _plot(check, i)
    views: list[dict[str, Any]] = []
    for view in asset_views(report):
        record = next((a for a in report.assets if a.name == view.name), None) if view.name else None
        gating = [f for f in view.findings if f.waiver is None and f.state != "fixed"]
        views.append(
            {
                "name": view.name,
                "anchor": "asset-" + slug(view.name or "project"),
                "record": record,
                "check_counts": view.check_counts(),
                "counts": severity_counts(gating),
                "checks": [
                    {
                        "c": c,
                        "plot": plots[id(c)],
                        "plot_key": plot_key(c),
                        "metrics": [
                            {
                                "name": name,
                                "value": value,
                                "interval": c.intervals.get(name),
                                "note": c.notes.get(name),
                            }
                            for name, value in c.metrics.items()
                        ],
                        "extra_notes": {k: v for k, v in c.notes.items() if k not in c.metrics},
                    }
                    for c in view.checks
                ],
                "findings": [_finding_row(f, anchors) for f in view.findings],
                "exposure": exposure_table(view.checks, view.findings),
                "skipped": view.skipped,
                "errors": view.errors,
            }
        )
    check_status: dict[str, int] = {"ok": 0, "skipped": 0, "error": 0}
    for v in views:
        for k, n in v["check_counts"].items():
            check_status[k] += n
    return {
        "report": report,
        "run": report.run,
        "repro": report.reproducibility,
        "gate": verdict,
        "fail_on": fail_on,
        "severities": [s.value for s in SEVERITIES_DESC],
        "counts": report.counts(),
        "check_status": check_status,
        "waived_count": sum(1 for f in report.findings if f.waiver is not None),
        "fixed_count": sum(1 for f in report.findings if f.state == "fixed"),
        "overview": [_finding_row(f, anchors) for f in ordered],
        "assets": views,
        "skipped": all_skipped(report),
        "errors": all_errors(report),
        "versions": as_context(compare_versions(report)),
        "provenance": provenance_context(dataset_provenance(report)),
    }


def report_to_html(report: Report, *, fail_on: str = "medium") -> str:
    """Render an assessment report as one self-contained HTML page.

    The page has: a header (project, run id, status, time, budget, and what reproduces the run:
    seed, config hash, versions); a summary (gating findings by severity, the gate against
    ``fail_on``, checks by status); an overview table of every finding; one section per asset
    with each check's status, reason, metrics (intervals as ``[lo, hi]``) and a plot of its
    series (``<figure data-plot="check-id/asset">`` holding an inline ``<svg>``); each finding
    with severity, evidence, ATLAS technique (id, name, link) and remedy, baseline state and
    waiver; for membership results, the most exposed training records by dataset row index only
    (``<table class="exposure" data-exposure="asset">``: the rank each attack gives them, never
    the records' values); skipped checks with reasons; and errors. CSS is inline, plots are inline SVG, there
    is no script and nothing is fetched from the network. A "Data provenance and lineage"
    section (``<section id="provenance">``) lists every dataset with its registered version,
    Merkle root, source, licence, owner, version chain and the model versions trained on it.

    Args:
        report: the report.
        fail_on: the gate threshold shown (a severity value or ``"none"``).

    Returns:
        The HTML text.

    Raises:
        ValueError: ``fail_on`` is not a severity value or ``"none"``.
    """
    template = _environment().get_template("report.html.j2")
    return template.render(**report_context(report, fail_on=fail_on))


__all__ = ["plot_key", "report_context", "report_to_html"]
