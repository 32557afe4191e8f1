"""``evasion.cw-l2``: the Carlini & Wagner L2 attack, a white-box minimal-perturbation attack.

Carlini, Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017,
arXiv:1608.04644.

Unlike PGD, C&W does not work inside a fixed ε-ball: per sample it looks for the *smallest*
L2 perturbation (in the ε unit, ``‖δ / scale‖₂``) that changes the label, by minimising::

    ‖(x' − x) / scale‖₂² + c · max(z_y − max_{i≠y} z_i, −κ)

with Adam over ``w``, where ``x' = a + (b − a)·(tanh w + 1)/2`` maps every ``w`` into the
declared bounds ``[a, b]`` (the tanh box-constraint reparametrisation; immutable and
categorical values have ``a = b = x`` and never move). ``c`` is found per sample by a binary
search of a few steps: start at ``initial_c``; after a step that found an adversarial example
bisect down, otherwise multiply by 10 (bisect up once an upper end is known). The smallest
adversarial example of all steps is kept; integer features are rounded at the end and the
label re-checked (one more query per sample).

Robust accuracy at ε counts a sample as broken when its C&W example is misclassified and its
L2 norm is at most ε, so the whole ε grid comes from one optimisation per sample (run when the
first ε is attacked; later ε values reuse it and spend no queries). ``median_adversarial_l2``
(no ε) is the median norm over every adversarial example found.

Needs a PyTorch target (the margin loss is computed on the module's logits).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal, cast

import numpy as np
from pydantic import Field

from bastion.assess.evasion._common import (
    L2_THRESHOLD_EPS,
    AttackOutcome,
    Engine,
    EvasionParams,
    InputBounds,
    low_robust_accuracy,
)
from bastion.assess.evasion._gradients import GradientOracle, WhiteBoxCheck, WhiteBoxEngine, torch_module
from bastion.core.check import CheckContext
from bastion.core.config import Threshold
from bastion.core.registry import register
from bastion.core.results import CheckResult

#: ε of the default threshold (L2, in the ε unit).
#: Fewest Adam steps per binary-search step the query budget may lower ``steps`` to.
MIN_STEPS = 10
#: The metric with no ε: median L2 norm of every adversarial example found.
MEDIAN_L2 = "median_adversarial_l2"


class CWL2Params(EvasionParams):
    """Parameters of ``evasion.cw-l2``.

    Attributes:
        eps: the L2 ε grid robust accuracy is read at (``None``: 0.25, 0.5, 1.0).
        batch_size: rows per optimisation batch.
        steps: Adam steps per binary-search step.
        binary_search_steps: values of ``c`` tried per sample.
        initial_c: the first ``c``.
        learning_rate: Adam's learning rate on ``w``.
        confidence: κ, the logit margin an adversarial example must reach.
    """

    eps: list[float] | None = Field(default_factory=lambda: [0.25, 0.5, 1.0], min_length=1, max_length=32)
    steps: int = Field(default=100, ge=1, le=10_000)
    binary_search_steps: int = Field(default=5, ge=1, le=20)
    initial_c: float = Field(default=1.0, gt=0)
    learning_rate: float = Field(default=0.05, gt=0)
    confidence: float = Field(default=0.0, ge=0)


@register("attack")
class CWL2(WhiteBoxCheck):
    """Carlini & Wagner L2 (white-box): minimal L2 adversarial examples, robust accuracy per ε.

    Threat model: white-box (the module's logits and gradients); the attacker adds the smallest
    L2 perturbation (in the ε unit) that changes the label, within the declared bounds;
    untargeted. A sample is broken at ε when that perturbation's norm is at most ε.

    Budget: ``binary_search_steps × steps + 1`` queries per attacked sample (once, whatever the
    number of ε values); ``steps`` is lowered (noted) when ``budget.queries`` cannot cover it.

    Metrics: those of ``evasion.pgd`` per ε (``median_perturbation`` the L2 norm of the samples
    broken at that ε), and ``median_adversarial_l2`` over every adversarial example found.

    Source: Carlini & Wagner 2017, arXiv:1608.04644.
    """

    id: ClassVar[str] = "evasion.cw-l2"
    title: ClassVar[str] = "Carlini & Wagner evasion (L2, white-box)"
    norm: ClassVar[Literal["linf", "l2"]] = "l2"
    oracle_backend: ClassVar[str | None] = "torch"
    Params = CWL2Params
    references: ClassVar[tuple[str, ...]] = (
        "Carlini, Wagner. Towards Evaluating the Robustness of Neural Networks. IEEE S&P 2017. "
        "arXiv:1608.04644",
        "https://arxiv.org/abs/1608.04644",
    )
    threat_model: ClassVar[str] = (
        "White-box: the attacker has the model's logits and their gradients and looks for the "
        "smallest L2 perturbation (in the ε unit) that changes the label within the declared "
        "bounds (untargeted); robust accuracy at ε counts those of norm at most ε."
    )
    default_thresholds: ClassVar[tuple[Threshold, ...]] = low_robust_accuracy(L2_THRESHOLD_EPS)

    def __init__(self) -> None:
        super().__init__()
        self._engine: _CWEngine | None = None

    def applicable(self, ctx: CheckContext) -> str | None:
        """Also needs a PyTorch target: the margin loss is computed on the module's logits."""
        reason = super().applicable(ctx)
        if reason is None and ctx.target is not None and torch_module(ctx.target) is None:
            return "needs a PyTorch target (the C&W margin loss is computed on the module's logits)"
        return reason

    def extra_problems(self, ctx: CheckContext, n_samples: int, n_eps: int) -> list[str]:
        """A torch target, and a query budget that covers the clean pass and the optimisation."""
        params = cast(CWL2Params, ctx.params)
        problems = []
        if ctx.target is not None and torch_module(ctx.target) is None:
            problems.append("target: C&W needs a PyTorch target (use evasion.pgd-l2 or evasion.square-l2)")
        need = n_samples * (params.binary_search_steps * MIN_STEPS + 2)
        if ctx.budget.queries is not None and ctx.budget.queries < need:
            problems.append(
                f"budget.queries: {ctx.budget.queries} leaves fewer than {MIN_STEPS} steps per binary-search "
                f"step ({need} needed for {n_samples} samples)"
            )
        return problems

    def threshold_problems(self, thresholds: Sequence[Threshold]) -> list[str]:
        """As every evasion check, plus C&W's own ``median_l2`` metric."""
        return super().threshold_problems([t for t in thresholds if t.metric != MEDIAN_L2])

    def white_box_engine(
        self, ctx: CheckContext, oracle: GradientOracle, bounds: InputBounds, rng: np.random.Generator
    ) -> Engine:
        """C&W through the native :class:`GradientOracle`."""
        self._engine = _CWEngine(oracle, bounds, rng, cast(CWL2Params, ctx.params))
        return self._engine

    def run(self, ctx: CheckContext) -> CheckResult:
        """The ε-grid run, plus ``median_adversarial_l2`` (null when nothing was found)."""
        self._engine = None
        result = super().run(ctx)
        norms = self._engine.found_norms() if self._engine is not None else np.zeros(0)
        result.metrics[MEDIAN_L2] = float(np.median(norms)) if norms.size else None
        result.notes[MEDIAN_L2] = (
            "median L2 norm (ε unit) of every C&W adversarial example found, whatever its size; "
            "later ε values reuse the first ε's optimisation (0 queries there)"
        )
        return result


class _CWEngine(WhiteBoxEngine):
    """One C&W optimisation per sample, cached by the sample's bytes across the ε grid."""

    def __init__(
        self, oracle: GradientOracle, bounds: InputBounds, rng: np.random.Generator, params: CWL2Params
    ) -> None:
        super().__init__(oracle, bounds, rng)
        self.params = params
        self.cache: dict[bytes, tuple[np.ndarray, bool, float]] = {}
        self.steps = params.steps

    def found_norms(self) -> np.ndarray:
        """L2 norms of every adversarial example found so far."""
        return np.asarray([norm for _, ok, norm in self.cache.values() if ok], dtype=np.float64)

    def attack(self, x: np.ndarray, y: np.ndarray, eps: float, eps_left: int) -> AttackOutcome:
        keys = [row.tobytes() for row in np.ascontiguousarray(x)]
        todo = np.asarray([i for i, k in enumerate(keys) if k not in self.cache], dtype=np.int64)
        queries = np.zeros(len(x), dtype=np.int64)
        if todo.size:
            self._plan_steps(todo.size)
            x_adv, ok, spent = self.optimise(x[todo], y[todo])
            norms = self.bounds.l2(x_adv, x[todo])
            for j, i in enumerate(todo):
                self.cache[keys[i]] = (x_adv[j], bool(ok[j]), float(norms[j]))
            queries[todo] = spent
        out = x.copy()
        success = np.zeros(len(x), dtype=bool)
        for i, k in enumerate(keys):
            adv, hit, norm = self.cache[k]
            if hit and norm <= eps * (1 + 1e-6):
                out[i] = adv
                success[i] = True
        return AttackOutcome(x_adv=out, success=success, queries=queries)

    def _plan_steps(self, n: int) -> None:
        """Lower ``steps`` so that ``n`` samples fit in what is left of the query budget."""
        remaining = self.oracle.meter.remaining_queries()
        if remaining is None:
            return
        afford = (remaining // max(1, n) - 1) // self.params.binary_search_steps
        if afford < self.steps:
            self.steps = max(1, afford)
            self.notes["steps"] = (
                f"the query budget lowered Adam steps per binary-search step to {self.steps}"
            )

    def optimise(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """The smallest adversarial example per row (``x`` where none), whether found, queries per row."""
        bs = self.oracle.batch_size
        advs, oks = [], []
        for i in range(0, len(x), bs):
            a, ok = self._batch(x[i : i + bs], y[i : i + bs])
            advs.append(a)
            oks.append(ok)
        p = self.params
        return np.concatenate(advs), np.concatenate(oks), p.binary_search_steps * self.steps + 1

    def _batch(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        p, b, o = self.params, self.bounds, self.oracle
        n = len(x)
        x64 = np.asarray(x, dtype=np.float64)
        low = np.where(b.mutable, np.minimum(b.lo, x64), x64)
        high = np.where(b.mutable, np.maximum(b.hi, x64), x64)
        width = high - low
        a_t, w_t = o.tensor(low.astype(np.float32)), o.tensor(width.astype(np.float32))
        x_t = o.tensor(x)
        inv_scale = o.tensor((1.0 / np.where(b.scale > 0, b.scale, 1.0)).astype(np.float32))
        mut_t = o.tensor(b.mutable.astype(np.float32))
        unit = np.where(width > 0, (x64 - low) / np.where(width > 0, width, 1.0), 0.5)
        w0 = np.arctanh(np.clip(unit * 2 - 1, -1 + 1e-6, 1 - 1e-6))
        y_t = torch.from_numpy(np.asarray(y, dtype=np.int64))
        rows = torch.arange(n)
        onehot = torch.nn.functional.one_hot(y_t, int(self.oracle.target.num_classes)).bool()
        c = np.full(n, p.initial_c)
        lo_c, hi_c = np.zeros(n), np.full(n, np.inf)
        best_l2 = np.full(n, np.inf)
        best_x = x.copy()
        for _ in range(p.binary_search_steps):
            w = o.tensor(w0).clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=p.learning_rate)
            c_t = o.tensor(c.astype(np.float32))
            found = np.zeros(n, dtype=bool)
            for _ in range(self.steps):
                xa = a_t + w_t * (torch.tanh(w) + 1) / 2
                o.charge(n)
                z = o.logits_t(xa)
                z_y = z[rows, y_t]
                z_other = z.masked_fill(onehot, -torch.inf).max(dim=1).values
                f = torch.clamp(z_y - z_other, min=-p.confidence)
                l2sq = (((xa - x_t) * inv_scale * mut_t) ** 2).flatten(1).sum(dim=1)
                loss = (l2sq + c_t * f).sum()
                opt.zero_grad()
                loss.backward()
                with torch.no_grad():
                    adv = (z_y - z_other <= -p.confidence) & (z.argmax(dim=1) != y_t)
                    l2 = l2sq.sqrt().to(torch.float64).numpy()
                    better = adv.numpy() & (l2 < best_l2)
                    if better.any():
                        best_l2[better] = l2[better]
                        best_x[better] = xa.detach().to(torch.float32).numpy()[better]
                    found = np.logical_or(found, adv.numpy())
                opt.step()
            hi_c = np.where(found, np.minimum(hi_c, c), hi_c)
            lo_c = np.where(found, lo_c, np.maximum(lo_c, c))
            c = np.where(np.isfinite(hi_c), (lo_c + hi_c) / 2, c * 10)
        found_any = np.isfinite(best_l2)
        final = b.finalize(best_x, low.astype(np.float32), high.astype(np.float32))
        ok = found_any & (self.oracle.labels(final) != y)
        return np.where(ok.reshape(-1, *([1] * (x.ndim - 1))), final, x).astype(np.float32), ok
