"""Bastion's use-cases: the Python API every front end (CLI, guard admin, dashboard) calls.

Orchestration lives here — load config → preflight → scan → build targets → plan →
run → store → render — so the CLI stays thin and every front end shares one path.

Public functions: :func:`scan`, :func:`assess`, :func:`plan`, :func:`history`,
:func:`show`, :func:`init_project`, :func:`build_demo`, :func:`write_outputs`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion import __version__
from bastion.core import atlas
from bastion.core.budget import PRESETS, Budget
from bastion.core.check import Check, CheckContext, Split
from bastion.core.config import Asset, ProjectConfig, config_hash, load_config
from bastion.core.errors import BastionError, ConfigError, PluginError, ScanError
from bastion.core.findings import Finding
from bastion.core.registry import REGISTRIES
from bastion.core.report import AssetRecord, Report, ReportFinding, Reproducibility, RunInfo
from bastion.core.results import CheckError, CheckResult, RunResult
from bastion.core.scanning import FileResult, ScanResult, Verdict
from bastion.core.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: Modules whose import registers Bastion's built-in plugins (one plugin per module).
BUILTIN_PLUGINS: tuple[str, ...] = (
    "bastion.assess.evasion.pgd",
    "bastion.assess.evasion.square",
    "bastion.assess.evasion.fgsm",
    "bastion.assess.evasion.pgd_l2",
    "bastion.assess.evasion.apgd_ce",
    "bastion.assess.evasion.apgd_dlr",
    "bastion.assess.evasion.hopskipjump",
    "bastion.assess.evasion.hopskipjump_l2",
    "bastion.assess.evasion.worst_case",
    "bastion.assess.evasion.square_l2",
    "bastion.assess.evasion.cw_l2",
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


# ---------------------------------------------------------------------------------------
# scan
# ---------------------------------------------------------------------------------------
def scan(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    allow: Sequence[str] = (),
    config: str | Path | None = None,
) -> ScanResult:
    """Scan model files statically; nothing scanned is imported, unpickled or loaded.

    Args:
        paths: a file or folder, or several (folders are walked recursively).
        allow: allow-list additions for the user's own classes (``package.module.Class``);
            never read from the scanned folder.
        config: an explicit ``bastion.yaml`` whose ``scan.allow`` adds to ``allow``.

    Returns:
        One ``FileResult`` per file, with verdict, SHA-256 and findings.

    Raises:
        ScanError: a path does not exist.
        ConfigError: the config file is invalid.
    """
    return scan_models(paths, allow=allow, config=config)


# ---------------------------------------------------------------------------------------
# assess
# ---------------------------------------------------------------------------------------
@dataclass
class PlannedCheck:
    """One (check, asset) pair in the plan, with why it will not run if skipped."""

    check_id: str
    asset: str
    kind: str
    skip_reason: str | None = None


@dataclass
class Plan:
    """What an assessment will run and skip."""

    config: ProjectConfig
    base_dir: Path
    budget: str
    items: list[PlannedCheck] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for ``--dry-run``."""
        return {
            "project": self.config.project.name,
            "budget": self.budget,
            "checks": [
                {"id": i.check_id, "asset": i.asset, "kind": i.kind, "skip": i.skip_reason}
                for i in self.items
            ],
        }


ProgressFn = Callable[[str, float], None]


def _assets(cfg: ProjectConfig, versions: dict[str, Any] | None = None) -> list[Asset]:
    """Assets of the config, with hardened versions and dataset assets added.

    Each model is followed by its latest hardened version (``<name>.v<N>``) when ``versions``
    has one; one dataset asset is added per ``datasets:`` entry not already listed.
    """
    out: list[Asset] = []
    for a in cfg.assets:
        out.append(a)
        v = (versions or {}).get(a.name)
        if v is not None and a.kind == "model":
            out.append(_version_asset(a, v))
    names = {a.name for a in out}
    for ds in cfg.datasets:
        if ds.name not in names:
            out.append(Asset(name=ds.name, kind="dataset", path=ds.path, owner=ds.owner, format=None))
    return out


def _version_asset(a: Asset, v: Any) -> Asset:
    """The asset for a recorded version ``v`` of model ``a`` (its file, hash and class)."""
    details = dict(v.details)
    return a.model_copy(
        update={
            "name": f"{a.name}.v{v.version}",
            "path": v.path,
            "sha256": v.sha256,
            "format": details.get("format", a.format),
            "framework": details.get("framework", a.framework),
            "model_class": details.get("model_class", a.model_class),
            "model_kwargs": details.get("model_kwargs", a.model_kwargs),
            "tags": [*a.tags, f"version-of:{a.name}", f"procedure:{v.procedure}"]
            + (
                [f"dp-epsilon:{details['epsilon']}"]  # the claimed ε, checked by membership attacks
                if v.procedure == "defend.dp-train" and "epsilon" in details
                else []
            ),
        }
    )


def _selected(name: str, asset: str | None) -> bool:
    return asset is None or name == asset or name.startswith(asset + ".v")


def _latest_versions(db_url: str, cfg: ProjectConfig) -> dict[str, Any]:
    """The latest recorded version of each model asset; empty when the store does not exist yet."""
    from sqlalchemy.engine import make_url

    u = make_url(db_url)
    if u.get_backend_name() == "sqlite" and (not u.database or not Path(u.database).is_file()):
        return {}
    from bastion.store import Store
    from bastion.store.versions import latest_version

    with Store.open(db_url) as st:
        found = {a.name: latest_version(st, a.name) for a in cfg.assets if a.kind == "model"}
    return {k: v for k, v in found.items() if v is not None}


def _check_enabled(
    cfg: ProjectConfig, pid: str, asset: str, only: Sequence[str], skip: Sequence[str]
) -> str | None:
    def matches(pattern: str) -> bool:
        return pid == pattern or pid.startswith(pattern + ".") or pid.split(".")[0] == pattern

    if only and not any(matches(p) for p in only):
        return "not selected by --only"
    if any(matches(p) for p in skip):
        return "excluded by --skip"
    cc = cfg.checks.get(pid)
    if cc is not None:
        if not cc.enabled:
            return "disabled in bastion.yaml"
        if cc.assets is not None and asset not in cc.assets:
            return "asset not listed under checks." + pid + ".assets"
    return None


def _validate_selection(only: Sequence[str], skip: Sequence[str]) -> None:
    known = {pid for kind in (*PLANNED_KINDS, "scanner") for pid in REGISTRIES[kind]} | {"scan"}
    prefixes = {p.split(".")[0] for p in known} | known
    bad = [p for p in [*only, *skip] if p not in prefixes and not any(k.startswith(p + ".") for k in known)]
    if bad:
        raise ConfigError(
            f"unknown plugin id(s) in --only/--skip: {', '.join(bad)}; known: {', '.join(sorted(known))}"
        )


def plan(
    config: str | Path,
    *,
    budget: str = "standard",
    asset: str | None = None,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    versions: dict[str, Any] | None = None,
) -> Plan:
    """Which checks would run on which assets, and why the others are skipped.

    ``versions`` (asset name → latest recorded version) adds each hardened version as an
    asset ``<name>.v<N>`` assessed beside the original, so reports compare before and after.

    Capability-based skips (a label-only endpoint cannot give loss gradients) are decided
    from the asset's declared framework and output, without loading anything.

    Raises:
        ConfigError: invalid config, unknown ``--asset`` or plugin id.
    """
    load_plugins()
    path = Path(config)
    cfg = load_config(path)
    if budget not in PRESETS:
        raise ConfigError(f"--budget must be one of {', '.join(PRESETS)}, got {budget!r}")
    _validate_selection(only, skip)
    known = {pid for kind in PLANNED_KINDS for pid in REGISTRIES[kind]}
    unknown = [k for k in cfg.checks if k not in known]
    if unknown:
        raise ConfigError(
            f"{path}: {len(unknown)} problem(s)",
            [
                f"checks.{k}: unknown check id; known: {', '.join(sorted(known))}"
                + (
                    " (the scanner always runs before a model is loaded; tune it with scan.allow)"
                    if k.startswith("scan")
                    else ""
                )
                for k in unknown
            ],
        )
    assets = _assets(cfg, versions)
    by_name = {a.name: a for a in assets}
    if asset is not None:
        if asset not in {a.name for a in assets}:
            raise ConfigError(
                f"--asset {asset!r}: no such asset; assets: {', '.join(a.name for a in assets)}"
            )
        assets = [a for a in assets if _selected(a.name, asset)]
    p = Plan(config=cfg, base_dir=path.resolve().parent, budget=budget)
    scan_selected = _check_enabled(cfg, "scan.file", "", only, skip) is None
    for a in assets:
        if a.kind == "model" and a.path:
            p.items.append(PlannedCheck("scan", a.name, "scanner", None if scan_selected else "not selected"))
        for kind in PLANNED_KINDS:
            for pid, cls in REGISTRIES[kind].items():
                if a.kind not in cls.applies_to:
                    continue
                reason = _check_enabled(cfg, pid, a.name, only, skip)
                if reason is None and cls.requires:
                    offers = _declared_capabilities(a, by_name)
                    lacking = [c.value for c in cls.requires if c not in offers]
                    if lacking:
                        reason = f"needs {', '.join(lacking)}; {a.name} ({a.framework or a.kind}) offers " + (
                            ", ".join(sorted(c.value for c in offers)) or "nothing"
                        )
                if reason is None and kind == "attack" and a.kind in ("model", "endpoint") and not a.dataset:
                    reason = "the asset names no dataset to evaluate on"
                p.items.append(PlannedCheck(pid, a.name, kind, reason))
    return p


def preflight(
    config: str | Path,
    *,
    budget: str = "standard",
    asset: str | None = None,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
) -> Plan:
    """The plan, after every check that needs no model loaded — all problems at once.

    Checks config, selection, files, datasets (shapes, labels) and each planned check's
    parameters.

    This is ``bastion assess --dry-run``: it loads no model and writes nothing.

    Raises:
        ConfigError: every problem found, with its field path or file.
    """
    the_plan = plan(config, budget=budget, asset=asset, only=only, skip=skip)
    cfg, base = the_plan.config, the_plan.base_dir
    assets = [a for a in _assets(cfg) if _selected(a.name, asset)]
    _preflight_files(cfg, base, assets)
    _load_datasets(cfg, base, assets)
    _signing_key(cfg, base, assets)  # issue 4: the configured public key exists
    problems: list[str] = []
    for pid in sorted(
        {i.check_id for i in the_plan.items if i.kind in PLANNED_KINDS and i.skip_reason is None}
    ):
        cc = cfg.checks.get(pid)
        cls = next(REGISTRIES[k].get(pid) for k in PLANNED_KINDS if pid in REGISTRIES[k])
        try:
            cls.parse_params(cc.params if cc else None, where=f"checks.{pid}.params")
        except PluginError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) found in preflight", problems)
    return the_plan


def _declared_capabilities(a: Asset, by_name: dict[str, Asset] | None = None) -> frozenset[Any]:
    from bastion.targets.hardened import hardened_capabilities  # issue 6: output hardening

    return hardened_capabilities(_framework_capabilities(a, by_name), a.output)


def _framework_capabilities(a: Asset, by_name: dict[str, Asset] | None = None) -> frozenset[Any]:
    from bastion.core.capability import Capability as C

    if a.framework == "ensemble":  # issue 5: what every member offers, never logits
        members = [(by_name or {}).get(m) for m in a.members or []]
        if not members or any(m is None for m in members):
            return frozenset()
        common = frozenset.intersection(*(_declared_capabilities(m, by_name) for m in members if m))
        return common - {C.LOGITS}

    if a.kind == "endpoint" or a.framework == "http":
        out = a.endpoint.output if a.endpoint else "probabilities"
        if out == "labels":
            return frozenset({C.LABEL_ONLY, C.BATCHED, C.QUERY_LIMITED})
        caps = {C.PROBABILITIES, C.BATCHED, C.QUERY_LIMITED}
        if out == "logits":
            caps.add(C.LOGITS)
        return frozenset(caps)
    if a.framework == "torch":
        return frozenset({C.PROBABILITIES, C.LOGITS, C.LOSS_GRADIENTS, C.BATCHED})
    if a.framework == "onnx":
        return frozenset({C.PROBABILITIES, C.LOGITS, C.BATCHED})
    if a.framework == "sklearn":
        return frozenset({C.PROBABILITIES, C.BATCHED})
    return frozenset()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"bastion": __version__, "atlas": atlas.version()}
    for dist in ("torch", "scikit-learn", "numpy", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _preflight_files(cfg: ProjectConfig, base: Path, assets: list[Asset]) -> None:
    problems = []
    for i, a in enumerate(cfg.assets):
        if a.path and not (base / a.path).is_file():
            what = "is a folder, not a file" if (base / a.path).is_dir() else "file not found"
            problems.append(f"assets[{i}].path: {what}: {base / a.path}")
        elif a.path and not os.access(base / a.path, os.R_OK):
            problems.append(f"assets[{i}].path: file not readable: {base / a.path}")
    declared = {a.name for a in cfg.assets}
    for a in assets:
        if a.name not in declared and a.kind == "model" and a.path and not (base / a.path).is_file():
            problems.append(f"model version {a.name}: file recorded in the store not found: {base / a.path}")
    for i, d in enumerate(cfg.datasets):
        if not (base / d.path).is_file():
            problems.append(f"datasets[{i}].path: file not found: {base / d.path}")
        if d.splits_file and not (base / d.splits_file).is_file():
            problems.append(f"datasets[{i}].splits_file: file not found: {base / d.splits_file}")
    for i, a in enumerate(cfg.assets):
        evaluated = a.kind == "endpoint" or (a.kind == "model" and a.dataset is not None)
        if evaluated and a.input is None:
            problems.append(
                f"assets[{i}].input: a {a.kind} evaluated on a dataset needs an input spec (shape)"
            )
        if evaluated and a.task == "classification" and a.num_classes is None:
            problems.append(f"assets[{i}].num_classes: a classifier evaluated on a dataset needs num_classes")
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) before the run", problems)


def _load_datasets(cfg: ProjectConfig, base: Path, assets: list[Asset]) -> dict[str, Any]:
    from bastion.data import load_dataset

    shapes: dict[str, tuple[int, ...]] = {}
    problems: list[str] = []
    for a in assets:
        if a.dataset and a.input is not None:
            shape = tuple(a.input.shape)
            prev = shapes.setdefault(a.dataset, shape)
            if prev != shape:
                problems.append(
                    f"asset {a.name}: dataset {a.dataset!r} is used with input shapes {prev} and {shape}"
                )
    loaded: dict[str, Any] = {}
    for ds in cfg.datasets:
        try:
            loaded[ds.name] = load_dataset(ds, base_dir=base, input_shape=shapes.get(ds.name))
        except ConfigError as exc:
            problems.append(str(exc))
    for a in assets:
        ld = loaded.get(a.dataset or "")
        if ld is None or ld.y is None or a.num_classes is None or a.task != "classification":
            continue
        bad = [i for i, v in enumerate(ld.y.tolist()) if not 0 <= v < a.num_classes]
        if bad:
            problems.append(
                f"dataset {a.dataset!r} ({ld.path}): {len(bad)} label(s) outside 0..{a.num_classes - 1} "
                f"(num_classes of asset {a.name}), first at row {bad[0]}"
            )
    if problems:
        raise ConfigError(f"{len(problems)} dataset problem(s)", problems)
    return loaded


def _scan_check(a: Asset, fr: FileResult, seconds: float) -> CheckResult:
    findings = [f.model_copy(update={"asset": a.name}) for f in fr.findings]
    status = "error" if fr.verdict == Verdict.ERROR else "ok"
    reason = f"ScanError: {fr.reason}" if status == "error" else None
    if fr.verdict == Verdict.SKIPPED:
        status, reason = "skipped", f"not a model file: {fr.reason or 'no model format recognised'}"
    return CheckResult(
        id=f"scan.{(fr.format or 'file').split('-')[0]}",
        asset=a.name,
        status=status,
        reason=reason,
        metrics={"file_findings": float(len(findings))},
        notes={"verdict": fr.verdict.value, "sha256": fr.sha256 or "", "format": fr.format or ""},
        seconds=round(seconds, 4),
        findings=findings,
    )


def _apply_waivers_and_baseline(
    cfg: ProjectConfig, findings: list[Finding], baseline: Report | None
) -> list[ReportFinding]:
    today = dt.date.today()
    out: list[ReportFinding] = []
    base_fps = {f.fingerprint: f for f in baseline.findings if f.state != "fixed"} if baseline else {}
    seen: set[str] = set()
    for f in findings:
        waiver = next(
            (
                w
                for w in cfg.waivers
                if w.active(today) and w.rule_id == f.rule_id and (w.asset is None or w.asset == f.asset)
            ),
            None,
        )
        fp = f.compute_fingerprint()
        state = None
        if baseline is not None:
            state = "unchanged" if fp in base_fps else "new"
        seen.add(fp)
        out.append(ReportFinding.of(f, state=state, waiver=waiver))
    if baseline is not None:
        for fp, old in base_fps.items():
            if fp not in seen:
                data = old.model_dump()
                data.update(state="fixed", waiver=None)
                out.append(ReportFinding(**data))
    return out


def assess(
    config: str | Path = "bastion.yaml",
    *,
    settings: Settings | None = None,
    asset: str | None = None,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    baseline: str | None = None,
    progress: ProgressFn | None = None,
    store: bool = True,
    include_versions: bool = True,
) -> Report:
    """Assess every asset of a project and return the report (stored unless ``store=False``).

    Preflight (config, files, datasets, database, every check's own preflight) runs first
    and writes nothing on failure. A check that crashes is recorded as an error; the run
    goes on and ends with status ``error``.

    Args:
        config: path of ``bastion.yaml``.
        settings: run settings (database, budget preset, ``max_time``); defaults otherwise.
        asset: assess only this asset.
        only: run only these plugin ids (or id prefixes such as ``evasion``).
        skip: do not run these plugin ids (or prefixes).
        baseline: an earlier run id (prefix or ``latest``) to mark findings new/unchanged/fixed.
        progress: callback ``(label, fraction)``.
        store: record the run in the database.
        include_versions: also assess each model's latest hardened version from the store.

    Returns:
        The report; see ``docs/report.schema.json``.

    Raises:
        ConfigError: invalid config, missing file, dataset not fitting a model, bad selection.
        BastionError: unreachable database (``StoreError``), and other preflight failures.
    """
    s = settings or load_settings()
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    deadline = t0 + s.max_time if s.max_time else None
    plan(config, budget=s.budget, asset=asset, only=only, skip=skip)  # config and selection first
    baseline_report: Report | None = None
    versions: dict[str, Any] = {}
    if store or baseline:
        from bastion.store import Store, preflight

        preflight(s.db_url)  # reachable and writable; writes nothing
        versions = _latest_versions(s.db_url, load_config(config)) if include_versions else {}
        if baseline:
            with Store.open(s.db_url) as old:
                baseline_report = old.get_report(baseline)
    the_plan = plan(config, budget=s.budget, asset=asset, only=only, skip=skip, versions=versions)
    cfg, base = the_plan.config, the_plan.base_dir
    assets = [a for a in _assets(cfg, versions) if _selected(a.name, asset)]
    _preflight_files(cfg, base, assets)
    datasets = _load_datasets(cfg, base, assets)
    sign_key = _signing_key(cfg, base, assets)  # issue 4: verify model signatures

    result = RunResult()
    facts: dict[str, dict[str, Any]] = {"__run__": {"db_url": s.db_url}}
    records: dict[str, AssetRecord] = {}
    targets: dict[str, Any] = {}
    preset = PRESETS[s.budget]

    # 1. scan every model file first: nothing is loaded before the scanner judged it.
    from bastion.scan import scan_file

    every = {x.name: x for x in _assets(cfg, versions)}
    members = [every[m] for a in assets for m in a.members or [] if m not in {x.name for x in assets}]
    for a in [*assets, *{m.name: m for m in members}.values()]:  # ensemble members too (issue 5)
        rec = AssetRecord(
            name=a.name,
            kind=a.kind,
            path=a.path,
            url=a.url,
            format=a.format,
            framework=a.framework,
            owner=a.owner,
        )
        facts[a.name] = {}
        if a.path:
            p = base / a.path
            sha = _sha256(p)
            rec.sha256 = sha
            facts[a.name]["sha256"] = sha
        if a.kind == "model" and a.path:
            scan_selected = any(
                i.check_id == "scan" and i.asset == a.name and i.skip_reason is None for i in the_plan.items
            )
            if progress:
                progress(f"scan {a.name}", 0.0)
            ts = time.monotonic()
            try:
                fr = scan_file(base / a.path, allow=cfg.scan.allow)
            except ScanError as exc:
                fr = FileResult(path=a.path, verdict=Verdict.ERROR, reason=str(exc))
            facts[a.name]["scan_verdict"] = fr.verdict.value
            facts[a.name]["scan_sha256"] = fr.sha256
            rec.scan_verdict = fr.verdict.value
            if scan_selected:
                result.add(_scan_check(a, fr, time.monotonic() - ts))
            signed = _signature_check(a, base / a.path, sign_key, rec)
            if signed is not None and scan_selected:
                result.add(signed)
            if progress:
                progress(f"scan {a.name}", 1.0)
        records[a.name] = rec

    # 2. build targets for models judged safe (and endpoints).
    target_errors: dict[str, str] = {}
    needs_target = {i.asset for i in the_plan.items if i.kind == "attack" and i.skip_reason is None}
    for a in sorted(assets, key=lambda x: x.framework == "ensemble"):  # ensembles after members
        if a.name not in needs_target:
            continue
        if a.kind == "model" and a.framework in _FILE_FRAMEWORKS:
            verdict = facts[a.name].get("scan_verdict")
            if verdict != Verdict.SAFE.value:
                target_errors[a.name] = f"not loaded: the scanner judged the file {verdict}"
                continue
            if records[a.name].signature == "failed":
                target_errors[a.name] = "not loaded: its signature did not verify"
                continue
        try:
            if a.framework == "ensemble":  # issue 5: built from its members' targets
                targets[a.name] = _ensemble_target(a, every, base, facts, records, targets)
            else:
                targets[a.name] = _build_target(a, base, facts[a.name])
        except BastionError as exc:
            target_errors[a.name] = f"target failed to load: {exc}"
            result.errors.append(
                CheckError(check="target", asset=a.name, error=type(exc).__name__, message=str(exc))
            )

    # 3. contexts + preflight of every check, all problems at once.
    work: list[tuple[Check, CheckContext]] = []
    problems: list[str] = []
    for item in the_plan.items:
        if item.kind == "scanner":
            continue
        a = next(x for x in assets if x.name == item.asset)
        if item.skip_reason is not None:
            if item.skip_reason not in ("not selected by --only", "excluded by --skip"):
                result.add(
                    CheckResult(id=item.check_id, asset=a.name, status="skipped", reason=item.skip_reason)
                )
            continue
        cls = REGISTRIES[item.kind].get(item.check_id)
        cc = cfg.checks.get(item.check_id)
        try:
            params = cls.parse_params(cc.params if cc else None, where=f"checks.{item.check_id}.params")
        except PluginError as exc:
            problems.append(str(exc))
            continue
        budget = preset.merged(cc.budget if cc else None)
        thresholds = list(cc.thresholds) if cc and cc.thresholds is not None else list(cls.default_thresholds)
        data = _splits_for(a, datasets)
        ctx = CheckContext(
            asset=a,
            config=cfg,
            base_dir=base,
            budget=budget,
            params=params,
            thresholds=thresholds,
            seed=cfg.seed,
            target=targets.get(a.name),
            data=data,
            facts=facts,
        )
        check: Check = cls()
        if item.kind == "attack" and a.name in target_errors:
            result.add(
                CheckResult(id=item.check_id, asset=a.name, status="skipped", reason=target_errors[a.name])
            )
            continue
        reason = check.applicable(ctx)
        if reason is not None:
            result.add(CheckResult(id=item.check_id, asset=a.name, status="skipped", reason=reason))
            continue
        problems += [f"checks.{item.check_id} on {a.name}: {p}" for p in check.preflight(ctx)]
        work.append((check, ctx))
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) found in preflight", problems)

    # 4. run, in asset order then check order.
    work.sort(key=lambda wc: (wc[1].asset.name, type(wc[0]).order, wc[0].id))
    for check, ctx in work:
        label = f"{check.id} {ctx.asset.name}"
        if deadline is not None and time.monotonic() > deadline:
            result.add(
                CheckResult(id=check.id, asset=ctx.asset.name, status="skipped", reason="--max-time reached")
            )
            continue
        if deadline is not None:
            left = max(1.0, deadline - time.monotonic())
            ctx.budget = ctx.budget.merged(Budget(seconds=min(left, ctx.budget.seconds or left)))
        if progress:
            ctx.progress = lambda f, label=label: progress(label, f)
            progress(label, 0.0)
        ts = time.monotonic()
        try:
            res = check.run(ctx)
            res.seconds = round(time.monotonic() - ts, 4)
        except Exception as exc:  # a crashed plugin is recorded; the run goes on
            log.warning(
                "check %s on %s crashed: %s",
                check.id,
                ctx.asset.name,
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            res = CheckResult(
                id=check.id,
                asset=ctx.asset.name,
                status="error",
                reason=f"{type(exc).__name__}: {exc}",
                seconds=round(time.monotonic() - ts, 4),
            )
        result.add(res)
        if progress:
            progress(label, 1.0)

    # 5. the report.
    cut = [c for c in result.checks if c.status == "skipped" and c.reason == "--max-time reached"]
    if cut:
        result.errors.append(
            CheckError(
                check="run",
                error="MaxTimeReached",
                message=f"{len(cut)} check(s) not run: --max-time reached; the result is incomplete",
            )
        )
    status = "error" if result.errors else "ok"
    report = Report(
        bastion_version=__version__,
        run=RunInfo(
            id=uuid.uuid4().hex,
            status=status,
            started=started,
            seconds=round(time.monotonic() - t0, 3),
            command="assess",
            project=cfg.project.name,
            budget=s.budget,
        ),
        reproducibility=Reproducibility(seed=cfg.seed, config_hash=config_hash(config), versions=_versions()),
        assets=list(records.values()),
        checks=result.checks,
        findings=_apply_waivers_and_baseline(cfg, result.findings, baseline_report),
        errors=result.errors,
        skipped=result.skipped,
        baseline=baseline_report.run.id if baseline_report else None,
    )
    if store:
        from bastion.store import Store

        with Store.open(s.db_url) as db:
            db.save_report(report, fail_on=s.fail_on)
    return report


def _splits_for(a: Asset, datasets: dict[str, Any]) -> dict[str, Split]:
    if a.kind == "dataset":
        ds = datasets.get(a.name)
        return dict(ds.context_data()) if ds is not None else {}
    if a.dataset and a.dataset in datasets:
        return dict(datasets[a.dataset].splits)
    return {}


def _build_target(a: Asset, base: Path, facts: dict[str, Any]) -> Any:
    from bastion.targets import build_target

    if a.kind == "endpoint" or a.framework == "http":
        return build_target(a, base_dir=base)
    path = base / str(a.path)
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if sha != facts.get("scan_sha256"):
        from bastion.core.errors import IntegrityError

        raise IntegrityError(f"{path}: file changed after it was scanned (SHA-256 {sha[:12]}…)")
    return build_target(a, base_dir=base, verified_bytes=data, verified_sha256=sha)


def _ensemble_target(
    a: Asset,
    every: dict[str, Asset],
    base: Path,
    facts: dict[str, dict[str, Any]],
    records: dict[str, AssetRecord],
    built: dict[str, Any],
) -> Any:
    """An :class:`EnsembleTarget` of ``a.members`` (issue 5), each scanned and loaded as usual.

    Raises:
        TargetError: a member the scanner did not judge safe, or whose signature failed.
        BastionError: a member that fails to load, or members that do not fit together.
    """
    from bastion.core.errors import TargetError
    from bastion.targets import EnsembleTarget

    members = []
    for name in a.members or []:
        m = every[name]
        if name in built:
            members.append(built[name])
            continue
        if m.kind == "model" and m.framework in _FILE_FRAMEWORKS:
            verdict = facts.get(name, {}).get("scan_verdict")
            if verdict != Verdict.SAFE.value:
                raise TargetError(f"member {name} not loaded: the scanner judged the file {verdict}")
            if name in records and records[name].signature == "failed":
                raise TargetError(f"member {name} not loaded: its signature did not verify")
        members.append(_build_target(m, base, facts.get(name, {})))
    from bastion.targets.hardened import harden_output  # issue 6: the ensemble's own output hardening

    return harden_output(EnsembleTarget(members, name=a.name), a.output)


def exit_code(report: Report, fail_on: str) -> int:
    """The documented exit code of an assessment: 2 errors > 1 findings > 3 nothing ran > 0."""
    from bastion.core.severity import gates

    if report.run.status == "error" or report.errors:
        return 2
    if any(gates(f.severity, fail_on) for f in report.gating()):
        return 1
    if not any(c.status == "ok" for c in report.checks):
        return 3
    return 0


def check_output_dir(out_dir: str | Path) -> None:
    """Preflight of a report folder: it is (or can be created as) a writable folder. Creates nothing.

    Raises:
        ConfigError: a file is in the way, or the folder (or its nearest existing parent) is not writable.
    """
    out = Path(out_dir)
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"--output {out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--output {out}: {probe} is not writable")


def write_outputs(report: Report, out_dir: str | Path, *, fail_on: str = "medium") -> dict[str, Path]:
    """Write ``report.html``, ``report.json``, ``report.sarif`` and ``bom.json`` into ``out_dir`` atomically.

    Each file is written to a temporary name and renamed, so a failure leaves no
    half-written report. ``bom.json`` is the CycloneDX 1.6 ML-BOM of the report's assets
    (hashes, format, scan verdict, signature status; datasets).

    Args:
        report: the report.
        out_dir: the folder (created if missing).
        fail_on: the gate the HTML summary states.

    Returns:
        ``{"html": path, "json": path, "sarif": path, "bom": path}``.

    Raises:
        ConfigError: the folder cannot be created or written.
    """
    import json

    from bastion.report import report_to_html, report_to_json, report_to_sarif
    from bastion.scan.bom import report_bom

    out = Path(out_dir)
    check_output_dir(out)
    rendered = {
        "html": report_to_html(report, fail_on=fail_on),
        "json": report_to_json(report),
        "sarif": report_to_sarif(report),
        "bom": json.dumps(report_bom(report, tool_version=__version__), indent=2) + "\n",
    }
    paths: dict[str, Path] = {}
    tmp_files: list[tuple[Path, Path]] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for kind, text in rendered.items():
            final = out / ("bom.json" if kind == "bom" else f"report.{kind}")
            tmp = out / f".{final.name}.{os.getpid()}.tmp"
            tmp_files.append((tmp, final))
            tmp.write_text(text, encoding="utf-8")
            paths[kind] = final
        for tmp, final in tmp_files:
            os.replace(tmp, final)
    except OSError as exc:
        raise ConfigError(f"--output {out}: cannot write the report: {exc.strerror or exc}") from None
    finally:
        for tmp, _ in tmp_files:
            if tmp.exists():
                tmp.unlink()
    return paths


# ---------------------------------------------------------------------------------------
# history / show
# ---------------------------------------------------------------------------------------
def history(*, db_url: str | None = None, limit: int = 20, project: str | None = None) -> list[Any]:
    """Stored runs, newest first (``RunSummary`` objects).

    Raises:
        StoreError: the database cannot be reached.
    """
    from bastion.store import Store

    url = load_settings(db_url=db_url).db_url
    if not _store_exists(url):
        return []
    st = Store.open(url)
    try:
        return list(st.list_runs(limit=limit, project=project))
    finally:
        st.close()


def _store_exists(url: str) -> bool:
    """False for a SQLite URL whose file does not exist (reading must not create it)."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:
        return True  # let Store.open report the bad URL
    if u.get_backend_name() == "sqlite":
        db = u.database
        return bool(db) and db != ":memory:" and Path(str(db)).is_file()
    return True


def show(run: str, *, db_url: str | None = None) -> Report:
    """Re-load a stored report by run id, unique prefix, or ``latest``.

    Raises:
        StoreError: unknown run or unreachable database.
    """
    from bastion.store import Store

    url = load_settings(db_url=db_url).db_url
    if not _store_exists(url):
        raise ConfigError(f"no runs recorded yet: no database at {url}")
    st = Store.open(url)
    try:
        return st.get_report(run)
    finally:
        st.close()


# ---------------------------------------------------------------------------------------
# init / demo
# ---------------------------------------------------------------------------------------
def init_project(directory: str | Path, *, force: bool = False) -> Path:
    """Write a starter ``bastion.yaml`` by discovering model files and datasets in ``directory``.

    Model files are recognised by the scanner's magic-byte sniffing (nothing is loaded);
    CSV and npz files become datasets. The result validates against the config model.

    Raises:
        ConfigError: ``directory`` is not a folder, or ``bastion.yaml`` exists (without ``force``).
    """
    from bastion.discover import write_starter

    return write_starter(Path(directory), force=force)


def build_demo(
    directory: str | Path | None = None, *, seed: int = 0, force: bool = False, poisoned: bool = False
) -> Path:
    """Build the clinic example project (deterministic under ``seed``) and return its ``bastion.yaml``.

    ``poisoned``: plant a BadNets backdoor in the digits training data and retrain that model
    (:mod:`bastion.examples.clinic_poisoned`); the default folder is then ``examples/clinic-poisoned``
    (else ``examples/clinic``).
    """
    if poisoned:
        from bastion.examples.clinic_poisoned import build_poisoned_clinic

        return build_poisoned_clinic(Path(directory or "examples/clinic-poisoned"), seed=seed, force=force)
    from bastion.examples.clinic import build_clinic

    return build_clinic(Path(directory or "examples/clinic"), seed=seed, force=force)


# --- harden (issues 5 and 6) ---------------------------------------------------------------
@dataclass
class HardenResult:
    """A hardened model version, written and recorded.

    Attributes:
        asset: the original asset's name.
        version: the recorded version number (the file in ``bastion.yaml`` is version 1).
        name: the asset name its assessment uses (``<asset>.v<version>``).
        path: the new model file, relative to the project folder.
        sha256: its hash.
        procedure: the defence id.
        details: what the procedure did and measured.
    """

    asset: str
    version: int
    name: str
    path: str
    sha256: str
    procedure: str
    details: dict[str, Any]


def harden(
    config: str | Path,
    procedure: str,
    *,
    asset: str,
    params: dict[str, Any] | None = None,
    settings: Settings | None = None,
    progress: Callable[[float], None] | None = None,
) -> HardenResult:
    """Run a defence (``defend.*`` plugin) on a model asset and record the result as a new version.

    The original file is scanned first and loaded only if judged safe; the new model is
    written atomically under ``.bastion/models/`` in the project folder and recorded in the
    store with its hash, procedure, parameters and training data (lineage). ``bastion assess``
    then assesses it beside the original (``<asset>.v<N>``).

    Raises:
        ConfigError: invalid config, unknown asset or procedure, bad parameters, or the
            defence's preflight problems (all listed), before any training.
        IntegrityError: the model file changed after it was scanned.
        StoreError: the database cannot be reached (checked before training).
    """
    from bastion.core.registry import defences
    from bastion.scan import scan_file
    from bastion.store import Store, preflight
    from bastion.store.versions import add_version

    load_plugins()
    s = settings or load_settings()
    path = Path(config)
    cfg = load_config(path)
    base = path.resolve().parent
    a = cfg.asset(asset)
    if a.kind != "model" or not a.path:
        raise ConfigError(f"--asset {asset}: only model files can be hardened (kind {a.kind})")
    if procedure not in defences:
        pid = f"defend.{procedure}"
        if pid not in defences:
            known = ", ".join(p.removeprefix("defend.") for p in defences) or "none"
            raise ConfigError(f"unknown hardening procedure {procedure!r}; known: {known}")
        procedure = pid
    cls = defences.get(procedure)
    try:
        parsed = cls.parse_params(params, where="params")
    except PluginError as exc:
        raise ConfigError(str(exc)) from None
    _preflight_files(cfg, base, [a])
    datasets = _load_datasets(cfg, base, [a])
    preflight(s.db_url)
    fr = scan_file(base / a.path, allow=cfg.scan.allow)
    if fr.verdict != Verdict.SAFE:
        raise ConfigError(f"{base / a.path}: not loaded: the scanner judged the file {fr.verdict.value}")
    target = _build_target(a, base, {"scan_sha256": fr.sha256})
    target = getattr(target, "inner", target) if a.output is not None else target  # the model, unhardened
    from bastion.defend.base import HardenContext

    ctx = HardenContext(
        asset=a,
        config=cfg,
        base_dir=base,
        target=target,
        data=_splits_for(a, datasets),
        params=parsed,
        seed=cfg.seed,
        progress=progress,
    )
    defence = cls()
    problems = defence.preflight(ctx)
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) before hardening {asset}", problems)
    out = defence.harden(ctx)
    sha = hashlib.sha256(out.payload).hexdigest()
    rel = (
        Path(".bastion")
        / "models"
        / f"{a.name}-{procedure.removeprefix('defend.')}-{sha[:12]}{out.extension}"
    )
    dest = base / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.write_bytes(out.payload)
    os.replace(tmp, dest)
    details = {
        **out.details,
        "format": "torch" if out.format == "torch" else "skops",
        "model_class": out.model_class or a.model_class,
        "model_kwargs": out.model_kwargs or a.model_kwargs,
        "params": parsed.model_dump(mode="json"),
        "parent_sha256": fr.sha256,
    }
    with Store.open(s.db_url) as st:
        v = add_version(
            st,
            asset=a.name,
            path=rel.as_posix(),
            sha256=sha,
            procedure=procedure,
            details=details,
            datasets=_trained_on(st, cfg, base, a),
        )
    return HardenResult(
        asset=a.name,
        version=v.version,
        name=f"{a.name}.v{v.version}",
        path=rel.as_posix(),
        sha256=sha,
        procedure=procedure,
        details=details,
    )


# --- supply chain: scan options, signing, ML-BOM (issue 4) ---
def scan_models(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    allow: Sequence[str] = (),
    config: str | Path | None = None,
    rules: Sequence[str | os.PathLike[str]] = (),
    jobs: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
    digest: bool = True,
) -> ScanResult:
    """:func:`scan` with the scanner's options: extra rule files, worker processes, progress.

    Args:
        paths: a file or folder, or several.
        allow: allow-list additions (never read from the scanned folder).
        config: an explicit ``bastion.yaml`` whose ``scan.allow`` adds to ``allow``.
        rules: extra rule files (TOML, the shipped format; deny always wins).
        jobs: worker processes (1: in process; 0: one per CPU).
        progress: called after each file with ``(done, total, path)``.
        digest: compute SHA-256s (``False`` leaves ``sha256`` empty; faster on large files).

    Raises:
        ScanError: a path does not exist.
        ConfigError: the config, an allow entry or a rule file is invalid.
    """
    from bastion.scan import scan_paths

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    extra = list(allow)
    if config is not None:
        extra += load_config(config).scan.allow
    if not paths:
        raise ConfigError("no path to scan given")
    result = scan_paths(
        [Path(p) for p in paths], allow=extra, rules=rules, jobs=jobs, progress=progress, digest=digest
    )
    result.bastion_version = __version__
    return result


def sign_model(
    path: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str],
    signature: str | os.PathLike[str] | None = None,
) -> Path:
    """Sign a model file or folder (OpenSSF model-signing, Sigstore bundle); returns the bundle path.

    Raises:
        ConfigError: missing path or key. MissingExtraError: ``model-signing`` not installed.
        IntegrityError: the key was refused.
    """
    from bastion.scan.signing import sign_path

    return sign_path(path, key=key, signature=signature)


def verify_model(
    path: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str],
    signature: str | os.PathLike[str] | None = None,
) -> Path:
    """Verify a model file or folder against its signature; returns the bundle path.

    Raises:
        IntegrityError: bad or missing signature, or a changed, added or removed file (named).
        ConfigError: missing path or key. MissingExtraError: ``model-signing`` not installed.
    """
    from bastion.scan.signing import verify_path

    return verify_path(path, key=key, signature=signature).signature


def model_bom(
    path: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str] | None = None,
    signature: str | os.PathLike[str] | None = None,
    allow: Sequence[str] = (),
    jobs: int = 1,
) -> tuple[dict[str, Any], ScanResult]:
    """A CycloneDX 1.6 ML-BOM of a model file or folder (scans it first).

    Returns:
        ``(bom dict, the scan it was built from)``.

    Raises:
        ScanError: the path does not exist.
    """
    from bastion.scan.bom import build_bom

    result = scan_models([path], allow=allow, jobs=jobs)
    return build_bom(result, root=path, key=key, signature=signature, tool_version=__version__), result


def _signing_key(cfg: ProjectConfig, base: Path, assets: Sequence[Asset]) -> Path | None:
    """The project's ``signing.public_key`` (resolved), checked in preflight; ``None`` when unset.

    Raises:
        ConfigError: the key file is missing. MissingExtraError: ``model-signing`` is not installed
            while a model file is to be verified.
    """
    if not cfg.signing.public_key:
        return None
    key = base / cfg.signing.public_key
    if not key.is_file():
        raise ConfigError(f"signing.public_key: {key}: no such key file")
    if any(a.kind == "model" and a.path for a in assets):
        from bastion.core.errors import require

        require("model_signing", "signing")
    return key


def _signature_check(a: Asset, path: Path, key: Path | None, rec: AssetRecord) -> CheckResult | None:
    """Verify ``<path>.sig`` with ``key``; set ``rec.signature``; the ``scan.signature`` result, if any.

    A failed verification is a high finding ``scan.signature.verification-failed``; a model without
    a signature is a low finding ``scan.signature.unsigned`` only when a key is configured. With no
    key and no signature nothing is checked (``None``).
    """
    from bastion.core.atlas import SUPPLY_CHAIN_MODEL
    from bastion.core.findings import Location, Threat
    from bastion.core.severity import Severity
    from bastion.scan.signing import SignatureStatus, default_signature_path, signature_status

    ts = time.monotonic()
    sig = default_signature_path(path)
    if key is None and not sig.is_file():
        rec.signature = "unsigned"
        return None
    status, why = signature_status(path, key=key, signature=sig)
    if key is None:
        why = f"{sig.name} found but no signing.public_key is configured to verify it"
    names = {
        SignatureStatus.VERIFIED: "verified",
        SignatureStatus.INVALID: "failed",
        SignatureStatus.UNSIGNED: "unsigned",
        SignatureStatus.UNVERIFIED: "error",
    }
    rec.signature = names[status]  # type: ignore[assignment]
    rec.signature_detail = why
    if key is None:
        return None
    loc = Location(path=a.path)
    findings: list[Finding] = []
    if status is SignatureStatus.INVALID:
        findings.append(
            Finding(
                rule_id="scan.signature.verification-failed",
                severity=Severity.HIGH,
                threat=Threat.SUPPLY_CHAIN,
                title="Model signature does not verify: the file changed or the signature is not the key's",
                asset=a.name,
                location=loc,
                evidence={"signature": str(sig), "key": str(key), "reason": (why or "")[:1000]},
                atlas=[SUPPLY_CHAIN_MODEL],
                remediation="Restore the signed file, or re-sign it (`bastion sign`) if the change is yours.",
                references=["https://github.com/sigstore/model-transparency"],
            )
        )
    elif status is SignatureStatus.UNSIGNED:
        findings.append(
            Finding(
                rule_id="scan.signature.unsigned",
                severity=Severity.LOW,
                threat=Threat.SUPPLY_CHAIN,
                title="Model file has no signature while the project verifies signatures",
                asset=a.name,
                location=loc,
                evidence={"expected_signature": str(sig)},
                atlas=[SUPPLY_CHAIN_MODEL],
                remediation=f"Sign it: `bastion sign {a.path} --key PRIVATE_KEY`.",
                references=["https://github.com/sigstore/model-transparency"],
            )
        )
    return CheckResult(
        id="scan.signature",
        asset=a.name,
        status="error" if status is SignatureStatus.UNVERIFIED else "ok",
        reason=f"IntegrityError: {why}" if status is SignatureStatus.UNVERIFIED else None,
        metrics={"verified": 1.0 if status is SignatureStatus.VERIFIED else 0.0},
        notes={"signature": rec.signature or "", "signature_path": str(sig)},
        seconds=round(time.monotonic() - ts, 4),
        findings=findings,
    )


# --- guard (issue 7) ---------------------------------------------------------------------
def guard_fit(
    config: str | Path,
    *,
    asset: str,
    out: str | Path,
    split: str = "train",
    honeytokens: int = 0,
    honeytokens_out: str | Path | None = None,
    honeytoken_step: float | None = None,
    sign_key: str | Path | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Fit the guard's artefact (input profile, OOD detector, query sketch, output reference).

    The asset's dataset split (``train``) is the reference; the model (scanned, judged
    ``safe`` and hash-checked, as in :func:`assess`) gives the output reference. Written
    without pickle (``profile.npz`` + ``profile.json``).

    Args:
        config: the project's ``bastion.yaml``.
        asset: the model asset the guard will serve.
        out: the artefact folder.
        split: the dataset split to learn from.
        honeytokens: honeytoken records to make (0: none); their keyed hashes go into the
            artefact, their rows into ``honeytokens_out`` for the data owner to plant.
        honeytokens_out: file (``.npz`` or ``.csv``) for the rows; required with ``honeytokens``.
        honeytoken_step: value grid of the tokens (default: the data's own grid, see
            :func:`bastion.guard.canary.data_step`); matching tolerance is half of it.
        sign_key: PEM EC private key; the artefact folder is then signed (:func:`sign_model`)
            into ``<out>.sig``.
        seed: honeytoken randomness (tests only; default from the OS).

    Returns:
        ``{"path", "sha256", "rows", "asset"}`` (+ ``honeytokens``, ``signature``): pin
        ``sha256`` in ``guard.yaml`` (``profile.sha256``).

    Raises:
        ConfigError: unknown asset, no dataset or split, or too little data; ``honeytokens``
            without ``honeytokens_out``.
        IntegrityError: the model file is not judged safe or changed after scanning.
    """
    from bastion.core.errors import IntegrityError
    from bastion.guard.profile import fit_profile, save_profile
    from bastion.scan import scan_file

    if honeytokens and honeytokens_out is None:
        raise ConfigError("--honeytokens needs --honeytokens-out FILE (the rows to plant in the data)")
    path = Path(config)
    cfg = load_config(path)
    base = path.resolve().parent
    a = cfg.asset(asset)
    if not a.dataset:
        raise ConfigError(f"asset {asset!r} names no dataset to fit the guard on")
    if a.input is None or a.num_classes is None:
        raise ConfigError(f"asset {asset!r}: input.shape and num_classes are needed to fit the guard")
    datasets = _load_datasets(cfg, base, [a])
    ds = datasets[a.dataset]
    if split not in ds.splits:
        raise ConfigError(f"dataset {a.dataset!r} has no split {split!r}")
    x = ds.splits[split].x
    facts: dict[str, Any] = {}
    if a.kind == "model" and a.path and a.framework in _FILE_FRAMEWORKS:
        fr = scan_file(base / a.path, allow=cfg.scan.allow)
        if fr.verdict != Verdict.SAFE:
            raise IntegrityError(f"{base / a.path}: the scanner judged it {fr.verdict.value}; not loading it")
        facts["scan_sha256"] = fr.sha256
    target = _build_target(a, base, facts)
    probs = target.predict_proba(x) if "probabilities" in {c.value for c in target.capabilities} else None
    value_range = tuple(a.input.range) if a.input.range is not None else None
    profile = fit_profile(
        x,
        num_classes=int(a.num_classes),
        probs=probs,
        value_range=value_range,  # type: ignore[arg-type]
        seed=cfg.seed,
        meta={"asset": a.name, "model_sha256": facts.get("scan_sha256"), "dataset_sha256": ds.sha256},
    )
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--output {out}: a file is in the way; give a folder for the guard artefact")
    extra: dict[str, Any] = {}
    if honeytokens:
        assert honeytokens_out is not None
        spec = _guard_make_honeytokens(
            ds, split, profile, n=honeytokens, out=honeytokens_out, step=honeytoken_step, seed=seed
        )
        profile.honeytokens = spec.model_dump()
        extra["honeytokens"] = {"count": len(spec.tokens), "step": spec.step, "file": str(honeytokens_out)}
    try:
        sha = save_profile(profile, out)
    except OSError as exc:
        raise ConfigError(f"--output {out}: cannot write the guard artefact: {exc.strerror or exc}") from None
    if sign_key is not None:
        extra["signature"] = str(sign_model(out, key=sign_key))
    return {"path": str(Path(out)), "sha256": sha, "rows": len(x), "asset": a.name, **extra}


def _guard_make_honeytokens(
    ds: Any,
    split: str,
    profile: Any,
    *,
    n: int,
    out: str | Path,
    step: float | None,
    seed: int | None,
) -> Any:
    """Make ``n`` honeytokens from a dataset split, write their rows to ``out``; their ``HoneytokenSpec``."""
    import numpy as np

    from bastion.guard.canary import data_step, honeytoken_spec, make_honeytokens

    if n < 1:
        raise ConfigError(f"honeytokens: n must be at least 1, got {n}")
    dest = Path(out)
    if dest.suffix.lower() not in (".npz", ".csv"):
        raise ConfigError(f"{dest}: honeytokens file must end in .npz or .csv")
    sp = ds.splits[split]
    x = np.asarray(sp.x, dtype=np.float64)
    y = getattr(sp, "y", None)
    st = float(step) if step is not None else data_step(x)
    if st <= 0:
        raise ConfigError(f"honeytokens: step must be positive, got {st}")
    thr = float(profile.ood_threshold)

    def in_dist(t: Any) -> bool:
        return bool(profile.mahalanobis(t[None, :])[0] <= thr)

    rng = np.random.default_rng(seed) if seed is not None else None
    tokens, labels = make_honeytokens(
        x,
        y,
        n=n,
        step=st,
        lo=profile.lo,
        hi=profile.hi,
        categorical=list(profile.categories),
        accept=in_dist,
        rng=rng,
    )
    tokens = tokens.astype(np.float32)  # what the guard sees after validation: exact replays always match
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the rows are a secret
        with os.fdopen(fd, "wb") as fh:
            if dest.suffix.lower() == ".npz":
                arrays: dict[str, Any] = {"x": tokens}
                if labels is not None:
                    arrays["y"] = labels
                np.savez(fh, **arrays)
            else:
                flat = tokens.reshape(len(tokens), -1)
                cols = [f"f{i}" for i in range(flat.shape[1])] + (["label"] if labels is not None else [])
                lines = [",".join(cols)]
                for i, r in enumerate(flat):
                    vals = [repr(float(v)) for v in r] + ([str(int(labels[i]))] if labels is not None else [])
                    lines.append(",".join(vals))
                fh.write(("\n".join(lines) + "\n").encode())
    except OSError as exc:
        raise ConfigError(f"{dest}: cannot write honeytokens: {exc.strerror or exc}") from None
    return honeytoken_spec(tokens, step=st)


def guard_honeytokens(
    config: str | Path,
    *,
    asset: str,
    out: str | Path,
    n: int = 20,
    split: str = "train",
    step: float | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Make honeytoken records for a dataset: rows to plant, and the ``guard.yaml`` block that catches them.

    The rows (blends of real rows of one class on the data's value grid) go to ``out``
    (``.npz`` with ``x``/``y``, or ``.csv``; mode 0600): add them to the training data. The
    returned ``honeytokens`` block holds only keyed hashes; put it in ``guard.yaml``. Any query
    within ``step / 2`` of a token then raises ``guard.honeytoken.hit`` at once.

    Returns:
        ``{"file", "count", "honeytokens": {salt, step, tokens: [{id, hmac}]}}``.

    Raises:
        ConfigError: unknown asset, no dataset or split, bad ``out`` suffix, too little data.
    """
    from bastion.guard.profile import fit_profile

    path = Path(config)
    cfg = load_config(path)
    a = cfg.asset(asset)
    if not a.dataset or a.input is None or a.num_classes is None:
        raise ConfigError(f"asset {asset!r}: honeytokens need a dataset, input.shape and num_classes")
    ds = _load_datasets(cfg, path.resolve().parent, [a])[a.dataset]
    if split not in ds.splits:
        raise ConfigError(f"dataset {a.dataset!r} has no split {split!r}")
    value_range = tuple(a.input.range) if a.input.range is not None else None
    prof = fit_profile(ds.splits[split].x, num_classes=int(a.num_classes), value_range=value_range)  # type: ignore[arg-type]
    spec = _guard_make_honeytokens(ds, split, prof, n=n, out=out, step=step, seed=seed)
    return {"file": str(out), "count": len(spec.tokens), "honeytokens": spec.model_dump()}


def guard_app(config: str | Path, *, clock: Callable[[], float] | None = None) -> Any:
    """The guard's FastAPI app for ``guard.yaml`` (model scanned and profile hash-checked first).

    Raises:
        ConfigError, IntegrityError, StoreError, MissingExtraError: see ``bastion.guard.app``.
    """
    from bastion.guard.app import create_app
    from bastion.guard.config import load_guard_config

    cfg = load_guard_config(config)
    return create_app(cfg, clock=clock or time.time)


def guard_server_address(config: str | Path) -> tuple[str, int]:
    """``(host, port)`` from ``guard.yaml``'s ``server`` section."""
    from bastion.guard.config import load_guard_config

    cfg = load_guard_config(config)
    return cfg.server.host, cfg.server.port


def guard_verify_log(
    config: str | Path | None = None,
    *,
    db: str | None = None,
    chain: str | None = None,
    expected_head: tuple[int | None, str] | None = None,
) -> Any:
    """Verify the guard's hash-chained audit log (``VerifyResult``: ``ok``, ``problems``, head).

    ``expected_head``: a head ``(seq or None, hash)`` recorded earlier (logged by the guard on
    shutdown); a chain that no longer holds it was truncated or rewritten.

    The store comes from ``db``, else ``guard.yaml``'s ``audit.db``, else the default store.

    Raises:
        StoreError: the database cannot be reached.
    """
    from bastion.store.audit import AuditLog
    from bastion.store.repository import default_url

    url, name = db, chain
    if config is not None:
        from bastion.guard.config import load_guard_config

        cfg = load_guard_config(config)
        url = url or cfg.audit.db
        name = name or cfg.audit.chain
    url = url or default_url()
    if not _store_exists(url):
        raise ConfigError(f"no audit database at {url}: nothing to verify (check --db / audit.db)")
    log_ = AuditLog.open(url, chain=name or "guard")
    try:
        return log_.verify(expected_head=expected_head)
    finally:
        log_.close()


def guard_new_key(key_id: str, models: Sequence[str] = ("*",)) -> tuple[str, dict[str, Any]]:
    """A fresh API key and its ``guard.yaml`` entry (salt + HMAC only); show the secret once."""
    from bastion.guard.access import new_key

    secret, spec = new_key(key_id, list(models))
    return secret, spec.model_dump()


# --- data: profile, validate, register, verify, sanitise (issue 8) ---
def data_profile(
    dataset: str | Path,
    *,
    label: str | None = None,
    output: str | Path | None = None,
    chunksize: int = 50_000,
) -> Any:
    """Learn the schema/profile of a CSV (streamed) or npz dataset; save it as the next version.

    Returns:
        The :class:`bastion.data.profile.Profile` (as written when ``output`` is given).

    Raises:
        ConfigError: unreadable or malformed file, label not found (file, row, column named).
    """
    from bastion.data.profile import profile_dataset, save_profile

    prof = profile_dataset(dataset, label=label, chunksize=chunksize)
    return save_profile(prof, output) if output is not None else prof


def data_validate(
    dataset: str | Path, profile: str | Path, *, chunksize: int = 50_000, tolerance: float = 0.0
) -> list[Any]:
    """Every violation (row, column, rule) of ``dataset`` against the saved profile at ``profile``.

    Raises:
        ConfigError: unreadable file or profile, format mismatch.
    """
    from bastion.data.profile import load_profile
    from bastion.data.validate import validate_dataset

    return validate_dataset(dataset, load_profile(profile), chunksize=chunksize, tolerance=tolerance)


def _dataset_name(path: Path, name: str | None) -> str:
    return name or (path.stem if path.is_file() else path.name)


def data_register(
    dataset: str | Path,
    *,
    name: str | None = None,
    source: str | None = None,
    licence: str | None = None,
    owner: str | None = None,
    db: str | None = None,
    parent_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> Any:
    """Hash every file and row of ``dataset`` and record a new version in the store.

    Returns:
        The stored :class:`bastion.store.provenance.DatasetVersion`.

    Raises:
        ConfigError: the dataset is missing or unreadable. StoreError: the store failed.
    """
    from bastion.data.provenance import build_manifest
    from bastion.store.provenance import register_version
    from bastion.store.repository import Store

    path = Path(dataset).resolve()
    man = build_manifest(path)
    info = {"path": str(path), **(details or {})}
    with Store.open(db) as store:
        return register_version(
            store,
            dataset=_dataset_name(path, name),
            merkle_root=man.merkle_root,
            files=man.files_json(),
            source=source,
            licence=licence,
            owner=owner,
            parent_id=parent_id,
            details=info,
        )


def data_verify(
    dataset: str | Path, *, name: str | None = None, db: str | None = None
) -> tuple[Any, list[Any]]:
    """Compare ``dataset`` now with its registered version; every changed/added/removed file or row.

    The version compared is the newest one registered for this path (else the newest of the name).

    Returns:
        ``(version, changes)``; ``changes`` empty when nothing changed.

    Raises:
        ConfigError: the dataset was never registered, or is unreadable.
    """
    from bastion.data.provenance import build_manifest, diff_manifests
    from bastion.store.provenance import list_versions
    from bastion.store.repository import Store

    path = Path(dataset).resolve()
    ds_name = _dataset_name(path, name)
    with Store.open(db) as store:
        versions = list_versions(store, ds_name)
    if not versions:
        raise ConfigError(
            f"dataset {ds_name!r} ({path}) is not registered; run `bastion data register` first"
        )
    same = [v for v in versions if v.details.get("path") == str(path)]
    version = (same or versions)[-1]
    changes = diff_manifests(version.files, build_manifest(path))
    return version, changes


def _rows_from_report(report_path: Path, src: Path, rules: Sequence[str]) -> list[int]:
    """Row indices the poisoning findings of a Bastion JSON report flagged in the file ``src``.

    A finding counts when its rule id starts with one of ``rules`` and its evidence lists
    ``indices``; it must be for this dataset version: its ``evidence.dataset_sha256``, else the
    report's dataset asset at the finding's ``location.path``, must equal ``src``'s SHA-256.
    Only indices are read, never values.

    Raises:
        ConfigError: unreadable or malformed report, a report for another dataset version, a
            finding that lists only some of its rows (``indices_truncated``).
    """
    from pydantic import ValidationError

    from bastion.data.provenance import file_sha256

    try:
        rep = Report.model_validate_json(report_path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{report_path}: cannot read the report: {exc.strerror or exc}") from None
    except ValidationError as exc:
        errs = exc.errors()
        where = ".".join(str(x) for x in errs[0]["loc"]) if errs else ""
        msg = errs[0]["msg"] if errs else str(exc)
        raise ConfigError(
            f"{report_path}: not a Bastion JSON report ({where or 'document'}: {msg})"
        ) from None
    sha = file_sha256(src)
    by_path = {a.path: a.sha256 for a in rep.assets if a.kind == "dataset" and a.path}
    known = {a.sha256 for a in rep.assets if a.kind == "dataset"}
    rows: set[int] = set()
    other: list[str] = []
    for f in rep.findings:
        if not any(f.rule_id.startswith(r) for r in rules) or not isinstance(f.evidence.get("indices"), list):
            continue
        path = f.location.path if f.location else None
        fsha = f.evidence.get("dataset_sha256") or (by_path.get(path) if path else None)
        if fsha != sha:
            other.append(f"{f.rule_id} on {path or '?'}")
            continue
        if f.evidence.get("indices_truncated"):
            raise ConfigError(
                f"{report_path}: finding {f.rule_id} lists only the first {len(f.evidence['indices'])} "
                f"of {f.evidence.get('count', '?')} rows; rerun the assessment with a larger "
                "params.max_indices for its check"
            )
        idx = f.evidence["indices"]
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
            raise ConfigError(f"{report_path}: finding {f.rule_id}: evidence.indices must be integers")
        rows.update(int(i) for i in idx)
        known.add(sha)
    if sha not in known:
        detail = f" (its findings are for: {', '.join(sorted(set(other))[:3])})" if other else ""
        raise ConfigError(
            f"{report_path}: the report is not for this version of {src} (sha256 {sha[:12]}…){detail}"
        )
    return sorted(rows)


def _rows_to_remove(
    spec: str,
    path: Path,
    label: str | None,
    from_report: Path | None = None,
    rules: Sequence[str] = ("poisoning.",),
) -> list[int]:
    """Row indices from ``1,5,9``, a JSON file (a list or ``{"rows": [...]}``), or ``flagged``."""
    import json as _json

    if from_report is not None:
        if spec != "flagged":
            raise ConfigError("--from-report goes with --remove flagged")
        return _rows_from_report(from_report, path, rules)
    if spec == "flagged":
        import numpy as np

        from bastion.core.config import Dataset
        from bastion.data.datasets import load_dataset
        from bastion.detect.duplicates import find_duplicates
        from bastion.detect.label_issues import LabelIssueDetector

        ds = Dataset(name=path.stem, path=path.name, label=label)
        loaded = load_dataset(ds, base_dir=path.parent)
        flags = np.zeros(len(loaded), dtype=bool)
        flags[find_duplicates(loaded.x).exact] = True
        if loaded.y is not None:
            flags |= LabelIssueDetector().fit(loaded.x, loaded.y).issues_
        return [int(i) for i in np.flatnonzero(flags)]
    cand = Path(spec)
    if cand.suffix == ".json" and cand.is_file():
        try:
            data = _json.loads(cand.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(f"{cand}: not JSON: {exc}") from None
        rows = data.get("rows") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(i, int) for i in rows):
            raise ConfigError(f"{cand}: expected a list of row indices or {{'rows': [...]}}")
        return [int(i) for i in rows]
    try:
        return [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(
            f"--remove {spec!r}: expected 'flagged', row indices like 1,5,9, or a .json file of indices"
        ) from None


def data_sanitize(
    dataset: str | Path,
    *,
    remove: str,
    label: str | None = None,
    name: str | None = None,
    output: str | Path | None = None,
    db: str | None = None,
    from_report: str | Path | None = None,
    rules: Sequence[str] = ("poisoning.",),
) -> tuple[Path, Any, Any]:
    """Write a copy of ``dataset`` without the rows ``remove`` names, as a new registered version.

    ``remove`` is ``flagged`` (rows confident learning calls mislabelled, plus exact duplicates;
    needs ``label`` for CSV), comma-separated row indices, or a JSON file of indices. With
    ``from_report`` (a Bastion JSON report; ``remove`` must be ``flagged``), the flagged rows are
    instead the indices listed by the report's findings whose rule id starts with one of
    ``rules`` (default every ``poisoning.`` finding: backdoor, label issues, duplicates,
    outliers) -- the report must be for this dataset version (its SHA-256). The backdoor
    detectors need the trained model, so backdoor rows come only through a report. The original
    file and its version are never changed; the new version's ``parent_id`` is the original's
    (registered first if it was not).

    Returns:
        ``(new path, new DatasetVersion, parent DatasetVersion)``.
    """
    from bastion.data.sanitize import sanitised_path, write_without_rows
    from bastion.store.provenance import list_versions
    from bastion.store.repository import Store

    src = Path(dataset).resolve()
    if not src.is_file():
        raise ConfigError(f"{src}: dataset file not found (sanitise takes one .csv or .npz file)")
    ds_name = _dataset_name(src, name)
    report = Path(from_report) if from_report is not None else None
    rows = sorted(set(_rows_to_remove(remove, src, label, report, rules)))
    dest = Path(output).resolve() if output is not None else sanitised_path(src)
    kept = write_without_rows(src, set(rows), dest)
    with Store.open(db) as store:
        same = [v for v in list_versions(store, ds_name) if v.details.get("path") == str(src)]
    parent = same[-1] if same else data_register(src, name=ds_name, db=db)
    new = data_register(
        dest,
        name=ds_name,
        source=parent.source,
        licence=parent.licence,
        owner=parent.owner,
        db=db,
        parent_id=parent.id,
        details={
            "sanitised_from": str(src),
            "removed_rows": rows,
            "rows_kept": kept,
            "remove": remove,
            **({"from_report": str(report.resolve())} if report is not None else {}),
        },
    )
    return dest, new, parent


def _trained_on(store: Any, cfg: ProjectConfig, base: Path, a: Asset) -> list[str]:
    """The registered dataset version ids ``a`` was trained on (lineage), else its dataset's name.

    The version is the newest one registered for the dataset's resolved path (else under its
    name) whose file hashes equal the files now; an unregistered or changed dataset is recorded
    by name only (the data-sources audit reports it).
    """
    if not a.dataset:
        return []
    from bastion.data.provenance import dataset_files, file_sha256
    from bastion.store.provenance import list_versions

    ds = next((d for d in cfg.datasets if d.name == a.dataset), None)
    if ds is None:
        return [a.dataset]
    root = (base / ds.path).resolve()
    versions = list_versions(store)
    chosen = [v for v in versions if v.details.get("path") == str(root)] or [
        v for v in versions if v.dataset == ds.name
    ]
    if not chosen:
        return [a.dataset]
    files = dataset_files(root)
    now = {(f.name if root.is_file() else f.relative_to(root).as_posix()): file_sha256(f) for f in files}
    for v in sorted(chosen, key=lambda v: v.created, reverse=True):
        if {k: e.get("sha256") for k, e in v.files.items()} == now:
            return [v.id]
    log.warning("dataset %s changed since its registration: lineage records its name only", ds.name)
    return [a.dataset]


# --- privacy/utility sweep (issue 6) ---
#: The membership attacks a sweep runs on every swept model unless told otherwise: both cheap
#: (no reference models), one needing scores and one labels only.
SWEEP_ATTACKS: tuple[str, ...] = ("membership.threshold", "membership.label-only")
_TPR_1PCT = "tpr@fpr=0.01"


@dataclass
class SweepPoint:
    """One point of a privacy/utility curve: a model, its accuracy and what the attacks get.

    Attributes:
        epsilon_target: the ε asked for; ``None`` for the original model (ε = ∞).
        asset: the assessed asset name (``digits`` or ``digits.v3``).
        version: the recorded hardened version (``None`` for the original).
        epsilon: the ε spent, as the accountant reports it (``None`` for the original).
        delta: the δ of (ε, δ).
        test_accuracy: accuracy of the served labels on the asset's ``test`` split (``None``
            without one).
        attacks: per attack id, its full result (status, metrics with intervals, notes).
        strongest: the attack with the highest AUC (``None`` when none ran).
        auc: that attack's AUC.
        tpr_at_1pct_fpr: that attack's TPR at 1 % FPR (``None`` when the sample cannot resolve it).
    """

    epsilon_target: float | None
    asset: str
    version: HardenResult | None
    epsilon: float | None
    delta: float | None
    test_accuracy: float | None
    attacks: dict[str, CheckResult]
    strongest: str | None = None
    auc: float | None = None
    tpr_at_1pct_fpr: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the curve's numbers plus each attack's status, AUC and TPR@1 %FPR."""
        return {
            "epsilon_target": self.epsilon_target,
            "asset": self.asset,
            "version": None if self.version is None else self.version.version,
            "path": None if self.version is None else self.version.path,
            "sha256": None if self.version is None else self.version.sha256,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "test_accuracy": self.test_accuracy,
            "strongest_attack": self.strongest,
            "auc": self.auc,
            _TPR_1PCT: self.tpr_at_1pct_fpr,
            "attacks": {
                pid: {
                    "status": r.status,
                    "reason": r.reason,
                    "auc": r.metrics.get("auc"),
                    "auc_interval": list(r.intervals["auc"]) if "auc" in r.intervals else None,
                    _TPR_1PCT: r.metrics.get(_TPR_1PCT),
                    "note": r.notes.get(_TPR_1PCT),
                }
                for pid, r in self.attacks.items()
            },
        }


@dataclass
class SweepResult:
    """The privacy/utility curve of ``bastion harden dp-train --sweep``.

    Attributes:
        asset: the original asset.
        procedure: the defence id.
        attacks: the membership attacks run on every point.
        budget: the budget preset the attacks ran under.
        points: the original (ε = ∞) first, then one point per ε, ascending.
    """

    asset: str
    procedure: str
    attacks: list[str]
    budget: str
    points: list[SweepPoint] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; ``epsilon_target`` null is the original model (ε = ∞)."""
        return {
            "asset": self.asset,
            "procedure": self.procedure,
            "attacks": self.attacks,
            "budget": self.budget,
            "curve": [p.to_dict() for p in self.points],
        }


def harden_sweep(
    config: str | Path,
    procedure: str,
    *,
    asset: str,
    epsilons: Sequence[float],
    params: dict[str, Any] | None = None,
    attacks: Sequence[str] = SWEEP_ATTACKS,
    settings: Settings | None = None,
    progress: ProgressFn | None = None,
) -> SweepResult:
    """Harden ``asset`` once per ε and audit every version: the privacy/utility curve.

    The original model is audited first (ε = ∞), so a membership attack that cannot run on this
    data (its preflight) stops the sweep before any training; every ε's parameters are checked
    before the first one trains. Then, per ε ascending, :func:`harden` records a new version,
    which is scanned, loaded (with the asset's output hardening, as served) and attacked with
    ``attacks`` (their ``params`` and ``budget`` from ``bastion.yaml``'s ``checks:``, over the
    settings' budget preset). The strongest attack of a point is the one with the highest AUC.

    Args:
        config: path of ``bastion.yaml``.
        procedure: the defence (``dp-train`` or ``defend.dp-train``); it must take ``epsilon``.
        asset: the model asset.
        epsilons: the target ε values (each > 0).
        params: the defence's other parameters (``delta``, ``epochs`` …).
        attacks: attack ids to run on each point (default :data:`SWEEP_ATTACKS`; add
            ``membership.lira`` / ``membership.rmia`` when their recipe is configured).
        settings: database and budget preset.
        progress: callback ``(label, fraction)``.

    Returns:
        The curve, the original first.

    Raises:
        ConfigError: no ε, a non-positive ε, an unknown attack or procedure, bad parameters, or
            an attack's or the defence's preflight problems (before any training).
        IntegrityError: a model file changed after it was scanned.
    """
    from bastion.core.registry import defences
    from bastion.scan import scan_file

    load_plugins()
    s = settings or load_settings()
    path = Path(config)
    cfg = load_config(path)
    base = path.resolve().parent
    a = cfg.asset(asset)
    problems: list[str] = []
    if not epsilons:
        problems.append("--sweep: no ε given")
    problems += [f"--sweep: ε must be > 0, got {e:g}" for e in epsilons if not e > 0]
    known = REGISTRIES["attack"]
    problems += [
        f"--attack {pid}: unknown attack; known: {', '.join(known)}" for pid in attacks if pid not in known
    ]
    pid = procedure if procedure in defences else f"defend.{procedure}"
    if pid not in defences:
        problems.append(f"unknown hardening procedure {procedure!r}")
    else:
        for eps in epsilons:
            try:
                defences.get(pid).parse_params({**(params or {}), "epsilon": eps}, where=f"ε={eps:g}")
            except PluginError as exc:
                problems.append(str(exc))
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) before the sweep on {asset}", problems)
    if a.kind != "model" or not a.path:
        raise ConfigError(f"--asset {asset}: only model files can be hardened (kind {a.kind})")
    _preflight_files(cfg, base, [a])
    data = _splits_for(a, _load_datasets(cfg, base, [a]))
    result = SweepResult(asset=a.name, procedure=pid, attacks=list(attacks), budget=s.budget)

    def audit(va: Asset, eps_target: float | None, version: HardenResult | None) -> SweepPoint:
        fr = scan_file(base / str(va.path), allow=cfg.scan.allow)
        if fr.verdict != Verdict.SAFE:
            raise ConfigError(
                f"{base / str(va.path)}: not loaded: the scanner judged the file {fr.verdict.value}"
            )
        target = _build_target(va, base, {"scan_sha256": fr.sha256})
        runs = _privacy_audit(cfg, base, va, target, data, attacks, s, progress)
        test = data.get("test")
        accuracy = None
        if test is not None and test.y is not None and len(test.x):
            accuracy = round(float((target.predict_label(test.x) == test.y).mean()), 6)
        details = version.details if version is not None else {}
        point = SweepPoint(
            epsilon_target=eps_target,
            asset=va.name,
            version=version,
            epsilon=details.get("epsilon"),
            delta=details.get("delta"),
            test_accuracy=accuracy,
            attacks=runs,
        )
        ran = [(pid, r) for pid, r in runs.items() if r.status == "ok" and r.metrics.get("auc") is not None]
        if ran:
            point.strongest, best = max(ran, key=lambda pr: float(pr[1].metrics["auc"] or 0.0))
            point.auc = best.metrics["auc"]
            point.tpr_at_1pct_fpr = best.metrics.get(_TPR_1PCT)
        return point

    result.points.append(audit(a, None, None))
    for eps in sorted(epsilons):
        if progress:
            progress(f"{pid} ε={eps:g}", 0.0)
        res = harden(config, pid, asset=asset, params={**(params or {}), "epsilon": eps}, settings=s)
        result.points.append(audit(_version_asset(a, res), eps, res))
    return result


def _privacy_audit(
    cfg: ProjectConfig,
    base: Path,
    a: Asset,
    target: Any,
    data: dict[str, Split],
    attacks: Sequence[str],
    s: Settings,
    progress: ProgressFn | None,
) -> dict[str, CheckResult]:
    """Run ``attacks`` on one target as :func:`assess` would; a crash is recorded as an error result.

    Raises:
        ConfigError: an attack's parameters or preflight problems (all listed, before any runs).
    """
    preset = PRESETS[s.budget]
    out: dict[str, CheckResult] = {}
    work: list[tuple[Check, CheckContext]] = []
    problems: list[str] = []
    for pid in attacks:
        cls = REGISTRIES["attack"].get(pid)
        cc = cfg.checks.get(pid)
        try:
            params = cls.parse_params(cc.params if cc else None, where=f"checks.{pid}.params")
        except PluginError as exc:
            problems.append(str(exc))
            continue
        ctx = CheckContext(
            asset=a,
            config=cfg,
            base_dir=base,
            budget=preset.merged(cc.budget if cc else None),
            params=params,
            thresholds=list(cc.thresholds)
            if cc and cc.thresholds is not None
            else list(cls.default_thresholds),
            seed=cfg.seed,
            target=target,
            data=data,
            facts={"__run__": {"db_url": s.db_url}},
        )
        check: Check = cls()
        reason = check.applicable(ctx)
        if reason is not None:
            out[pid] = CheckResult(id=pid, asset=a.name, status="skipped", reason=reason)
            continue
        problems += [f"checks.{pid} on {a.name}: {p}" for p in check.preflight(ctx)]
        work.append((check, ctx))
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) found in preflight", problems)
    for check, ctx in work:
        label = f"{check.id} {a.name}"
        if progress:
            ctx.progress = lambda f, label=label: progress(label, f)
        ts = time.monotonic()
        try:
            res = check.run(ctx)
        except Exception as exc:  # a crashed attack is recorded; the sweep goes on
            log.warning("check %s on %s crashed: %s", check.id, a.name, exc)
            res = CheckResult(
                id=check.id, asset=a.name, status="error", reason=f"{type(exc).__name__}: {exc}"
            )
        res.seconds = round(time.monotonic() - ts, 4)
        out[check.id] = res
    return {pid: out[pid] for pid in attacks if pid in out}
