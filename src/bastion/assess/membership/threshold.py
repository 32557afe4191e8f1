"""Loss-threshold membership inference (Yeom et al. 2018), reported at low FPR (Carlini et al. 2022).

The attack scores each record by the negative cross-entropy loss of its true label under the
target model (``log p_y``; a confidence variant uses ``max_c p_c``): records the model fits
unusually well are called members. It needs the target's probabilities and labelled
records on both sides: members from the ``train`` split, non-members from the held-out
``test`` split. The maths (ROC, TPR at FPR, intervals, ε bounds) lives in
:mod:`bastion.assess.metrics`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import ClassVar, Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.assess import metrics as M
from bastion.assess.membership import _common as C
from bastion.core import atlas as atlas_ids
from bastion.core.budget import BudgetMeter
from bastion.core.capability import Capability
from bastion.core.check import Check, CheckContext, Split
from bastion.core.config import Threshold
from bastion.core.errors import BudgetExhausted
from bastion.core.findings import Threat
from bastion.core.registry import register
from bastion.core.results import CheckResult, Series
from bastion.core.severity import Severity

log = logging.getLogger(__name__)

#: FPRs reported when ``params.fprs`` is not set; one the sample cannot resolve is null, with a note.
DEFAULT_FPRS: tuple[float, ...] = (0.1, 0.01, 0.001)
#: Floor on the probability of the true label, so the loss stays finite.
_P_FLOOR = 1e-12
_MAX_ROC_POINTS = 200


def fpr_metric(fpr: float) -> str:
    """The metric name of the TPR at ``fpr``: ``tpr@fpr=0.01``."""
    return f"tpr@fpr={fpr:g}"


class MembershipMetricParams(BaseModel):
    """How every membership attack reports: FPRs, calibration, exposure, intervals.

    The attributes are documented on :class:`MembershipThresholdParams`.
    """

    model_config = ConfigDict(extra="forbid")

    fprs: list[float] = Field(default_factory=lambda: list(DEFAULT_FPRS), min_length=1)
    calibration_fpr: float = Field(default=0.05, gt=0.0, lt=0.5)
    calibration_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    top_k: int = Field(default=10, ge=0, le=1000)
    n_boot: int = Field(default=200, ge=10, le=10_000)

    @field_validator("fprs")
    @classmethod
    def _rates(cls, v: list[float]) -> list[float]:
        for f in v:
            if not 0.0 < f < 1.0:
                raise ValueError(f"every FPR must lie in (0, 1), got {f}")
        return sorted(set(v), reverse=True)


class MembershipThresholdParams(MembershipMetricParams):
    """Parameters of ``membership.threshold``.

    Attributes:
        fprs: FPRs at which to report the TPR (``tpr@fpr=<f>``). Defaults to 0.1, 0.01, 0.001;
            when set explicitly, an FPR the sample cannot resolve (fewer than ``1/f``
            non-members) is a preflight error instead of a null metric.
        calibration_fpr: the FPR the calibrated operating point aims at; its threshold is
            chosen on a calibration subset of the non-members and evaluated on the rest.
        calibration_fraction: share of the non-members used for calibration.
        score: ``loss`` (``log p_y``, Yeom et al.) or ``confidence`` (``max_c p_c``, needs no label).
        top_k: how many of the most exposed training records to cite (by dataset row index).
        n_boot: bootstrap replicates of the AUC interval.
    """

    score: Literal["loss", "confidence"] = "loss"


@register("attack")
class MembershipThreshold(Check):
    """Loss-threshold membership inference, reported as AUC and TPR at low FPR.

    Threat model: a black-box attacker who can query the model for class probabilities and
    holds candidate records with their labels wants to tell whether each record was in the
    training set. A record is called a member when its score (``log p_y`` of its true label;
    higher = better fit) passes a threshold. The ROC over all thresholds gives the AUC and
    the TPR at fixed low FPRs — the standard of the field, since an attack is only dangerous
    when it confidently identifies *some* members (Carlini et al. 2022). A calibrated operating
    point shows what an attacker achieves with a threshold fixed beforehand from held-out
    non-members only.

    Data: ``ctx.data["train"]`` (members) and ``ctx.data["test"]`` (held-out non-members),
    both labelled; a test row whose dataset index also appears in ``train`` is dropped.
    Up to ``budget.samples`` records of each side are drawn (seeded), balanced.

    Budget: ``2 × n`` queries for ``n`` records per side (one probability vector per record);
    ``budget.samples`` bounds ``n`` and is charged as ``n``; ``budget.queries`` caps ``n`` at
    ``queries // 2``.

    Metrics: ``auc`` (bootstrap interval), ``tpr@fpr=<f>`` (Clopper-Pearson intervals; null
    with a note in ``notes`` when fewer than ``1/f`` non-members), ``advantage``
    (``max TPR − FPR``, Yeom et al.), ``balanced_accuracy`` (``0.5 + advantage/2``),
    ``epsilon_lower_bound`` (the smallest ε of (ε, 0)-DP consistent with the attack at 95 %
    Clopper-Pearson confidence, Jagielski et al. 2020), and ``tpr@calibrated``,
    ``fpr@calibrated``, ``precision@calibrated`` (precision at a 50 % member prior).
    ``notes["exposed_records"]`` lists the dataset row indices of the ``top_k`` training
    records with the highest score (never the records).

    Series: ``roc`` (log-log, at most 200 points, zero rates dropped) and ``chance``.

    Default thresholds (a well-generalising model stays below both; an over-fit one trips them):
    ``auc > 0.6`` → medium ``membership.threshold.membership-leakage``;
    ``tpr@fpr=0.01 > 0.05`` (5× chance) → high ``membership.threshold.low-fpr-leakage``.

    References: Yeom et al. 2018, "Privacy Risk in Machine Learning: Analyzing the Connection
    to Overfitting" (arXiv:1709.01604); Carlini et al. 2022, "Membership Inference Attacks From
    First Principles" (arXiv:2112.03570).
    """

    id: ClassVar[str] = "membership.threshold"
    title: ClassVar[str] = "Membership inference (loss threshold)"
    threat: ClassVar[Threat] = Threat.PRIVACY
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.PROBABILITIES})
    applies_to: ClassVar[frozenset[str]] = frozenset({"model", "endpoint"})
    Params: ClassVar[type[BaseModel]] = MembershipThresholdParams
    atlas: ClassVar[tuple[str, ...]] = (atlas_ids.INFER_MEMBERSHIP,)
    references: ClassVar[tuple[str, ...]] = (
        "Yeom et al. 2018, Privacy Risk in Machine Learning: Analyzing the Connection to "
        "Overfitting, arXiv:1709.01604",
        "Carlini et al. 2022, Membership Inference Attacks From First Principles, arXiv:2112.03570",
    )
    threat_model: ClassVar[str] = (
        "Black-box attacker with query access to class probabilities and labelled candidate "
        "records decides, per record, whether it was in the training set by thresholding the "
        "model's loss on it."
    )
    default_thresholds: ClassVar[tuple[Threshold, ...]] = (
        Threshold(metric="auc", op="gt", value=0.6, severity=Severity.MEDIUM, rule="membership-leakage"),
        Threshold(metric="tpr@fpr=0.01", op="gt", value=0.05, severity=Severity.HIGH, rule="low-fpr-leakage"),
    )
    remediation: ClassVar[str] = (
        "Reduce over-fitting (regularisation, early stopping, more data or augmentation), train "
        "with differential privacy (DP-SGD) for a provable bound, and expose labels or coarsened "
        "probabilities instead of full confidence scores."
    )

    # -- planning --------------------------------------------------------------------------
    def applicable(self, ctx: CheckContext) -> str | None:
        """Needs probabilities plus labelled ``train`` (members) and ``test`` (non-members) splits."""
        reason = super().applicable(ctx)
        if reason is not None:
            return reason
        for name, role in (("train", "members"), ("test", "held-out non-members")):
            split = ctx.data.get(name)
            if split is None or len(split.x) == 0:
                return f"needs a '{name}' split ({role}); the asset's dataset has none"
            if split.y is None:
                return f"needs labels in the '{name}' split"
        return None

    def preflight(self, ctx: CheckContext) -> list[str]:
        """FPRs the user asked for that the sample cannot resolve; a budget below two queries."""
        params = cast(MembershipThresholdParams, ctx.params)
        where = f"checks.{self.id} (asset {ctx.asset.name})"
        problems: list[str] = []
        if ctx.budget.queries is not None and ctx.budget.queries < 2:
            problems.append(f"{where}: budget.queries must allow at least one member and one non-member")
        train, test = ctx.data.get("train"), ctx.data.get("test")
        if train is None or test is None:
            return problems  # applicable() reports the missing data as a skip
        n = self._sample_size(ctx, len(train.x), len(_nonmembers(train, test).x))
        problems += C.fpr_problems(where, params, n)
        if "calibration_fpr" in params.model_fields_set:
            n_cal = _calibration_size(n, params.calibration_fraction)
            reason = M.unresolvable_fpr_reason(params.calibration_fpr, n_cal)
            if reason is not None:
                problems.append(f"{where}: params.calibration_fpr: {reason} in the calibration subset")
        return problems

    @staticmethod
    def _sample_size(ctx: CheckContext, n_train: int, n_test: int) -> int:
        return C.sample_size(ctx, n_train, n_test, 2)

    # -- running ---------------------------------------------------------------------------
    def run(self, ctx: CheckContext) -> CheckResult:
        """Score members and non-members, then report AUC, TPR at low FPR and the rest.

        Raises:
            TargetError: the target cannot return probabilities for these inputs.
        """
        t0 = time.monotonic()
        params = cast(MembershipThresholdParams, ctx.params)
        train = ctx.data["train"]
        test = _nonmembers(train, ctx.data["test"])
        notes: dict[str, str] = {}
        if len(test.x) < len(ctx.data["test"].x):
            notes["overlap"] = (
                f"{len(ctx.data['test'].x) - len(test.x)} held-out rows also in 'train' were dropped"
            )
        n = self._sample_size(ctx, len(train.x), len(test.x))
        meter = BudgetMeter(ctx.budget)
        if n < 1:
            return C.skipped(self, ctx, "no member/non-member pair fits the data and budget")
        rng, mem, non = C.draw_pairs(ctx.seed, len(train.x), len(test.x), n)
        assert train.y is not None and test.y is not None  # applicable() checked
        try:
            meter.charge(samples=n)
            with ctx.target.metered(meter):
                s_mem = self._scores(ctx, train.x[mem], train.y[mem], params.score)
                ctx.report_progress(0.4)
                s_non = self._scores(ctx, test.x[non], test.y[non], params.score)
                ctx.report_progress(0.8)
        except BudgetExhausted as exc:
            return C.budget_error(self, ctx, exc, meter, t0)

        result = CheckResult(id=self.id, asset=ctx.asset.name, notes=notes)
        self._roc_metrics(result, s_mem, s_non, params, ctx.seed)
        self._calibrated(result, s_mem, s_non, params, rng)

        # The most exposed training records: highest score, ties broken by row index.
        member_rows = np.asarray(train.index)[mem]
        order = C.top_members(member_rows, s_mem, params.top_k)
        non_sorted = np.sort(s_non)
        exposed = [
            {
                "index": int(member_rows[i]),
                "nonmember_fraction_at_or_above": round(
                    float((n - np.searchsorted(non_sorted, s_mem[i], side="left")) / n), 6
                ),
            }
            for i in order
        ]
        C.note_exposed(result, [int(e["index"]) for e in exposed], "with the highest score")
        result.notes["sample"] = (
            f"{n} members (train) and {n} non-members (test), drawn with seed {ctx.seed}; "
            f"score: {params.score}"
        )
        evidence = {"members": n, "nonmembers": n, "score": params.score, "exposed_records": exposed}
        return C.finish(self, ctx, result, meter, t0, evidence)

    @staticmethod
    def _scores(ctx: CheckContext, x: np.ndarray, y: np.ndarray, kind: str) -> np.ndarray:
        """Membership scores ``(N,)`` float64, higher = more likely a member.

        ``loss`` ranks rows by ``log p_y − log Σ_{c≠y} p_c`` (the stable logit of ``p_y``): a
        strictly increasing function of ``log p_y`` = −cross-entropy, so the ROC is the loss
        attack's, but rows whose ``p_y`` rounds to 1 are still told apart by their other
        classes' mass (Carlini et al. 2022 scale confidences the same way). ``confidence``
        does the same with the top class instead of the true one.
        """
        proba = np.asarray(ctx.target.predict_proba(x), dtype=np.float64)
        rows = np.arange(len(proba))
        cls = proba.argmax(axis=1) if kind == "confidence" else np.asarray(y, dtype=np.int64)
        p_cls = proba[rows, cls]
        mask = np.ones_like(proba, dtype=bool)
        mask[rows, cls] = False
        others = np.where(mask, proba, 0.0).sum(axis=1)
        score = np.log(np.maximum(p_cls, _P_FLOOR)) - np.log(np.maximum(others, _P_FLOOR))
        return np.asarray(score, dtype=np.float64)

    def _roc_metrics(
        self,
        result: CheckResult,
        s_mem: np.ndarray,
        s_non: np.ndarray,
        params: MembershipThresholdParams,
        seed: int,
    ) -> None:
        n_mem, n_non = len(s_mem), len(s_non)
        fpr, tpr, _ = M.roc_curve(s_mem, s_non)
        result.metrics["auc"] = M.roc_auc(s_mem, s_non)
        result.intervals["auc"] = M.bootstrap_auc_interval(s_mem, s_non, n_boot=params.n_boot, seed=seed)
        for f in params.fprs:
            name = fpr_metric(f)
            value, reason = M.tpr_at_fpr(fpr, tpr, f, n_nonmembers=n_non)
            result.metrics[name] = value
            if value is None:
                result.notes[name] = reason or "unresolvable"
            else:
                result.intervals[name] = M.clopper_pearson(round(value * n_mem), n_mem)

        gap = tpr - fpr
        best = int(np.argmax(gap))
        tp_lo, tp_hi = M.clopper_pearson(round(tpr[best] * n_mem), n_mem)
        fp_lo, fp_hi = M.clopper_pearson(round(fpr[best] * n_non), n_non)
        advantage = float(gap[best])
        result.metrics["advantage"] = advantage
        result.intervals["advantage"] = (max(-1.0, tp_lo - fp_hi), min(1.0, tp_hi - fp_lo))
        result.metrics["balanced_accuracy"] = 0.5 + advantage / 2
        result.intervals["balanced_accuracy"] = (0.5 * (tp_lo + 1.0 - fp_hi), 0.5 * (tp_hi + 1.0 - fp_lo))
        result.notes["advantage"] = (
            "max TPR − FPR over thresholds chosen on the same data (optimistic); interval from "
            "Clopper-Pearson bounds on the TPR and FPR at that threshold"
        )
        tp = np.rint(tpr * n_mem).astype(np.int64)
        fp = np.rint(fpr * n_non).astype(np.int64)
        result.metrics["epsilon_lower_bound"] = M.epsilon_lower_bound_ci(tp, fp, n_mem, n_non)
        result.notes["epsilon_lower_bound"] = (
            "smallest ε of an (ε, 0)-DP training run consistent with this attack, from 95 % "
            "Clopper-Pearson bounds on TPR and FPR, maximised over thresholds (arXiv:2006.07709)"
        )

        x, y = M.downsample_curve(fpr, tpr, _MAX_ROC_POINTS, log=True)
        result.series["roc"] = Series(
            x=x,
            y=list(y),
            x_label="false-positive rate",
            y_label="true-positive rate",
            log_x=True,
            log_y=True,
        )
        floor = 1.0 / n_non
        result.series["chance"] = Series(
            x=[floor, 1.0],
            y=[floor, 1.0],
            x_label="false-positive rate",
            y_label="true-positive rate",
            log_x=True,
            log_y=True,
        )

    @staticmethod
    def _calibrated(
        result: CheckResult,
        s_mem: np.ndarray,
        s_non: np.ndarray,
        params: MembershipThresholdParams,
        rng: np.random.Generator,
    ) -> None:
        """Fix a threshold on a calibration subset of non-members; evaluate on the others."""
        names = ("tpr@calibrated", "fpr@calibrated", "precision@calibrated")
        n_non = len(s_non)
        n_cal = _calibration_size(n_non, params.calibration_fraction)
        perm = rng.permutation(n_non)
        cal, held = s_non[perm[:n_cal]], s_non[perm[n_cal:]]
        reason = M.unresolvable_fpr_reason(params.calibration_fpr, n_cal)
        if reason is None and len(held) == 0:
            reason = "no non-member left to evaluate the calibrated threshold"
        if reason is not None:
            for name in names:
                result.metrics[name] = None
                result.notes[name] = f"calibration at FPR {params.calibration_fpr:g}: {reason}"
            return
        # Call "member" when score > tau, tau the (k+1)-th highest calibration score, so at most
        # k = floor(calibration_fpr * n_cal) calibration non-members pass.
        k = math.floor(params.calibration_fpr * n_cal + 1e-9)
        tau = float(np.sort(cal)[::-1][k])
        tp = int((s_mem > tau).sum())
        fp = int((held > tau).sum())
        n_mem, n_held = len(s_mem), len(held)
        tpr, fpr = tp / n_mem, fp / n_held
        tp_ci = M.clopper_pearson(tp, n_mem)
        fp_ci = M.clopper_pearson(fp, n_held)
        result.metrics["tpr@calibrated"] = tpr
        result.intervals["tpr@calibrated"] = tp_ci
        result.metrics["fpr@calibrated"] = fpr
        result.intervals["fpr@calibrated"] = fp_ci
        if tpr + fpr > 0:
            result.metrics["precision@calibrated"] = tpr / (tpr + fpr)
            lo = tp_ci[0] / (tp_ci[0] + fp_ci[1]) if tp_ci[0] + fp_ci[1] > 0 else 0.0
            hi = tp_ci[1] / (tp_ci[1] + fp_ci[0]) if tp_ci[1] + fp_ci[0] > 0 else 1.0
            result.intervals["precision@calibrated"] = (lo, hi)
        else:
            result.metrics["precision@calibrated"] = None
            result.notes["precision@calibrated"] = "the calibrated threshold calls no record a member"
        result.notes["tpr@calibrated"] = (
            f"threshold fixed at FPR {params.calibration_fpr:g} on {n_cal} calibration non-members, "
            f"evaluated on {n_mem} members and {n_held} other non-members; precision at a 50 % prior"
        )


def _calibration_size(n_nonmembers: int, fraction: float) -> int:
    return max(1, min(n_nonmembers - 1, round(n_nonmembers * fraction))) if n_nonmembers > 1 else 0


def _nonmembers(train: Split, test: Split) -> Split:
    """``test`` without rows whose dataset index is also in ``train`` (those are members)."""
    clash = np.isin(np.asarray(test.index), np.asarray(train.index))
    if not clash.any():
        return test
    keep = ~clash
    y = None if test.y is None else test.y[keep]
    return Split(x=test.x[keep], y=y, index=np.asarray(test.index)[keep])
