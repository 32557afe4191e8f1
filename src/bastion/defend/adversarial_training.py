"""``defend.pgd-at``: adversarial training with PGD examples (Madry et al. 2018, arXiv:1706.06083).

Solves ``min_θ E[max_{δ ∈ B} CE(f_θ(x + δ), y)]``: every optimiser step trains on L∞ PGD
examples (random start, ``steps`` signed-gradient steps) found against the current weights,
where ``B`` is the ε-ball intersected with the input's declared bounds (immutable and categorical
features fixed; see :mod:`bastion.defend._training`).

Starting point: ``init: finetune`` (default) fine-tunes a copy of the loaded weights — on the
clinic digits CNN it reaches the robust target in a few seconds, where training from scratch
(``init: scratch``, a copy of the architecture with every parameter re-initialised) needs more
epochs for the same clean accuracy. The asset's architecture is kept, so the version loads with
the asset's own ``model_class``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

from pydantic import BaseModel, Field

from bastion.core.registry import register
from bastion.defend._training import AdversarialTrainer, AdversarialTrainingParams, TorchBox, pgd_examples

if TYPE_CHECKING:
    import torch


class PGDATParams(AdversarialTrainingParams):
    """Parameters of ``defend.pgd-at`` (see :class:`~bastion.defend._training.AdversarialTrainingParams`).

    Attributes:
        clean_weight: weight of the clean cross-entropy mixed into the loss
            (``(1 - w)·CE(adv) + w·CE(clean)``; 0 is Madry et al.'s pure adversarial loss).
    """

    clean_weight: float = Field(default=0.0, ge=0.0, le=1.0)


@register("defence")
class PGDAdversarialTraining(AdversarialTrainer):
    """PGD adversarial training of a torch classifier.

    Threat model defended: a white-box L∞ attacker with budget ``epsilon`` (in the ε unit).

    Shapes: train inputs ``(N, *input_shape)`` float32, labels ``(N,)``.

    Output: a state_dict of the asset's ``model_class`` with details ``epochs``, ``epsilon``,
    ``train_accuracy``, ``test_accuracy`` (and ``_before``), ``robust_test_accuracy`` (and
    ``_before``: PGD with ``eval_steps`` at ``epsilon`` on the first ``eval_samples`` test rows),
    ``train_seconds``.

    Source: Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to
    Adversarial Attacks", ICLR 2018, arXiv:1706.06083.
    """

    id: ClassVar[str] = "defend.pgd-at"
    title: ClassVar[str] = "PGD adversarial training"
    Params: ClassVar[type[BaseModel]] = PGDATParams
    references: ClassVar[tuple[str, ...]] = (
        "Madry et al. 2018, Towards Deep Learning Models Resistant to Adversarial Attacks, arXiv:1706.06083",
    )
    threat_model: ClassVar[str] = "Defends against a white-box L∞ attacker with budget epsilon."

    def batch_loss(
        self,
        model: torch.nn.Module,
        xb: torch.Tensor,
        yb: torch.Tensor,
        box: TorchBox,
        gen: torch.Generator,
        params: BaseModel,
    ) -> torch.Tensor:
        """Cross-entropy on PGD examples (mixed with the clean loss when ``clean_weight > 0``)."""
        import torch.nn.functional as F

        p = cast(PGDATParams, params)
        adv = pgd_examples(model, xb, yb, box, p.steps, gen)
        loss = F.cross_entropy(model(adv), yb)
        if p.clean_weight > 0:
            loss = (1.0 - p.clean_weight) * loss + p.clean_weight * F.cross_entropy(model(xb), yb)
        return loss

    def extra_details(self, params: BaseModel) -> dict[str, Any]:
        """``clean_weight``."""
        return {"clean_weight": cast(PGDATParams, params).clean_weight}
