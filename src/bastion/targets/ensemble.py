"""An ensemble of targets that averages their class probabilities, assessed like any target.

``p(x) = (1/M) Σ_m p_m(x)``. Capabilities are the intersection of the members' (``LOGITS`` is
never offered: an average of probabilities has no logits of its own), except ``LOSS_GRADIENTS``,
which is offered only when every member is a torch target holding a module: then the ensemble
exposes :attr:`EnsembleTarget.module`, an ``nn.Module`` returning ``log p(x)``, and the loss
gradient is the gradient of the cross-entropy of the *averaged* probabilities, ``-log p_y(x)``,
computed by autograd through every member (native torch attacks use the module directly).
An average of scikit-learn or ONNX members offers no gradients.

Each row sent to the ensemble is one query against the ensemble's meter (the members are called
unmetered); the members' own ``queries`` counters still count what they answered.

Threat model: white-box when every member is (the attacker differentiates the whole ensemble),
otherwise score-based.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bastion.core.capability import Capability
from bastion.core.errors import ConfigError, TargetError
from bastion.targets.base import Target

if TYPE_CHECKING:
    import torch


def _torch_module(member: Target) -> Any:
    """The member's torch module when it is a torch target returning logits or probabilities."""
    return getattr(member, "module", None) if member.kind == "torch" else None


def _average_module(members: Sequence[Target]) -> torch.nn.Module:
    """An ``nn.Module`` mapping ``x`` to ``log`` of the members' averaged probabilities."""
    import torch

    class _LogMeanProbs(torch.nn.Module):
        def __init__(self, mods: list[torch.nn.Module], outputs: list[str]) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(mods)
            self.outputs = outputs

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            probs = []
            for mod, out in zip(self.members, self.outputs, strict=True):
                z = mod(x)
                if isinstance(z, (tuple, list)):
                    z = z[0]
                probs.append(torch.softmax(z, dim=1) if out == "logits" else z)
            mean = torch.stack(probs).mean(dim=0)
            return torch.log(mean.clamp_min(1e-12))

    mods = [_torch_module(m) for m in members]
    outputs = [str(getattr(m, "output", "logits")) for m in members]
    return _LogMeanProbs(mods, outputs).eval()


class EnsembleTarget(Target):
    """Several classifiers answering as one: the average of their probabilities.

    Args:
        members: two or more targets with the same input shape and number of classes, each
            offering ``PROBABILITIES``.
        name: the ensemble's asset name (default: the members' names joined by ``+``).

    Capabilities:
        ``PROBABILITIES``; ``BATCHED`` / ``QUERY_LIMITED`` when every member has them;
        ``LOSS_GRADIENTS`` when every member is a torch target (see the module docstring).

    Shapes: ``x: (N, *input_shape)`` float32 → probabilities ``(N, num_classes)``.

    Raises:
        ConfigError: fewer than two members, or members that differ in input shape or classes,
            or a member without probabilities (every problem listed).
    """

    kind: ClassVar[str] = "ensemble"

    def __init__(self, members: Sequence[Target], *, name: str | None = None) -> None:
        members = list(members)
        problems: list[str] = []
        if len(members) < 2:
            problems.append(f"an ensemble needs at least two members, got {len(members)}")
        if members:
            shape, classes = members[0].input_shape, members[0].num_classes
            for m in members:
                if m.input_shape != shape:
                    problems.append(f"member {m.name}: input shape {m.input_shape}, the first takes {shape}")
                if m.num_classes != classes:
                    problems.append(f"member {m.name}: {m.num_classes} classes, the first has {classes}")
                if Capability.PROBABILITIES not in m.capabilities:
                    problems.append(
                        f"member {m.name}: offers no probabilities (label-only members cannot be averaged)"
                    )
        if problems:
            raise ConfigError(f"invalid ensemble {name or ''}".rstrip(), problems)
        caps = {Capability.PROBABILITIES}
        for cap in (Capability.BATCHED, Capability.QUERY_LIMITED):
            if all(cap in m.capabilities for m in members):
                caps.add(cap)
        self.module: torch.nn.Module | None = None
        if all(_torch_module(m) is not None for m in members):
            caps.add(Capability.LOSS_GRADIENTS)
            self.module = _average_module(members)
        super().__init__(
            name=name or "+".join(m.name for m in members),
            input_shape=members[0].input_shape,
            num_classes=members[0].num_classes,
            capabilities=frozenset(caps),
        )
        self.members = members

    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        total = np.zeros((len(x), self.num_classes), dtype=np.float64)
        for m in self.members:
            total += np.asarray(m.predict_proba(x), dtype=np.float64)
        return total / len(self.members)

    def _loss_gradient(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Gradient of ``-log p_y(x)`` for the averaged ``p`` (summed over rows), via torch."""
        import torch

        if self.module is None:  # pragma: no cover - guarded by capabilities
            raise TargetError(f"{self.name}: loss gradients need every member to be a torch target")
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).requires_grad_(True)
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        with torch.enable_grad():
            loss = torch.nn.functional.nll_loss(self.module(xt), yt, reduction="sum")
            (g,) = torch.autograd.grad(loss, xt)
        return np.asarray(g.detach().numpy(), dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        """The base summary plus the members' summaries."""
        out = super().describe()
        out["members"] = [{"name": m.name, **m.describe()} for m in self.members]
        return out
