"""What the torch training defences share: the model copy, input bounds, PGD in torch, evaluation.

Private to :mod:`bastion.defend`. torch is imported lazily inside functions (a missing torch
raises ``MissingExtraError``), so importing this module is light.

ε is in the input's ε unit (DESIGN.md, ``eps_unit``): ``absolute`` ε is in model-input units
(``0.1`` on ``[0, 1]`` images), ``fraction`` ε is a fraction of each feature's declared range.
Every adversarial training example stays inside the ε-ball *and* the declared bounds, with
immutable and categorical features fixed — the same box the ``evasion.*`` attacks use
(:func:`bastion.assess.evasion._common.resolve_bounds`). Integer features are not rounded
during training (a relaxation: the trained-on set is a superset of what the attacks try).
"""

from __future__ import annotations

import copy
import io
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.assess.evasion._common import InputBounds, resolve_bounds
from bastion.core.check import Split
from bastion.core.errors import ConfigError, require
from bastion.defend.base import Defence, HardenContext, Hardened

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def torch_problems(ctx: HardenContext, who: str) -> list[str]:
    """Preflight problems of a defence that trains the asset's own torch architecture.

    Args:
        ctx: the hardening context.
        who: the defence id, for messages.

    Returns:
        Every problem found (empty: fine).
    """
    problems: list[str] = []
    if ctx.asset.framework == "torch" and not ctx.asset.model_class:
        problems.append(
            f"{who} needs model_class to save a state_dict: {ctx.asset.name} is TorchScript "
            "(export it as a state_dict with its nn.Module class and set model_class)"
        )
    module = getattr(ctx.target, "module", None)
    if ctx.asset.framework == "torch" and module is None:
        problems.append(f"{who}: the loaded target of {ctx.asset.name} holds no torch module")
    if ctx.asset.task != "classification":
        problems.append(f"{who} trains classifiers; {ctx.asset.name} is a {ctx.asset.task} model")
    if getattr(ctx.target, "output", "logits") != "logits" and ctx.asset.framework == "torch":
        problems.append(f"{who} needs a model that returns logits; {ctx.asset.name} returns probabilities")
    return problems


def bounds_for(ctx: HardenContext) -> InputBounds:
    """The input bounds of ``ctx``'s asset (declared spec, else the train split's min/max).

    Raises:
        ConfigError: no train split, or the bounds cannot be resolved.
    """
    train = ctx.data.get("train")
    if train is None:
        raise ConfigError(f"{ctx.asset.name}: no train split")
    return resolve_bounds(ctx.asset.input, tuple(train.x.shape[1:]), np.asarray(train.x))


def eps_problems(bounds: InputBounds, epsilon: float, who: str) -> list[str]:
    """An ε beyond the input range, or nothing left to perturb."""
    problems = []
    if not bounds.mutable.any():
        problems.append(f"{who}: every input value is immutable, categorical or of zero range")
    elif epsilon > bounds.max_eps():
        problems.append(
            f"{who}: epsilon {epsilon:g} is beyond the input range "
            f"(at most {bounds.max_eps():g} in {bounds.unit} units)"
        )
    return problems


def fresh_copy(module: torch.nn.Module, *, reset: bool) -> torch.nn.Module:
    """A deep copy of ``module`` on CPU, with every parameter re-initialised when ``reset``."""
    model = copy.deepcopy(module).to("cpu")
    if reset:
        for m in model.modules():
            fn = getattr(m, "reset_parameters", None)
            if callable(fn):
                fn()
    return model


def state_dict_bytes(model: torch.nn.Module) -> bytes:
    """``torch.save(model.state_dict())`` as bytes (loadable with ``weights_only=True``)."""
    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


@dataclass
class TorchBox:
    """The per-value bounds as tensors (shape ``input_shape``, float32).

    Attributes:
        lo: lowest allowed value.
        hi: highest allowed value.
        eps: ε in model-input units per value (0 where immutable).
        step: the PGD step per value in model-input units (0 where immutable).
    """

    lo: torch.Tensor
    hi: torch.Tensor
    eps: torch.Tensor
    step: torch.Tensor

    @classmethod
    def of(cls, bounds: InputBounds, epsilon: float, step_size: float) -> TorchBox:
        """Tensors for ``bounds`` at ``epsilon`` with step ``step_size`` (both in the ε unit)."""
        import torch

        scale = np.where(bounds.mutable, bounds.scale, 0.0)
        return cls(
            lo=torch.as_tensor(bounds.lo, dtype=torch.float32),
            hi=torch.as_tensor(bounds.hi, dtype=torch.float32),
            eps=torch.as_tensor(bounds.eps_values(epsilon), dtype=torch.float32),
            step=torch.as_tensor(step_size * scale, dtype=torch.float32),
        )

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``x_adv`` clipped to the ε-ball around ``x`` within ``[lo, hi]`` (``x`` always inside)."""
        import torch

        low = torch.minimum(torch.maximum(self.lo, x - self.eps), x)
        high = torch.maximum(torch.minimum(self.hi, x + self.eps), x)
        return torch.maximum(torch.minimum(x_adv, high), low)


def pgd_examples(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    box: TorchBox,
    steps: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """L∞ PGD with a random start maximising the cross-entropy (Madry et al. 2018, arXiv:1706.06083).

    Args:
        model: the classifier (put in eval mode for the attack, its mode restored after).
        x: clean inputs ``(n, *input_shape)`` float32.
        y: labels ``(n,)`` int64.
        box: bounds, ε and step per value.
        steps: gradient steps.
        generator: seeded generator of the random start.

    Returns:
        Adversarial inputs ``(n, *input_shape)``, detached, inside the box.
    """
    import torch

    was_training = model.training
    model.eval()
    noise = (torch.rand(x.shape, generator=generator) * 2.0 - 1.0) * box.eps
    x_adv = box.project(x + noise, x).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x_adv), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = box.project(x_adv.detach() + box.step * g.sign(), x).detach()
    model.train(was_training)
    return x_adv


def trades_examples(
    model: torch.nn.Module,
    x: torch.Tensor,
    box: TorchBox,
    steps: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """The TRADES inner maximisation: PGD on KL(f(x) ‖ f(x')) (Zhang et al. 2019, arXiv:1901.08573).

    Starts from ``x + 0.001·N(0, 1)`` on the mutable values, as the reference implementation does.

    Returns:
        Adversarial inputs ``(n, *input_shape)``, detached, inside the box.
    """
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    mutable = (box.eps > 0).to(x.dtype)
    x_adv = box.project(x + 0.001 * torch.randn(x.shape, generator=generator) * mutable, x).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_clean, reduction="sum")
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = box.project(x_adv.detach() + box.step * g.sign(), x).detach()
    model.train(was_training)
    return x_adv


def accuracy(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Clean accuracy of ``model`` on ``(x, y)`` (eval mode, no gradients); 0 for an empty set."""
    import torch

    if len(x) == 0:
        return 0.0
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(np.ascontiguousarray(x[i : i + batch_size]), dtype=torch.float32)
            pred = model(xb).argmax(dim=1).numpy()
            correct += int((pred == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / len(x)


def robust_accuracy(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    box: TorchBox,
    steps: int,
    seed: int,
    batch_size: int = 512,
) -> float:
    """Accuracy under :func:`pgd_examples` (a quick in-training estimate; ``bastion assess`` is the judge)."""
    import torch

    if len(x) == 0:
        return 0.0
    gen = torch.Generator().manual_seed(seed)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(np.ascontiguousarray(x[i : i + batch_size]), dtype=torch.float32)
        yb = torch.as_tensor(y[i : i + batch_size], dtype=torch.int64)
        adv = pgd_examples(model, xb, yb, box, steps, gen)
        with torch.no_grad():
            correct += int((model(adv).argmax(dim=1) == yb).sum())
    return correct / len(x)


def labelled(split: Split | None) -> tuple[np.ndarray, np.ndarray] | None:
    """``(x float32, y int64)`` of a labelled split, else ``None``."""
    if split is None or split.y is None or len(split.x) == 0:
        return None
    return np.asarray(split.x, dtype=np.float32), np.asarray(split.y, dtype=np.int64)


def seed_everything(seed: int) -> Any:
    """Seed torch's global generator and return a ``torch.Generator`` seeded with ``seed``."""
    torch = require("torch", "torch")
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# -- the training loop shared by PGD-AT and TRADES ----------------------------------------------
class AdversarialTrainingParams(BaseModel):
    """Parameters shared by ``defend.pgd-at`` and ``defend.trades``.

    Attributes:
        epsilon: the L∞ radius trained against, in the input's ε unit (``absolute``: model-input
            units, e.g. ``0.1`` on ``[0, 1]`` images; ``fraction``: of each feature's range).
        steps: PGD steps of the inner maximisation (1..100).
        step_size: PGD step in the ε unit (``None``: ``2.5·epsilon/steps``, Madry et al.).
        epochs: passes over the train split (1..1000).
        lr: Adam learning rate.
        batch_size: rows per optimiser step.
        init: ``finetune`` starts from the loaded weights (fastest to a robust model of the same
            clean accuracy), ``scratch`` re-initialises every parameter of a copy of the architecture.
        eval_steps: PGD steps of the robust-accuracy estimate on the test split after training
            (0: skip it).
        eval_samples: test rows of that estimate (the first ones).
    """

    model_config = ConfigDict(extra="forbid")

    epsilon: float = Field(default=0.1, gt=0, le=1000)
    steps: int = Field(default=7, ge=1, le=100)
    step_size: float | None = Field(default=None, gt=0, le=1000)
    epochs: int = Field(default=10, ge=1, le=1000)
    lr: float = Field(default=3e-3, gt=0, le=1.0)
    batch_size: int = Field(default=32, ge=1, le=65_536)
    init: Literal["finetune", "scratch"] = "finetune"
    eval_steps: int = Field(default=20, ge=0, le=200)
    eval_samples: int = Field(default=500, ge=1, le=100_000)


class AdversarialTrainer(Defence):
    """Base of the adversarial-training defences: preflight, the seeded loop, evaluation and output.

    Subclasses set the plugin attributes and implement :meth:`batch_loss`.
    """

    frameworks: ClassVar[frozenset[str]] = frozenset({"torch"})
    Params: ClassVar[type[BaseModel]] = AdversarialTrainingParams

    def preflight(self, ctx: HardenContext) -> list[str]:
        """The base problems, a model_class and logits, and ε against the input range."""
        problems = super().preflight(ctx)
        if problems:
            return problems
        problems += torch_problems(ctx, self.id)
        p = cast(AdversarialTrainingParams, ctx.params)
        try:
            problems += eps_problems(bounds_for(ctx), p.epsilon, self.id)
        except ConfigError as exc:
            problems += exc.problems or [str(exc)]
        return problems

    def batch_loss(
        self,
        model: torch.nn.Module,
        xb: torch.Tensor,
        yb: torch.Tensor,
        box: TorchBox,
        gen: torch.Generator,
        params: BaseModel,
    ) -> torch.Tensor:  # pragma: no cover - abstract
        """The training loss of one batch (mean over rows)."""
        raise NotImplementedError

    def extra_details(self, params: BaseModel) -> dict[str, Any]:
        """Procedure-specific entries of ``Hardened.details``."""
        return {}

    def harden(self, ctx: HardenContext) -> Hardened:
        """Train a copy of the asset's model on adversarial examples and return its state_dict.

        Deterministic under ``ctx.seed`` (torch's CPU kernels, one seeded generator for the
        shuffles and random starts).

        Raises:
            ConfigError: no labelled train split, or unresolvable input bounds.
            MissingExtraError: torch is not installed.
        """
        import torch

        p = cast(AdversarialTrainingParams, ctx.params)
        t0 = time.monotonic()
        train = labelled(ctx.data.get("train"))
        if train is None:
            raise ConfigError(f"{self.id}: {ctx.asset.name} has no labelled train split")
        x_train, y_train = train
        bounds = bounds_for(ctx)
        step = p.step_size if p.step_size is not None else 2.5 * p.epsilon / p.steps
        box = TorchBox.of(bounds, p.epsilon, step)
        gen = seed_everything(ctx.seed)
        model = fresh_copy(ctx.target.module, reset=p.init == "scratch")
        opt = torch.optim.Adam(model.parameters(), lr=p.lr)
        xt = torch.as_tensor(x_train)
        yt = torch.as_tensor(y_train)
        model.train()
        losses: list[float] = []
        for epoch in range(p.epochs):
            perm = torch.randperm(len(xt), generator=gen)
            total = 0.0
            for i in range(0, len(xt), p.batch_size):
                idx = perm[i : i + p.batch_size]
                loss = self.batch_loss(model, xt[idx], yt[idx], box, gen, p)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            losses.append(total / len(xt))
            ctx.report_progress((epoch + 1) / p.epochs)
            log.debug("%s epoch %d/%d loss %.4f", self.id, epoch + 1, p.epochs, losses[-1])
        model.eval()
        train_seconds = time.monotonic() - t0
        details: dict[str, Any] = {
            "epochs": p.epochs,
            "epsilon": p.epsilon,
            "eps_unit": bounds.unit,
            "steps": p.steps,
            "step_size": step,
            "init": p.init,
            "final_loss": round(losses[-1], 6),
            "train_accuracy": round(accuracy(model, x_train, y_train), 6),
            "train_seconds": round(train_seconds, 3),
            **self.extra_details(p),
        }
        test = labelled(ctx.data.get("test"))
        if test is not None:
            xs, ys = test[0][: p.eval_samples], test[1][: p.eval_samples]
            details["test_accuracy"] = round(accuracy(model, xs, ys), 6)
            details["test_accuracy_before"] = round(accuracy(ctx.target.module, xs, ys), 6)
            if p.eval_steps:
                eval_box = TorchBox.of(bounds, p.epsilon, 2.5 * p.epsilon / p.eval_steps)
                details["robust_test_accuracy"] = round(
                    robust_accuracy(model, xs, ys, eval_box, p.eval_steps, ctx.seed + 1), 6
                )
                details["robust_test_accuracy_before"] = round(
                    robust_accuracy(ctx.target.module, xs, ys, eval_box, p.eval_steps, ctx.seed + 1), 6
                )
                details["eval_steps"] = p.eval_steps
        if bounds.notes:
            details["bounds"] = "; ".join(bounds.notes)
        log.info("%s on %s: %s", self.id, ctx.asset.name, details)
        return Hardened(
            payload=state_dict_bytes(model),
            format="torch",
            extension=".pt",
            model_class=ctx.asset.model_class,
            model_kwargs=dict(ctx.asset.model_kwargs),
            details=details,
        )
