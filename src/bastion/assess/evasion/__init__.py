"""Evasion attacks: adversarial examples under an L∞ budget, and robust accuracy per ε.

Plugins (one per module, each registered with ``@register("attack")`` when its module is
imported; the built-ins module of :mod:`bastion.api` imports them):

* :mod:`bastion.assess.evasion.pgd` — ``evasion.pgd``, white-box projected gradient descent
  (Madry et al. 2018, arXiv:1706.06083); needs loss gradients.
* :mod:`bastion.assess.evasion.square` — ``evasion.square``, the score-based black-box Square
  Attack (Andriushchenko et al. 2020, arXiv:1912.00049); needs probabilities only.

* ``evasion.fgsm`` (arXiv:1412.6572), ``evasion.pgd-l2`` (arXiv:1706.06083), ``evasion.apgd-ce``
  and ``evasion.apgd-dlr`` (Croce & Hein 2020, arXiv:2003.01690) — white-box;
* ``evasion.square-l2`` — the Square Attack under an L2 budget (arXiv:1912.00049);
  ``evasion.cw-l2`` — Carlini & Wagner's minimal L2 attack (arXiv:1608.04644), torch only;
* ``evasion.hopskipjump`` and ``evasion.hopskipjump-l2`` — decision-based, label-only, L∞ and
  L2 (Chen et al. 2020, arXiv:1904.02144);
* ``evasion.worst-case`` — APGD-CE → APGD-DLR → Square on the samples still correct: the
  robust accuracy a report leads with.

Shared ε units, input bounds and the ε-grid loop live in :mod:`bastion.assess.evasion._common`.
Importing this package loads neither torch nor scikit-learn.
"""

from __future__ import annotations

#: The modules that register this package's plugins, for the built-ins list.
PLUGIN_MODULES: tuple[str, ...] = (
    "bastion.assess.evasion.pgd",
    "bastion.assess.evasion.square",
    "bastion.assess.evasion.fgsm",
    "bastion.assess.evasion.pgd_l2",
    "bastion.assess.evasion.apgd_ce",
    "bastion.assess.evasion.apgd_dlr",
    "bastion.assess.evasion.hopskipjump",
    "bastion.assess.evasion.hopskipjump_l2",
    "bastion.assess.evasion.worst_case",
    "bastion.assess.evasion.square_l2",
    "bastion.assess.evasion.cw_l2",
)

__all__ = ["PLUGIN_MODULES"]
