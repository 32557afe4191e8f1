"""The Likelihood Ratio Attack, online and offline (Carlini et al. 2022, arXiv:2112.03570)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from bastion.assess import metrics as M
from bastion.assess.membership._refbased import Audit, RefBasedAttack, RefParams
from bastion.core.registry import register


@register("attack")
class MembershipLira(RefBasedAttack):
    """LiRA: per-record Gaussian fits of the logit-scaled confidence under IN and OUT models.

    Threat model: a black-box attacker with the target's probabilities, labelled candidate
    records, data from the same distribution and the training recipe trains ``K`` reference
    models and asks, per record, whether the target's confidence looks like that of models
    trained with the record (online) or is improbably high for models trained without it
    (offline). The strongest practical attack at low FPR.

    Data and budget: as ``membership.threshold``, plus the ``population`` split for
    reference-model training; ``2n + z_count`` target queries (the shared RMIA query set).

    Metrics: those of ``membership.threshold`` (``auc``, ``tpr@fpr=<f>`` with intervals,
    ``advantage``, ``balanced_accuracy``, ``epsilon_lower_bound``, calibrated operating point),
    ``claimed_epsilon`` on a DP-trained version; a critical ``dp-claim-violated`` finding when
    the lower bound exceeds it.

    References: Carlini et al. 2022, "Membership Inference Attacks From First Principles",
    arXiv:2112.03570.
    """

    id: ClassVar[str] = "membership.lira"
    title: ClassVar[str] = "Membership inference (LiRA)"
    references: ClassVar[tuple[str, ...]] = (
        "Carlini et al. 2022, Membership Inference Attacks From First Principles, arXiv:2112.03570",
    )
    threat_model: ClassVar[str] = (
        "Black-box attacker with class probabilities, labelled candidates, same-distribution data "
        "and the training recipe compares the target with reference models trained with and "
        "without each record."
    )

    def scores(self, audit: Audit, params: RefParams) -> np.ndarray:
        """Online or offline LiRA scores of the audited records, members first."""
        k = 2 * audit.n
        t_stat = M.logit_confidence(audit.target_proba[:k], audit.y_audit)
        r_stat = M.logit_confidence(audit.ref_proba[:, :k], audit.y_audit)
        return M.lira_scores(t_stat, r_stat, audit.ref_in, global_variance=True)
