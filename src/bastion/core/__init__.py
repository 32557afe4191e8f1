"""The vocabulary every Bastion package speaks; imports nothing else of Bastion.

The names below load on first use (PEP 562), so importing one submodule such as
``bastion.core.scanning`` does not pull in pydantic models it does not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.core._lazy import lazy_names

if TYPE_CHECKING:
    from bastion.core.budget import PRESETS, Budget, BudgetMeter, BudgetUsage
    from bastion.core.capability import Capability
    from bastion.core.errors import (
        BastionError,
        BudgetExhausted,
        ConfigError,
        IntegrityError,
        MissingExtraError,
        NotFittedError,
        PluginError,
        ScanError,
        TargetError,
    )
    from bastion.core.findings import Finding, Location, Threat
    from bastion.core.registry import Plugin, Registry, register
    from bastion.core.results import CheckError, CheckResult, RunResult, Series, Skipped
    from bastion.core.severity import FAIL_ON_CHOICES, Severity, gates

_WHERE: dict[str, str] = {
    "BastionError": "bastion.core.errors",
    "Budget": "bastion.core.budget",
    "BudgetExhausted": "bastion.core.errors",
    "BudgetMeter": "bastion.core.budget",
    "BudgetUsage": "bastion.core.budget",
    "Capability": "bastion.core.capability",
    "CheckError": "bastion.core.results",
    "CheckResult": "bastion.core.results",
    "ConfigError": "bastion.core.errors",
    "FAIL_ON_CHOICES": "bastion.core.severity",
    "Finding": "bastion.core.findings",
    "IntegrityError": "bastion.core.errors",
    "Location": "bastion.core.findings",
    "MissingExtraError": "bastion.core.errors",
    "NotFittedError": "bastion.core.errors",
    "PRESETS": "bastion.core.budget",
    "Plugin": "bastion.core.registry",
    "PluginError": "bastion.core.errors",
    "Registry": "bastion.core.registry",
    "RunResult": "bastion.core.results",
    "ScanError": "bastion.core.errors",
    "Series": "bastion.core.results",
    "Severity": "bastion.core.severity",
    "Skipped": "bastion.core.results",
    "TargetError": "bastion.core.errors",
    "Threat": "bastion.core.findings",
    "gates": "bastion.core.severity",
    "register": "bastion.core.registry",
}


__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())


__all__ = [
    "FAIL_ON_CHOICES",
    "PRESETS",
    "BastionError",
    "Budget",
    "BudgetExhausted",
    "BudgetMeter",
    "BudgetUsage",
    "Capability",
    "CheckError",
    "CheckResult",
    "ConfigError",
    "Finding",
    "IntegrityError",
    "Location",
    "MissingExtraError",
    "NotFittedError",
    "Plugin",
    "PluginError",
    "Registry",
    "RunResult",
    "ScanError",
    "Series",
    "Severity",
    "Skipped",
    "TargetError",
    "Threat",
    "gates",
    "register",
]
