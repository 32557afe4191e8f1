"""Upgrades of stored report JSON from older ``schema_version`` values to the current one.

Every schema is versioned: an issue that extends :class:`bastion.core.report.Report` bumps
``REPORT_SCHEMA_VERSION`` and adds one step here, keyed by the version it upgrades *from*,
that returns the report as the next version has it. Stored runs are migrated on read, so a
run stored by any earlier Bastion re-renders with the current renderers.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from bastion.core.report import REPORT_SCHEMA_VERSION
from bastion.store.errors import StoreError

#: One upgrade: takes a report dict of one version, returns it at the next.
Step = Callable[[dict[str, Any]], dict[str, Any]]


def _signature_fields(data: dict[str, Any]) -> dict[str, Any]:
    """1.0.0 -> 1.1.0: assets gained ``signature`` and ``signature_detail`` (both ``None``: not checked)."""
    for asset in data.get("assets") or []:
        if isinstance(asset, dict):
            asset.setdefault("signature", None)
            asset.setdefault("signature_detail", None)
    return data


def _run_scope(data: dict[str, Any]) -> dict[str, Any]:
    """1.1.0 -> 1.2.0: ``run`` gained ``scope`` (``None``: the run covered every asset and check).

    A 1.1.0 run narrowed with ``--only``/``--asset`` did not record it; it reads as a full run.
    """
    run = data.get("run")
    if isinstance(run, dict):
        run.setdefault("scope", None)
    return data


def _version_lineage(data: dict[str, Any]) -> dict[str, Any]:
    """1.2.0 -> 1.3.0: assets gained ``lineage`` (a hardened version's procedure, parent, ε ...).

    A 1.2.0 run did not copy it into the report; it reads as unknown (``None``), and the store's
    ``model_versions`` table still has it.
    """
    for asset in data.get("assets") or []:
        if isinstance(asset, dict):
            asset.setdefault("lineage", None)
    return data


def _baseline_run(data: dict[str, Any]) -> dict[str, Any]:
    """1.3.0 -> 1.4.0: ``baseline_run`` (the baseline's id, time, scope); state ``not-in-baseline``.

    A 1.3.0 run named its baseline by id only; its ``baseline_run`` reads as unknown (``None``),
    and its findings keep their states.
    """
    data.setdefault("baseline_run", None)
    return data


def _scan_allow(data: dict[str, Any]) -> dict[str, Any]:
    """1.4.0 -> 1.5.0: ``run`` gained ``scan_allow`` and ``scan_allow_cli`` (the allow-list additions).

    A 1.4.0 run did not record them; they read as unknown (``None``). Its findings still show
    each global a project file's entry let through (``scan.pickle.project-allowed``).
    """
    for key in ("run", "baseline_run"):
        run = data.get(key)
        if isinstance(run, dict):
            run.setdefault("scan_allow", None)
            run.setdefault("scan_allow_cli", None)
    return data


def _fail_on(data: dict[str, Any]) -> dict[str, Any]:
    """1.5.0 -> 1.6.0: ``run`` gained ``fail_on`` (the run's ``--fail-on`` gate); unknown (``None``)."""
    for key in ("run", "baseline_run"):
        run = data.get(key)
        if isinstance(run, dict):
            run.setdefault("fail_on", None)
    return data


#: ``from_version -> (to_version, step)``; a bump adds one step keyed by the version it upgrades from.
STEPS: dict[str, tuple[str, Step]] = {
    "1.0.0": ("1.1.0", _signature_fields),
    "1.1.0": ("1.2.0", _run_scope),
    "1.2.0": ("1.3.0", _version_lineage),
    "1.3.0": ("1.4.0", _baseline_run),
    "1.4.0": ("1.5.0", _scan_allow),
    "1.5.0": ("1.6.0", _fail_on),
}

_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def parse_version(version: str) -> tuple[int, int, int]:
    """Parse ``"MAJOR.MINOR.PATCH"`` into a tuple of ints.

    Raises:
        StoreError: ``version`` is not of that form.
    """
    match = _SEMVER.match(version)
    if match is None:
        raise StoreError(f"stored report has an invalid schema_version {version!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def migrate_report(data: dict[str, Any]) -> dict[str, Any]:
    """Bring stored report JSON to the current ``REPORT_SCHEMA_VERSION``.

    Applies the registered steps in order from the stored version. The input is not mutated.

    Args:
        data: report JSON as stored (a dict with ``schema_version``).

    Returns:
        The report JSON at ``REPORT_SCHEMA_VERSION`` (a copy; the input itself when already current).

    Raises:
        StoreError: the version is invalid, newer than this Bastion knows, or has no upgrade path.
    """
    version = str(data.get("schema_version", ""))
    if version == REPORT_SCHEMA_VERSION:
        return data
    current = parse_version(REPORT_SCHEMA_VERSION)
    if parse_version(version) > current:
        raise StoreError(
            f"stored report has schema_version {version}, newer than this Bastion's "
            f"{REPORT_SCHEMA_VERSION}; upgrade bastion-ml to read it"
        )
    out = copy.deepcopy(data)
    seen: set[str] = set()
    while version != REPORT_SCHEMA_VERSION:
        if version not in STEPS or version in seen:
            raise StoreError(f"no upgrade from report schema_version {version} to {REPORT_SCHEMA_VERSION}")
        seen.add(version)
        target, step = STEPS[version]
        out = step(out)
        out["schema_version"] = target
        version = target
    return out
