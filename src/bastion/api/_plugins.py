"""Built-in plugin loading."""

from __future__ import annotations

import importlib
import logging

from bastion.assess.evasion import PLUGIN_MODULES as EVASION_PLUGINS
from bastion.core.registry import REGISTRIES

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


#: Model file formats that are loaded in process (and so must be scanned first).
_FILE_FRAMEWORKS = {"torch", "sklearn", "onnx"}


def load_plugins() -> None:
    """Register every built-in plugin and outside plugins from entry points (idempotent)."""
    for mod in BUILTIN_PLUGINS:
        importlib.import_module(mod)
    for reg in REGISTRIES.values():
        reg.load_entry_points()
