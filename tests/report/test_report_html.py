"""HTML report: content, escaping, plots, self-containment (without a browser)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from html.parser import HTMLParser

import pytest

from bastion.core import atlas
from bastion.core.findings import Finding, Threat
from bastion.core.report import Report, ReportFinding, RunInfo
from bastion.core.results import CheckResult, Series
from bastion.core.severity import Severity
from bastion.report import report_to_html
from bastion.report.html import plot_key

MALICIOUS = "<script>alert(1)</script>"


class _Collector(HTMLParser):
    """Collects tags, attributes and figures' contents of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.figures: dict[str, int] = {}
        self._figure: str | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "figure" and "data-plot" in a:
            self._figure = a["data-plot"] or ""
            self.figures[self._figure] = 0
        if tag == "svg" and self._figure is not None:
            self.figures[self._figure] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._figure = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def page(report_html: str) -> tuple[str, _Collector]:
    html = report_html
    parser = _Collector()
    parser.feed(html)
    return html, parser


def test_header_and_reproducibility(page: tuple[str, _Collector], report: Report) -> None:
    html, parser = page
    text = " ".join(parser.text)
    assert html.startswith("<!DOCTYPE html>")
    needles = ("st-mary-diagnostics", "run-20250101-abc123", "quick", "1234", "ab" * 32, "5.6.0", "2.13.0")
    for needle in needles:
        assert needle in text, needle
    assert "not installed" in text  # scikit-learn: None


def test_every_finding_and_atlas_name(page: tuple[str, _Collector], report: Report) -> None:
    html, parser = page
    text = " ".join(parser.text)
    for f in report.findings:
        assert f.rule_id in text
        for tid in f.atlas:
            tech = atlas.technique(tid)
            assert tech.name in text
            assert f'href="{tech.url}"' in html
        if f.remediation:
            assert f.remediation.split("<")[0].strip() in text
    hrefs = {a.get("href") for t, a in parser.tags if t == "a"}
    for f in report.findings:
        # Each finding's detail has an anchor the overview links to.
        ids = {a.get("id") for _, a in parser.tags}
        assert any(i and i.startswith(f"finding-{f.fingerprint}") for i in ids)
    assert any(h and h.startswith("#finding-") for h in hrefs)


def test_counts_gate_and_sections(page: tuple[str, _Collector], report: Report) -> None:
    html, parser = page
    for sev, n in report.counts().items():
        m = re.search(rf'data-severity="{sev}"><div class="n">(\d+)</div>', html)
        assert m is not None and int(m.group(1)) == n
    text = " ".join(" ".join(parser.text).split())
    assert "FAIL" in text and "6 findings at or above medium" in text
    assert "Incomplete" in text
    assert "needs loss gradients; target is HTTP, label-only" in text
    assert "needs a training recipe" in text
    assert "feature extractor failed on row 3" in text


def test_intervals_metrics_and_notes(page: tuple[str, _Collector]) -> None:
    _, parser = page
    text = " ".join(parser.text)
    assert "[0.08, 0.17]" in text
    assert "[0.95, 0.985]" in text
    assert "budget exhausted before eps=0.3" in text
    assert "12000 queries" in text


def test_waiver_and_states(page: tuple[str, _Collector]) -> None:
    html, parser = page
    text = " ".join(parser.text)
    assert "waived until 2099-01-31" in text
    assert "Accepted by the CISO until the retrain ships" in text
    for state in ("new", "unchanged", "fixed"):
        assert f'class="badge state state-{state}"' in html
    assert 'class="finding f-high is-waived"' in html


def test_one_svg_per_series_check(page: tuple[str, _Collector], report: Report) -> None:
    _, parser = page
    expected = {plot_key(c) for c in report.checks if c.series}
    assert set(parser.figures) == expected
    assert all(n == 1 for n in parser.figures.values())
    assert "evasion.pgd/diagnosis-model" in parser.figures


def test_log_axes_are_drawn(page: tuple[str, _Collector]) -> None:
    html, _ = page
    roc = html.split('data-plot="membership.lira/triage-model"')[1].split("</figure>")[0]
    # Log axes label their decades with 10^k; mathtext renders them as text, not as raw TeX.
    assert "10" in roc and "mathdefault" not in roc
    assert "false positive rate" in roc


def test_malicious_text_is_escaped(page: tuple[str, _Collector]) -> None:
    html, parser = page
    assert MALICIOUS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "<b>bold</b>" not in html
    assert not any(t == "script" for t, _ in parser.tags)
    assert not any(t == "img" for t, _ in parser.tags)
    # A javascript: reference is shown as text, never as a link.
    assert not any((a.get("href") or "").startswith("javascript:") for _, a in parser.tags)
    assert "javascript:alert(3)" in " ".join(parser.text)


def test_malicious_text_everywhere(report_factory: Callable[..., Report]) -> None:
    evil = MALICIOUS
    finding = ReportFinding.of(
        Finding(
            rule_id="x.y.z",
            severity=Severity.HIGH,
            threat=Threat.RUNTIME,
            title=evil,
            asset=evil,
            evidence={evil: evil},
            remediation=evil,
            references=[evil],
        )
    )
    check = CheckResult(
        id="x.y",
        asset=evil,
        reason=evil,
        metrics={evil: 1.0},
        notes={evil: evil},
        series={evil: Series(x=[1, 2], y=[1, 2], x_label=evil, y_label="$\\frac{", log_x=True)},
    )
    rep = report_factory(
        run=RunInfo(
            id=evil,
            status="ok",
            started=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
            seconds=1,
            project=evil,
            budget=evil,
        ),
        findings=[finding],
        checks=[check],
        assets=[],
        errors=[],
        skipped=[],
    )
    html = report_to_html(rep)
    assert evil not in html
    parser = _Collector()
    parser.feed(html)
    assert not any(t == "script" for t, _ in parser.tags)
    assert len(parser.figures) == 1 and list(parser.figures.values()) == [1]


def test_no_external_resources(page: tuple[str, _Collector]) -> None:
    _, parser = page
    for tag, attrs in parser.tags:
        assert tag not in {"script", "link", "img", "iframe", "object", "embed"}, tag
        assert "src" not in attrs, (tag, attrs)
        href = attrs.get("href") or attrs.get("xlink:href") or ""
        if tag != "a":
            assert not href.startswith(("http:", "https:", "//")), (tag, href)
    styles = [a for t, a in parser.tags if t == "style"]
    assert styles  # inline CSS
    html, _ = page
    css = html.split("<style>")[1].split("</style>")[0]
    assert "url(" not in css and "@import" not in css
    assert "Content-Security-Policy" in html


def test_deterministic(report: Report, report_html: str) -> None:
    assert report_to_html(report) == report_html


def test_empty_report(report_factory: Callable[..., Report]) -> None:
    rep = report_factory(
        run=RunInfo(id="r1", status="ok", started=dt.datetime(2025, 1, 1), seconds=0),
        assets=[],
        checks=[],
        findings=[],
        errors=[],
        skipped=[],
        baseline=None,
    )
    html = report_to_html(rep)
    assert "No findings." in html and "PASS" in html
    assert "<figure" not in html


def test_bad_series_does_not_break_report(report_factory: Callable[..., Report]) -> None:
    check = CheckResult(
        id="x.y",
        asset="a",
        series={
            "uneven": Series(x=[1, 2, 3], y=[1.0]),
            "all-none": Series(x=[1, 2], y=[None, None], log_y=True),
            "_private": Series(x=[0, 1], y=[0, 1]),
        },
    )
    rep = report_factory(checks=[check], findings=[], errors=[], skipped=[])
    html = report_to_html(rep)
    block = html.split('data-plot="x.y/a"')[1].split("</figure>")[0]
    assert "<svg" in block


def test_fail_on_validated(report: Report) -> None:
    with pytest.raises(ValueError, match="fail-on"):
        report_to_html(report, fail_on="severe")
    no_plots = report.model_copy(update={"checks": []})
    assert "PASS" in report_to_html(no_plots, fail_on="none")
    assert "FAIL" in report_to_html(no_plots, fail_on="critical")
