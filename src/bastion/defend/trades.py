"""``defend.trades``: TRADES adversarial training (Zhang et al. 2019, arXiv:1901.08573).

Minimises ``CE(f(x), y) + β · KL(f(x) ‖ f(x'))`` where ``x'`` maximises the KL divergence
inside the ε-ball intersected with the input's declared bounds (PGD on the KL, started at
``x + 0.001·N(0, 1)``). ``β`` trades clean accuracy (small β) for robustness (large β; the
paper uses 6).

Starting point as in :mod:`bastion.defend.adversarial_training` (``init: finetune`` by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, cast

from pydantic import BaseModel, Field

from bastion.core.registry import register
from bastion.defend._training import AdversarialTrainer, AdversarialTrainingParams, TorchBox, trades_examples

if TYPE_CHECKING:
    import torch


class TRADESParams(AdversarialTrainingParams):
    """Parameters of ``defend.trades`` (see :class:`~bastion.defend._training.AdversarialTrainingParams`).

    Attributes:
        beta: weight of the robustness (KL) term, 0..100 (the paper's default is 6).
    """

    beta: float = Field(default=6.0, ge=0.0, le=100.0)


@register("defence")
class TRADES(AdversarialTrainer):
    """TRADES adversarial training of a torch classifier.

    Threat model defended: a white-box L∞ attacker with budget ``epsilon`` (in the ε unit).

    Shapes: train inputs ``(N, *input_shape)`` float32, labels ``(N,)``.

    Output: a state_dict of the asset's ``model_class``; details as ``defend.pgd-at`` plus ``beta``.

    Source: Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, "Theoretically Principled Trade-off between
    Robustness and Accuracy", ICML 2019, arXiv:1901.08573.
    """

    id: ClassVar[str] = "defend.trades"
    title: ClassVar[str] = "TRADES adversarial training"
    Params: ClassVar[type[BaseModel]] = TRADESParams
    references: ClassVar[tuple[str, ...]] = (
        "Zhang et al. 2019, Theoretically Principled Trade-off between Robustness and Accuracy, "
        "arXiv:1901.08573",
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
        """``CE(f(x), y) + β/n · Σ KL(f(x) ‖ f(x'))``."""
        import torch.nn.functional as F

        p = cast(TRADESParams, params)
        adv = trades_examples(model, xb, box, p.steps, gen)
        logits = model(xb)
        robust = F.kl_div(F.log_softmax(model(adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return F.cross_entropy(logits, yb) + p.beta * robust

    def extra_details(self, params: BaseModel) -> dict[str, Any]:
        """``beta``."""
        return {"beta": cast(TRADESParams, params).beta}
