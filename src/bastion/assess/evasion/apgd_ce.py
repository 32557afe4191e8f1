"""``evasion.apgd-ce``: Auto-PGD on the cross-entropy loss (L∞, white-box).

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, arXiv:2003.01690. The iteration is in
:mod:`bastion.assess.evasion._apgd`; no step size to tune. Works on any target with loss
gradients (native torch loop, or ``Target.loss_gradient`` for e.g. a logistic regression).
"""

from __future__ import annotations

from typing import ClassVar, Literal, cast

import numpy as np
from pydantic import Field

from bastion.assess.evasion._apgd import apgd
from bastion.assess.evasion._common import (
    DEFAULT_THRESHOLD_EPS,
    AttackOutcome,
    Engine,
    EvasionParams,
    InputBounds,
    low_robust_accuracy,
)
from bastion.assess.evasion._gradients import GradientOracle, LossName, WhiteBoxCheck, WhiteBoxEngine
from bastion.core.check import CheckContext
from bastion.core.config import Threshold
from bastion.core.registry import register

APGD_REFERENCES: tuple[str, ...] = (
    "Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse "
    "parameter-free attacks. ICML 2020. arXiv:2003.01690",
    "https://arxiv.org/abs/2003.01690",
)
APGD_THRESHOLDS: tuple[Threshold, ...] = low_robust_accuracy(DEFAULT_THRESHOLD_EPS)


class APGDParams(EvasionParams):
    """Parameters of the APGD attacks.

    Attributes:
        eps: the ε grid (see :class:`~bastion.assess.evasion._common.EvasionParams`).
        batch_size: rows per gradient pass.
        steps: iterations per restart (the paper uses 100).
        restarts: random restarts for the samples not yet broken.
        backend: ``auto``, ``torch`` or ``generic`` (cross-entropy only).
    """

    steps: int = Field(default=50, ge=1, le=10_000)
    restarts: int = Field(default=1, ge=1, le=100)
    backend: Literal["auto", "torch", "generic"] = "auto"


class APGDEngine(WhiteBoxEngine):
    """APGD with restarts on one loss; optionally targeted at the top-k other classes."""

    def __init__(
        self,
        oracle: GradientOracle,
        bounds: InputBounds,
        rng: np.random.Generator,
        *,
        steps: int,
        restarts: int,
        loss: LossName,
        target_classes: int = 0,
    ) -> None:
        super().__init__(oracle, bounds, rng)
        self.steps, self.restarts, self.loss, self.target_classes = steps, restarts, loss, target_classes

    def attack(self, x: np.ndarray, y: np.ndarray, eps: float, eps_left: int) -> AttackOutcome:
        """Restarts (untargeted), or one run per target class (targeted), on the unbroken samples."""
        low, high = self.bounds.box(x, eps)
        e = self.bounds.eps_values(eps)
        x_best, success = x.copy(), np.zeros(len(x), dtype=bool)
        queries = np.zeros(len(x), dtype=np.int64)
        ranked: np.ndarray | None = None
        if self.target_classes:
            z = self.oracle.scores(x)
            queries += 1
            ranked = np.argsort(-z, axis=1)
        rounds = self.target_classes if self.target_classes else self.restarts
        for r in range(rounds):
            todo = np.flatnonzero(~success)
            if todo.size == 0:
                break
            yt = None
            if ranked is not None:
                col = min(r + 1, ranked.shape[1] - 1)
                yt = ranked[todo, col]
            out = apgd(
                self.oracle,
                x[todo],
                y[todo],
                low[todo],
                high[todo],
                e,
                n_iter=self.steps,
                loss=self.loss,
                rng=self.rng,
                finalize=self.bounds.finalize,
                y_target=yt,
            )
            x_best[todo] = out.x_adv
            success[todo] = out.success
            queries[todo] += out.queries
        return AttackOutcome(x_adv=x_best, success=success, queries=queries)


@register("attack")
class APGDCE(WhiteBoxCheck):
    """APGD on the cross-entropy (L∞, white-box): clean vs robust accuracy over an ε grid.

    Threat model: white-box (loss gradients); every mutable value moves by at most ε within the
    declared bounds; untargeted.

    Budget: ``restarts × (steps + 2)`` queries per attacked sample and ε at most.

    Source: Croce & Hein 2020, arXiv:2003.01690.
    """

    id: ClassVar[str] = "evasion.apgd-ce"
    title: ClassVar[str] = "APGD-CE evasion (L∞, white-box)"
    Params = APGDParams
    references: ClassVar[tuple[str, ...]] = APGD_REFERENCES
    threat_model: ClassVar[str] = (
        "White-box: the attacker has the loss gradients and moves every mutable input value by at "
        "most ε within the declared bounds (untargeted), with a step size that adapts itself."
    )
    default_thresholds: ClassVar[tuple[Threshold, ...]] = APGD_THRESHOLDS

    def extra_problems(self, ctx: CheckContext, n_samples: int, n_eps: int) -> list[str]:
        """The query budget must cover the clean pass and one ε."""
        params = cast(APGDParams, ctx.params)
        return self.one_eps_budget(ctx, n_samples * (params.steps + 3))

    def white_box_engine(
        self, ctx: CheckContext, oracle: GradientOracle, bounds: InputBounds, rng: np.random.Generator
    ) -> Engine:
        """APGD-CE through the :class:`GradientOracle`."""
        params = cast(APGDParams, ctx.params)
        return APGDEngine(oracle, bounds, rng, steps=params.steps, restarts=params.restarts, loss="ce")
