"""Backdoor in a trained torch model: activation clustering (or SPECTRE) on its own training data.

Threat model: a poisoner slipped trigger-carrying samples, relabelled to a target class, into
the training data (dirty-label backdoor, BadNets; MITRE ATLAS AML.T0020 Poison Training Data,
AML.T0018 Backdoor ML Model). The defender holds the trained model (a torch target exposing
``.module``) and the recorded ``train`` split it was trained on, but no ground truth.

Method: :class:`bastion.detect.poisoning.ActivationClusteringDetector` (Chen et al. 2018)
maps every training row through the model to the chosen layer (default: the input of the
classifier head), splits each class's activations with 2-means and calls a class poisoned only
when the split is a real gap (Fisher ratio >= ``min_separation``) and an outlier among the
classes (robust z >= ``z``); the poisoned cluster is picked by exclusionary reclassification.
Rows examined: the train split up to ``max_rows`` (a seeded random subset beyond).

The detector is chosen with ``params.detector``: ``activation-clustering`` (default, above),
``spectre`` (:class:`~bastion.detect.poisoning.SpectreDetector`, Hayase et al. 2021,
arXiv:2104.11315: the same class test, then robust whitening and QUantum Entropy scores pick
the rows) or ``spectral-signatures`` (Tran et al. 2018, arXiv:1811.00636). ``min_separation``
and ``z`` apply to the class test of the first two; ``n_components`` to activation clustering;
``detector_params`` passes any other parameter of the chosen detector (e.g.
``{alpha: 4, quantile: 0.999}`` for SPECTRE). ``detector_params`` is validated against the
chosen detector's own params model with the other params (``bastion assess --dry-run`` reports
``checks.poisoning.backdoor.params.detector_params.<key>``); a ``layer`` the model does not
have is a preflight error of ``bastion assess`` listing the model's layers (the model must be
loaded to know them, so ``--dry-run`` cannot check it).

Metrics: ``flagged_rate`` (flagged rows / rows examined, 95 % Wilson interval),
``classes_flagged``, ``rows_examined``. ``notes["detector"]`` names the detector;
``notes["class_stats"]`` holds the per-class statistics (JSON). Finding:
``poisoning.backdoor.suspected-backdoor`` (high) per flagged class,
citing rows **by file index only**: ``evidence = {class, count, total, rate, indices (first 50,
ascending; ``max_indices``), indices_truncated, class_stats, detector, dataset_sha256}``;
``location.index`` = the first index. ``dataset_sha256`` (the dataset file's hash, ``None`` for
a folder) lets ``bastion data sanitize --remove flagged --from-report`` check that a report is
for the dataset version it sanitises.

Measuring the detector (an attack simulation with known poison, e.g. ``bastion demo
--poisoned``): ``params.truth`` names a ground-truth npz (relative to the project folder) with
``indices`` (the poisoned file rows) and, for the retraining step, ``target`` and
``trigger_size`` (optional ``trigger_value``, default 1.0, bottom-right corner; optional
``dataset_sha256``: the dataset file it describes — on any other asset's dataset the truth is
not applied, and a note says so). The check then
adds ``precision``, ``recall`` and ``clean_flagged_rate`` (each with a 95 % Wilson interval).
With ``params.retrain_recipe`` too (a training recipe ``package.module:name`` with the contract
of :mod:`bastion.assess.membership.reference`), it trains three models with one seed on the
train split -- as given (poisoned), without the flagged rows (sanitised), without the true
poison (clean) -- and measures them on the ``test`` split: ``backdoor_success@train=poisoned``,
``backdoor_success@train=sanitised`` (share of triggered non-target test rows labelled the
target, Wilson intervals), ``clean_accuracy@train=clean``, ``clean_accuracy@train=sanitised``
and ``clean_accuracy_drop@train=sanitised`` (clean minus sanitised, a fraction; 0.01 = 1 point).
Default thresholds then raise ``poisoning.backdoor.backdoor-survives-sanitising`` (medium) when
``backdoor_success@train=sanitised > 0.05``, ``poisoning.backdoor.low-recall`` (medium) when
``recall < 0.9`` and ``poisoning.backdoor.clean-rows-flagged`` (low) when ``clean_flagged_rate
> 0.02``.

Reference: Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy, Srivastava, "Detecting
Backdoor Attacks on Deep Neural Networks by Activation Clustering", arXiv:1811.03728.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from bastion.core.budget import Budget, BudgetUsage
from bastion.core.check import Check, CheckContext
from bastion.core.config import Asset, Threshold
from bastion.core.errors import ConfigError
from bastion.core.findings import Location, Threat
from bastion.core.registry import register
from bastion.core.results import CheckResult
from bastion.core.severity import Severity

#: How many row indices a finding's evidence lists.
MAX_INDICES = 50


class BackdoorParams(BaseModel):
    """Parameters of :class:`BackdoorCheck`.

    Attributes:
        detector: ``activation-clustering`` (default), ``spectre`` or ``spectral-signatures``.
        detector_params: further parameters of the chosen detector (its ``Params``).
        split: the training split the model learnt from.
        layer: dotted module name whose activations are clustered; ``None``: the classifier head's input.
        read: read the layer's ``output`` or ``input`` (``None``: the detector's default).
        max_rows: rows examined at most (a seeded random subset beyond).
        n_components: principal axes kept per class before 2-means.
        min_separation: Fisher ratio a poisoned class's split must reach. Default 35, above the
            detector's own 20: on the clinic's digits CNN (4 seeds) clean classes reached at most
            20.0 (digit 1 and 9 have two real writing styles), BadNets-poisoned target classes 51-73.
        z: robust z-score of that ratio among the classes.
        max_indices: row indices a finding lists at most (the first, ascending).
        truth: ground-truth npz of a simulated attack (relative to the project folder): the
            check then measures precision, recall and the clean rows flagged.
        retrain_recipe: training recipe ``package.module:name``; with ``truth``, retrain on the
            poisoned, sanitised and clean train split and measure backdoor success and accuracy.
        test_split: the split the retrained models are measured on.
    """

    model_config = ConfigDict(extra="forbid")

    detector: Literal["activation-clustering", "spectre", "spectral-signatures"] = "activation-clustering"
    detector_params: dict[str, Any] = Field(default_factory=dict)
    split: str = "train"
    layer: str | None = None
    read: Literal["output", "input"] | None = None
    max_rows: int = Field(default=20_000, ge=10)
    n_components: int = Field(default=10, ge=1, le=512)
    min_separation: float = Field(default=35.0, gt=0)
    z: float = Field(default=3.5, gt=0)
    max_indices: int = Field(default=MAX_INDICES, ge=1, le=1_000_000)
    truth: str | None = None
    retrain_recipe: str | None = None
    test_split: str = "test"

    @field_validator("detector_params")
    @classmethod
    def _check_detector_params(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Validate ``detector_params`` against the chosen detector's own ``Params`` model.

        Raises:
            ValidationError: one error per bad key, located at ``detector_params.<key>`` (an
                unknown key lists the parameters the detector takes).
        """
        detector = info.data.get("detector")
        if detector is None:  # the detector itself is invalid: reported on its own field
            return value
        model = detector_params_model(detector)
        try:
            model(**value)
        except ValidationError as exc:
            known = ", ".join(model.model_fields)
            errors: list[InitErrorDetails] = []
            for e in exc.errors():
                if e["type"] == "extra_forbidden":
                    errors.append(
                        InitErrorDetails(
                            type=PydanticCustomError(
                                "unknown_detector_param",
                                "not a parameter of {detector}; it takes: {known}",
                                {"detector": detector, "known": known},
                            ),
                            loc=e["loc"],
                            input=e["input"],
                        )
                    )
                else:
                    errors.append(
                        InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"], ctx=e.get("ctx", {}))
                    )
            raise ValidationError.from_exception_data(model.__name__, errors) from None
        return value


def detector_params_model(detector: str) -> type[BaseModel]:
    """The ``Params`` model of the detector ``params.detector`` names (no torch import)."""
    from bastion.detect.poisoning import ActivationClusteringParams, SpectralParams, SpectreParams

    models: dict[str, type[BaseModel]] = {
        "activation-clustering": ActivationClusteringParams,
        "spectre": SpectreParams,
        "spectral-signatures": SpectralParams,
    }
    return models[detector]


@register("attack")
class BackdoorCheck(Check):
    """Activation clustering on the model's training-data representations; flagged rows by index."""

    id: ClassVar[str] = "poisoning.backdoor"
    title: ClassVar[str] = "Backdoor: activation clustering on the training data"
    threat: ClassVar[Threat] = Threat.POISONING
    applies_to: ClassVar[frozenset[str]] = frozenset({"model"})
    Params: ClassVar[type[BaseModel]] = BackdoorParams
    atlas: ClassVar[tuple[str, ...]] = ("AML.T0020", "AML.T0018")
    references: ClassVar[tuple[str, ...]] = (
        "Chen et al., Detecting Backdoor Attacks on Deep Neural Networks by Activation "
        "Clustering, arXiv:1811.03728",
        "Hayase, Kong, Somani, Oh, SPECTRE: Defending Against Backdoor Attacks Using Robust "
        "Statistics, ICML 2021, arXiv:2104.11315 (params.detector: spectre)",
    )
    threat_model: ClassVar[str] = (
        "A poisoner added trigger-carrying samples relabelled to a target class to the training "
        "data; the defender holds the trained model and its recorded training split."
    )
    remediation: ClassVar[str] = (
        "Inspect the listed training rows (look for a repeated small pattern), remove them "
        "(`bastion data sanitize DATASET --remove rows.json`), retrain, and trace how they "
        "entered the data pipeline."
    )
    default_thresholds: ClassVar[tuple[Threshold, ...]] = (
        Threshold(
            metric="backdoor_success@train=sanitised",
            op="gt",
            value=0.05,
            severity=Severity.MEDIUM,
            rule="backdoor-survives-sanitising",
        ),
        Threshold(metric="recall", op="lt", value=0.9, severity=Severity.MEDIUM, rule="low-recall"),
        Threshold(
            metric="clean_flagged_rate", op="gt", value=0.02, severity=Severity.LOW, rule="clean-rows-flagged"
        ),
    )
    order: ClassVar[int] = 45

    def config_skip(self, asset: Asset, params: Any, budget: Budget) -> str | None:
        """A model declared as another framework than torch (undeclared: told once it loads)."""
        if asset.framework not in (None, "torch"):
            return "needs a torch model target (.module) to read its internal representations"
        return super().config_skip(asset, params, budget)

    def applicable(self, ctx: CheckContext) -> str | None:
        """Needs a torch target (``.module``) and a labelled training split."""
        if (reason := self.config_skip(ctx.asset, ctx.params, ctx.budget)) is not None:
            return reason
        p = ctx.params if isinstance(ctx.params, BackdoorParams) else BackdoorParams()
        if ctx.target is None or getattr(ctx.target, "module", None) is None:
            return "needs a torch model target (.module) to read its internal representations"
        split = ctx.data.get(p.split)
        if split is None or split.y is None or split.index.size == 0:
            return f"needs the model's labelled {p.split!r} split (the data it was trained on)"
        return None

    def preflight(self, ctx: CheckContext) -> list[str]:
        """A ``params.layer`` the loaded model does not have (its layer names listed).

        Runs in ``bastion assess`` after the model is loaded (``ctx.target.module``); ``bastion
        assess --dry-run`` loads no model, so there only the params themselves are checked.
        """
        p = ctx.params if isinstance(ctx.params, BackdoorParams) else BackdoorParams()
        module = getattr(ctx.target, "module", None)
        if p.layer is None or module is None or not hasattr(module, "named_modules"):
            return []
        from bastion.detect.poisoning import layer_names

        names = layer_names(module)
        if p.layer in names:
            return []
        shown = ", ".join(names[:40]) + (f", … ({len(names)} in all)" if len(names) > 40 else "")
        return [f"params.layer: the model has no layer {p.layer!r}; its layers: {shown or '(none)'}"]

    def run(self, ctx: CheckContext) -> CheckResult:
        """Cluster each class's activations; see the module docstring for metrics and findings."""
        start = time.monotonic()
        p = ctx.params if isinstance(ctx.params, BackdoorParams) else BackdoorParams()
        split = ctx.data[p.split]
        assert split.y is not None
        x, y, index = np.asarray(split.x), np.asarray(split.y), np.asarray(split.index)
        notes: dict[str, str] = {}
        if index.size > p.max_rows:
            keep = np.sort(np.random.default_rng(ctx.seed).choice(index.size, size=p.max_rows, replace=False))
            x, y, index = x[keep], y[keep], index[keep]
            notes["rows"] = f"examined a seeded random {p.max_rows} of {split.index.size} rows (max_rows)"
        n = int(index.size)
        ctx.report_progress(0.1)
        det = _detector(p, ctx)
        try:
            det.fit(x, y)
        except ConfigError as exc:
            return CheckResult(
                id=self.id,
                asset=ctx.asset.name,
                status="skipped",
                reason=f"{p.detector} cannot run: {exc}",
            )
        ctx.report_progress(0.9)
        flags = np.asarray(det.reference_flags_, dtype=bool)
        k = int(flags.sum())
        stats = {str(c): {kk: round(float(v), 4) for kk, v in s.items()} for c, s in det.class_stats_.items()}
        metrics: dict[str, float | None] = {
            "flagged_rate": k / n if n else None,
            "classes_flagged": float(len(det.flagged_classes_)),
            "rows_examined": float(n),
        }
        intervals: dict[str, tuple[float, float]] = {}
        if n:
            from bastion.assess.poisoning.data_health import _wilson

            intervals["flagged_rate"] = _wilson(k, n)
        notes["class_stats"] = json.dumps(stats, sort_keys=True)
        notes["layer"] = p.layer or "default (input of the classifier head)"
        notes["detector"] = det.id
        dataset_sha = _dataset_sha256(ctx)
        result = CheckResult(
            id=self.id, asset=ctx.asset.name, metrics=metrics, intervals=intervals, notes=notes
        )
        for c in det.flagged_classes_:
            rows = np.sort(index[flags & (y == c)])
            if rows.size == 0:
                continue
            total = int(np.count_nonzero(y == c))
            evidence: dict[str, Any] = {
                "class": int(c),
                "count": int(rows.size),
                "total": total,
                "rate": round(rows.size / total, 6),
                "indices": [int(i) for i in rows[: p.max_indices]],
                "indices_truncated": bool(rows.size > p.max_indices),
                "split": p.split,
                "class_stats": stats.get(str(c), {}),
                "detector": det.id,
                "dataset_sha256": dataset_sha,
            }
            result.findings.append(
                self.finding(
                    ctx,
                    "suspected-backdoor",
                    f"class {int(c)}: {rows.size} of {total} training rows form a separate "
                    f"group in the model's representations ({det.id}; suspected backdoor poison)",
                    severity=Severity.HIGH,
                    evidence=evidence,
                    # the rows are in the training data, not in the model file
                    location=Location(path=_dataset_path(ctx), index=int(rows[0])),
                )
            )
        if p.truth is not None:
            _measure(ctx, p, result, x, y, index, flags)
        result.findings.extend(self.threshold_findings(ctx, result))
        seconds = round(time.monotonic() - start, 4)
        result.seconds = seconds
        result.budget_used = BudgetUsage(samples=n, seconds=seconds)
        ctx.report_progress(1.0)
        return result


def _detector(p: BackdoorParams, ctx: CheckContext) -> Any:
    """The detector ``p.detector`` names, on the target's module at ``p.layer``."""
    from bastion.detect.poisoning import (
        ActivationClusteringDetector,
        SpectralSignatureDetector,
        SpectreDetector,
    )

    common: dict[str, Any] = {"model": ctx.target.module, "layer": p.layer, "read": p.read, "seed": ctx.seed}
    if p.detector == "spectre":
        kw = {"min_separation": p.min_separation, "z": p.z, **p.detector_params}
        return SpectreDetector(**common, **kw)
    if p.detector == "spectral-signatures":
        return SpectralSignatureDetector(**common, **p.detector_params)
    kw = {"n_components": p.n_components, "min_separation": p.min_separation, "z": p.z, **p.detector_params}
    return ActivationClusteringDetector(**common, **kw)


def _dataset_sha256(ctx: CheckContext) -> str | None:
    """SHA-256 of the dataset file the asset was trained on (``None`` for a folder or unknown)."""
    name = ctx.asset.dataset
    known = ctx.facts.get(name or "", {}).get("sha256") if name else None
    if isinstance(known, str):
        return known
    rel = _dataset_path(ctx)
    if rel is None or name is None:
        return None
    path = Path(ctx.base_dir) / rel
    if not path.is_file():
        return None
    from bastion.core.hashing import file_sha256

    return file_sha256(path)


def _dataset_path(ctx: CheckContext) -> str | None:
    """The file of the dataset the asset was trained on (as written in bastion.yaml)."""
    name = ctx.asset.dataset
    for ds in ctx.config.datasets:
        if ds.name == name:
            return ds.path
    return ctx.asset.path


def _load_truth(ctx: CheckContext, ref: str) -> dict[str, np.ndarray]:
    """The ground-truth npz ``ref`` (relative to the project folder), never unpickled.

    Raises:
        ConfigError: missing or unreadable file, no ``indices`` array.
    """
    path = Path(ctx.base_dir) / ref
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except FileNotFoundError:
        raise ConfigError(f"params.truth: file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"params.truth: {path} is not a readable npz: {exc}") from None
    if "indices" not in arrays or arrays["indices"].dtype.kind not in "iu":
        raise ConfigError(f"params.truth: {path} has no integer array 'indices' (the poisoned rows)")
    return arrays


def _measure(
    ctx: CheckContext,
    p: BackdoorParams,
    result: CheckResult,
    x: np.ndarray,
    y: np.ndarray,
    index: np.ndarray,
    flags: np.ndarray,
) -> None:
    """Precision/recall against ``p.truth``; with a recipe, backdoor success after retraining."""
    from bastion.assess.poisoning.measure import detection_metrics, wilson

    truth = _load_truth(ctx, p.truth or "")
    meant_for = str(truth["dataset_sha256"]) if "dataset_sha256" in truth else None
    if meant_for is not None and meant_for != _dataset_sha256(ctx):
        # a project-wide `truth` meets every asset the check runs on: measure only its own dataset
        result.notes["truth"] = (
            f"not measured: {p.truth} is the ground truth of another dataset (sha256 {meant_for[:12]}…)"
        )
        return
    poisoned = np.isin(index, truth["indices"].astype(np.int64))
    m = detection_metrics(flags, poisoned)
    for key in ("precision", "recall", "clean_flagged_rate"):
        result.metrics[key] = float(m[key])
        lo, hi = m["intervals"][key]
        result.intervals[key] = (float(lo), float(hi))
    result.metrics["poisoned_rows"] = float(m["poisoned"])
    result.notes["truth"] = f"{p.truth}: {m['poisoned']} poisoned rows among the {index.size} examined"
    if p.retrain_recipe is None:
        return
    test = ctx.data.get(p.test_split)
    if test is None or test.y is None or test.index.size == 0:
        result.notes["retrain"] = f"skipped: no labelled {p.test_split!r} split to measure on"
        return
    if "target" not in truth or "trigger_size" not in truth:
        result.notes["retrain"] = f"skipped: {p.truth} records no 'target' and 'trigger_size'"
        return
    from bastion.assess.membership.reference import load_recipe
    from bastion.assess.poisoning.simulate import Trigger

    recipe = load_recipe(p.retrain_recipe, where="params.retrain_recipe")
    target = int(truth["target"])
    trig = Trigger(
        size=int(truth["trigger_size"]),
        value=float(truth["trigger_value"]) if "trigger_value" in truth else 1.0,
    )
    xt, yt = np.asarray(test.x), np.asarray(test.y)
    other = yt != target
    try:
        triggered = trig.apply(xt[other])
    except ConfigError as exc:
        result.notes["retrain"] = f"skipped: {exc}"
        return
    query = np.concatenate([xt, triggered]).astype(np.float32)
    masks = np.stack([np.ones_like(flags), ~flags, ~poisoned])  # poisoned, sanitised, clean
    seeds = np.full(3, ctx.seed, dtype=np.int64)
    proba = np.asarray(recipe(x.astype(np.float32), y.astype(np.int64), masks, query, seeds=seeds))
    if proba.shape[:2] != (3, query.shape[0]):
        raise ConfigError(
            f"params.retrain_recipe: returned shape {proba.shape}, expected (3, {query.shape[0]}, classes)"
        )
    pred = proba.argmax(axis=2)
    n_test, n_trig = xt.shape[0], int(other.sum())
    acc = (pred[:, :n_test] == yt).mean(axis=1)
    hits = (pred[:, n_test:] == target).sum(axis=1)
    for k, name in ((0, "poisoned"), (1, "sanitised")):
        key = f"backdoor_success@train={name}"
        result.metrics[key] = float(hits[k] / n_trig) if n_trig else None
        result.intervals[key] = wilson(int(hits[k]), n_trig)
    result.metrics["clean_accuracy@train=clean"] = float(acc[2])
    result.metrics["clean_accuracy@train=sanitised"] = float(acc[1])
    result.metrics["clean_accuracy_drop@train=sanitised"] = float(acc[2] - acc[1])
    result.notes["retrain"] = (
        f"{p.retrain_recipe}, seed {ctx.seed}: trained on the {p.split!r} split as given "
        f"({masks[0].sum()} rows), sanitised ({masks[1].sum()}) and clean ({masks[2].sum()}); "
        f"measured on {n_test} {p.test_split!r} rows, {n_trig} of them triggered"
    )
