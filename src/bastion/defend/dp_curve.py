"""``membership.dp-curve``: the privacy/utility curve of DP-SGD, drawn by the thorough assessment.

``bastion harden dp-train --sweep 1,3,8`` records one hardened version per ε; under
``bastion assess --budget thorough`` this check draws the same curve *without* recording
anything: per target ε it retrains the asset's architecture in memory with DP-SGD
(:class:`~bastion.defend.dp_sgd.DpTrain`, cheap settings by default), serves it as the asset is
served (its output hardening) and runs the cheap membership attacks (no reference models) on
it and on the original (ε = ∞). The curve reaches the report as metrics with intervals and as
series (test accuracy, the strongest attack's AUC and TPR at 1 % FPR against ε).

It costs ``len(epsilons)`` trainings of the target, so it runs only when the check's time
budget is at least ``min_budget_seconds`` (by default the thorough preset's 1800 s); under the
quick and standard presets it is skipped with that reason and costs nothing.
"""

from __future__ import annotations

import copy
import io
import logging
import math
from typing import Any, ClassVar, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.core import atlas as atlas_ids
from bastion.core.budget import PRESETS, Budget, BudgetMeter
from bastion.core.check import Check, CheckContext
from bastion.core.config import Asset
from bastion.core.errors import BudgetExhausted, PluginError, require
from bastion.core.findings import Threat
from bastion.core.registry import REGISTRIES, register
from bastion.core.results import CheckResult, Series
from bastion.defend.base import HardenContext
from bastion.defend.dp_sgd import DpTrain, DpTrainParams

log = logging.getLogger(__name__)

_TPR = "tpr@fpr=0.01"


class DpCurveParams(BaseModel):
    """Parameters of ``membership.dp-curve``.

    Attributes:
        epsilons: target ε values (each in ``(0, 100]``), drawn ascending.
        attacks: membership attacks run on every point (cheap ones by default: no reference
            models). Each runs with its own ``params`` and ``budget`` from ``bastion.yaml``.
        epochs: DP-SGD epochs per point (fewer than ``dp-train``'s default: a curve, not a release).
        batch_size: expected Poisson batch size.
        delta: δ of (ε, δ); must lie below ``1/n``.
        accountant: ``rdp`` or ``prv``.
        min_budget_seconds: the check runs only when its time budget is at least this (the
            thorough preset's, 1800 s, by default) or unlimited; ``0`` runs it under any budget.
    """

    model_config = ConfigDict(extra="forbid")

    epsilons: list[float] = Field(default_factory=lambda: [1.0, 3.0, 8.0], min_length=1, max_length=12)
    attacks: list[str] = Field(
        default_factory=lambda: ["membership.threshold", "membership.label-only"], min_length=1
    )
    epochs: int = Field(default=10, ge=1, le=1000)
    batch_size: int = Field(default=64, ge=1)
    delta: float = Field(default=1e-5, gt=0.0, lt=0.1)
    accountant: str = Field(default="rdp", pattern="^(rdp|prv)$")
    min_budget_seconds: float = Field(default=PRESETS["thorough"].seconds or 1800.0, ge=0.0)

    @field_validator("epsilons")
    @classmethod
    def _eps(cls, v: list[float]) -> list[float]:
        for e in v:
            if not 0.0 < e <= 100.0:
                raise ValueError(f"every ε must lie in (0, 100], got {e:g}")
        return sorted(set(v))


def _eps_key(eps: float | None) -> str:
    return "inf" if eps is None else f"{eps:g}"


@register("attack")
class DpCurve(Check):
    """The privacy/utility curve of DP-SGD on a torch model (thorough budget only).

    Threat model: membership inference (as the attacks it runs). It answers the question a
    defender asks before ``bastion harden dp-train``: at which ε does the strongest cheap
    attack fall to chance, and what does that cost in test accuracy?

    Data: a labelled ``train`` split (the records DP-SGD protects and the attacks' members)
    and a labelled ``test`` split (accuracy and the attacks' non-members).

    Budget: ``len(epsilons)`` DP-SGD trainings plus ``(len(epsilons) + 1) × len(attacks)``
    attack runs, each attack under its own budget; the check stops between points when its
    time budget is spent and reports the points it drew (``budget_used.exhausted``).

    Metrics, per point (``eps=inf`` is the original): ``test_accuracy@eps=<e>`` (Wilson
    interval), ``auc@eps=<e>`` and ``tpr@fpr=0.01,eps=<e>`` of the strongest attack (the
    one with the highest AUC; its intervals), and ``epsilon_spent@eps=<e>`` (the accountant's ε).
    Series: ``test_accuracy``, ``auc`` and ``tpr@fpr=0.01`` against ε (log scale).
    Notes: ``curve`` (one line per point, with the strongest attack's id), ``<attack>@eps=<e>``
    for an attack that did not run on a point.

    Skipped: not a torch model with an eager module; no labelled train and test splits; a
    hardened version (the curve is drawn for the original); a time budget below
    ``min_budget_seconds``.

    References: Abadi et al. 2016 (arXiv:1607.00133); Jagielski et al. 2020, "Auditing
    Differentially Private Machine Learning" (arXiv:2006.07709).
    """

    id: ClassVar[str] = "membership.dp-curve"
    title: ClassVar[str] = "Privacy/utility curve of DP-SGD"
    threat: ClassVar[Threat] = Threat.PRIVACY
    applies_to: ClassVar[frozenset[str]] = frozenset({"model"})
    Params: ClassVar[type[BaseModel]] = DpCurveParams
    atlas: ClassVar[tuple[str, ...]] = (atlas_ids.INFER_MEMBERSHIP,)
    order: ClassVar[int] = 90  # after the single attacks of the asset
    references: ClassVar[tuple[str, ...]] = (
        "Abadi et al. 2016, Deep Learning with Differential Privacy, arXiv:1607.00133",
        "Jagielski et al. 2020, Auditing Differentially Private Machine Learning, arXiv:2006.07709",
    )

    def config_skip(self, asset: Asset, params: Any, budget: Budget) -> str | None:
        """Not torch, a hardened version, or a time budget below ``min_budget_seconds``."""
        p = cast(DpCurveParams, params)
        if asset.framework != "torch":
            what = asset.framework or "of no declared framework (set framework: torch)"
            return f"DP-SGD retrains torch models; {asset.name} is {what}"
        if any(t.startswith("version-of:") for t in asset.tags):
            return "a hardened version; the curve is drawn for the original model"
        seconds = budget.seconds
        if seconds is not None and seconds < p.min_budget_seconds:
            return (
                f"trains {len(p.epsilons)} model{'s' if len(p.epsilons) != 1 else ''}: runs under "
                "--budget thorough (a time budget of at "
                f"least {p.min_budget_seconds:g} s); this run's is {seconds:g} s"
            )
        return super().config_skip(asset, params, budget)

    def applicable(self, ctx: CheckContext) -> str | None:
        """Torch model with labelled train/test splits, an original, and a thorough time budget."""
        if (reason := self.config_skip(ctx.asset, ctx.params, ctx.budget)) is not None:
            return reason
        if _module(ctx.target) is None:
            return "needs an eager torch module (a state_dict with model_class)"
        for split in ("train", "test"):
            s = ctx.data.get(split)
            if s is None or s.y is None or not len(s.x):
                return f"needs a labelled {split} split"
        return None

    def preflight(self, ctx: CheckContext) -> list[str]:
        """Every ε's DP-SGD preflight (δ < 1/n, ε reachable, layers), and the attacks' ids and params."""
        p = cast(DpCurveParams, ctx.params)
        problems: list[str] = []
        known = REGISTRIES["attack"]
        for pid in p.attacks:
            if pid not in known or pid == self.id:
                problems.append(f"attacks: {pid!r} is not a membership attack this check can run")
                continue
            try:
                sub = _sub_context(ctx, pid, ctx.target)
            except PluginError as exc:
                problems.append(str(exc))
                continue
            # A reference-model attack's recipe is tried once now (one tiny model), so a recipe
            # that raises stops the run before the first DP training, not after it.
            recipe_problems = getattr(known.get(pid)(), "recipe_problems", None)
            if recipe_problems is not None:
                problems += recipe_problems(sub)
        defence = DpTrain()
        for eps in p.epsilons:
            problems += [f"ε={eps:g}: {msg}" for msg in defence.preflight(self._harden_ctx(ctx, eps))]
        return problems

    def _harden_ctx(self, ctx: CheckContext, eps: float) -> HardenContext:
        p = cast(DpCurveParams, ctx.params)
        params = DpTrainParams(
            epsilon=eps,
            delta=p.delta,
            accountant=cast(Any, p.accountant),
            epochs=p.epochs,
            batch_size=p.batch_size,
        )
        return HardenContext(
            asset=ctx.asset,
            config=ctx.config,
            base_dir=ctx.base_dir,
            target=_unwrapped(ctx.target),
            data=ctx.data,
            params=params,
            seed=ctx.seed,
        )

    def run(self, ctx: CheckContext) -> CheckResult:
        """Audit the original, then retrain and audit once per ε (ascending)."""
        torch = require("torch", "torch")
        from bastion.assess.metrics import accuracy_interval
        from bastion.targets.hardened import harden_output
        from bastion.targets.torch_target import TorchTarget

        p = cast(DpCurveParams, ctx.params)
        meter = BudgetMeter(ctx.budget)
        res = CheckResult(id=self.id, asset=ctx.asset.name)
        test = ctx.data["test"]
        assert test.y is not None
        lines: list[str] = []
        xs: list[float] = []
        curve: dict[str, list[float | None]] = {"test_accuracy": [], "auc": [], _TPR: []}
        base = _unwrapped(ctx.target)
        points: list[float | None] = [None, *p.epsilons]
        for i, eps in enumerate(points):
            try:
                meter.check_time()
            except BudgetExhausted:
                res.notes["budget"] = f"time budget spent after {i} of {len(points)} points"
                break
            key = _eps_key(eps)
            spent: float | None = None
            if eps is None:
                target = ctx.target
            else:
                hardened = DpTrain().harden(self._harden_ctx(ctx, eps))
                spent = float(hardened.details["epsilon"])
                model = copy.deepcopy(base.module)
                state = torch.load(io.BytesIO(hardened.payload), weights_only=True)
                model.load_state_dict(state)
                inner = TorchTarget(
                    model,
                    name=f"{ctx.asset.name}@eps={key}",
                    input_shape=tuple(base.input_shape),
                    num_classes=int(base.num_classes),
                )
                target = harden_output(inner, ctx.asset.output)  # served as the asset is served
                res.metrics[f"epsilon_spent@eps={key}"] = round(spent, 6)
            acc, low, high = accuracy_interval(test.y, target.predict_label(test.x))
            res.metrics[f"test_accuracy@eps={key}"] = round(acc, 6)
            res.intervals[f"test_accuracy@eps={key}"] = (round(low, 6), round(high, 6))
            best_id, best = self._attack(ctx, target, res, key)
            auc = None if best is None else best.metrics.get("auc")
            tpr = None if best is None else best.metrics.get(_TPR)
            res.metrics[f"auc@eps={key}"] = auc
            res.metrics[f"{_TPR},eps={key}"] = tpr
            if best is not None:
                for src, dst in (("auc", f"auc@eps={key}"), (_TPR, f"{_TPR},eps={key}")):
                    if src in best.intervals:
                        res.intervals[dst] = best.intervals[src]
                if tpr is None and _TPR in best.notes:
                    res.notes[f"{_TPR},eps={key}"] = best.notes[_TPR]
            if eps is not None:
                xs.append(eps)
                curve["test_accuracy"].append(round(acc, 6))
                curve["auc"].append(auc)
                curve[_TPR].append(tpr)
            lines.append(
                f"ε={'∞ (original)' if eps is None else key}"
                + ("" if spent is None else f" (spent {spent:.3g})")
                + f": test accuracy {acc:.3g}, strongest attack {best_id or '—'} AUC "
                + ("—" if auc is None else f"{auc:.3g}")
                + ", TPR@1%FPR "
                + ("—" if tpr is None else f"{tpr:.3g}")
            )
            ctx.report_progress((i + 1) / len(points))
        labels = {"test_accuracy": "test accuracy", "auc": "strongest attack AUC", _TPR: "TPR at 1 % FPR"}
        if xs:
            for name, ys in curve.items():
                res.series[name] = Series(x=xs, y=ys, x_label="ε (DP-SGD)", y_label=labels[name], log_x=True)
        res.notes["curve"] = "; ".join(lines)
        res.budget_used = meter.usage()
        return res

    def _attack(
        self, ctx: CheckContext, target: Any, res: CheckResult, key: str
    ) -> tuple[str | None, CheckResult | None]:
        """Run every configured attack on ``target``; the one with the highest AUC, with its result."""
        p = cast(DpCurveParams, ctx.params)
        best: tuple[str | None, CheckResult | None] = (None, None)
        for pid in p.attacks:
            sub = _sub_context(ctx, pid, target)
            check: Check = REGISTRIES["attack"].get(pid)()
            why = check.applicable(sub) or "; ".join(check.preflight(sub)) or None
            if why is not None:
                res.notes[f"{pid}@eps={key}"] = f"did not run: {why}"
                continue
            try:
                r = check.run(sub)
            except Exception as exc:  # one attack failing leaves the curve's other attacks
                log.warning("%s: %s on ε=%s crashed: %s", self.id, pid, key, exc)
                res.notes[f"{pid}@eps={key}"] = f"error: {type(exc).__name__}: {exc}"
                continue
            auc = r.metrics.get("auc")
            if r.status != "ok" or auc is None or (isinstance(auc, float) and math.isnan(auc)):
                res.notes[f"{pid}@eps={key}"] = f"did not run: {r.reason or 'no AUC'}"
                continue
            cur = best[1].metrics.get("auc") if best[1] is not None else None
            if cur is None or float(auc) > float(cur):
                best = (pid, r)
        return best


def _sub_context(ctx: CheckContext, pid: str, target: Any) -> CheckContext:
    """The context attack ``pid`` runs in on one point: its own params and budget from ``bastion.yaml``.

    Raises:
        PluginError: its params are invalid.
    """
    cls = REGISTRIES["attack"].get(pid)
    cc = ctx.config.checks.get(pid)
    return CheckContext(
        asset=ctx.asset,
        config=ctx.config,
        base_dir=ctx.base_dir,
        budget=ctx.budget.merged(cc.budget if cc else None),
        params=cls.parse_params(cc.params if cc else None, where=f"checks.{pid}.params"),
        thresholds=[],
        seed=ctx.seed,
        target=target,
        data=ctx.data,
        facts=ctx.facts,
    )


def _unwrapped(target: Any) -> Any:
    """The model target under the asset's output hardening (DP-SGD trains the model itself)."""
    return getattr(target, "inner", target)


def _module(target: Any) -> Any:
    return getattr(_unwrapped(target), "module", None)


__all__ = ["DpCurve", "DpCurveParams"]
