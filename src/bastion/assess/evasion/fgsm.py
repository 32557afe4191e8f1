"""``evasion.fgsm``: the fast gradient sign method, one L∞ gradient step.

Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
arXiv:1412.6572.

``x_adv = finalize(x + ε · sign(∇ₓ CE(f(x), y)))``: one gradient pass and one classification
per sample and ε (2 queries). A weak, fast baseline: use ``evasion.pgd`` or
``evasion.worst-case`` for a robustness claim. Bounds, immutable, categorical and integer
features are handled as in :mod:`bastion.assess.evasion._common`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from bastion.assess.evasion._common import (
    AttackOutcome,
    Engine,
    EvasionParams,
    InputBounds,
)
from bastion.assess.evasion._gradients import GradientOracle, WhiteBoxCheck, WhiteBoxEngine
from bastion.core.check import CheckContext
from bastion.core.registry import register


class FGSMParams(EvasionParams):
    """Parameters of ``evasion.fgsm``.

    Attributes:
        eps: the ε grid (see :class:`~bastion.assess.evasion._common.EvasionParams`).
        batch_size: rows per gradient pass.
        backend: ``auto`` (native torch when the target holds a module), ``torch`` or ``generic``.
    """

    backend: Literal["auto", "torch", "generic"] = "auto"


@register("attack")
class FGSM(WhiteBoxCheck):
    """Fast gradient sign method (L∞, white-box, one step): clean vs robust accuracy per ε.

    Threat model: white-box (loss gradients); every mutable value moves by at most ε within
    the declared bounds; untargeted.

    Budget: 2 queries per attacked sample and ε (gradient + classification), plus the clean pass.

    Source: Goodfellow et al. 2015, arXiv:1412.6572.
    """

    id: ClassVar[str] = "evasion.fgsm"
    title: ClassVar[str] = "FGSM evasion (L∞, white-box, one step)"
    Params = FGSMParams
    references: ClassVar[tuple[str, ...]] = (
        "Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015. "
        "arXiv:1412.6572",
        "https://arxiv.org/abs/1412.6572",
    )
    threat_model: ClassVar[str] = (
        "White-box: the attacker has the model's loss gradients and moves every mutable input value "
        "by at most ε within the declared bounds in one signed-gradient step (untargeted)."
    )

    def extra_problems(self, ctx: CheckContext, n_samples: int, n_eps: int) -> list[str]:
        """The query budget must cover the clean pass and one ε."""
        return self.one_eps_budget(ctx, 3 * n_samples)

    def white_box_engine(
        self, ctx: CheckContext, oracle: GradientOracle, bounds: InputBounds, rng: np.random.Generator
    ) -> Engine:
        """One signed-gradient step through the :class:`GradientOracle`."""
        return _FGSMEngine(oracle, bounds, rng)


class _FGSMEngine(WhiteBoxEngine):
    def attack(self, x: np.ndarray, y: np.ndarray, eps: float, eps_left: int) -> AttackOutcome:
        low, high = self.bounds.box(x, eps)
        _, g, _ = self.oracle.value_and_grad(x, y, "ce")
        x_adv = self.bounds.finalize(x + self.bounds.eps_values(eps) * np.sign(g), low, high)
        success = self.oracle.labels(x_adv) != y
        return AttackOutcome(x_adv=x_adv, success=success, queries=np.full(len(x), 2, dtype=np.int64))
