"""Governance: the control catalogue and the ``governance.controls`` check (framework mappings)."""

from bastion.governance.catalogue import Catalogue, Control, load_catalogue, parse_catalogue
from bastion.governance.controls import ControlOutcome, ControlsCheck, evaluate_controls

__all__ = [
    "Catalogue",
    "Control",
    "ControlOutcome",
    "ControlsCheck",
    "evaluate_controls",
    "load_catalogue",
    "parse_catalogue",
]
