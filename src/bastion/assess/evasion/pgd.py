"""``evasion.pgd``: white-box projected gradient descent under an L∞ budget.

Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018, arXiv:1706.06083.

From a random point of the ε-ball around ``x`` (or ``x`` itself), repeat ``steps`` times::

    x ← clip_box(x + α · sign(∇ₓ CE(f(x), y)))

where ``clip_box`` projects onto the ε-ball intersected with the input's declared bounds
(immutable and categorical values fixed, see :mod:`bastion.assess.evasion._common`), then
round integer features and classify the final point. A sample counts as broken when the final
point of any restart is misclassified. ``α`` defaults to ``2.5·ε/steps`` (Madry et al.).

Two backends compute the same iterates: a PyTorch target (one with a ``module``) runs a
native torch loop on its module; any other target with loss gradients (e.g. a scikit-learn
logistic regression) is driven through ``Target.loss_gradient`` on numpy arrays. Either way one
query is charged per row per gradient step and per final classification, so one sample costs
``restarts × (steps + 1)`` queries per ε at most.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import numpy as np
from pydantic import Field

from bastion.assess.evasion._common import (
    AttackOutcome,
    Engine,
    EvasionCheck,
    EvasionParams,
    InputBounds,
)
from bastion.assess.evasion._gradients import module_eval_mode, torch_module
from bastion.core.budget import BudgetMeter
from bastion.core.capability import Capability
from bastion.core.check import CheckContext
from bastion.core.errors import PluginError, require
from bastion.core.registry import register

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class PGDParams(EvasionParams):
    """Parameters of ``evasion.pgd``.

    Attributes:
        eps: the ε grid (see :class:`~bastion.assess.evasion._common.EvasionParams`).
        batch_size: rows per gradient pass.
        steps: gradient steps per restart (1..1000).
        step_size: α in the ε unit (``None``: ``2.5·ε/steps`` for each ε of the grid).
        random_start: start each restart from a uniform point of the ε-ball (else from ``x``;
            then a single restart is run, as more would repeat it).
        restarts: restarts for the samples not yet broken (1..100).
        backend: ``auto`` (native torch loop when the target holds a torch module, else
            ``Target.loss_gradient``), ``torch`` (require the native loop) or ``generic``.
    """

    steps: int = Field(default=20, ge=1, le=1000)
    step_size: float | None = Field(default=None, gt=0)
    random_start: bool = True
    restarts: int = Field(default=1, ge=1, le=100)
    backend: Literal["auto", "torch", "generic"] = "auto"


@register("attack")
class PGD(EvasionCheck):
    """L∞ projected gradient descent (white-box): clean vs robust accuracy over an ε grid.

    Threat model: the attacker knows the model and its gradients (white-box) and may change
    every mutable input value by at most ε (in the input's ε unit) within the declared bounds;
    the attack is untargeted (any wrong class counts).

    Shapes: evaluation inputs ``(n, *input_shape)`` float32, ``n = min(budget.samples, len(test))``.

    Budget: one query per row per gradient step and per final classification, plus one per
    sample for the clean pass; ``BudgetExhausted`` stops the run cleanly, keeping every ε
    completed (``budget_used.exhausted`` set, a note, later ε values null).

    Metrics (``@eps=<ε>`` per ε): ``clean_accuracy``, ``robust_accuracy``, ``robust_accuracy_drop``,
    ``attack_success_rate``, ``median_perturbation`` (L∞ in the ε unit), ``queries_per_sample``;
    Wilson 95 % intervals for the accuracies and success rates.

    Source: Madry et al. 2018, arXiv:1706.06083.
    """

    id: ClassVar[str] = "evasion.pgd"
    title: ClassVar[str] = "PGD evasion (L∞, white-box)"
    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.LOSS_GRADIENTS})
    Params = PGDParams
    references: ClassVar[tuple[str, ...]] = (
        "Madry, Makelov, Schmidt, Tsipras, Vladu. Towards Deep Learning Models Resistant to "
        "Adversarial Attacks. ICLR 2018. arXiv:1706.06083",
        "https://arxiv.org/abs/1706.06083",
    )
    threat_model: ClassVar[str] = (
        "White-box: the attacker has the model and its loss gradients and may move every mutable "
        "input value by at most ε (a fraction of each feature's declared range, or absolute input "
        "units) within the declared bounds, to make the model misclassify (untargeted)."
    )

    def extra_problems(self, ctx: CheckContext, n_samples: int, n_eps: int) -> list[str]:
        """The backend must fit the target; the query budget must cover at least one ε."""
        params = cast(PGDParams, ctx.params)
        problems: list[str] = []
        if params.backend == "torch" and ctx.target is not None and torch_module(ctx.target) is None:
            problems.append("params.backend: 'torch' needs a PyTorch target (one holding a torch module)")
        need = n_samples * (params.steps + 2)
        if ctx.budget.queries is not None and ctx.budget.queries < need:
            problems.append(
                f"budget.queries: {ctx.budget.queries} cannot finish one ε: the clean pass and "
                f"{params.steps} steps + 1 check for {n_samples} samples need {need}"
            )
        return problems

    @contextlib.contextmanager
    def engine(
        self, ctx: CheckContext, meter: BudgetMeter, bounds: InputBounds, rng: np.random.Generator
    ) -> Iterator[Engine]:
        """The native torch loop for a torch target (``backend`` ``auto``/``torch``), else the generic one.

        Raises:
            PluginError: ``backend="torch"`` on a target without a torch module.
        """
        params = cast(PGDParams, ctx.params)
        module = torch_module(ctx.target) if params.backend != "generic" else None
        if params.backend == "torch" and module is None:
            raise PluginError(f"{self.id}: backend 'torch' needs a PyTorch target")
        if module is None:
            generic = _GenericPGD(ctx.target, params, bounds, rng)
            generic.notes["backend"] = "generic: Target.loss_gradient and Target.predict_label"
            yield generic
            return
        native = _TorchPGD(ctx.target, module, params, bounds, rng, meter)
        native.notes["backend"] = (
            "torch: native loop on the target's module, queries charged per row and pass"
        )
        with module_eval_mode(module):
            yield native


class _PGDBase:
    """The restart/batch loop shared by both backends; subclasses supply the gradient steps."""

    def __init__(self, target: Any, params: PGDParams, bounds: InputBounds, rng: np.random.Generator) -> None:
        self.target = target
        self.params = params
        self.bounds = bounds
        self.rng = rng
        self.notes: dict[str, str] = {}
        if params.restarts > 1 and not params.random_start:
            self.notes["restarts"] = "random_start is off, so one restart was run (more would repeat it)"

    def labels(self, x: np.ndarray) -> np.ndarray:
        bs = self.params.batch_size
        parts = [self._predict(x[i : i + bs]) for i in range(0, len(x), bs)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def attack(self, x: np.ndarray, y: np.ndarray, eps: float, eps_left: int) -> AttackOutcome:
        p = self.params
        low, high = self.bounds.box(x, eps)
        step = p.step_size if p.step_size is not None else 2.5 * eps / p.steps
        alpha = self.bounds.eps_values(step).astype(np.float32)
        e = self.bounds.eps_values(eps)
        x_best = x.copy()
        success = np.zeros(len(x), dtype=bool)
        queries = np.zeros(len(x), dtype=np.int64)
        restarts = p.restarts if p.random_start else 1
        for _ in range(restarts):
            todo = np.flatnonzero(~success)
            for i in range(0, todo.size, p.batch_size):
                b = todo[i : i + p.batch_size]
                xb, lb, hb = x[b], low[b], high[b]
                if p.random_start:
                    noise = self.rng.uniform(-1.0, 1.0, size=xb.shape) * e
                    start = np.clip((xb + noise).astype(np.float32), lb, hb)
                else:
                    start = xb.copy()
                last = self._steps(start, y[b], lb, hb, alpha)
                final = self.bounds.finalize(last, lb, hb)
                pred = self._predict(final)
                queries[b] += p.steps + 1
                hit = pred != y[b]
                x_best[b] = final
                success[b[hit]] = True
            if success.all():
                break
        return AttackOutcome(x_adv=x_best, success=success, queries=queries)

    def _steps(
        self, x: np.ndarray, y: np.ndarray, low: np.ndarray, high: np.ndarray, alpha: np.ndarray
    ) -> np.ndarray:
        raise NotImplementedError

    def _predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _GenericPGD(_PGDBase):
    """PGD through ``Target.loss_gradient`` and ``Target.predict_label`` (metered by the target)."""

    def _steps(
        self, x: np.ndarray, y: np.ndarray, low: np.ndarray, high: np.ndarray, alpha: np.ndarray
    ) -> np.ndarray:
        xa = x
        for _ in range(self.params.steps):
            g = np.nan_to_num(np.asarray(self.target.loss_gradient(xa, y), dtype=np.float32))
            xa = np.clip(xa + alpha * np.sign(g), low, high).astype(np.float32)
        return xa

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.target.predict_label(x), dtype=np.int64)


class _TorchPGD(_PGDBase):
    """PGD as a native torch loop on the target's module; queries charged to the meter by hand."""

    def __init__(
        self,
        target: Any,
        module: torch.nn.Module,
        params: PGDParams,
        bounds: InputBounds,
        rng: np.random.Generator,
        meter: BudgetMeter,
    ) -> None:
        super().__init__(target, params, bounds, rng)
        require("torch", "torch")
        import torch

        self.torch = torch
        self.meter = meter
        forward = getattr(target, "_forward", None)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = forward if callable(forward) else module
        first = next(iter(module.parameters()), None)
        self.dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        self.device = first.device if first is not None else torch.device("cpu")
        self.probabilities = getattr(target, "output", "logits") == "probabilities"

    def _charge(self, n: int) -> None:
        self.meter.charge(queries=n)
        if isinstance(getattr(self.target, "queries", None), int):
            self.target.queries += n

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torch
        from torch.nn import functional

        if self.probabilities:
            return functional.nll_loss(torch.log(out.clamp_min(1e-12)), y, reduction="sum")
        return functional.cross_entropy(out, y, reduction="sum")

    def _steps(
        self, x: np.ndarray, y: np.ndarray, low: np.ndarray, high: np.ndarray, alpha: np.ndarray
    ) -> np.ndarray:
        torch = self.torch
        xa = self._tensor(x)
        yt = self._tensor(y.astype(np.int64))
        lo_t, hi_t, alpha_t = self._tensor(low), self._tensor(high), self._tensor(alpha)
        with torch.enable_grad():
            for _ in range(self.params.steps):
                self._charge(len(x))
                xa.requires_grad_(True)
                loss = self._loss(self.forward(xa.to(self.dtype)), yt)
                (g,) = torch.autograd.grad(loss, xa)
                step = alpha_t * torch.sign(torch.nan_to_num(g.detach().to(torch.float32)))
                xa = torch.clamp(xa.detach() + step, lo_t, hi_t)
        return np.asarray(xa.cpu().numpy(), dtype=np.float32)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        self._charge(len(x))
        with self.torch.no_grad():
            out = self.forward(self._tensor(x).to(self.dtype))
        return np.asarray(out.argmax(dim=1).cpu().numpy(), dtype=np.int64)
