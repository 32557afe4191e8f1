"""Attribute inference on tabular data: recover a sensitive feature from the rest and the model's output.

An attacker who knows a training record's other features and its label, and can query the
model, tries each possible value of the sensitive feature and keeps the one under which the
model finds the record's label most likely, weighted by a prior from public data (Fredrikson et
al. 2014; Yeom et al. 2018, arXiv:1709.01604). A model that memorised its training records
answers "most likely" for the true value far more often than the data alone explain. The
leakage is the *gain over a baseline that never queries the model* — a classifier that infers
the feature from the same other features and label, fitted on the same public data.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, ClassVar, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.assess import metrics as M
from bastion.assess.membership import _common as C
from bastion.core import atlas as atlas_ids
from bastion.core.budget import Budget, BudgetMeter
from bastion.core.capability import Capability
from bastion.core.check import Check, CheckContext, Split
from bastion.core.config import Asset, Threshold
from bastion.core.errors import BudgetExhausted, require
from bastion.core.findings import Threat
from bastion.core.registry import register
from bastion.core.results import CheckResult
from bastion.core.severity import Severity

log = logging.getLogger(__name__)

_FLOOR = 1e-12


class AttributeInferenceParams(BaseModel):
    """Parameters of ``membership.attribute-inference``.

    Attributes:
        sensitive_feature: the feature to infer, by name (``input.features[].name``) or by
            column index; ``None`` skips the check with the reason.
        max_values: most distinct values the feature may take (it must be binary or
            categorical: the attack tries every value).
        aux_fraction: share of the held-out ``test`` split used as the attacker's public data
            (to fit the prior and the baseline); the rest are the non-members the attack is
            also measured on.
        top_k: how many training records the attack recovers and the baseline misses to cite
            (by dataset row index, never the values).
        likelihood_weight: weight ``w`` of the model's log-likelihood against the prior; ``1``
            is Bayes' rule with a calibrated model, larger trusts the model's answer more
            (Yeom et al.'s attack is the limit of large ``w``: the value with the lowest loss).
    """

    model_config = ConfigDict(extra="forbid")

    sensitive_feature: str | int | None = None
    max_values: int = Field(default=16, ge=2, le=1000)
    aux_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    top_k: int = Field(default=10, ge=0, le=1000)
    likelihood_weight: float = Field(default=1.0, gt=0.0, le=1000.0)


@register("attack")
class AttributeInference(Check):
    """Attribute inference: the model's help in recovering a training record's sensitive feature.

    Threat model: an attacker knows a training record's other features and label (e.g. a
    patient's file minus one sensitive field), has public data from the same population with
    the sensitive feature, and can query the model (probabilities, or labels only). For each
    candidate value ``v`` the attack scores ``log P(v | x_-s) + log p_model(y | x_-s, s=v)``
    (Bayes' rule with the model standing in for ``P(y | x)``; with labels only, the model's
    likelihood is its accuracy on the public data when it predicts ``y`` and the rest spread
    over the other classes) and picks the best. The baseline picks ``argmax_v P(v | x_-s, y)``
    from a classifier on the public data only, without the model. Both priors are multinomial
    logistic regressions on standardised features.

    Data: ``train`` (members, attacked), ``test`` (held out: an ``aux_fraction`` share is the
    public data; the rest are non-members, attacked for comparison), tabular (1-D inputs), labelled.

    Budget: ``V`` queries per attacked record (``V`` values of the feature) plus one per public
    record with labels only; ``budget.samples`` caps the attacked members (charged as such),
    ``budget.queries`` caps both.

    Metrics: ``attack_accuracy``, ``baseline_accuracy`` (Wilson intervals) and ``advantage``
    (their difference, paired normal interval) on the members; the same three with
    ``@nonmembers``. A member advantage well above the non-member one is memorisation.

    Default threshold: ``advantage > 0.05`` → medium ``membership.attribute-inference.attribute-leakage``.

    References: Fredrikson et al. 2014, "Privacy in Pharmacogenetics" (USENIX Security);
    Yeom et al. 2018, arXiv:1709.01604; Jayaraman & Evans 2022, "Are Attribute Inference
    Attacks Just Imputation?" (arXiv:2209.01292) for the baseline.
    """

    id: ClassVar[str] = "membership.attribute-inference"
    title: ClassVar[str] = "Attribute inference (sensitive feature)"
    threat: ClassVar[Threat] = Threat.PRIVACY
    requires: ClassVar[frozenset[Capability]] = frozenset()
    applies_to: ClassVar[frozenset[str]] = frozenset({"model", "endpoint"})
    Params: ClassVar[type[BaseModel]] = AttributeInferenceParams
    atlas: ClassVar[tuple[str, ...]] = (atlas_ids.INFER_MEMBERSHIP,)
    references: ClassVar[tuple[str, ...]] = (
        "Fredrikson et al. 2014, Privacy in Pharmacogenetics: An End-to-End Case Study of "
        "Personalized Warfarin Dosing, USENIX Security",
        "Yeom et al. 2018, Privacy Risk in Machine Learning, arXiv:1709.01604",
        "Jayaraman & Evans 2022, Are Attribute Inference Attacks Just Imputation?, arXiv:2209.01292",
    )
    threat_model: ClassVar[str] = (
        "Black-box attacker who knows a training record's other features and label and has public "
        "data recovers its sensitive feature by asking the model which value explains the label best."
    )
    default_thresholds: ClassVar[tuple[Threshold, ...]] = (
        Threshold(
            metric="advantage", op="gt", value=0.05, severity=Severity.MEDIUM, rule="attribute-leakage"
        ),
    )
    remediation: ClassVar[str] = (
        "Reduce over-fitting (regularisation, more data), train with differential privacy, drop the "
        "sensitive feature from the model's inputs if it is not needed, or expose labels only."
    )

    # -- planning --------------------------------------------------------------------------
    def config_skip(self, asset: Asset, params: Any, budget: Budget) -> str | None:
        """No ``sensitive_feature`` configured: known before anything loads."""
        if cast(AttributeInferenceParams, params).sensitive_feature is None:
            return f"no sensitive feature configured: set checks.{self.id}.params.sensitive_feature"
        return super().config_skip(asset, params, budget)

    def applicable(self, ctx: CheckContext) -> str | None:
        """Needs ``sensitive_feature``, tabular inputs and labelled ``train``/``test`` splits."""
        reason = super().applicable(ctx)
        if reason is not None:
            return reason
        for name in ("train", "test"):
            split = ctx.data.get(name)
            if split is None or len(split.x) == 0:
                return f"needs a '{name}' split; the asset's dataset has none"
            if split.y is None:
                return f"needs labels in the '{name}' split"
            if split.x.ndim != 2:
                return f"needs tabular (1-D) inputs; the '{name}' split has shape {list(split.x.shape[1:])}"
        return None

    def feature_index(self, ctx: CheckContext) -> int:
        """The sensitive feature's column.

        Raises:
            ValueError: the name is not declared or the index is outside the inputs (one line).
        """
        params = cast(AttributeInferenceParams, ctx.params)
        feat = params.sensitive_feature
        n_feat = int(ctx.data["train"].x.shape[1])
        if isinstance(feat, int):
            if not 0 <= feat < n_feat:
                raise ValueError(f"sensitive_feature {feat} is outside the {n_feat} input columns")
            return feat
        spec = ctx.asset.input
        names = [f.name for f in spec.features] if spec is not None and spec.features is not None else []
        if feat not in names:
            known = ", ".join(names[:8]) or "none declared in input.features"
            raise ValueError(f"sensitive_feature {feat!r} is not a declared feature (known: {known})")
        return names.index(str(feat))

    def preflight(self, ctx: CheckContext) -> list[str]:
        """Unknown feature, a feature with too many values, too little public data, too few queries."""
        params = cast(AttributeInferenceParams, ctx.params)
        where = f"checks.{self.id} (asset {ctx.asset.name})"
        if self.applicable(ctx) is not None:
            return []
        try:
            j = self.feature_index(ctx)
        except ValueError as exc:
            return [f"{where}: params.{exc}"]
        problems: list[str] = []
        values = self._values(ctx, j)
        if len(values) > params.max_values:
            problems.append(
                f"{where}: params.sensitive_feature takes {len(values)} distinct values (more than "
                f"max_values = {params.max_values}); attribute inference needs a binary or "
                "categorical feature"
            )
        elif len(values) < 2:
            problems.append(f"{where}: params.sensitive_feature is constant; nothing to infer")
        n_aux = self._aux_size(len(ctx.data["test"].x), params.aux_fraction)
        if n_aux < 2:
            problems.append(
                f"{where}: the 'test' split leaves {n_aux} public records to fit the prior; need 2+"
            )
        if ctx.budget.queries is not None and ctx.budget.queries < len(values):
            problems.append(
                f"{where}: budget.queries = {ctx.budget.queries} cannot try the {len(values)} values "
                "on one record"
            )
        return problems

    @staticmethod
    def _aux_size(n_test: int, fraction: float) -> int:
        return max(0, min(n_test - 1, math.ceil(n_test * fraction)))

    @staticmethod
    def _values(ctx: CheckContext, j: int) -> np.ndarray:
        spec = ctx.asset.input
        cats = spec.features[j].categories if spec is not None and spec.features is not None else None
        if cats:
            return np.asarray(sorted(cats), dtype=np.float64)
        cols = [np.asarray(ctx.data[s].x[:, j], dtype=np.float64) for s in ("train", "test")]
        return np.unique(np.concatenate(cols))

    # -- running ---------------------------------------------------------------------------
    def run(self, ctx: CheckContext) -> CheckResult:
        """Infer the feature on members and non-members with and without the model; report the gain.

        Raises:
            MissingExtraError: scikit-learn is not installed.
        """
        t0 = time.monotonic()
        params = cast(AttributeInferenceParams, ctx.params)
        j = self.feature_index(ctx)
        values = self._values(ctx, j)
        n_val = len(values)
        train, test = ctx.data["train"], ctx.data["test"]
        assert train.y is not None and test.y is not None  # applicable() checked
        rng = np.random.default_rng(ctx.seed)
        perm = rng.permutation(len(test.x))
        n_aux = self._aux_size(len(test.x), params.aux_fraction)
        aux = _take(test, perm[:n_aux])
        non = _take(test, perm[n_aux:])
        label_only = Capability.PROBABILITIES not in ctx.target.capabilities
        n_mem = len(train.x)
        if ctx.budget.samples is not None:
            n_mem = min(n_mem, ctx.budget.samples)
        n_non = len(non.x)
        if ctx.budget.queries is not None:
            left = ctx.budget.queries - (n_aux if label_only else 0)
            n_mem = max(0, min(n_mem, left // n_val))
            n_non = max(0, min(n_non, (left - n_mem * n_val) // n_val))
        if n_mem < 1:
            return C.skipped(self, ctx, "the query budget does not cover one training record")
        mem = _take(train, np.sort(rng.choice(len(train.x), size=n_mem, replace=False)))
        non = _take(non, np.arange(n_non))
        meter = BudgetMeter(ctx.budget)
        prior, baseline = _fit_priors(aux, j, values, int(ctx.target.num_classes))
        try:
            meter.charge(samples=n_mem)
            with ctx.target.metered(meter):
                acc_aux = None
                if label_only:
                    assert aux.y is not None
                    acc_aux = float((ctx.target.predict_label(aux.x) == aux.y).mean())
                outcome = {
                    name: self._infer(
                        ctx, part, j, values, prior, baseline, acc_aux, params.likelihood_weight
                    )
                    for name, part in (("members", mem), ("nonmembers", non))
                    if len(part.x)
                }
                ctx.report_progress(0.9)
        except BudgetExhausted as exc:
            return C.budget_error(self, ctx, exc, meter, t0)
        result = CheckResult(id=self.id, asset=ctx.asset.name)
        for name, (hit_attack, hit_base) in outcome.items():
            suffix = "" if name == "members" else "@nonmembers"
            n = len(hit_attack)
            for metric, hits in (("attack_accuracy", hit_attack), ("baseline_accuracy", hit_base)):
                result.metrics[metric + suffix] = float(hits.mean())
                result.intervals[metric + suffix] = M.wilson_interval(int(hits.sum()), n)
            diff = hit_attack.astype(np.float64) - hit_base.astype(np.float64)
            half = 1.96 * float(diff.std(ddof=1)) / math.sqrt(n) if n > 1 else 1.0
            adv = float(diff.mean())
            result.metrics["advantage" + suffix] = adv
            result.intervals["advantage" + suffix] = (max(-1.0, adv - half), min(1.0, adv + half))
        hit_attack, hit_base = outcome["members"]
        gained = np.asarray(mem.index)[hit_attack & ~hit_base]
        exposed = [int(i) for i in np.sort(gained)[: params.top_k]]
        feat_name = str(params.sensitive_feature)
        result.notes["sample"] = (
            f"feature {feat_name!r} (column {j}, {n_val} values); {n_mem} members attacked, "
            f"{len(non.x)} non-members, {n_aux} public records from 'test' for the prior and baseline; "
            + ("label-only likelihood" if label_only else "model probabilities")
        )
        result.notes["advantage"] = (
            "attack accuracy minus that of a baseline that never queries the model (same public data, "
            "same other features and label); paired normal 95 % interval"
        )
        if exposed:
            result.notes["exposed_records"] = (
                f"dataset rows of {len(exposed)} training records whose feature the attack recovered and "
                "the baseline did not: " + ", ".join(str(i) for i in exposed)
            )
        evidence = {"sensitive_feature": feat_name, "members": n_mem, "exposed_records": exposed}
        return C.finish(self, ctx, result, meter, t0, evidence)

    @staticmethod
    def _infer(
        ctx: CheckContext,
        part: Split,
        j: int,
        values: np.ndarray,
        prior: Any,
        baseline: Any,
        acc_aux: float | None,
        weight: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-record hits ``(N,)`` bool of the attack and of the baseline."""
        assert part.y is not None
        n, n_val = len(part.x), len(values)
        y = np.asarray(part.y, dtype=np.int64)
        truth = np.searchsorted(values, np.asarray(part.x[:, j], dtype=np.float64))
        others = np.delete(np.asarray(part.x, dtype=np.float64), j, axis=1)
        log_prior = _log_proba(prior, others, n_val)
        log_base = _log_proba(baseline, _with_label(others, y, ctx.target.num_classes), n_val)
        probes = np.repeat(np.asarray(part.x, dtype=np.float32)[None], n_val, axis=0)
        probes[:, :, j] = values[:, None].astype(np.float32)
        flat = probes.reshape(n_val * n, -1)
        if acc_aux is None:
            p = np.asarray(ctx.target.predict_proba(flat), dtype=np.float64).reshape(n_val, n, -1)
            like = np.log(np.maximum(p[:, np.arange(n), y], _FLOOR)).T  # (n, V)
        else:
            pred = np.asarray(ctx.target.predict_label(flat)).reshape(n_val, n).T
            hit = math.log(max(acc_aux, _FLOOR))
            miss = math.log(max((1.0 - acc_aux) / max(1, ctx.target.num_classes - 1), _FLOOR))
            like = np.where(pred == y[:, None], hit, miss)
        attack = np.argmax(log_prior + weight * like, axis=1)
        base = np.argmax(log_base, axis=1)
        return attack == truth, base == truth


def _take(split: Split, rows: np.ndarray) -> Split:
    y = None if split.y is None else split.y[rows]
    return Split(x=split.x[rows], y=y, index=np.asarray(split.index)[rows])


def _with_label(others: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    onehot = np.zeros((len(y), n_classes))
    onehot[np.arange(len(y)), y] = 1.0
    return np.concatenate([others, onehot], axis=1)


def _fit_priors(aux: Split, j: int, values: np.ndarray, n_classes: int) -> tuple[Any, Any]:
    """``P(v | x_-s)`` (the attack's prior) and ``P(v | x_-s, y)`` (the baseline), on public data."""
    linear = require("sklearn.linear_model", "data")
    pipeline = require("sklearn.pipeline", "data")
    prep = require("sklearn.preprocessing", "data")
    assert aux.y is not None
    truth = np.searchsorted(values, np.asarray(aux.x[:, j], dtype=np.float64))
    others = np.delete(np.asarray(aux.x, dtype=np.float64), j, axis=1)
    y = np.asarray(aux.y, dtype=np.int64)

    def fit(features: np.ndarray) -> Any:
        if len(np.unique(truth)) < 2:
            return _Constant(int(truth[0]))
        model = pipeline.make_pipeline(prep.StandardScaler(), linear.LogisticRegression(max_iter=2000))
        return model.fit(features, truth)

    return fit(others), fit(_with_label(others, y, n_classes))


class _Constant:
    """A prior for public data in which the feature takes one value."""

    def __init__(self, value: int) -> None:
        self.classes_ = np.array([value])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.ones((len(x), 1))


def _log_proba(model: Any, features: np.ndarray, n_val: int) -> np.ndarray:
    """``(N, V)`` log-probabilities over all ``V`` values (unseen ones get the floor)."""
    out = np.full((len(features), n_val), math.log(_FLOOR))
    p = np.asarray(model.predict_proba(features), dtype=np.float64)
    out[:, np.asarray(model.classes_, dtype=np.int64)] = np.log(np.maximum(p, _FLOOR))
    return out
