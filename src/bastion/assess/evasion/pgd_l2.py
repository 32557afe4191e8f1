"""``evasion.pgd-l2``: white-box projected gradient descent under an L2 budget.

Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018, arXiv:1706.06083 (the L2 variant).

ε bounds the L2 norm of ``δ / scale`` (``scale`` the ε unit per value: 1 for ``absolute``, the
feature's range for ``fraction``). From a random point of the ball (or ``x``), repeat
``steps`` times::

    δ ← Π_box(Π_ε(δ + α · scale · g_s / ‖g_s‖₂)),   g_s = scale · ∇ₓ CE(f(x + δ), y)

where ``Π_ε`` rescales onto the L2 ball and ``Π_box`` clips to the declared bounds (immutable
and categorical values fixed); integer features are rounded inside the box at the end, toward
the clean value where the nearest integer would leave the L2 ball
(:meth:`~bastion.assess.evasion._common.InputBounds.finalize_l2`), so no returned point is
outside the ball. ``α`` defaults to ``2.5·ε/steps``. A sample counts as broken
when the final point of any restart is misclassified. One query per row per gradient step and
per final classification.
"""

from __future__ import annotations

from typing import ClassVar, Literal, cast

import numpy as np
from pydantic import Field

from bastion.assess.evasion._common import (
    L2_THRESHOLD_EPS,
    AttackOutcome,
    Engine,
    InputBounds,
    low_robust_accuracy,
)
from bastion.assess.evasion._gradients import (
    GradientOracle,
    WhiteBoxCheck,
    WhiteBoxEngine,
    l2_normalize,
    project_l2,
    random_l2,
)
from bastion.assess.evasion.pgd import PGDParams
from bastion.core.check import CheckContext
from bastion.core.config import Threshold
from bastion.core.registry import register

#: ε of the default threshold (L2, in the ε unit).


class PGDL2Params(PGDParams):
    """Parameters of ``evasion.pgd-l2``.

    Attributes:
        eps: the L2 ε grid (``None``: 0.25, 0.5, 1.0 — L2 radii are larger than L∞ ones).
        batch_size: rows per gradient pass.
        steps: gradient steps per restart.
        step_size: α in the ε unit (``None``: ``2.5·ε/steps``).
        random_start: start each restart from a random point of the ball.
        restarts: restarts for the samples not yet broken.
        backend: ``auto``, ``torch`` or ``generic``.
    """

    eps: list[float] | None = Field(default_factory=lambda: [0.25, 0.5, 1.0], min_length=1, max_length=32)


@register("attack")
class PGDL2(WhiteBoxCheck):
    """L2 projected gradient descent (white-box): clean vs robust accuracy over an L2 ε grid.

    Threat model: white-box; the L2 norm of the (scaled) perturbation is at most ε, within the
    declared bounds; untargeted.

    Budget: ``restarts × (steps + 1)`` queries per attacked sample and ε at most.

    Metrics: as ``evasion.pgd``; ``median_perturbation`` is the L2 norm in the ε unit.

    Source: Madry et al. 2018, arXiv:1706.06083.
    """

    id: ClassVar[str] = "evasion.pgd-l2"
    title: ClassVar[str] = "PGD evasion (L2, white-box)"
    norm: ClassVar[Literal["linf", "l2"]] = "l2"
    Params = PGDL2Params
    references: ClassVar[tuple[str, ...]] = (
        "Madry, Makelov, Schmidt, Tsipras, Vladu. Towards Deep Learning Models Resistant to "
        "Adversarial Attacks. ICLR 2018. arXiv:1706.06083",
        "https://arxiv.org/abs/1706.06083",
    )
    threat_model: ClassVar[str] = (
        "White-box: the attacker has the loss gradients and may add a perturbation whose L2 norm "
        "(in the ε unit) is at most ε, within the declared bounds (untargeted)."
    )
    default_thresholds: ClassVar[tuple[Threshold, ...]] = low_robust_accuracy(L2_THRESHOLD_EPS)

    def extra_problems(self, ctx: CheckContext, n_samples: int, n_eps: int) -> list[str]:
        """The query budget must cover the clean pass and one ε."""
        params = cast(PGDL2Params, ctx.params)
        return self.one_eps_budget(ctx, n_samples * (params.steps + 2))

    def white_box_engine(
        self, ctx: CheckContext, oracle: GradientOracle, bounds: InputBounds, rng: np.random.Generator
    ) -> Engine:
        """L2 PGD through the :class:`GradientOracle`."""
        return _PGDL2Engine(oracle, bounds, rng, cast(PGDL2Params, ctx.params))


class _PGDL2Engine(WhiteBoxEngine):
    def __init__(
        self, oracle: GradientOracle, bounds: InputBounds, rng: np.random.Generator, params: PGDL2Params
    ) -> None:
        super().__init__(oracle, bounds, rng)
        self.params = params

    def attack(self, x: np.ndarray, y: np.ndarray, eps: float, eps_left: int) -> AttackOutcome:
        p, b = self.params, self.bounds
        low, high = b.box(x, eps)
        alpha = p.step_size if p.step_size is not None else 2.5 * eps / p.steps
        scale, mut = b.scale, b.mutable
        x_best = x.copy()
        success = np.zeros(len(x), dtype=bool)
        queries = np.zeros(len(x), dtype=np.int64)
        for _ in range(p.restarts if p.random_start else 1):
            todo = np.flatnonzero(~success)
            if todo.size == 0:
                break
            xb, yb, lb, hb = x[todo], y[todo], low[todo], high[todo]
            delta = (
                random_l2(len(xb), b.shape, eps, scale, mut, self.rng)
                if p.random_start
                else np.zeros(xb.shape)
            )
            xa = np.clip(xb + delta, lb, hb).astype(np.float32)
            for _ in range(p.steps):
                _, g, _ = self.oracle.value_and_grad(xa, yb, "ce")
                delta = project_l2(xa - xb + alpha * l2_normalize(g, scale, mut), eps, scale, mut)
                xa = np.clip(xb + delta, lb, hb).astype(np.float32)
            final = b.finalize_l2(xa, xb, lb, hb, eps)
            hit = self.oracle.labels(final) != yb
            queries[todo] += p.steps + 1
            x_best[todo] = final
            success[todo[hit]] = True
        return AttackOutcome(x_adv=x_best, success=success, queries=queries)
