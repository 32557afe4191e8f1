"""Robust membership inference, RMIA (Zarifzadeh et al. 2024, arXiv:2312.03262)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydantic import Field

from bastion.assess import metrics as M
from bastion.assess.membership._refbased import Audit, RefBasedAttack, RefParams
from bastion.core.registry import register


class RmiaParams(RefParams):
    """Parameters of ``membership.rmia``: those of LiRA plus ``gamma`` and ``offline_a``.

    Attributes:
        gamma: the pairwise likelihood-ratio threshold γ.
        offline_a: the paper's linear correction ``a`` of ``Pr(x)`` with offline references.
    """

    gamma: float = Field(default=1.0, gt=0.0)
    offline_a: float = Field(default=0.3, ge=0.0, le=1.0)


@register("attack")
class MembershipRmia(RefBasedAttack):
    """RMIA: compare the target's likelihood ratio on ``x`` with that on population records ``z``.

    Threat model: as LiRA; strong with few reference models, since the pairwise test against
    many ``z`` replaces per-record distribution fits.

    Metrics, data and budget: as ``membership.lira``.

    References: Zarifzadeh et al. 2024, "Low-Cost High-Power Membership Inference Attacks",
    arXiv:2312.03262.
    """

    id: ClassVar[str] = "membership.rmia"
    title: ClassVar[str] = "Membership inference (RMIA)"
    Params = RmiaParams
    needs_z = True
    references: ClassVar[tuple[str, ...]] = (
        "Zarifzadeh et al. 2024, Low-Cost High-Power Membership Inference Attacks, arXiv:2312.03262",
    )
    threat_model: ClassVar[str] = (
        "Black-box attacker with class probabilities, labelled candidates, population data and the "
        "training recipe tests each record's likelihood ratio against those of population records."
    )

    def scores(self, audit: Audit, params: RefParams) -> np.ndarray:
        """RMIA scores of the audited records, members first."""
        assert isinstance(params, RmiaParams)
        k = 2 * audit.n
        rows = np.arange(k)
        zrows = np.arange(len(audit.y_z))
        tp_x = audit.target_proba[rows, audit.y_audit]
        rp_x = audit.ref_proba[:, rows, audit.y_audit]
        tp_z = audit.target_proba[k + zrows, audit.y_z]
        rp_z = audit.ref_proba[:, k + zrows, audit.y_z]
        return M.rmia_scores(
            tp_x,
            rp_x,
            tp_z,
            rp_z,
            gamma=params.gamma,
            offline_a=params.offline_a if audit.mode == "offline" else None,
        )
