"""Built-in plugin loading."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

from bastion.assess.evasion import PLUGIN_MODULES as EVASION_PLUGINS
from bastion.core.registry import REGISTRIES

if TYPE_CHECKING:
    from bastion.core.config import Asset

log = logging.getLogger(__name__)


#: Modules whose import registers Bastion's built-in plugins (one plugin per module).
BUILTIN_PLUGINS: tuple[str, ...] = (
    *EVASION_PLUGINS,
    "bastion.assess.membership.threshold",
    "bastion.assess.extraction.surrogate",
    "bastion.assess.poisoning.data_health",
    "bastion.assess.poisoning.backdoor",
    "bastion.governance.controls",
    "bastion.governance.runtime",
    "bastion.governance.data_sources",
    "bastion.defend.adversarial_training",
    "bastion.defend.trades",
    "bastion.defend.distillation",
    "bastion.assess.membership.lira",
    "bastion.assess.membership.rmia",
    "bastion.assess.membership.label_only",
    "bastion.assess.membership.attribute",
    "bastion.defend.dp_sgd",
    "bastion.defend.dp_logreg",
    "bastion.defend.dp_curve",
)


#: Kinds of registered plugins the assessment planner schedules.
PLANNED_KINDS = ("attack", "check")


def loads_file(asset: Asset) -> bool:
    """Whether ``asset`` is a model loaded from its file: it is loaded only if scanned ``safe``.

    Every model asset with a ``path``, whatever its ``framework`` (but ``http`` and ``ensemble``,
    which load no file of their own): with no ``framework`` the loader still picks one from the
    file's suffix (``.pkl``: scikit-learn). Red-team finding (trial 30 follow-up): assess gated
    only the frameworks it named, so a model asset with ``framework`` left out and a malicious
    ``.pkl`` was unpickled -- and its payload run -- although the scanner had judged it malicious.
    """
    return asset.kind == "model" and bool(asset.path) and asset.framework not in ("http", "ensemble")


def load_plugins() -> None:
    """Register every built-in plugin and outside plugins from entry points (idempotent)."""
    for mod in BUILTIN_PLUGINS:
        importlib.import_module(mod)
    for reg in REGISTRIES.values():
        reg.load_entry_points()
