"""Procedures that change a model: adversarial training, DP training, distillation, ensembles.

Each procedure is a :class:`bastion.defend.base.Defence` plugin (one per module) registered in
the ``defence`` registry; :func:`bastion.api.harden` runs one on a project's model asset and
records the result as a new model version in the store.
"""
