"""``evasion.worst-case``: an AutoAttack-style sequence; robust accuracy per sample over all attacks.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, arXiv:2003.01690.

Per ε, attacks run one after another, each only on the samples every earlier attack left
classified correctly: APGD-CE → APGD-DLR (APGD-T when ``targeted``) → Square. A sample is
robust only if *no* attack broke it, so this robust accuracy is at most that of any single
attack in the sequence (on the same samples and seed the first stage is exactly
``evasion.apgd-ce``). Stages that do not fit the target are left out and named in
``notes["stages"]``: no gradients (an endpoint) → Square only; no probabilities (label-only) →
none, and the check is not applicable. This is the number a report should lead with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar, cast

import numpy as np
from pydantic import Field

from bastion.assess.evasion._common import (
    MIN_QUERIES,
    PER_EPS_METRICS,
    AttackOutcome,
    Engine,
    EvasionCheck,
    EvasionParams,
    InputBounds,
    eps_label,
    rng_for,
)
from bastion.assess.evasion._gradients import GradientOracle, has_gradients, torch_module
from bastion.assess.evasion.apgd_ce import APGD_REFERENCES, APGDEngine
from bastion.assess.evasion.square import SquareParams, _SquareEngine
from bastion.core.atlas import CRAFT_ADVERSARIAL, EVADE_MODEL
from bastion.core.budget import BudgetMeter
from bastion.core.capability import Capability
from bastion.core.check import CheckContext
from bastion.core.registry import register

STAGES: tuple[str, ...] = ("apgd_ce", "apgd_dlr", "square")


class WorstCaseParams(EvasionParams):
    """Parameters of ``evasion.worst-case``.

    Attributes:
        eps: the ε grid (see :class:`~bastion.assess.evasion._common.EvasionParams`).
        batch_size: rows per model call.
        steps: APGD iterations per stage (AutoAttack uses 100).
        targeted: run the DLR stage as APGD-T (targeted over ``target_classes`` classes).
        target_classes: target classes per sample for APGD-T.
        square_queries: Square Attack queries per sample (AutoAttack uses 5000).
        p_init: Square's initial fraction of values changed.
    """

    steps: int = Field(default=50, ge=1, le=10_000)
    targeted: bool = False
    target_classes: int = Field(default=3, ge=1, le=100)
    square_queries: int = Field(default=500, ge=0, le=100_000)
    p_init: float = Field(default=0.1, gt=0, le=1)


@register("attack")
class WorstCase(EvasionCheck):
    """Worst case over APGD-CE, APGD-DLR and Square: the robust accuracy a report leads with.

    Threat model: the strongest of the attacks the target allows (white-box when it offers
    gradients, else score-based), every mutable value moved by at most ε within the declared
    bounds; untargeted success.

    Metrics (``@eps=<ε>``): those of every evasion check, plus ``broken_by_<stage>`` — samples
    first broken by that stage (``apgd_ce``, ``apgd_dlr``, ``square``; null when not run).

    Source: Croce & Hein 2020, arXiv:2003.01690 (AutoAttack).
    """

    id: ClassVar[str] = "evasion.worst-case"
    title: ClassVar[str] = "Worst-case evasion (APGD-CE → APGD-DLR → Square, L∞)"
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.PROBABILITIES})
    order: ClassVar[int] = 40
    Params = WorstCaseParams
    references: ClassVar[tuple[str, ...]] = APGD_REFERENCES
    threat_model: ClassVar[str] = (
        "The strongest attacker the target allows: white-box (gradients) where offered, else "
        "score-based black-box; every mutable input value moves by at most ε within the declared bounds."
    )
    atlas: ClassVar[tuple[str, ...]] = (EVADE_MODEL, CRAFT_ADVERSARIAL, "AML.T0043.000", "AML.T0043.001")
    metric_names: ClassVar[tuple[str, ...]] = (*PER_EPS_METRICS, *(f"broken_by_{s}" for s in STAGES))

    def __init__(self) -> None:
        self._broken: dict[str, int | None] = {}

    def extra_problems(self, ctx: CheckContext, n_samples: int, n_eps: int) -> list[str]:
        """The query budget must allow a short first stage at every ε (stages shrink to fit it)."""
        params = cast(WorstCaseParams, ctx.params)
        grad = ctx.target is not None and has_gradients(ctx.target)
        if not grad and params.square_queries == 0:
            return ["params.square_queries: 0 leaves no stage for a target without gradients"]
        return self.per_attack_budget(ctx, n_samples, n_eps, MIN_QUERIES + 2 if grad else MIN_QUERIES)

    @contextlib.contextmanager
    def engine(
        self, ctx: CheckContext, meter: BudgetMeter, bounds: InputBounds, rng: np.random.Generator
    ) -> Iterator[Engine]:
        """The sequence of stage engines that fit the target."""
        params = cast(WorstCaseParams, ctx.params)
        target = ctx.target
        stages: list[tuple[str, Any]] = []
        skipped: list[str] = []
        oracle: GradientOracle | None = None
        if has_gradients(target):
            oracle = GradientOracle(target, meter, params.batch_size)
            stages.append(
                ("apgd_ce", APGDEngine(oracle, bounds, rng, steps=params.steps, restarts=1, loss="ce"))
            )
            if torch_module(target) is not None:
                k = min(params.target_classes, int(target.num_classes) - 1) if params.targeted else 0
                stages.append(
                    (
                        "apgd_dlr",
                        APGDEngine(
                            oracle,
                            bounds,
                            rng_for(ctx.seed, 2),
                            steps=params.steps,
                            restarts=1,
                            loss="dlr",
                            target_classes=k,
                        ),
                    )
                )
            else:
                skipped.append("apgd_dlr (needs a PyTorch target)")
        else:
            skipped.append("apgd_ce, apgd_dlr (the target offers no loss gradients)")
        if params.square_queries > 0:
            sq = SquareParams(
                n_queries=max(params.square_queries, 1), p_init=params.p_init, batch_size=params.batch_size
            )
            stages.append(("square", _SquareEngine(target, sq, bounds, rng_for(ctx.seed, 3), meter)))
        else:
            skipped.append("square (square_queries is 0)")
        eng = _WorstCaseEngine(stages, oracle, target, self._broken, meter, params.steps)
        eng.notes["stages"] = " → ".join(name for name, _ in stages) + (
            f"; left out: {', '.join(skipped)}" if skipped else ""
        )
        if oracle is not None:
            eng.notes["backend"] = oracle.backend_note
        with contextlib.ExitStack() as stack:
            if oracle is not None:
                stack.enter_context(oracle.eval_mode())
            yield eng
            for _, st in stages:
                for key, value in getattr(st, "notes", {}).items():
                    if key != "backend":
                        eng.notes.setdefault(f"square_{key}" if key == "n_queries" else key, value)

    def per_eps_metrics(self, eps: float, attacked: AttackOutcome | None) -> dict[str, float | None]:
        """``broken_by_<stage>``: samples first broken by each stage at this ε."""
        out: dict[str, float | None] = {}
        for s in STAGES:
            v = self._broken.get(s)
            out[f"broken_by_{s}"] = None if v is None else float(v)
        self._broken.clear()
        return out


class _WorstCaseEngine:
    def __init__(
        self,
        stages: list[tuple[str, Any]],
        oracle: GradientOracle | None,
        target: Any,
        broken: dict[str, int | None],
        meter: BudgetMeter,
        steps: int,
    ) -> None:
        self.meter = meter
        self.steps = steps
        self._capped: list[str] = []
        self.stages = stages
        self.oracle = oracle
        self.target = target
        self.broken = broken
        self.notes: dict[str, str] = {}

    def labels(self, x: np.ndarray) -> np.ndarray:
        if self.oracle is not None:
            return self.oracle.labels(x)
        return np.asarray(self.target.predict_label(x), dtype=np.int64)

    def attack(self, x: np.ndarray, y: np.ndarray, eps: float, eps_left: int) -> AttackOutcome:
        x_adv = x.copy()
        success = np.zeros(len(x), dtype=bool)
        queries = np.zeros(len(x), dtype=np.int64)
        self.broken.clear()
        for name, stage in self.stages:
            todo = np.flatnonzero(~success)
            if todo.size == 0:
                self.broken[name] = 0
                continue
            if isinstance(stage, APGDEngine):
                self._fit_steps(stage, todo.size, eps, eps_left)
            out = stage.attack(x[todo], y[todo], eps, eps_left)
            queries[todo] += out.queries
            hit = todo[out.success]
            x_adv[hit] = out.x_adv[out.success]
            success[hit] = True
            self.broken[name] = int(hit.size)
        return AttackOutcome(x_adv=x_adv, success=success, queries=queries)

    def _fit_steps(self, stage: APGDEngine, n: int, eps: float, eps_left: int) -> None:
        """Lower an APGD stage's steps so a third of what is left per ε covers it (noted)."""
        stage.steps = self.steps
        remaining = self.meter.remaining_queries()
        if remaining is None:
            return
        rounds = stage.target_classes or stage.restarts
        afford = remaining // max(1, 3 * n * eps_left * rounds) - 2
        if afford < self.steps:
            stage.steps = max(1, afford)
            self._capped.append(f"{stage.loss}: {stage.steps} at ε={eps_label(eps)}")
            self.notes["steps"] = "the query budget lowered APGD steps to " + ", ".join(self._capped)
