"""Which security controls each asset has; every missing one is a governance finding.

``governance.controls`` runs last on every asset (``order = 100``), after the scanners and
attacks, and reads what they learnt from ``ctx.facts[asset]`` (``sha256``, ``scan_verdict``).
The controls are versioned data in ``catalogue.toml`` (see :mod:`bastion.governance.catalogue`);
this module holds the code that judges each one. Each control is ``pass``, ``fail`` or ``n-a``
(not applicable to this asset); a failed control is a finding ``governance.controls.<id>`` with
the control's severity, ATLAS techniques, remedy and framework references.

The catalogue (version ``2025.1``):

==================================== ======== ================= ===========================================
control                              severity applies to        passes when
==================================== ======== ================= ===========================================
``owner-named``                      medium   all               the asset has ``owner`` (a dataset asset:
                                                                or its ``datasets:`` entry). The project
                                                                owner does not count.
``hash-pinned``                      medium   model, dataset    ``sha256`` is pinned and equals the file's
                                                                hash (``facts[asset]["sha256"]``, else the
                                                                file is hashed). A mismatch is a **high**
                                                                ``governance.controls.hash-mismatch``
                                                                finding: treat the file as tampered with.
``scan-safe``                        medium   model             ``facts[asset]["scan_verdict"] == "safe"``
                                                                (high when ``malicious``); n-a without a
                                                                file (``path``).
``dataset-splits-recorded``          low      all               the dataset (the asset's own entry, or the
                                                                one a model names) records ``train`` and
                                                                ``test`` (inline ``splits``, ``splits_file``
                                                                npz member names, or loaded ``ctx.data``).
                                                                n-a for a model naming no dataset.
``model-evaluated-on-recorded-dataset`` low   model, endpoint   ``dataset`` names a ``datasets:`` entry.
``endpoint-auth``                    medium   endpoint          ``endpoint.token_env`` or ``headers_env``.
``endpoint-tls``                     medium   endpoint          the URL is ``https://`` (n-a on loopback).
``incident-plan``                    medium   all (project)     ``project.incident_plan`` is set and names
                                                                a file that exists (its SHA-256 is the
                                                                evidence) or a URL (recorded). Judged
                                                                once per run, on the first asset in
                                                                ``assets:`` order that this check covers
                                                                (``n-a`` on the others), so a missing plan
                                                                is one finding, not one per asset.
``sensitive-data-owner``             high     all               a sensitive dataset (``sensitive: true`` or
                                                                an asset tag ``phi``/``pii``/``sensitive``)
                                                                and every model/endpoint evaluated on one
                                                                has an owner; n-a when nothing is sensitive.
==================================== ======== ================= ===========================================

Metrics: ``controls_passed``, ``controls_failed``, ``controls_total`` (pass + fail) and
``control_coverage`` = passed / total (``None`` when no control applies). ``notes`` gives every
control's status as ``control:<id>`` → ``pass`` / ``fail: <why>`` / ``n-a: <why>``. Thresholds in
``bastion.yaml`` on these metrics (e.g. ``control_coverage < 0.8``) add findings as usual.
"""

from __future__ import annotations

import ipaddress
import logging
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlparse

from bastion.core.check import Check, CheckContext
from bastion.core.config import Dataset
from bastion.core.findings import Finding, Location, Threat
from bastion.core.hashing import file_sha256
from bastion.core.registry import register
from bastion.core.results import CheckResult
from bastion.core.severity import Severity
from bastion.governance.catalogue import Catalogue, Control, load_catalogue

log = logging.getLogger(__name__)

Status = Literal["pass", "fail", "n-a"]
SENSITIVE_TAGS = frozenset({"phi", "pii", "sensitive"})


@dataclass
class ControlOutcome:
    """How one control stands on one asset.

    Attributes:
        control: the catalogue entry.
        status: ``pass``, ``fail`` or ``n-a``.
        reason: why (empty for a plain pass).
        escalation: the failure mode (a key of ``control.escalate``), when one applies.
        evidence: facts behind the verdict (never secrets or data values).
    """

    control: Control
    status: Status
    reason: str = ""
    escalation: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> Severity:
        """The severity of the finding a failure raises."""
        if self.escalation and self.escalation in self.control.escalate:
            return self.control.escalate[self.escalation].severity
        return self.control.severity

    def note(self) -> str:
        """``pass``, ``fail: <why>`` or ``n-a: <why>``."""
        return self.status if not self.reason else f"{self.status}: {self.reason}"


_Evaluator = Callable[[CheckContext, Control], ControlOutcome]
_EVALUATORS: dict[str, _Evaluator] = {}


def _evaluator(cid: str) -> Callable[[_Evaluator], _Evaluator]:
    def deco(fn: _Evaluator) -> _Evaluator:
        _EVALUATORS[cid] = fn
        return fn

    return deco


def evaluator_ids() -> frozenset[str]:
    """Ids of the controls this module knows how to judge."""
    return frozenset(_EVALUATORS)


def evaluate_controls(ctx: CheckContext, catalogue: Catalogue | None = None) -> list[ControlOutcome]:
    """Judge every catalogue control on ``ctx.asset``, in catalogue order.

    Args:
        ctx: the asset's context (``facts`` from the scanner, ``data`` when loaded).
        catalogue: the catalogue; the packaged one when ``None``.

    Returns:
        One outcome per control; controls that do not apply to the asset's kind are ``n-a``.
    """
    cat = catalogue or load_catalogue()
    out: list[ControlOutcome] = []
    for control in cat.controls:
        if ctx.asset.kind not in control.applies_to:
            out.append(ControlOutcome(control, "n-a", f"not judged on a {ctx.asset.kind}"))
            continue
        fn = _EVALUATORS.get(control.id)
        if fn is None:
            log.warning("governance: no evaluator for control %s; reported as n-a", control.id)
            out.append(ControlOutcome(control, "n-a", "no evaluator for this control"))
            continue
        out.append(fn(ctx, control))
    return out


# -- helpers ---------------------------------------------------------------------------


def _facts(ctx: CheckContext) -> dict[str, Any]:
    return ctx.facts.get(ctx.asset.name, {})


def _own_dataset(ctx: CheckContext) -> Dataset | None:
    """The ``datasets:`` entry of a dataset asset: same name, else same path."""
    for d in ctx.config.datasets:
        if d.name == ctx.asset.name:
            return d
    if ctx.asset.path:
        mine = Path(ctx.asset.path)
        for d in ctx.config.datasets:
            if Path(d.path) == mine:
                return d
    return None


def _used_dataset(ctx: CheckContext) -> Dataset | None:
    """The dataset an asset is about: its own entry (datasets) or the one it names (models)."""
    if ctx.asset.kind == "dataset":
        return _own_dataset(ctx)
    if ctx.asset.dataset:
        for d in ctx.config.datasets:
            if d.name == ctx.asset.dataset:
                return d
    return None


def _split_names(ctx: CheckContext, ds: Dataset) -> tuple[set[str], str]:
    names = set(ds.splits)
    problem = ""
    if ds.splits_file:
        spath = ctx.base_dir / ds.splits_file
        try:
            with zipfile.ZipFile(spath) as zf:
                names |= {n.removesuffix(".npy") for n in zf.namelist()}
        except (OSError, zipfile.BadZipFile) as exc:
            problem = f"splits file {ds.splits_file} unreadable ({exc.__class__.__name__})"
    if ctx.asset.kind == "dataset":
        names |= {k for k in ctx.data if k != "all"}
    return names, problem


def _is_sensitive(ds: Dataset | None, tags: list[str]) -> bool:
    return bool(ds is not None and ds.sensitive) or bool(SENSITIVE_TAGS & {t.lower() for t in tags})


def _covered_assets(ctx: CheckContext, check_id: str) -> list[str]:
    """Asset names this check runs on, in ``assets:`` order."""
    cfg = ctx.config.checks.get(check_id)
    names = [a.name for a in ctx.config.assets]
    if cfg is not None and cfg.assets is not None:
        chosen = set(cfg.assets)
        names = [n for n in names if n in chosen]
    return names


# -- evaluators ------------------------------------------------------------------------


@_evaluator("owner-named")
def _owner_named(ctx: CheckContext, c: Control) -> ControlOutcome:
    if ctx.asset.owner:
        return ControlOutcome(c, "pass", evidence={"owner_on": "asset"})
    if ctx.asset.kind == "dataset":
        ds = _own_dataset(ctx)
        if ds is not None and ds.owner:
            return ControlOutcome(c, "pass", evidence={"owner_on": f"datasets.{ds.name}"})
    return ControlOutcome(
        c,
        "fail",
        "no owner on the asset" + (" or its datasets: entry" if ctx.asset.kind == "dataset" else ""),
    )


@_evaluator("hash-pinned")
def _hash_pinned(ctx: CheckContext, c: Control) -> ControlOutcome:
    if not ctx.asset.path:
        return ControlOutcome(c, "n-a", "the asset has no file")
    pinned = ctx.asset.sha256
    if not pinned:
        return ControlOutcome(c, "fail", "no sha256 pinned on the asset")
    actual = _facts(ctx).get("sha256")
    source = "facts"
    if not actual:
        path = ctx.base_dir / ctx.asset.path
        try:
            actual = file_sha256(path)
            source = "file"
        except OSError as exc:
            return ControlOutcome(
                c,
                "fail",
                f"sha256 is pinned but {ctx.asset.path} could not be hashed ({exc.__class__.__name__})",
                evidence={"pinned": pinned},
            )
    if str(actual).lower() != pinned.lower():
        return ControlOutcome(
            c,
            "fail",
            "pinned hash does not match the file",
            escalation="mismatch",
            evidence={"pinned": pinned, "actual": str(actual), "hashed_from": source},
        )
    return ControlOutcome(c, "pass", evidence={"sha256": pinned, "hashed_from": source})


@_evaluator("scan-safe")
def _scan_safe(ctx: CheckContext, c: Control) -> ControlOutcome:
    if not ctx.asset.path:
        return ControlOutcome(c, "n-a", "the asset has no file to scan")
    verdict = _facts(ctx).get("scan_verdict")
    if verdict is None:
        return ControlOutcome(c, "fail", "no scan verdict recorded for the file")
    verdict = str(verdict)
    if verdict == "safe":
        return ControlOutcome(c, "pass", evidence={"scan_verdict": verdict})
    return ControlOutcome(
        c,
        "fail",
        f"scan verdict is {verdict!r}",
        escalation=verdict if verdict in c.escalate else None,
        evidence={"scan_verdict": verdict},
    )


@_evaluator("dataset-splits-recorded")
def _splits_recorded(ctx: CheckContext, c: Control) -> ControlOutcome:
    if ctx.asset.kind != "dataset" and not ctx.asset.dataset:
        return ControlOutcome(c, "n-a", "the asset names no dataset")
    ds = _used_dataset(ctx)
    if ds is None:
        which = ctx.asset.dataset or ctx.asset.name
        return ControlOutcome(c, "fail", f"no datasets: entry {which!r} records splits")
    names, problem = _split_names(ctx, ds)
    missing = [s for s in ("train", "test") if s not in names]
    evidence = {"dataset": ds.name, "splits": sorted(names)}
    if missing:
        why = f"dataset {ds.name!r} records no {' or '.join(missing)} split"
        if problem:
            why += f"; {problem}"
        return ControlOutcome(c, "fail", why, evidence=evidence)
    return ControlOutcome(c, "pass", evidence=evidence)


@_evaluator("model-evaluated-on-recorded-dataset")
def _evaluated_on_dataset(ctx: CheckContext, c: Control) -> ControlOutcome:
    if not ctx.asset.dataset:
        return ControlOutcome(c, "fail", "the asset names no dataset")
    if _used_dataset(ctx) is None:
        return ControlOutcome(c, "fail", f"dataset {ctx.asset.dataset!r} is not under datasets:")
    return ControlOutcome(c, "pass", evidence={"dataset": ctx.asset.dataset})


@_evaluator("endpoint-auth")
def _endpoint_auth(ctx: CheckContext, c: Control) -> ControlOutcome:
    ep = ctx.asset.endpoint
    if ep is not None and (ep.token_env or ep.headers_env):
        how = "bearer token" if ep.token_env else "headers"
        return ControlOutcome(c, "pass", evidence={"auth": how})
    return ControlOutcome(c, "fail", "no token_env or headers_env configured for the endpoint")


@_evaluator("endpoint-tls")
def _endpoint_tls(ctx: CheckContext, c: Control) -> ControlOutcome:
    url = urlparse(ctx.asset.url or "")
    if url.scheme == "https":
        return ControlOutcome(c, "pass")
    host = (url.hostname or "").lower()
    if host == "localhost" or _is_loopback(host):
        return ControlOutcome(c, "n-a", "loopback address")
    return ControlOutcome(c, "fail", f"the URL scheme is {url.scheme or 'missing'}, not https")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@_evaluator("incident-plan")
def _incident_plan(ctx: CheckContext, c: Control) -> ControlOutcome:
    covered = _covered_assets(ctx, ControlsCheck.id)
    first = covered[0] if covered else ctx.asset.name
    if ctx.asset.name != first:
        return ControlOutcome(c, "n-a", f"project-level; judged on asset {first!r}")
    plan = ctx.config.project.incident_plan
    if not plan:
        return ControlOutcome(c, "fail", "project.incident_plan is not set", evidence={"scope": "project"})
    if "://" in plan:  # a URL (a wiki page): recorded, not fetched
        return ControlOutcome(c, "pass", evidence={"scope": "project", "incident_plan": plan})
    path = ctx.base_dir / plan
    if not path.is_file():  # a plan that does not exist is no plan
        return ControlOutcome(
            c,
            "fail",
            f"project.incident_plan {plan!r} does not exist ({path})",
            evidence={"scope": "project", "incident_plan": plan},
        )
    evidence = {"scope": "project", "incident_plan": plan, "sha256": file_sha256(path)}
    return ControlOutcome(c, "pass", evidence=evidence)


@_evaluator("sensitive-data-owner")
def _sensitive_owner(ctx: CheckContext, c: Control) -> ControlOutcome:
    ds = _used_dataset(ctx)
    if not _is_sensitive(ds, ctx.asset.tags):
        return ControlOutcome(c, "n-a", "no sensitive data involved")
    owner = ctx.asset.owner or (ds.owner if ds is not None and ctx.asset.kind == "dataset" else None)
    if not owner and ds is not None and ctx.asset.kind == "dataset":
        owner = _registered_owner(ctx, ds)  # `bastion data register --owner` (as data-sources reads it)
    evidence = {"dataset": ds.name if ds is not None else None}
    if owner:
        return ControlOutcome(c, "pass", evidence=evidence)
    what = "sensitive dataset" if ctx.asset.kind == "dataset" else f"{ctx.asset.kind} using sensitive data"
    return ControlOutcome(c, "fail", f"{what} has no owner", evidence=evidence)


def _registered_owner(ctx: CheckContext, ds: Any) -> str | None:
    """The owner recorded by the dataset's newest registration in the store, if any.

    The new-user trial found ``governance.data-sources`` taking it while this control said "no
    owner"; both read the same registration now. A store that cannot be read gives ``None``.
    """
    from bastion.governance.data_sources import _registered

    run = ctx.facts.get("__run__") if isinstance(ctx.facts, dict) else None
    db_url = run.get("db_url") if isinstance(run, dict) else None
    if not db_url:
        return None
    try:
        version, _, _ = _registered(str(db_url), ds.name, (ctx.base_dir / ds.path).resolve())
    except Exception:  # the store is the data-sources check's to report, not this control's
        return None
    return getattr(version, "owner", None) or None


# -- the check -------------------------------------------------------------------------


@register("check")
class ControlsCheck(Check):
    """Judge the catalogue's controls on one asset; each failed control is a finding."""

    id: ClassVar[str] = "governance.controls"
    title: ClassVar[str] = "Governance controls"
    threat: ClassVar[Threat] = Threat.GOVERNANCE
    applies_to: ClassVar[frozenset[str]] = frozenset({"model", "dataset", "endpoint"})
    order: ClassVar[int] = 100
    atlas: ClassVar[tuple[str, ...]] = ()
    references: ClassVar[tuple[str, ...]] = (
        "MITRE ATLAS, https://atlas.mitre.org",
        "OWASP Machine Learning Security Top Ten (2023)",
        "NIST AI 100-1, Artificial Intelligence Risk Management Framework (AI RMF 1.0), 2023",
        "ASD ACSC et al., Engaging with Artificial Intelligence, 2024",
    )
    threat_model: ClassVar[str] = (
        "Not an attack: the absence of a control (an owner, a pinned hash, a safe scan, "
        "authentication, an incident plan) widens what any attacker can do unnoticed."
    )
    remediation: ClassVar[str] = "Put the missing control in place (see each finding)."

    def run(self, ctx: CheckContext) -> CheckResult:
        """Judge every control; see the module docstring for the catalogue and metrics."""
        start = time.monotonic()
        cat = load_catalogue()
        outcomes = evaluate_controls(ctx, cat)
        passed = sum(o.status == "pass" for o in outcomes)
        failed = sum(o.status == "fail" for o in outcomes)
        total = passed + failed
        metrics: dict[str, float | None] = {
            "controls_passed": float(passed),
            "controls_failed": float(failed),
            "controls_total": float(total),
            "control_coverage": passed / total if total else None,
        }
        notes = {f"control:{o.control.id}": o.note() for o in outcomes}
        notes["catalogue_version"] = cat.catalogue_version
        if not total:
            notes["control_coverage"] = "no control applies to this asset"
        result = CheckResult(id=self.id, asset=ctx.asset.name, metrics=metrics, notes=notes)
        findings = [self._finding(ctx, o, cat) for o in outcomes if o.status == "fail"]
        findings.extend(self.threshold_findings(ctx, result))
        result.findings = findings
        result.seconds = round(time.monotonic() - start, 4)
        return result

    def _finding(self, ctx: CheckContext, o: ControlOutcome, cat: Catalogue) -> Finding:
        c = o.control
        esc = c.escalate.get(o.escalation) if o.escalation else None
        condition = esc.rule if esc is not None and esc.rule else c.id
        title = esc.title if esc is not None and esc.title else c.finding
        remediation = esc.remediation if esc is not None and esc.remediation else c.remediation
        fw = c.frameworks
        evidence: dict[str, Any] = {
            "control": c.id,
            "status": o.status,
            "reason": o.reason,
            "catalogue_version": cat.catalogue_version,
            "rationale": c.rationale,
            "frameworks": {
                "atlas_mitigations": list(fw.atlas_mitigations),
                "owasp_ml": list(fw.owasp_ml),
                "nist_ai_rmf": list(fw.nist_ai_rmf),
                "asd": list(fw.asd),
            },
            **o.evidence,
        }
        project_level = c.scope == "project"
        finding = self.finding(
            ctx,
            condition,
            f"{title}: {o.reason}" if o.reason else title,
            severity=o.severity,
            evidence=evidence,
            location=Location() if project_level else None,
            remediation=remediation,
            atlas=fw.atlas_for(ctx.asset.kind),
        )
        finding.references = fw.references()
        if project_level:
            finding.asset = None
        return finding
