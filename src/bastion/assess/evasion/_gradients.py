"""Loss values and input gradients for the white-box evasion attacks, on any target with gradients.

:class:`GradientOracle` hides where gradients come from:

* a PyTorch target (one holding a ``module``): a native forward/backward on the module, any of
  the losses below, one query charged per row and pass;
* any other target offering ``LOSS_GRADIENTS`` (e.g. a scikit-learn logistic regression):
  ``Target.loss_gradient`` for the cross-entropy only, plus ``Target.predict_proba`` for the
  loss value (both charged by the target).

Losses (all *maximised* by an attack; ``z`` are logits, or log-probabilities for a model that
returns probabilities — the DLR and margin losses are invariant to that per-row shift):

* ``ce``: cross-entropy of the true class;
* ``dlr``: the difference of logits ratio (Croce & Hein 2020, arXiv:2003.01690),
  ``−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)``; targeted: ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2)``;
* ``margin``: ``max_{i≠y} z_i − z_y`` (Carlini & Wagner's f₆ with κ = ∞, untargeted).

Shared helpers for L2 geometry in the ε unit (``δ / scale``) live here too.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from bastion.assess.evasion._common import Engine, EvasionCheck, InputBounds
from bastion.core.budget import BudgetMeter
from bastion.core.capability import Capability
from bastion.core.check import CheckContext
from bastion.core.errors import PluginError, require

if TYPE_CHECKING:
    import torch

LossName = Literal["ce", "dlr", "margin"]


def torch_module(target: Any) -> torch.nn.Module | None:
    """The target's torch module, without importing torch when it is not loaded already."""
    module = getattr(target, "module", None)
    torch_mod = sys.modules.get("torch")
    if module is None or torch_mod is None:
        return None
    return module if isinstance(module, torch_mod.nn.Module) else None


@contextlib.contextmanager
def module_eval_mode(module: torch.nn.Module | None) -> Iterator[None]:
    """Hold ``module`` (when there is one) in eval mode, restoring its training mode afterwards."""
    if module is None:
        yield
        return
    was = bool(module.training)
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def has_gradients(target: Any) -> bool:
    """The target offers loss gradients (natively or through ``Target.loss_gradient``)."""
    caps: frozenset[Capability] = getattr(target, "capabilities", frozenset())
    return Capability.LOSS_GRADIENTS in caps or torch_module(target) is not None


class GradientOracle:
    """Scores, labels and loss gradients of one target, metered one query per row and pass.

    Args:
        target: the model (a ``TorchTarget``-like object with ``module`` for native passes,
            else any target with ``LOSS_GRADIENTS``).
        meter: the run's budget meter (charged by hand on the native path; the target
            charges itself on the generic path, when bound with ``Target.metered``).
        batch_size: rows per pass.
        backend: ``auto``, ``torch`` (require the native path) or ``generic``.

    Raises:
        PluginError: ``backend="torch"`` on a target without a torch module.
    """

    def __init__(self, target: Any, meter: BudgetMeter, batch_size: int, backend: str = "auto") -> None:
        self.target = target
        self.meter = meter
        self.batch_size = int(batch_size)
        self.module = torch_module(target) if backend != "generic" else None
        if backend == "torch" and self.module is None:
            raise PluginError(f"{getattr(target, 'name', 'target')}: backend 'torch' needs a PyTorch target")
        self.native = self.module is not None
        self.probabilities = getattr(target, "output", "logits") == "probabilities"
        if self.native:
            require("torch", "torch")
            import torch

            assert self.module is not None
            forward = getattr(target, "_forward", None)
            self.forward: Any = forward if callable(forward) else self.module
            first = next(iter(self.module.parameters()), None)
            self.dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32

    @property
    def backend_note(self) -> str:
        """A line for ``CheckResult.notes['backend']``."""
        if self.native:
            return "torch: native forward/backward on the target's module, queries charged per row and pass"
        return "generic: Target.loss_gradient (cross-entropy) and Target.predict_proba"

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[GradientOracle]:
        """Hold the module in eval mode for the run, restoring its mode afterwards."""
        with module_eval_mode(self.module):
            yield self

    def charge(self, n: int) -> None:
        """Charge ``n`` native queries to the meter and the target's counter."""
        self.meter.charge(queries=n)
        if isinstance(getattr(self.target, "queries", None), int):
            self.target.queries += n

    # -- torch helpers ----------------------------------------------------------------
    def tensor(self, a: np.ndarray) -> torch.Tensor:
        """``a`` as a CPU tensor in the module's dtype."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.dtype)

    def logits_t(self, xt: torch.Tensor) -> torch.Tensor:
        """Logits of a tensor batch (log-probabilities for a probability model); not charged."""
        import torch

        out = self.forward(xt)
        if self.probabilities:
            out = torch.log(out.clamp_min(1e-12))
        return out

    # -- numpy API --------------------------------------------------------------------
    def scores(self, x: np.ndarray) -> np.ndarray:
        """Logits (or log-probabilities) ``(n, K)`` float64.

        Generic targets: ``log predict_proba``, or the log-softmax of ``predict_logits`` for a
        target with logits but no probabilities (a linear SVM's decision function).
        """
        if not self.native:
            caps: frozenset[Capability] = getattr(self.target, "capabilities", frozenset())
            if Capability.PROBABILITIES not in caps and Capability.LOGITS in caps:
                z = np.asarray(self.target.predict_logits(x), dtype=np.float64)  # e.g. a linear SVM
                return (
                    z
                    - z.max(axis=1, keepdims=True)
                    - np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True))
                )
            p = np.asarray(self.target.predict_proba(x), dtype=np.float64)
            return np.log(np.clip(p, 1e-300, None))
        import torch

        parts = []
        with torch.no_grad():
            for i in range(0, len(x), self.batch_size):
                xb = x[i : i + self.batch_size]
                self.charge(len(xb))
                parts.append(self.logits_t(self.tensor(xb)).to(torch.float64).numpy())
        return np.concatenate(parts) if parts else np.zeros((0, int(self.target.num_classes)))

    def labels(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels ``(n,)`` int64."""
        if not self.native:
            parts = [
                np.asarray(self.target.predict_label(x[i : i + self.batch_size]), dtype=np.int64)
                for i in range(0, len(x), self.batch_size)
            ]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return np.asarray(self.scores(x).argmax(axis=1), dtype=np.int64)

    def value_and_grad(
        self, x: np.ndarray, y: np.ndarray, loss: LossName, y_target: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-row loss ``(n,)``, its gradient w.r.t. ``x`` (shape of ``x``) and the scores ``(n, K)``.

        Raises:
            PluginError: a loss other than ``ce`` on a target without a torch module.
        """
        if not self.native:
            if loss != "ce" or y_target is not None:
                raise PluginError(f"the {loss} loss needs a PyTorch target (only cross-entropy otherwise)")
            g = np.asarray(self.target.loss_gradient(x, y), dtype=np.float32)
            s = self.scores(x)
            return -s[np.arange(len(y)), y], np.nan_to_num(g), s
        import torch

        vals, grads, outs = [], [], []
        with torch.enable_grad():
            for i in range(0, len(x), self.batch_size):
                xb = self.tensor(x[i : i + self.batch_size]).requires_grad_(True)
                yb = torch.from_numpy(np.asarray(y[i : i + self.batch_size], dtype=np.int64))
                tb = None
                if y_target is not None:
                    tb = torch.from_numpy(np.asarray(y_target[i : i + self.batch_size], dtype=np.int64))
                self.charge(len(yb))
                z = self.logits_t(xb)
                per_row = loss_t(z, yb, loss, tb)
                (gt,) = torch.autograd.grad(per_row.sum(), xb)
                vals.append(per_row.detach().to(torch.float64).numpy())
                grads.append(torch.nan_to_num(gt.detach()).to(torch.float32).numpy())
                outs.append(z.detach().to(torch.float64).numpy())
        if not vals:
            k = int(self.target.num_classes)
            return np.zeros(0), np.zeros_like(x, dtype=np.float32), np.zeros((0, k))
        return np.concatenate(vals), np.concatenate(grads), np.concatenate(outs)


def loss_t(
    z: torch.Tensor, y: torch.Tensor, loss: LossName, y_target: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-row loss to maximise (see the module docstring), shape ``(n,)``."""
    import torch
    from torch.nn import functional

    if loss == "ce":
        if y_target is not None:
            return -functional.cross_entropy(z, y_target, reduction="none")
        return functional.cross_entropy(z, y, reduction="none")
    rows = torch.arange(len(y))
    z_y = z[rows, y]
    other = z.clone()
    other[rows, y] = -torch.inf
    z_other = other.max(dim=1).values
    if loss == "margin":
        return z_other - z_y
    srt = z.sort(dim=1).values
    if y_target is not None:
        k = z.shape[1]
        third = srt[:, -3] if k >= 3 else srt[:, 0]
        fourth = srt[:, -4] if k >= 4 else third
        denom = srt[:, -1] - (third + fourth) / 2 + 1e-12
        return -(z_y - z[rows, y_target]) / denom
    third = srt[:, -3] if z.shape[1] >= 3 else srt[:, 0]
    return -(z_y - z_other) / (srt[:, -1] - third + 1e-12)


# -- L2 geometry in the ε unit --------------------------------------------------------------
def safe_scale(scale: np.ndarray) -> np.ndarray:
    """``scale`` with zeros replaced by one (values that never move)."""
    return np.where(scale > 0, scale, 1.0)


def l2_norms(delta: np.ndarray, scale: np.ndarray, mutable: np.ndarray) -> np.ndarray:
    """Per-row L2 norm of ``delta / scale`` over mutable values, shape ``(n,)``."""
    d = np.where(mutable, np.asarray(delta, np.float64) / safe_scale(scale), 0.0)
    return np.asarray(np.sqrt((d.reshape(len(d), -1) ** 2).sum(axis=1)))


def project_l2(delta: np.ndarray, eps: float, scale: np.ndarray, mutable: np.ndarray) -> np.ndarray:
    """``delta`` (model units) shrunk per row so its scaled L2 norm is at most ``eps``."""
    d = np.where(mutable, delta, 0.0)
    norms = l2_norms(d, scale, mutable)
    factor = np.minimum(1.0, eps / np.maximum(norms, 1e-12))
    return np.asarray(d * factor.reshape(-1, *([1] * (d.ndim - 1))))


def bcast(v: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A per-row vector ``(n,)`` reshaped to broadcast against ``like`` ``(n, ...)``."""
    return np.asarray(v).reshape(-1, *([1] * (like.ndim - 1)))


def l2_normalize(g: np.ndarray, scale: np.ndarray, mutable: np.ndarray) -> np.ndarray:
    """A unit step direction in the scaled L2 geometry, in model units.

    The steepest L2 ascent direction for ``u = δ / scale`` is ``g·scale / ‖g·scale‖``; mapped
    back to model units it is multiplied by ``scale`` once more.
    """
    gs = np.where(mutable, np.asarray(g, np.float64) * scale, 0.0)
    norms = np.sqrt((gs.reshape(len(gs), -1) ** 2).sum(axis=1))
    return np.asarray(gs / bcast(np.maximum(norms, 1e-12), gs) * scale)


def random_l2(
    n: int,
    shape: tuple[int, ...],
    eps: float,
    scale: np.ndarray,
    mutable: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """``n`` random perturbations (model units) of scaled L2 norm uniform in ``[0, ε]``."""
    d = np.where(mutable, rng.standard_normal((n, *shape)), 0.0)
    norms = np.sqrt((d.reshape(n, -1) ** 2).sum(axis=1))
    r = rng.uniform(0.0, 1.0, size=n) * eps
    return np.asarray(d / bcast(np.maximum(norms, 1e-12), d) * bcast(r, d) * scale)


class WhiteBoxEngine:
    """Base of the white-box engines: labels through the oracle; subclasses implement ``attack``.

    Attributes:
        oracle: the gradient oracle.
        bounds: the input bounds (an ``InputBounds``).
        rng: the run's random source.
        notes: remarks for ``CheckResult.notes``.
    """

    def __init__(self, oracle: GradientOracle, bounds: Any, rng: np.random.Generator) -> None:
        self.oracle = oracle
        self.bounds = bounds
        self.rng = rng
        self.notes: dict[str, str] = {"backend": oracle.backend_note}

    def labels(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels ``(n,)`` (one query per row)."""
        return self.oracle.labels(x)


class WhiteBoxCheck(EvasionCheck):
    """Base of the white-box evasion checks: one :class:`GradientOracle`, the module in eval mode.

    :meth:`engine` builds the oracle (``batch_size`` and ``backend`` from the params, or
    :attr:`oracle_backend` when the attack forces one), holds the module in eval mode for the run
    (restoring its mode afterwards) and yields what :meth:`white_box_engine` builds on it.
    """

    requires: ClassVar[frozenset[Capability]] = frozenset({Capability.LOSS_GRADIENTS})
    #: The oracle's backend when the attack forces one (``None``: ``params.backend``).
    oracle_backend: ClassVar[str | None] = None

    @contextlib.contextmanager
    def engine(
        self, ctx: CheckContext, meter: BudgetMeter, bounds: InputBounds, rng: np.random.Generator
    ) -> Iterator[Engine]:
        """The :meth:`white_box_engine` on a :class:`GradientOracle`, the module in eval mode."""
        params: Any = ctx.params
        backend = self.oracle_backend if self.oracle_backend is not None else params.backend
        oracle = GradientOracle(ctx.target, meter, params.batch_size, backend)
        with oracle.eval_mode():
            yield self.white_box_engine(ctx, oracle, bounds, rng)

    def white_box_engine(
        self, ctx: CheckContext, oracle: GradientOracle, bounds: InputBounds, rng: np.random.Generator
    ) -> Engine:
        """The attack's engine on ``oracle`` (called once per run, inside eval mode)."""
        raise NotImplementedError
