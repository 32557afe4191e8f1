"""Evasion attacks: adversarial examples under an L∞ budget, and robust accuracy per ε.

Plugins (one per module, each registered with ``@register("attack")`` when its module is
imported; the built-ins module of :mod:`bastion.api` imports them):

* :mod:`bastion.assess.evasion.pgd` — ``evasion.pgd``, white-box projected gradient descent
  (Madry et al. 2018, arXiv:1706.06083); needs loss gradients.
* :mod:`bastion.assess.evasion.square` — ``evasion.square``, the score-based black-box Square
  Attack (Andriushchenko et al. 2020, arXiv:1912.00049); needs probabilities only.

Shared ε units, input bounds and the ε-grid loop live in :mod:`bastion.assess.evasion._common`.
Importing this package loads neither torch nor scikit-learn.
"""

from __future__ import annotations

#: The modules that register this package's plugins, for the built-ins list.
PLUGIN_MODULES: tuple[str, ...] = ("bastion.assess.evasion.pgd", "bastion.assess.evasion.square")

__all__ = ["PLUGIN_MODULES"]
