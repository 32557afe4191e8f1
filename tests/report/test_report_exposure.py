"""The per-record exposure table of membership results in the HTML report (issue 6)."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from bastion.core.findings import Finding, Threat
from bastion.core.report import AssetRecord, Report, ReportFinding, RunInfo
from bastion.core.results import CheckResult, Series
from bastion.core.severity import Severity
from bastion.report import report_to_html
from bastion.report._exposure import exposure_table

ROC = {
    "roc": Series(
        x=[0.01, 0.1, 1.0],
        y=[0.05, 0.3, 1.0],
        x_label="false-positive rate",
        y_label="true-positive rate",
        log_x=True,
        log_y=True,
    )
}


class _Tables(HTMLParser):
    """Rows (``data-index`` and cell texts) of every ``table.exposure``, keyed by ``data-exposure``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[tuple[int, list[str]]]] = {}
        self.headers: dict[str, list[str]] = {}
        self.figures: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self._in_head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "figure" and a.get("data-plot"):
            self.figures.append(a["data-plot"] or "")
        if tag == "table" and "exposure" in (a.get("class") or "").split():
            self._table = a.get("data-exposure") or ""
            self.tables[self._table] = []
            self.headers[self._table] = []
        elif self._table is not None:
            if tag == "thead":
                self._in_head = True
            elif tag == "tr" and not self._in_head:
                self._row = []
                self.tables[self._table].append((int(a["data-index"] or -1), self._row))
            elif tag in ("td", "th"):
                self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None and self._table is not None:
            text = "".join(self._cell).strip()
            if tag == "th":
                self.headers[self._table].append(text)
            elif self._row is not None:
                self._row.append(text)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _report(checks: list[CheckResult], findings: list[Finding]) -> Report:
    return Report(
        bastion_version="0.1.0",
        run=RunInfo(id="r1", status="ok", started=dt.datetime(2025, 1, 1, tzinfo=dt.UTC), seconds=1.0),
        assets=[AssetRecord(name="m", kind="model", path="m.pt"), AssetRecord(name="d", kind="dataset")],
        checks=checks,
        findings=[ReportFinding.of(f) for f in findings],
    )


def _hand_made() -> Report:
    threshold = CheckResult(
        id="membership.threshold",
        asset="m",
        metrics={"auc": 0.8},
        series=ROC,
        notes={"exposed_records": "dataset rows of the 3 training records with the highest score: 9, 8, 7"},
    )
    leak = Finding(
        rule_id="membership.threshold.membership-leakage",
        severity=Severity.MEDIUM,
        threat=Threat.PRIVACY,
        title="Membership leaks",
        asset="m",
        evidence={
            "auc": 0.8,
            "exposed_records": [
                {"index": 41, "nonmember_fraction_at_or_above": 0.0},
                {"index": 7, "nonmember_fraction_at_or_above": 0.02},
                {"index": 3, "nonmember_fraction_at_or_above": 0.1},
            ],
        },
    )
    label_only = CheckResult(
        id="membership.label-only",
        asset="m",
        metrics={"auc": 0.7},
        series=ROC,
        notes={"exposed_records": "dataset rows of the 2 training records farthest from the boundary: 3, 5"},
    )
    ignored = [
        CheckResult(
            id="membership.attribute-inference",
            asset="m",
            notes={"exposed_records": "dataset rows of 1 training records whose feature ...: 99"},
        ),
        CheckResult(id="membership.lira", asset="m", status="error", reason="PluginError: boom"),
        CheckResult(id="evasion.pgd", asset="m", notes={"exposed_records": "x: 77"}),
    ]
    return _report([threshold, label_only, *ignored], [leak])


def test_exposure_table_merges_attacks_by_rank() -> None:
    report = _hand_made()
    table = exposure_table(report.checks, report.findings)
    assert table is not None
    assert table.attacks == ["membership.threshold", "membership.label-only"]
    # evidence preferred over the note for the threshold; 3 is cited by both attacks
    assert [r.index for r in table.rows] == [3, 41, 5, 7]
    assert table.rows[0].ranks == {"membership.threshold": 3, "membership.label-only": 1}
    assert table.rows[1].nonmember_fraction == 0.0 and table.rows[2].nonmember_fraction is None
    assert table.total == 4 and table.has_fraction
    assert exposure_table(report.checks[2:], report.findings) is None  # attribute/errored/evasion: none


def test_html_has_the_exposure_table_and_log_roc() -> None:
    report = _hand_made()
    html = report_to_html(report, fail_on="none")
    page = _Tables()
    page.feed(html)
    assert set(page.tables) == {"m"}  # only the asset with membership results
    rows = page.tables["m"]
    assert [i for i, _ in rows] == [3, 41, 5, 7]
    assert page.headers["m"] == [
        "Dataset row",
        "Cited by",
        "Rank in membership.threshold",
        "Rank in membership.label-only",
        "Non-members scoring at or above",
    ]
    assert rows[0][1] == ["3", "2 of 2", "3", "1", "0.1"]
    assert rows[2][1] == ["5", "1 of 2", "—", "2", "—"]
    assert 'id="exposure-asset-m"' in html and "never shown" in html
    # the ROC of each membership result is drawn (log axes are tested in test_report_html)
    assert {"membership.threshold/m", "membership.label-only/m"} <= set(page.figures)


def test_real_threshold_result_renders_indices_only(tmp_path: Path) -> None:
    """A real ``membership.threshold`` run: the table lists its cited rows, and no record value."""
    from sklearn.tree import DecisionTreeClassifier
    from tests.assess._estimators import wrap

    from bastion.assess.membership.threshold import MembershipThreshold
    from bastion.core.budget import Budget
    from bastion.core.check import CheckContext, Split
    from bastion.core.config import Asset, InputSpec, ProjectConfig

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32) + 1000.0  # values that must not appear
    y = (x[:, 0] + 0.5 * rng.normal(size=300) > 1000.0).astype(np.int64)
    tr, te = np.arange(0, 150), np.arange(150, 300)
    est = DecisionTreeClassifier(random_state=0, min_samples_leaf=3).fit(x[tr], y[tr])
    ctx = CheckContext(
        asset=Asset(
            name="m", path="m.joblib", framework="sklearn", input=InputSpec(shape=[4]), num_classes=2
        ),
        config=ProjectConfig(version=1),
        base_dir=tmp_path,
        budget=Budget(samples=150),
        params=MembershipThreshold.parse_params({"top_k": 5}),
        thresholds=[],
        seed=0,
        target=wrap(est, input_shape=(4,), num_classes=2),
        data={"train": Split(x=x[tr], y=y[tr], index=tr), "test": Split(x=x[te], y=y[te], index=te)},
    )
    result = MembershipThreshold().run(ctx)
    assert result.status == "ok" and "exposed_records" in result.notes
    html = report_to_html(_report([result], result.findings), fail_on="none")
    page = _Tables()
    page.feed(html)
    indices = [i for i, _ in page.tables["m"]]
    assert len(indices) == 5 and set(indices) <= set(tr.tolist())
    assert "membership.threshold/m" in page.figures
    assert not any(f"{v:.3f}" in html for v in x[tr][:, 0])  # no feature value leaks into the page


def test_markdown_has_the_exposure_table() -> None:
    """The Markdown summary carries the same table: indices and ranks, for the membership asset only."""
    from bastion.report import report_to_markdown

    md = report_to_markdown(_hand_made(), fail_on="none")
    assert md.count("### Most exposed training records") == 1 and "records: m" in md
    lines = md.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| dataset row"))
    assert lines[head] == (
        "| dataset row | cited by | rank in `membership.threshold` | rank in `membership.label-only` "
        "| non-members scoring at or above |"
    )
    assert lines[head + 1] == "|---:|---:|---:|---:|---:|"
    rows = lines[head + 2 : lines.index("", head)]
    assert rows == [
        "| 3 | 2 of 2 | 3 | 1 | 0.1 |",
        "| 41 | 1 of 2 | 1 | — | 0 |",
        "| 5 | 1 of 2 | — | 2 | — |",
        "| 7 | 1 of 2 | 2 | — | 0.02 |",
    ]
    # an asset without membership results gets no table; the attribute/evasion notes are not cited
    none = _report(_hand_made().checks[2:], [])
    assert "Most exposed" not in report_to_markdown(none, fail_on="none")


def test_markdown_exposure_table_truncates_and_skips_the_fraction_column() -> None:
    from bastion.report import report_to_markdown

    many = ", ".join(str(i) for i in range(100, 130))
    check = CheckResult(
        id="membership.label-only",
        asset="m",
        metrics={"auc": 0.7},
        notes={"exposed_records": f"rows: {many}"},
    )
    md = report_to_markdown(_report([check], []), fail_on="none")
    assert "Showing 20 of 30 cited records." in md
    assert "non-members scoring" not in md
    assert "| 100 | 1 of 1 | 1 |" in md and "| 119 | 1 of 1 | 20 |" in md and "| 120 |" not in md
