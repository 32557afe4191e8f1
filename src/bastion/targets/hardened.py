"""Output hardening: a target that reveals less of its scores than the model it wraps.

A deployed classifier need not publish its full probability vector. :class:`HardenedTarget`
wraps any :class:`~bastion.targets.base.Target` and post-processes what it returns, as the
asset's ``output`` section in ``bastion.yaml`` asks (:class:`bastion.core.config.OutputSpec`):

1. ``temperature`` ``T``: ``p = softmax(z / T)`` with ``z`` the wrapped target's logits, or its
   log-probabilities when it offers none (the same result: a softmax ignores a per-row shift).
2. ``top_k``: keep the ``k`` largest probabilities of each row (ties to the lower class index),
   set the rest to 0 and **renormalise** the kept ones to sum to 1. Renormalising keeps the
   target contract (rows of ``predict_proba`` sum to 1) and removes the tail's total mass,
   which is itself a membership signal (the loss attack's score is ``log p_y − log Σ_{c≠y} p_c``);
   the renormalised vector is a function of the unrenormalised one, so it never reveals more.
   ``top_k: 1`` then returns one-hot vectors: the label, through the probability interface.
3. ``decimals``: round every probability to that many decimals; the top class keeps at least
   ``10**-decimals`` so a row is never all zeros. Rows then sum to 1 only up to rounding.

``label_only`` returns labels and nothing else. The predicted label is always the wrapped
target's (rounding can tie two classes; the served label stays the model's).

Capabilities are declared honestly, so the planner and each check's ``applicable`` skip
what no longer fits: ``LOSS_GRADIENTS`` is never offered (top-k and rounding have no useful
gradient, and a white-box attacker would bypass the hardening anyway), ``LOGITS`` only when
temperature is the sole transformation (``z / T``), ``PROBABILITIES`` unless ``label_only``
(which declares ``LABEL_ONLY``); ``BATCHED`` and ``QUERY_LIMITED`` pass through.

Threat model: black-box attackers of a served model (membership inference, extraction,
score-based evasion). Hardening the output does not change the model: label-only attacks
(boundary distance, arXiv:2007.14321) still work, and only training-time defences such as
DP-SGD bound the leakage. References: Shokri et al. 2017 (arXiv:1610.05820) §VI evaluate top-k
and rounding; Choquette-Choo et al. 2021 (arXiv:2007.14321) show label-only attacks defeat
confidence masking.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bastion.core.capability import Capability
from bastion.core.config import OutputSpec
from bastion.core.errors import ConfigError
from bastion.targets.base import Target

_SCORES = frozenset({Capability.PROBABILITIES, Capability.LOGITS})
_PASS = frozenset({Capability.BATCHED, Capability.QUERY_LIMITED})


def hardened_capabilities(inner: frozenset[Capability], spec: OutputSpec | None) -> frozenset[Capability]:
    """What a target offering ``inner`` offers once ``spec`` hardens its output.

    Args:
        inner: the wrapped target's capabilities.
        spec: the output hardening (``None``: ``inner`` unchanged).

    Returns:
        The hardened capabilities (see the module docstring).
    """
    if spec is None:
        return frozenset(inner)
    passed = frozenset(inner) & _PASS
    if spec.label_only or not (frozenset(inner) & _SCORES):
        return passed | {Capability.LABEL_ONLY}
    caps = set(passed) | {Capability.PROBABILITIES}
    if Capability.LOGITS in inner and spec.top_k is None and spec.decimals is None:
        caps.add(Capability.LOGITS)
    return frozenset(caps)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def harden_probabilities(proba: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """Apply ``top_k`` then ``decimals`` of ``spec`` to probabilities (temperature is applied before).

    Args:
        proba: ``(N, C)`` probabilities, rows summing to 1.
        spec: the hardening; its ``temperature`` and ``label_only`` are ignored here.

    Returns:
        ``(N, C)`` float64: the top ``k`` of each row renormalised, then rounded.
    """
    p = np.array(proba, dtype=np.float64, copy=True)
    n, c = p.shape
    rows = np.arange(n)
    if spec.top_k is not None and spec.top_k < c:
        keep = np.argsort(-p, axis=1, kind="stable")[:, : spec.top_k]
        mask = np.zeros_like(p, dtype=bool)
        mask[rows[:, None], keep] = True
        p = np.where(mask, p, 0.0)
        p = p / np.maximum(p.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    if spec.decimals is not None:
        top = p.argmax(axis=1)
        p = np.round(p, spec.decimals)
        p[rows, top] = np.maximum(p[rows, top], 10.0 ** (-spec.decimals))
    return p


class HardenedTarget(Target):
    """A target whose outputs are tempered, truncated to the top ``k``, rounded or reduced to labels.

    Args:
        inner: the target to wrap (any kind).
        spec: the output hardening (:class:`bastion.core.config.OutputSpec`).
        name: asset name (default: ``inner.name``).

    Shapes: ``x: (N, *input_shape)`` float32 → probabilities ``(N, num_classes)`` float64,
    labels ``(N,)`` int64.

    Each row sent to this target is one query against its own meter; ``inner`` is called
    unmetered (its ``queries`` counter still counts what it answered).

    Raises:
        ConfigError: scores are to be hardened but ``inner`` returns labels only.
    """

    kind: ClassVar[str] = "hardened"

    def __init__(self, inner: Target, spec: OutputSpec, *, name: str | None = None) -> None:
        if not spec.label_only and not (inner.capabilities & _SCORES):
            raise ConfigError(
                f"asset {name or inner.name!r}: output: the model returns labels only; "
                "there are no scores to harden (use output.label_only or remove output)"
            )
        super().__init__(
            name=name or inner.name,
            input_shape=inner.input_shape,
            num_classes=inner.num_classes,
            capabilities=hardened_capabilities(inner.capabilities, spec),
        )
        self.inner = inner
        self.spec = spec

    def _raw_logits(self, x: np.ndarray) -> np.ndarray:
        """The wrapped target's logits, or its log-probabilities when it has no logits."""
        if Capability.LOGITS in self.inner.capabilities:
            return np.asarray(self.inner.predict_logits(x), dtype=np.float64)
        p = np.asarray(self.inner.predict_proba(x), dtype=np.float64)
        with np.errstate(divide="ignore"):
            return np.log(p)

    def _predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.spec.temperature is not None:
            proba = _softmax(self._raw_logits(x) / self.spec.temperature)
        elif Capability.PROBABILITIES in self.inner.capabilities:
            proba = np.asarray(self.inner.predict_proba(x), dtype=np.float64)
        else:
            proba = _softmax(np.asarray(self.inner.predict_logits(x), dtype=np.float64))
        return harden_probabilities(proba, self.spec)

    def _predict_logits(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(self.inner.predict_logits(x), dtype=np.float64)
        return z / self.spec.temperature if self.spec.temperature is not None else z

    def _predict_label(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.inner.predict_label(x), dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        """The base summary plus the hardening and the wrapped target's summary."""
        out = super().describe()
        out["output"] = self.spec.model_dump(exclude_defaults=True)
        out["inner"] = self.inner.describe()
        return out


def harden_output(target: Target, spec: OutputSpec | None) -> Target:
    """``target`` wrapped in a :class:`HardenedTarget` when ``spec`` is set, else ``target`` itself."""
    if spec is None:
        return target
    return HardenedTarget(target, spec, name=target.name)


__all__ = ["HardenedTarget", "harden_output", "harden_probabilities", "hardened_capabilities"]
