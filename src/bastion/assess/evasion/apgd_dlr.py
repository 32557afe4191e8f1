"""``evasion.apgd-dlr``: Auto-PGD on the difference-of-logits-ratio loss (L∞, white-box).

Croce & Hein, ICML 2020, arXiv:2003.01690. The DLR loss
``−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)`` is invariant to shifting and rescaling the logits, so
it is not fooled by a model whose cross-entropy saturates (gradient masking by large logits).
``targeted: true`` runs APGD-T: one run per target class, the ``target_classes`` classes the
clean input scores highest after the first, with the targeted DLR loss
``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)``. Needs a PyTorch target (the DLR loss is computed on
the module's logits).
"""

from __future__ import annotations

from typing import ClassVar, cast

import numpy as np
from pydantic import Field

from bastion.assess.evasion._common import Engine, InputBounds
from bastion.assess.evasion._gradients import GradientOracle, WhiteBoxCheck, torch_module
from bastion.assess.evasion.apgd_ce import APGD_REFERENCES, APGD_THRESHOLDS, APGDEngine, APGDParams
from bastion.core.check import CheckContext
from bastion.core.config import Threshold
from bastion.core.registry import register


class APGDDLRParams(APGDParams):
    """Parameters of ``evasion.apgd-dlr``.

    Attributes:
        targeted: run APGD-T (targeted DLR over the top ``target_classes`` other classes).
        target_classes: target classes tried per sample when ``targeted`` (AutoAttack uses 9).
    """

    targeted: bool = False
    target_classes: int = Field(default=3, ge=1, le=100)


@register("attack")
class APGDDLR(WhiteBoxCheck):
    """APGD on the DLR loss (L∞, white-box), untargeted or targeted (APGD-T).

    Threat model: white-box (the module's logits and gradients); every mutable value moves by at
    most ε within the declared bounds; success is any wrong class.

    Budget: ``restarts × (steps + 2)`` (untargeted) or ``target_classes × (steps + 2) + 1``
    (targeted) queries per attacked sample and ε at most.

    Source: Croce & Hein 2020, arXiv:2003.01690.
    """

    id: ClassVar[str] = "evasion.apgd-dlr"
    title: ClassVar[str] = "APGD-DLR evasion (L∞, white-box)"
    oracle_backend: ClassVar[str | None] = "torch"
    Params = APGDDLRParams
    references: ClassVar[tuple[str, ...]] = APGD_REFERENCES
    threat_model: ClassVar[str] = (
        "White-box: the attacker has the model's logits and their gradients and moves every mutable "
        "input value by at most ε within the declared bounds; the scale-invariant DLR loss defeats "
        "saturated cross-entropy."
    )
    default_thresholds: ClassVar[tuple[Threshold, ...]] = APGD_THRESHOLDS

    def applicable(self, ctx: CheckContext) -> str | None:
        """Also needs a PyTorch target: the DLR loss is computed on the module's logits."""
        reason = super().applicable(ctx)
        if reason is None and ctx.target is not None and torch_module(ctx.target) is None:
            return "needs a PyTorch target (the DLR loss is computed on the module's logits)"
        return reason

    def extra_problems(self, ctx: CheckContext, n_samples: int, n_eps: int) -> list[str]:
        """A torch target, and a query budget that covers the clean pass and one ε."""
        params = cast(APGDDLRParams, ctx.params)
        problems = []
        if ctx.target is not None and torch_module(ctx.target) is None:
            problems.append("target: the DLR loss needs a PyTorch target (use evasion.apgd-ce)")
        if params.backend == "generic":
            problems.append("params.backend: 'generic' offers cross-entropy only; the DLR loss needs torch")
        rounds = params.target_classes if params.targeted else 1
        need = n_samples * (rounds * (params.steps + 2) + 2)
        return problems + self.one_eps_budget(ctx, need)

    def white_box_engine(
        self, ctx: CheckContext, oracle: GradientOracle, bounds: InputBounds, rng: np.random.Generator
    ) -> Engine:
        """APGD-DLR (or APGD-T) through the native :class:`GradientOracle`."""
        params = cast(APGDDLRParams, ctx.params)
        return APGDEngine(
            oracle,
            bounds,
            rng,
            steps=params.steps,
            restarts=params.restarts,
            loss="dlr",
            target_classes=min(params.target_classes, int(ctx.target.num_classes) - 1)
            if params.targeted
            else 0,
        )
