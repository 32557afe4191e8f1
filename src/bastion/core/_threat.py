"""The threat families (:class:`Threat`), free of pydantic.

Re-exported by :mod:`bastion.core.findings` (its public home); defined here so that modules that
only name a threat family (the plugin registry, the scanners) import no pydantic.
"""

from __future__ import annotations

from enum import Enum


class Threat(str, Enum):
    """The threat family a finding belongs to."""

    SUPPLY_CHAIN = "supply-chain"
    EVASION = "evasion"
    POISONING = "poisoning"
    EXTRACTION = "extraction"
    PRIVACY = "privacy"
    GOVERNANCE = "governance"
    RUNTIME = "runtime"
