"""Bastion's use-cases: the Python API every front end (CLI, guard admin, dashboard) calls.

Orchestration lives here — load config → preflight → scan → build targets → plan →
run → store → render — so the CLI stays thin and every front end shares one path.

Public functions: :func:`scan`, :func:`assess`, :func:`plan`, :func:`history`,
:func:`show`, :func:`init_project`, :func:`build_demo`, :func:`write_outputs`.

The use-cases live in one module each (``bastion.api._assessing``, ``_scanning``, ``_hardening``,
``_guard``, ``_data`` …); their public names load here on first use (PEP 562), so ``bastion scan``
does not import what ``bastion assess`` needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.core._lazy import lazy_names

if TYPE_CHECKING:
    from bastion.api._assessing import assess as assess
    from bastion.api._assessing import check_output_dir as check_output_dir
    from bastion.api._assessing import exit_code as exit_code
    from bastion.api._assessing import preflight as preflight
    from bastion.api._assessing import write_outputs as write_outputs
    from bastion.api._data import data_profile as data_profile
    from bastion.api._data import data_register as data_register
    from bastion.api._data import data_sanitize as data_sanitize
    from bastion.api._data import data_validate as data_validate
    from bastion.api._data import data_verify as data_verify
    from bastion.api._guard import guard_app as guard_app
    from bastion.api._guard import guard_fit as guard_fit
    from bastion.api._guard import guard_honeytokens as guard_honeytokens
    from bastion.api._guard import guard_new_key as guard_new_key
    from bastion.api._guard import guard_server_address as guard_server_address
    from bastion.api._guard import guard_verify_log as guard_verify_log
    from bastion.api._hardening import SWEEP_ATTACKS as SWEEP_ATTACKS
    from bastion.api._hardening import HardenResult as HardenResult
    from bastion.api._hardening import SweepPoint as SweepPoint
    from bastion.api._hardening import SweepResult as SweepResult
    from bastion.api._hardening import harden as harden
    from bastion.api._hardening import harden_sweep as harden_sweep
    from bastion.api._history import history as history
    from bastion.api._history import show as show
    from bastion.api._planning import Plan as Plan
    from bastion.api._planning import PlannedCheck as PlannedCheck
    from bastion.api._planning import ProgressFn as ProgressFn
    from bastion.api._planning import plan as plan
    from bastion.api._plugins import BUILTIN_PLUGINS as BUILTIN_PLUGINS
    from bastion.api._plugins import PLANNED_KINDS as PLANNED_KINDS
    from bastion.api._plugins import load_plugins as load_plugins
    from bastion.api._project import build_demo as build_demo
    from bastion.api._project import init_project as init_project
    from bastion.api._scanning import check_report_output as check_report_output
    from bastion.api._scanning import model_bom as model_bom
    from bastion.api._scanning import scan as scan
    from bastion.api._scanning import scan_models as scan_models
    from bastion.api._scanning import sign_model as sign_model
    from bastion.api._scanning import signature_path as signature_path
    from bastion.api._scanning import verify_model as verify_model

#: Public name -> the module that defines it.
_WHERE: dict[str, str] = {
    "BUILTIN_PLUGINS": "bastion.api._plugins",
    "HardenResult": "bastion.api._hardening",
    "PLANNED_KINDS": "bastion.api._plugins",
    "Plan": "bastion.api._planning",
    "PlannedCheck": "bastion.api._planning",
    "ProgressFn": "bastion.api._planning",
    "SWEEP_ATTACKS": "bastion.api._hardening",
    "SweepPoint": "bastion.api._hardening",
    "SweepResult": "bastion.api._hardening",
    "assess": "bastion.api._assessing",
    "build_demo": "bastion.api._project",
    "check_output_dir": "bastion.api._assessing",
    "check_report_output": "bastion.api._scanning",
    "data_profile": "bastion.api._data",
    "data_register": "bastion.api._data",
    "data_sanitize": "bastion.api._data",
    "data_validate": "bastion.api._data",
    "data_verify": "bastion.api._data",
    "exit_code": "bastion.api._assessing",
    "guard_app": "bastion.api._guard",
    "guard_fit": "bastion.api._guard",
    "guard_honeytokens": "bastion.api._guard",
    "guard_new_key": "bastion.api._guard",
    "guard_server_address": "bastion.api._guard",
    "guard_verify_log": "bastion.api._guard",
    "harden": "bastion.api._hardening",
    "harden_sweep": "bastion.api._hardening",
    "history": "bastion.api._history",
    "init_project": "bastion.api._project",
    "load_plugins": "bastion.api._plugins",
    "model_bom": "bastion.api._scanning",
    "plan": "bastion.api._planning",
    "preflight": "bastion.api._assessing",
    "scan": "bastion.api._scanning",
    "scan_models": "bastion.api._scanning",
    "show": "bastion.api._history",
    "sign_model": "bastion.api._scanning",
    "signature_path": "bastion.api._scanning",
    "verify_model": "bastion.api._scanning",
    "write_outputs": "bastion.api._assessing",
}

__all__ = [
    "BUILTIN_PLUGINS",
    "PLANNED_KINDS",
    "SWEEP_ATTACKS",
    "HardenResult",
    "Plan",
    "PlannedCheck",
    "ProgressFn",
    "SweepPoint",
    "SweepResult",
    "assess",
    "build_demo",
    "check_output_dir",
    "check_report_output",
    "data_profile",
    "data_register",
    "data_sanitize",
    "data_validate",
    "data_verify",
    "exit_code",
    "guard_app",
    "guard_fit",
    "guard_honeytokens",
    "guard_new_key",
    "guard_server_address",
    "guard_verify_log",
    "harden",
    "harden_sweep",
    "history",
    "init_project",
    "load_plugins",
    "model_bom",
    "plan",
    "preflight",
    "scan",
    "scan_models",
    "show",
    "sign_model",
    "signature_path",
    "verify_model",
    "write_outputs",
]


__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
