"""``defend.distill``: a smaller student trained from a teacher's soft labels (Hinton et al. 2015).

Knowledge distillation (Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network",
arXiv:1503.02531): the student minimises

    (1 - α) · T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)) + α · CE(z_s, y)

over the train split (and, with ``use_population``, the unlabelled ``population`` split, where
only the soft term applies), with ``z_t`` the teacher's logits (``log p`` when it gives only
probabilities). The student is a class shipped in :mod:`bastion.defend.students`: a
:class:`~bastion.defend.students.StudentCNN` for image inputs ``(C, H, W)``, else a
:class:`~bastion.defend.students.StudentMLP` on the flattened input.

Distillation is a compression step, not a robustness guarantee: "defensive distillation"
(Papernot et al. 2016) was broken by Carlini & Wagner (arXiv:1608.04644). ``bastion assess``
reports the student's accuracy, robustness and membership leakage beside the teacher's.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, ClassVar, Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.core.capability import Capability
from bastion.core.errors import ConfigError
from bastion.core.registry import register
from bastion.defend._training import accuracy, labelled, seed_everything, state_dict_bytes
from bastion.defend.base import Defence, HardenContext, Hardened

log = logging.getLogger(__name__)


class DistillParams(BaseModel):
    """Parameters of ``defend.distill``.

    Attributes:
        temperature: softmax temperature ``T`` of the soft labels (1..100; Hinton et al. use 2–20).
        alpha: weight of the hard-label cross-entropy (0: soft labels only).
        epochs: passes over the training rows.
        lr: Adam learning rate.
        batch_size: rows per optimiser step.
        architecture: ``auto`` (CNN for ``(C, H, W)`` inputs, else MLP), ``mlp`` or ``cnn``.
        hidden: hidden units of the MLP student.
        channels: convolution channels of the CNN student.
        use_population: also train on the ``population`` split's inputs, with soft labels only.
    """

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=4.0, ge=1.0, le=100.0)
    alpha: float = Field(default=0.1, ge=0.0, le=1.0)
    epochs: int = Field(default=60, ge=1, le=1000)
    lr: float = Field(default=3e-3, gt=0, le=1.0)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    architecture: Literal["auto", "mlp", "cnn"] = "auto"
    hidden: int = Field(default=32, ge=1, le=4096)
    channels: int = Field(default=8, ge=1, le=512)
    use_population: bool = False


@register("defence")
class Distillation(Defence):
    """Distil a torch teacher into a smaller student shipped with Bastion.

    Threat model: none defended by itself; a smaller model may leak less membership signal and is
    cheaper to harden further. The version is assessed beside the teacher.

    Shapes: train inputs ``(N, *input_shape)`` float32, labels ``(N,)``.

    Output: a state_dict of ``bastion.defend.students:StudentCNN`` or ``:StudentMLP`` with its
    ``model_kwargs``; details ``epochs``, ``temperature``, ``train_accuracy``, ``test_accuracy``,
    ``teacher_test_accuracy``, ``student_parameters``, ``teacher_parameters``, ``train_seconds``.

    Source: Hinton, Vinyals, Dean 2015, arXiv:1503.02531.
    """

    id: ClassVar[str] = "defend.distill"
    title: ClassVar[str] = "Knowledge distillation into a smaller student"
    frameworks: ClassVar[frozenset[str]] = frozenset({"torch"})
    Params: ClassVar[type[BaseModel]] = DistillParams
    references: ClassVar[tuple[str, ...]] = (
        "Hinton, Vinyals, Dean 2015, Distilling the Knowledge in a Neural Network, arXiv:1503.02531",
        "Carlini, Wagner 2016, Defensive Distillation is Not Robust to Adversarial Examples, "
        "arXiv:1607.04311",
    )
    threat_model: ClassVar[str] = "Compression; robustness and leakage are measured by bastion assess."

    def preflight(self, ctx: HardenContext) -> list[str]:
        """The base problems, a classifier with scores and classes, and a student that fits the input."""
        problems = super().preflight(ctx)
        p = cast(DistillParams, ctx.params)
        if ctx.asset.task != "classification":
            problems.append(f"{self.id} distils classifiers; {ctx.asset.name} is a {ctx.asset.task} model")
        caps: frozenset[Capability] = getattr(ctx.target, "capabilities", frozenset())
        if Capability.LOGITS not in caps and Capability.PROBABILITIES not in caps:
            problems.append(
                f"{self.id} needs the teacher's logits or probabilities; {ctx.asset.name} gives labels"
            )
        if not ctx.asset.num_classes:
            problems.append(f"{self.id} needs num_classes on {ctx.asset.name}")
        train = ctx.data.get("train")
        if train is not None and len(train.x):
            shape = tuple(train.x.shape[1:])
            if p.architecture == "cnn" and len(shape) != 3:
                problems.append(
                    f"{self.id}: architecture cnn needs (C, H, W) inputs; "
                    f"{ctx.asset.name} takes {list(shape)}"
                )
            elif self._arch(p, shape) == "cnn" and (shape[1] < 2 or shape[2] < 2):
                problems.append(f"{self.id}: images of {list(shape)} are too small for the CNN student")
        if p.use_population:
            pop = ctx.data.get("population")
            if pop is None or len(pop.x) == 0:
                problems.append(
                    f"{self.id}: use_population is set but {ctx.asset.name}'s dataset has no population split"
                )
        return problems

    @staticmethod
    def _arch(p: DistillParams, shape: tuple[int, ...]) -> str:
        if p.architecture != "auto":
            return p.architecture
        return "cnn" if len(shape) == 3 else "mlp"

    def _teacher_logits(self, target: Any, x: np.ndarray) -> np.ndarray:
        if Capability.LOGITS in target.capabilities:
            return np.asarray(target.predict_logits(x), dtype=np.float32)
        proba = np.asarray(target.predict_proba(x), dtype=np.float64)
        return np.log(np.clip(proba, 1e-12, 1.0)).astype(np.float32)

    def harden(self, ctx: HardenContext) -> Hardened:
        """Train the student on the teacher's soft labels and return its state_dict.

        Raises:
            ConfigError: no labelled train split.
            MissingExtraError: torch is not installed.
        """
        import torch
        import torch.nn.functional as F

        from bastion.defend.students import StudentCNN, StudentMLP, count_parameters

        p = cast(DistillParams, ctx.params)
        t0 = time.monotonic()
        train = labelled(ctx.data.get("train"))
        if train is None:
            raise ConfigError(f"{self.id}: {ctx.asset.name} has no labelled train split")
        x_train, y_train = train
        shape = tuple(int(d) for d in x_train.shape[1:])
        n_classes = int(ctx.asset.num_classes or ctx.target.num_classes)
        xs = [x_train]
        ys = [y_train]
        if p.use_population:
            pop = ctx.data["population"]
            xs.append(np.asarray(pop.x, dtype=np.float32))
            ys.append(np.full(len(pop.x), -1, dtype=np.int64))  # -1: no hard label
        x_all = np.concatenate(xs)
        y_all = np.concatenate(ys)
        soft = self._teacher_logits(ctx.target, x_all)

        gen = seed_everything(ctx.seed)
        arch = self._arch(p, shape)
        kwargs: dict[str, Any]
        student: torch.nn.Module
        if arch == "cnn":
            kwargs = {
                "channels": p.channels,
                "n_classes": n_classes,
                "in_channels": shape[0],
                "height": shape[1],
                "width": shape[2],
            }
            student = StudentCNN(**kwargs)
            cls_ref = "bastion.defend.students:StudentCNN"
        else:
            kwargs = {"n_features": math.prod(shape), "hidden": p.hidden, "n_classes": n_classes}
            mlp = StudentMLP(**kwargs)
            flat = x_train.reshape(len(x_train), -1).astype(np.float64)
            mlp.mean.copy_(torch.as_tensor(flat.mean(axis=0), dtype=torch.float32))
            mlp.scale.copy_(torch.as_tensor(flat.std(axis=0) + 1e-6, dtype=torch.float32))
            student = mlp
            cls_ref = "bastion.defend.students:StudentMLP"
        opt = torch.optim.Adam(student.parameters(), lr=p.lr)
        xt, yt, zt = torch.as_tensor(x_all), torch.as_tensor(y_all), torch.as_tensor(soft)
        temp = p.temperature
        student.train()
        for epoch in range(p.epochs):
            perm = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), p.batch_size):
                idx = perm[i : i + p.batch_size]
                z = student(xt[idx])
                target_p = F.softmax(zt[idx] / temp, dim=1)
                loss = (
                    (1.0 - p.alpha)
                    * temp
                    * temp
                    * F.kl_div(F.log_softmax(z / temp, dim=1), target_p, reduction="batchmean")
                )
                hard = yt[idx] >= 0
                if p.alpha > 0 and bool(hard.any()):
                    loss = loss + p.alpha * F.cross_entropy(z[hard], yt[idx][hard])
                opt.zero_grad()
                loss.backward()
                opt.step()
            ctx.report_progress((epoch + 1) / p.epochs)
        student.eval()
        teacher_module = getattr(ctx.target, "module", None)
        details: dict[str, Any] = {
            "epochs": p.epochs,
            "temperature": temp,
            "alpha": p.alpha,
            "architecture": arch,
            "train_rows": len(x_all),
            "train_accuracy": round(accuracy(student, x_train, y_train), 6),
            "student_parameters": count_parameters(student),
            "train_seconds": round(time.monotonic() - t0, 3),
        }
        if teacher_module is not None:
            details["teacher_parameters"] = sum(q.numel() for q in teacher_module.parameters())
        test = labelled(ctx.data.get("test"))
        if test is not None:
            details["test_accuracy"] = round(accuracy(student, test[0], test[1]), 6)
            teacher_pred = np.asarray(ctx.target.predict_label(test[0]))
            details["teacher_test_accuracy"] = round(float((teacher_pred == test[1]).mean()), 6)
            student_pred = self._student_labels(student, test[0])
            details["agreement_with_teacher"] = round(float((student_pred == teacher_pred).mean()), 6)
        log.info("%s on %s: %s", self.id, ctx.asset.name, details)
        return Hardened(
            payload=state_dict_bytes(student),
            format="torch",
            extension=".pt",
            model_class=cls_ref,
            model_kwargs=kwargs,
            details=details,
        )

    @staticmethod
    def _student_labels(student: Any, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return np.asarray(student(torch.as_tensor(x)).argmax(dim=1).numpy())
