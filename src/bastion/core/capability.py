"""What a target offers an attack; attacks declare what they require."""

from __future__ import annotations

from enum import Enum


class Capability(str, Enum):
    """A capability of a target (a model or an endpoint).

    ``PROBABILITIES``: returns class probabilities. ``LOGITS``: returns raw scores.
    ``LABEL_ONLY``: returns only the predicted label. ``LOSS_GRADIENTS``: gradients of a
    loss with respect to the input are available (white-box). ``BATCHED``: accepts a batch
    per call. ``QUERY_LIMITED``: every query counts against a budget (a remote endpoint).
    """

    PROBABILITIES = "probabilities"
    LOGITS = "logits"
    LABEL_ONLY = "label-only"
    LOSS_GRADIENTS = "loss-gradients"
    BATCHED = "batched"
    QUERY_LIMITED = "query-limited"


def missing(requires: frozenset[Capability], offers: frozenset[Capability]) -> list[Capability]:
    """The required capabilities a target does not offer, in declaration order."""
    return [c for c in Capability if c in requires and c not in offers]
