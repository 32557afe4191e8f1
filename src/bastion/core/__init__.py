"""The vocabulary every Bastion package speaks; imports nothing else of Bastion."""

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
