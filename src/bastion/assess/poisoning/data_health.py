"""Training-data health: label issues, duplicates, train/test leakage and outliers in a dataset.

Threat model: an attacker with write access to the data pipeline (a compromised source, a
crowd-sourced labelling job, a shared bucket) flips labels, copies rows or inserts crafted
records (MITRE ATLAS AML.T0020 Poison Training Data, AML.T0059 Erode Dataset Integrity). The
defender holds the dataset file and its recorded splits, but no ground truth about which rows
were tampered with; this check names the suspect rows **by row index only**, never their values.

What it measures on a ``dataset`` asset (``ctx.data`` holds every recorded split plus ``"all"``,
the whole file; each :class:`bastion.core.check.Split` carries the rows' file indices):

* ``label_issue_rate`` -- rows confident learning judges mislabelled (:mod:`bastion.detect.label_issues`;
  5-fold cross-validated logistic regression + cleanlab). Needs labels; skipped (``None``) otherwise.
* ``exact_duplicate_rate`` / ``near_duplicate_rate`` -- rows repeating an earlier row exactly, or
  within ``duplicate_tol`` x the median nearest-neighbour distance (:mod:`bastion.detect.duplicates`).
* ``train_test_overlap`` -- count of test rows that are exact copies of a training row (or the very
  same row index): leakage. ``train_test_overlap_rate`` divides by the test size;
  ``train_test_near_overlap`` also counts near copies.
* ``outlier_rate`` -- rows whose ECOD score exceeds a robust z-score of ``outlier_z``
  (:mod:`bastion.detect.outliers`).
* ``class_outlier_rate`` (opt-in, ``class_outlier_z``) -- labelled tabular rows whose features
  are anomalous for their own class (:mod:`bastion.detect.class_outliers`); any flagged row is a
  low ``class-outliers`` finding.

Every rate carries a 95 % Wilson interval. Rows examined: the whole file up to ``max_rows``
(a seeded random subset beyond; ``ctx.budget.samples`` governs attacks, not this check).

Findings: one per category whose metric trips a threshold (the highest severity when several
trip), with ``evidence = {count, rate, total, indices (first 50, ascending), ...}`` and
``location.index`` = the first index. Default thresholds: ``label_issue_rate > 0.02`` medium
``label-issues``; ``train_test_overlap > 0`` medium ``train-test-leakage``;
``exact_duplicate_rate > 0.01`` low ``duplicates``; ``outlier_rate > 0.05`` low ``outliers``
(``near_duplicate_rate`` gets ``near-duplicates`` when a user threshold names it).

References: Northcutt, Jiang, Chuang, "Confident Learning", JAIR 2021, arXiv:1911.00068;
Li et al., "ECOD", IEEE TKDE 2022, arXiv:2201.00382.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.core.budget import BudgetUsage
from bastion.core.check import Check, CheckContext, Split
from bastion.core.config import Threshold
from bastion.core.errors import ConfigError
from bastion.core.findings import Finding, Location, Threat
from bastion.core.registry import register
from bastion.core.results import CheckResult
from bastion.core.severity import Severity

log = logging.getLogger(__name__)

#: How many row indices a finding's evidence lists.
MAX_INDICES = 50


class DataHealthParams(BaseModel):
    """Parameters of :class:`DataHealthCheck`.

    Attributes:
        max_rows: rows examined at most (a seeded random subset beyond).
        folds: cross-validation folds for label issues.
        duplicate_tol: near-duplicate tolerance, a fraction of the median nearest-neighbour distance.
        outlier_method: ``ecod`` or ``iforest``.
        outlier_z: robust z-score of the outlier score above which a row is an outlier.
        class_outlier_z: opt-in class-conditional feature anomalies for labelled tabular rows
            (:mod:`bastion.detect.class_outliers`): rows whose features are unusual *for their own
            class*, at this robust z-score; ``None`` (default) leaves it off, as heavy-tailed
            features (e.g. breast-cancer) flag a few percent of clean rows at any fixed threshold.
        train_split: name of the training split (leakage check).
        test_split: name of the test split (leakage check).
    """

    model_config = ConfigDict(extra="forbid")

    max_rows: int = Field(default=20_000, ge=10)
    folds: int = Field(default=5, ge=2, le=20)
    duplicate_tol: float = Field(default=0.1, gt=0, le=1)
    outlier_method: Literal["ecod", "iforest"] = "ecod"
    outlier_z: float = Field(default=5.0, gt=0)
    class_outlier_z: float | None = Field(default=None, gt=0)
    train_split: str = "train"
    test_split: str = "test"


#: Title and remediation of each category recorded by ``DataHealthCheck._flag``, by metric.
_CATEGORY_TEXT: dict[str, tuple[str, str]] = {
    "label_issue_rate": (
        "rows look mislabelled",
        "Check the listed rows' labels against their source records and relabel or "
        "drop the wrong ones; find how wrong labels entered the pipeline.",
    ),
    "exact_duplicate_rate": (
        "rows repeat an earlier row exactly",
        "De-duplicate the dataset and find out where the copies came from; repeated rows "
        "up-weight whatever they teach the model.",
    ),
    "near_duplicate_rate": (
        "rows nearly repeat an earlier row",
        "Review the near copies (noise-added or re-encoded rows) and drop the redundant ones.",
    ),
    "outlier_rate": (
        "rows are outliers",
        "Inspect the listed rows: corrupted records or inserted points far from the rest "
        "of the data should be traced to their source and removed.",
    ),
    "class_outlier_rate": (
        "rows have features anomalous for their own class",
        "Inspect the listed rows: a value ordinary in the data set but extraordinary within the "
        "row's label is how edited or inserted poison rows often look; trace them to their source.",
    ),
}


@dataclass
class _Category:
    """One kind of problem: the flagged file indices and what they are counted against."""

    metric: str
    indices: np.ndarray
    total: int
    title: str
    remediation: str
    pairs: list[list[int]] | None = None


@register("check")
class DataHealthCheck(Check):
    """Label issues, duplicates, leakage and outliers of a dataset, cited by row index."""

    id: ClassVar[str] = "poisoning.data-health"
    title: ClassVar[str] = "Training-data health"
    threat: ClassVar[Threat] = Threat.POISONING
    applies_to: ClassVar[frozenset[str]] = frozenset({"dataset"})
    Params: ClassVar[type[BaseModel]] = DataHealthParams
    atlas: ClassVar[tuple[str, ...]] = ("AML.T0020", "AML.T0059")
    references: ClassVar[tuple[str, ...]] = (
        "Northcutt, Jiang, Chuang, Confident Learning: Estimating Uncertainty in Dataset Labels, "
        "JAIR 2021, arXiv:1911.00068",
        "Li et al., ECOD: Unsupervised Outlier Detection Using Empirical Cumulative Distribution "
        "Functions, IEEE TKDE 2022, arXiv:2201.00382",
    )
    threat_model: ClassVar[str] = (
        "The attacker can add, copy or relabel rows of the training data but does not control "
        "training itself; the defender holds the dataset and its recorded splits."
    )
    remediation: ClassVar[str] = (
        "Review the listed rows against their source records; relabel or drop the wrong ones, "
        "de-duplicate, keep test rows out of training, and record the dataset's provenance."
    )
    default_thresholds: ClassVar[tuple[Threshold, ...]] = (
        Threshold(
            metric="label_issue_rate", op="gt", value=0.02, severity=Severity.MEDIUM, rule="label-issues"
        ),
        Threshold(
            metric="train_test_overlap", op="gt", value=0, severity=Severity.MEDIUM, rule="train-test-leakage"
        ),
        Threshold(
            metric="exact_duplicate_rate", op="gt", value=0.01, severity=Severity.LOW, rule="duplicates"
        ),
        Threshold(metric="outlier_rate", op="gt", value=0.05, severity=Severity.LOW, rule="outliers"),
        Threshold(
            metric="class_outlier_rate", op="gt", value=0.0, severity=Severity.LOW, rule="class-outliers"
        ),
    )
    order: ClassVar[int] = 40

    def applicable(self, ctx: CheckContext) -> str | None:
        """Runs when the dataset's rows were loaded into ``ctx.data``."""
        if not ctx.data:
            return "no rows of the dataset were loaded"
        return None

    def run(self, ctx: CheckContext) -> CheckResult:
        """Examine the dataset; see the module docstring for metrics and findings."""
        from bastion.detect.duplicates import DuplicateDetector, find_duplicates
        from bastion.detect.label_issues import LabelIssueDetector
        from bastion.detect.outliers import OutlierDetector

        start = time.monotonic()
        p = ctx.params if isinstance(ctx.params, DataHealthParams) else DataHealthParams()
        metrics: dict[str, float | None] = {}
        intervals: dict[str, tuple[float, float]] = {}
        notes: dict[str, str] = {}
        categories: dict[str, _Category] = {}

        rows = _rows(ctx.data)
        n_all = int(rows.index.size)
        if n_all > p.max_rows:
            rng = np.random.default_rng(ctx.seed)
            keep = np.sort(rng.choice(n_all, size=p.max_rows, replace=False))
            rows = Split(x=rows.x[keep], y=None if rows.y is None else rows.y[keep], index=rows.index[keep])
            notes["rows"] = f"examined a seeded random {p.max_rows} of {n_all} rows (max_rows)"
        n = int(rows.index.size)
        metrics["rows_examined"] = float(n)
        ctx.report_progress(0.05)

        # -- label issues -------------------------------------------------------------------
        if rows.y is None:
            metrics["label_issue_rate"] = None
            notes["label_issue_rate"] = "skipped: the dataset has no labels"
        else:
            try:
                det = LabelIssueDetector(seed=ctx.seed, folds=p.folds).fit(rows.x, rows.y)
            except ConfigError as exc:
                metrics["label_issue_rate"] = None
                notes["label_issue_rate"] = f"skipped: {exc}"
            else:
                flagged = np.sort(rows.index[det.issues_])
                self._flag(metrics, intervals, categories, "label_issue_rate", flagged, n)
        ctx.report_progress(0.45)

        # -- duplicates within the file -----------------------------------------------------
        dup = find_duplicates(rows.x, tol=p.duplicate_tol)
        exact = rows.index[dup.exact]
        near = rows.index[dup.near]
        exact_pairs = _pairs(exact, rows.index[dup.exact_of])
        self._flag(metrics, intervals, categories, "exact_duplicate_rate", exact, n, pairs=exact_pairs)
        near_pairs = _pairs(near, rows.index[dup.near_of])
        self._flag(metrics, intervals, categories, "near_duplicate_rate", near, n, pairs=near_pairs)
        ctx.report_progress(0.6)

        # -- train/test leakage -------------------------------------------------------------
        train, test = ctx.data.get(p.train_split), ctx.data.get(p.test_split)
        if train is not None and test is not None and (train.index.size == 0 or test.index.size == 0):
            for m in ("train_test_overlap", "train_test_overlap_rate", "train_test_near_overlap"):
                metrics[m] = None
            notes["train_test_overlap"] = f"skipped: split {p.train_split!r} or {p.test_split!r} is empty"
        elif train is None or test is None:
            for m in ("train_test_overlap", "train_test_overlap_rate", "train_test_near_overlap"):
                metrics[m] = None
            notes["train_test_overlap"] = (
                f"skipped: needs splits {p.train_split!r} and {p.test_split!r}; "
                f"recorded: {', '.join(sorted(k for k in ctx.data if k != 'all')) or 'none'}"
            )
        else:
            train = _cap(train, p.max_rows, ctx.seed)
            test = _cap(test, p.max_rows, ctx.seed + 1)
            ddet = DuplicateDetector(seed=ctx.seed, tol=p.duplicate_tol).fit(train.x)
            match = ddet.exact_matches(test.x)
            same_row = np.isin(test.index, train.index)
            leaked = (match >= 0) | same_row
            near_mask = ddet.flag(test.x) | leaked
            partner = np.where(same_row, test.index, train.index[np.maximum(match, 0)])
            order = np.argsort(test.index[leaked], kind="stable")
            leaked_idx = test.index[leaked][order]
            nt = int(test.index.size)
            metrics["train_test_overlap"] = float(leaked_idx.size)
            self._rate(metrics, intervals, "train_test_overlap_rate", leaked_idx.size, nt)
            metrics["train_test_near_overlap"] = float(np.count_nonzero(near_mask))
            categories["train_test_overlap"] = _Category(
                "train_test_overlap",
                leaked_idx,
                nt,
                "test rows also appear in the training split",
                "Remove the listed test rows from training (or from the test split), re-train and "
                "re-measure: leaked rows inflate every reported accuracy.",
                pairs=_pairs(leaked_idx, partner[leaked][order]),
            )
            if test.index.size > 0 and np.intersect1d(train.index, test.index).size:
                notes["train_test_overlap"] = "some row indices are recorded in both splits"
        ctx.report_progress(0.75)

        # -- outliers -------------------------------------------------------------------
        if n < 10:
            metrics["outlier_rate"] = None
            notes["outlier_rate"] = f"skipped: {n} rows are too few to fit an outlier model"
        else:
            odet = OutlierDetector(
                seed=ctx.seed, method=p.outlier_method, threshold="robust", z=p.outlier_z
            ).fit(rows.x)
            out_idx = np.sort(rows.index[odet.reference_flags_])
            self._flag(metrics, intervals, categories, "outlier_rate", out_idx, n)
        if p.class_outlier_z is not None:
            self._class_outliers(rows, p.class_outlier_z, ctx.seed, metrics, intervals, notes, categories)
        ctx.report_progress(0.95)

        result = CheckResult(
            id=self.id,
            asset=ctx.asset.name,
            metrics=metrics,
            intervals=intervals,
            notes=notes,
        )
        result.findings = self._findings(ctx, result, categories)
        seconds = time.monotonic() - start
        result.seconds = round(seconds, 4)
        result.budget_used = BudgetUsage(samples=n, seconds=round(seconds, 4))
        ctx.report_progress(1.0)
        return result

    # -- helpers ------------------------------------------------------------------------
    def _class_outliers(
        self,
        rows: Split,
        z: float,
        seed: int,
        metrics: dict[str, float | None],
        intervals: dict[str, tuple[float, float]],
        notes: dict[str, str],
        categories: dict[str, _Category],
    ) -> None:
        """``class_outlier_rate``: rows anomalous for their own class (opt-in, labelled 2-D rows)."""
        from bastion.detect.class_outliers import ClassConditionalOutlierDetector

        n = int(rows.index.size)
        if rows.y is None or rows.x.ndim != 2 or n < 10:
            metrics["class_outlier_rate"] = None
            notes["class_outlier_rate"] = "skipped: needs at least 10 labelled tabular (2-D) rows"
            return
        det = ClassConditionalOutlierDetector(seed=seed, z=z).fit(rows.x, rows.y)
        flagged = det.reference_flags_
        self._flag(metrics, intervals, categories, "class_outlier_rate", np.sort(rows.index[flagged]), n)
        odd = np.bincount(det.feature_[flagged], minlength=rows.x.shape[1]) if flagged.any() else None
        if odd is not None:
            notes["class_outlier_rate"] = f"most often odd feature: column {int(odd.argmax())}"

    @classmethod
    def _flag(
        cls,
        metrics: dict[str, float | None],
        intervals: dict[str, tuple[float, float]],
        categories: dict[str, _Category],
        metric: str,
        indices: np.ndarray,
        n: int,
        pairs: list[list[int]] | None = None,
    ) -> None:
        """Record ``metric``, the rate of the flagged ``indices`` among ``n`` rows, and its category.

        The category's title and remediation come from :data:`_CATEGORY_TEXT`.
        """
        cls._rate(metrics, intervals, metric, indices.size, n)
        title, remediation = _CATEGORY_TEXT[metric]
        categories[metric] = _Category(metric, indices, n, title, remediation, pairs=pairs)

    @staticmethod
    def _rate(
        metrics: dict[str, float | None],
        intervals: dict[str, tuple[float, float]],
        name: str,
        k: int,
        n: int,
    ) -> None:
        metrics[name] = k / n if n else None
        if n:
            intervals[name] = _wilson(int(k), int(n))

    def _findings(
        self, ctx: CheckContext, result: CheckResult, categories: dict[str, _Category]
    ) -> list[Finding]:
        findings: list[Finding] = []
        rest: list[Threshold] = []
        tripped: dict[str, list[Threshold]] = {}
        for th in ctx.thresholds:
            if th.metric in categories:
                if th.trips(result.metrics.get(th.metric)):
                    tripped.setdefault(th.metric, []).append(th)
            else:
                rest.append(th)
        for metric, ths in tripped.items():
            cat = categories[metric]
            if cat.indices.size == 0:
                continue
            th = max(ths, key=lambda t: t.severity.rank)
            findings.append(self._category_finding(ctx, result, cat, th))
        if rest:
            findings.extend(self.threshold_findings(dataclasses.replace(ctx, thresholds=rest), result))
        return findings

    def _category_finding(
        self, ctx: CheckContext, result: CheckResult, cat: _Category, th: Threshold
    ) -> Finding:
        count = int(cat.indices.size)
        rate = count / cat.total if cat.total else 0.0
        evidence: dict[str, Any] = {
            "count": count,
            "rate": round(rate, 6),
            "total": cat.total,
            "indices": [int(i) for i in cat.indices[:MAX_INDICES]],
            "indices_truncated": count > MAX_INDICES,
            "metric": cat.metric,
            "threshold": f"{th.op} {th.value:g}",
        }
        rate_key = cat.metric if cat.metric.endswith("_rate") else f"{cat.metric}_rate"
        if rate_key in result.intervals:
            evidence["interval"] = [round(v, 6) for v in result.intervals[rate_key]]
        if cat.pairs is not None:
            evidence["pairs"] = cat.pairs
        title = f"{count} of {cat.total} {cat.title} ({rate:.1%})"
        return self.finding(
            ctx,
            th.rule_name(),
            title,
            severity=th.severity,
            evidence=evidence,
            location=Location(path=ctx.asset.path, index=int(cat.indices[0])),
            remediation=cat.remediation,
        )


def _rows(data: dict[str, Split]) -> Split:
    """The whole file (``"all"``), else the union of the recorded splits by row index."""
    if "all" in data:
        return data["all"]
    parts = list(data.values())
    index = np.concatenate([np.asarray(s.index, dtype=np.int64) for s in parts])
    x = np.concatenate([np.asarray(s.x) for s in parts])
    has_y = all(s.y is not None for s in parts)
    y = np.concatenate([np.asarray(s.y) for s in parts]) if has_y else None
    index, first = np.unique(index, return_index=True)
    return Split(x=x[first], y=None if y is None else y[first], index=index)


def _cap(split: Split, max_rows: int, seed: int) -> Split:
    n = int(split.index.size)
    if n <= max_rows:
        return split
    keep = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
    return Split(x=split.x[keep], y=None if split.y is None else split.y[keep], index=split.index[keep])


def _pairs(rows: np.ndarray, partners: np.ndarray) -> list[list[int]]:
    """``[[row, partner], ...]`` (file indices), the first :data:`MAX_INDICES`, by row."""
    order = np.argsort(rows, kind="stable")[:MAX_INDICES]
    return [[int(rows[i]), int(partners[i])] for i in order]


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of the proportion ``k / n`` (``(0, 1)`` when ``n == 0``)."""
    if n <= 0:
        return (0.0, 1.0)
    phat = k / n
    denom = 1.0 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * math.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    # clamp so the interval always holds the point estimate despite rounding at 0 and 1
    return (max(0.0, min(phat, centre - half)), min(1.0, max(phat, centre + half)))
