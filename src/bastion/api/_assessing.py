"""Assessing a project: scan, build targets, run checks, report, store."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bastion import __version__
from bastion.api._planning import (
    Plan,
    ProgressFn,
    _assets,
    _check_enabled,
    _latest_versions,
    _selected,
    picked_version,
    plan,
    selected_by,
    version_lineage,
)
from bastion.api._plugins import loads_file
from bastion.api._scanning import SIGNATURE_FAILED, _signature_check, _signing_key
from bastion.core import atlas
from bastion.core.budget import PRESETS, Budget
from bastion.core.check import Check, CheckContext, Split
from bastion.core.config import Asset, ProjectConfig, config_hash, load_config
from bastion.core.errors import BastionError, ConfigError, PluginError, ScanError
from bastion.core.findings import Finding
from bastion.core.hashing import file_sha256
from bastion.core.redact import redact_url
from bastion.core.registry import REGISTRIES
from bastion.core.report import AssetRecord, Report, ReportFinding, Reproducibility, RunInfo, RunScope
from bastion.core.results import CheckError, CheckResult, RunResult
from bastion.core.scanning import FileResult, Verdict
from bastion.core.settings import Settings, load_settings
from bastion.core.severity import Severity

log = logging.getLogger(__name__)


def preflight(
    config: str | Path,
    *,
    budget: str = "standard",
    asset: str | None = None,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    db_url: str | None = None,
    allow: Sequence[str] = (),
) -> Plan:
    """The plan, after every check that needs no model loaded — all problems at once.

    Checks config, selection, files, datasets (shapes, labels) and each planned check's
    parameters. With ``db_url``, the model versions recorded there by ``bastion harden``
    (each model's latest, or the one ``asset`` names as ``<model>.v<N>``) are planned too, as
    a run would assess them; the store is only read (see ``Store.open_read_only``). ``allow``:
    as :func:`assess`'s (the plan's ``scan_allow_cli``).

    This is ``bastion assess --dry-run``: it loads no model and writes nothing.

    Raises:
        ConfigError: every problem found, with its field path or file; a picked version that
            is not recorded; a malformed ``allow`` entry.
        StoreError: ``db_url`` cannot be read.
    """
    allow = allow_entries(allow)
    versions: dict[str, Any] = {}
    if db_url is not None:
        cfg0 = load_config(config)
        pick = picked_version(cfg0, asset)
        # config first, every problem of the project file at once (trial 32, M4)
        plan(config, budget=budget, asset=None if pick else asset, only=only, skip=skip, files=True)
        versions = _latest_versions(db_url, cfg0, pick, read_only=True)
    the_plan = plan(
        config, budget=budget, asset=asset, only=only, skip=skip, versions=versions, files=db_url is None
    )
    the_plan.scan_allow_cli = list(allow)
    cfg, base = the_plan.config, the_plan.base_dir
    assets = [a for a in _assets(cfg, versions) if _selected(a.name, asset)]
    _preflight_files(cfg, base, assets, own_checked=True)  # plan(files=True) checked the project's
    _load_datasets(cfg, base, assets)
    _signing_key(cfg, base, assets)  # issue 4: the configured public key exists
    _gate_plan(the_plan, assets, cfg, base, allow)
    return the_plan


#: Scan formats of a pickled torch checkpoint that holds no TorchScript code (a state_dict).
_STATE_DICT_FORMATS = ("pytorch-zip", "pytorch-legacy")

#: Scan formats each file framework's loader reads (:func:`bastion.targets.loader.build_target`):
#: sklearn ``joblib.load`` (a joblib or pickle stream, compressed too: ``gzip+joblib``) or skops;
#: torch ``torch.jit.load`` (TorchScript) or ``torch.load`` (a state_dict: zip or legacy); onnx
#: onnxruntime.
_FRAMEWORK_FORMATS = {
    "sklearn": ("joblib", "pickle", "skops"),
    "torch": ("torchscript", "pytorch-zip", "pytorch-legacy"),
    "onnx": ("onnx",),
}


#: Model formats the scanner reads and no loader does (scanned and governed, never attacked),
#: with what they are called.
_NO_LOADER_FORMATS = {
    "keras": "Keras",
    "keras-config": "Keras",
    "keras-metadata": "Keras",
    "hdf5": "Keras (HDF5)",
    "savedmodel": "TensorFlow SavedModel",
    "tf-graphdef": "TensorFlow",
    "gguf": "GGUF",
    "safetensors": "safetensors",
}


def _no_loader(a: Asset, fmt: str | None) -> str | None:
    """Why no loader reads ``a``'s file, which the scanner found to be ``fmt``, or ``None``.

    Trial 30, L6: a Keras model reached the loader ("cannot tell its framework; set framework
    (torch, sklearn, onnx, http)"), or with ``framework: torch`` was told to "set framework to
    the file's", which no framework Bastion loads is.
    """
    name = _NO_LOADER_FORMATS.get((fmt or "").rsplit("+", 1)[-1])
    if name is None:
        return None
    if a.framework is not None:
        return (
            f"framework {a.framework} cannot load {a.path}: the scanner found a {fmt} file (a {name} "
            f"model), and Bastion has no {name} loader (leave framework out to have it scanned and "
            "governed without attacks, or export it to ONNX, e.g. with tf2onnx, and set framework: onnx)"
        )
    return (
        f"{a.path} is a {name} model (the scanner found a {fmt} file) and Bastion has no {name} "
        "loader: it is scanned and governed, not attacked (export it to ONNX, e.g. with tf2onnx, "
        "and set framework: onnx to attack it)"
    )


def _format_problem(a: Asset, fmt: str | None) -> str | None:
    """Why ``a``'s loader cannot read a file the scanner found to be ``fmt``, or ``None``.

    Trial 30, L6: ``framework: sklearn`` on a TorchScript zip reached the loader and failed with
    an unpickling error. An unknown format (``None``) is left to the loader.
    """
    reads = _FRAMEWORK_FORMATS.get(a.framework or "")
    if not fmt or reads is None:
        return None
    if no_loader := _no_loader(a, fmt):
        return no_loader
    base = fmt.rsplit("+", 1)[-1] if a.framework == "sklearn" else fmt  # joblib.load decompresses
    if base in reads:
        return None
    return (
        f"framework {a.framework} cannot load {a.path}: the scanner found a {fmt} file, and the "
        f"{a.framework} loader reads {', '.join(reads)} (set framework to the file's)"
    )


def allow_entries(allow: Sequence[str]) -> list[str]:
    """The allow entries typed for a run (``--allow``, ``allow=``), checked before anything runs.

    Raises:
        ConfigError: an entry is not ``module.Name`` or ``module.*`` (every bad one is listed).
    """
    from bastion.scan.policy import check_allow_entries

    return check_allow_entries(allow)


def gate_scan(path: Path, cfg: ProjectConfig, allow: Sequence[str]) -> FileResult:
    """The scan that decides whether a model file may be loaded (assess, harden, the guard).

    The project file's ``scan.allow`` (only the user's own code) and the entries typed for the
    run (``--allow``, ``allow=``: full power, the deny-list still wins); each global only one
    of them let through is an ``info`` finding (``scan.pickle.project-allowed`` /
    ``scan.pickle.user-allowed``).

    Raises:
        ScanError: the file cannot be scanned.
        ConfigError: a malformed or (project file) refused allow entry.
    """
    from bastion.scan import scan_file

    return scan_file(path, allow=allow, project_allow=cfg.scan.allow, report_allowed=True)


def scan_allowed(fr: FileResult) -> list[dict[str, str]]:
    """Each global of a gate's scan that only an allow-list addition let through.

    ``{"global", "allow_entry", "source"}``: ``source`` is ``--allow`` (typed for the run) or
    ``scan.allow`` (the project file), from the scan's ``*.user-allowed`` and
    ``*.project-allowed`` findings.
    """
    from bastion.scan.pickle_scanner import ADDITION_RULE_SUFFIXES

    return [
        {
            "global": str(f.evidence.get("global") or f.evidence.get("type") or ""),
            "allow_entry": str(f.evidence.get("allow_entry", "")),
            "source": str(f.evidence.get("source", "")),
        }
        for f in fr.findings
        if f.rule_id.endswith(ADDITION_RULE_SUFFIXES)
    ]


def _gate_plan(
    the_plan: Plan, assets: Sequence[Asset], cfg: ProjectConfig, base: Path, allow: Sequence[str] = ()
) -> None:
    """Mark the attacks a run would skip because their model will not load.

    The scan is static (nothing is loaded), as in a run; a model file not judged ``safe`` is
    never loaded, so its attacks do not run (the plan said "yes" to them: new-user trial). A
    torch asset without ``model_class`` is loaded as TorchScript; a file the scanner reads as a
    plain torch checkpoint (pickled tensors, no TorchScript ``code/``) is a state_dict that only
    ``model_class`` can load, so its attacks are marked too (they all errored in the run).
    """
    attacked = _attacked(the_plan)
    for a in assets:
        if a.name not in attacked or not loads_file(a) or not a.path:
            continue
        fmt = None
        try:
            fr = gate_scan(base / a.path, cfg, allow)
            verdict, fmt = fr.verdict.value, fr.format
        except ScanError:
            verdict = Verdict.ERROR.value
        if verdict != Verdict.SAFE.value:
            why = f"the scanner judges the model file {verdict}: it will not be loaded"
        elif a.framework is None and (problem := _no_loader(a, fmt)):
            _skip_attacks(the_plan, a.name, problem)
            continue
        elif problem := _format_problem(a, fmt):
            why = problem
        elif a.framework == "torch" and not a.model_class and fmt in _STATE_DICT_FORMATS:
            why = (
                f"state_dict needs model_class: {a.path} is a pickled torch checkpoint, not TorchScript "
                "(no code/ member); only the class model_class names (package.module:Class) can load it"
            )
        elif a.framework == "torch" and a.model_class and (problem := _model_class_problem(a)):
            why = problem  # trial 30, M2: planned "yes", then every attack failed to import it
        else:
            continue
        for i in the_plan.items:
            if i.asset == a.name and i.kind == "attack" and (i.skip_reason is None or i.by_config):
                i.skip_reason, i.by_config = why, False


def _attacked(the_plan: Plan) -> set[str]:
    """The assets with at least one attack planned to run (their model will be loaded)."""
    return {i.asset for i in the_plan.items if i.kind == "attack" and i.skip_reason is None}


def _skip_attacks(the_plan: Plan, asset: str, why: str) -> None:
    """Skip every attack on ``asset`` for ``why``, but those the user deselected.

    It replaces a capability reason too ("needs probabilities; … offers nothing"): no model
    will be loaded, whatever it would offer.
    """
    for i in the_plan.items:
        if (
            i.asset == asset
            and i.kind == "attack"
            and (i.by_config or (i.skip_reason or "needs ").startswith("needs "))
        ):
            # not one deselected by the user (--only, --skip, bastion.yaml); a check's own
            # config skip (no recipe ...) gives way: the model will not load at all
            i.skip_reason, i.by_config = why, False


def _model_class_problem(a: Asset) -> str | None:
    from bastion.targets.torch_target import model_class_problem

    return model_class_problem(a.model_class) if a.framework == "torch" and a.model_class else None


def _preflight_model_classes(the_plan: Plan, assets: Sequence[Asset]) -> None:
    """The run's side of the plan's model_class gate: one config error before any check.

    Only the module is looked for (nothing of it is imported or run here); the assets are
    those with attacks planned, as in ``--dry-run``.
    """
    attacked = _attacked(the_plan)
    problems = [
        f"asset {a.name}: {problem}"
        for a in assets
        if a.name in attacked and a.kind == "model" and (problem := _model_class_problem(a))
    ]
    if problems:
        raise ConfigError(f"{len(problems)} model_class problem(s) before the run", problems)


def _format_problems(the_plan: Plan, assets: Sequence[Asset], formats: dict[str, str | None]) -> None:
    """The run's side of the plan's format gate: one config error before any check.

    ``formats``: the format the gate's scan found for each model file judged safe (a file
    judged otherwise is never loaded: its attacks are skipped). Only attacked assets count.
    """
    attacked = _attacked(the_plan)
    for a in assets:  # no framework named and none reads the file: its attacks are skipped
        if a.name in attacked and a.framework is None and (why := _no_loader(a, formats.get(a.name))):
            _skip_attacks(the_plan, a.name, why)
    problems = [
        f"asset {a.name}: {problem}"
        for a in assets
        if a.name in attacked and a.name in formats and (problem := _format_problem(a, formats[a.name]))
    ]
    if problems:
        raise ConfigError(f"{len(problems)} framework/format problem(s) before the run", problems)


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"bastion": __version__, "atlas": atlas.version()}
    for dist in ("torch", "scikit-learn", "numpy", "onnxruntime"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def _check_context(
    cls: type[Check],
    cfg: ProjectConfig,
    base: Path,
    a: Asset,
    preset: Budget,
    target: Any,
    data: dict[str, Split],
    facts: dict[str, Any],
) -> CheckContext:
    """The context check ``cls`` runs in on ``a``: its params, budget and thresholds from ``checks:``.

    Raises:
        PluginError: its ``params`` are invalid.
    """
    cc = cfg.checks.get(cls.id)
    params = cls.parse_params(cc.params if cc else None, where=f"checks.{cls.id}.params")
    return CheckContext(
        asset=a,
        config=cfg,
        base_dir=base,
        budget=preset.merged(cc.budget if cc else None),
        params=params,
        thresholds=list(cc.thresholds) if cc and cc.thresholds is not None else list(cls.default_thresholds),
        seed=cfg.seed,
        target=target,
        data=data,
        facts=facts,
    )


def _preflight_files(
    cfg: ProjectConfig, base: Path, assets: list[Asset], *, own_checked: bool = False
) -> None:
    """Refuse missing or unreadable files (:func:`file_problems`).

    ``own_checked``: ``plan(files=True)`` has checked the project's own files; only the files of
    the recorded versions among ``assets`` are left to check.
    """
    problems = _version_file_problems(cfg, base, assets) if own_checked else file_problems(cfg, base, assets)
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) before the run", problems)


def _version_file_problems(cfg: ProjectConfig, base: Path, assets: list[Asset]) -> list[str]:
    """The model versions among ``assets`` (recorded in the store) whose file is missing."""
    declared = {a.name for a in cfg.assets}
    return [
        f"model version {a.name}: file recorded in the store not found: {base / a.path}"
        for a in assets
        if a.name not in declared and a.kind == "model" and a.path and not (base / a.path).is_file()
    ]


def file_problems(cfg: ProjectConfig, base: Path, assets: list[Asset]) -> list[str]:
    """The project's files that are missing or unreadable, and evaluated assets lacking a spec."""
    from bastion.data.datasets import dataset_file_problem

    problems = []
    for i, a in enumerate(cfg.assets):
        if a.path and not (base / a.path).is_file():
            what = "is a folder, not a file" if (base / a.path).is_dir() else "file not found"
            problems.append(f"assets[{i}].path: {what}: {base / a.path}")
        elif a.path and not os.access(base / a.path, os.R_OK):
            problems.append(f"assets[{i}].path: file not readable: {base / a.path}")
        elif a.path and a.kind == "dataset" and (bad := dataset_file_problem(base / a.path)):
            problems.append(f"assets[{i}].path: {bad}")  # trial 30, L7: a pickle was skipped quietly
    problems += _version_file_problems(cfg, base, assets)
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
    return problems


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
    # located by the asset's path as bastion.yaml gives it (relative to the project, as every
    # other finding is), not the absolute path the file was scanned at: SARIF viewers need that
    findings = [
        f.model_copy(update={"asset": a.name, "location": f.location.model_copy(update={"path": a.path})})
        for f in fr.findings
    ]
    status = "error" if fr.verdict == Verdict.ERROR else "ok"
    reason = f"ScanError: {fr.reason}" if status == "error" else None
    if fr.verdict == Verdict.SKIPPED:
        why = fr.reason or "no model format recognised"
        # bastion.yaml declares a model here: a file that is none is an error, never a pass
        status, reason = (
            ("error", f"ScanError: the model file is not a model: {why}")
            if a.kind == "model"
            else (
                "skipped",
                f"not a model file: {why}",
            )
        )
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
    cfg: ProjectConfig,
    findings: list[Finding],
    baseline: Report | None,
    checks: Sequence[CheckResult] = (),
    gate: Sequence[CheckResult] = (),
) -> list[ReportFinding]:
    """Waivers and baseline states; findings are compared only where both runs checked.

    A finding of this run is ``unchanged`` when the baseline has it, else ``new`` when the
    baseline covered it — its scope (``--only``/``--skip``/``--asset``) selected the finding's
    check and asset, it ran that check on the asset, or its scan gate would have reported it
    (:func:`_gate_covered`) — and ``not-in-baseline`` when it did not (a narrowed baseline:
    new-user trial, every finding of a full run after ``--only evasion --asset digits`` was "new").

    A finding of the baseline that this run did not produce is ``fixed`` when a check of this run
    that could produce it (its rule id starts with the check id; any ``scan.*`` file check for a
    scan finding, whose format may have changed; ``scan.signature`` for a signature finding) ran
    with status ``ok`` on the same asset. ``gate`` holds this run's scans and signature checks
    that ran but are not reported (a narrowed run, a file judged safe): they count as checks
    that ran, and a finding they found (a low one, not reported) is not claimed fixed.
    Otherwise its check did not run here (``--only``, ``--skip``, ``--asset``, skipped, failed)
    and the finding is left out: nothing was re-tested, so nothing is claimed fixed.
    """
    today = dt.date.today()
    out: list[ReportFinding] = []
    base_fps = {f.fingerprint: f for f in baseline.findings if f.state != "fixed"} if baseline else {}
    base_ran = [(c.id, c.asset) for c in baseline.checks if c.status == "ok"] if baseline else []
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
            if fp in base_fps:
                state = "unchanged"
            elif (
                _in_scope(baseline.run.scope, f.rule_id, f.asset)
                or _rechecked(f.rule_id, f.asset, base_ran)
                or _gate_covered(baseline, f)
            ):
                state = "new"
            else:
                state = "not-in-baseline"
        seen.add(fp)
        out.append(ReportFinding.of(f, state=state, waiver=waiver))
    if baseline is not None:
        ran = [(c.id, c.asset) for c in [*checks, *gate] if c.status == "ok"]
        found = seen | {g.compute_fingerprint() for c in gate for g in c.findings}
        for fp, old in base_fps.items():
            if fp not in found and _rechecked(old.rule_id, old.asset, ran):
                data = old.model_dump()
                data.update(state="fixed", waiver=None)
                out.append(ReportFinding(**data))
    return out


def _in_scope(scope: RunScope | None, rule_id: str, asset: str | None) -> bool:
    """Whether a run narrowed to ``scope`` selected the check of ``rule_id`` on ``asset``.

    ``None`` is a full run. A project-wide finding (no asset) is outside only ``--only``/``--skip``.
    """
    if scope is None:
        return True
    if scope.only and not any(selected_by(rule_id, p) for p in scope.only):
        return False
    if any(selected_by(rule_id, p) for p in scope.skip):
        return False
    return asset is None or _selected(asset, scope.asset)


def _gate_covered(baseline: Report, f: Finding) -> bool:
    """Whether the baseline's scan gate would have reported ``f``, a scan finding on a model.

    Every run scans every model file it selected (``--asset``) before anything is loaded, and
    reports the file's findings when it is not judged safe, even when ``--only`` names other
    checks; only ``--skip scan`` turns that off (``bastion.yaml`` cannot). A file judged safe
    has no finding of ``medium`` or above, so the baseline covered such a finding on every model
    it scanned (its ``assets[].scan_verdict``), and every scan finding on a file it reported. A
    failed signature is reported the same way (``assets[].signature`` says it was checked); a
    missing one (``scan.signature.unsigned``) only where the scan was selected.
    """
    if f.asset is None or not f.rule_id.startswith("scan."):
        return False
    scope = baseline.run.scope
    if scope is not None and any(selected_by("scan", p) for p in scope.skip):
        return False
    rec = next((r for r in baseline.assets if r.name == f.asset), None)
    if rec is None or rec.scan_verdict is None:
        return False
    if f.rule_id.startswith(_SIGNATURE_RULES):
        return f.rule_id == SIGNATURE_FAILED and rec.signature is not None
    reported = (Verdict.MALICIOUS.value, Verdict.SUSPICIOUS.value, Verdict.ERROR.value)
    return f.severity >= Severity.MEDIUM or rec.scan_verdict in reported


#: Rule ids of the signature check (``scan.signature``), which is not a scan of the file's format.
_SIGNATURE_RULES = "scan.signature."


def _rechecked(rule_id: str, asset: str | None, ran: Sequence[tuple[str, str | None]]) -> bool:
    """A check that ran (``(id, asset)`` pairs) on ``asset`` could have produced ``rule_id``.

    Any scan of the file (``scan.<format>``) rechecks its scan findings (the format may have
    changed); only the signature check rechecks a signature finding, and it rechecks no other.
    """
    signature_rule = rule_id.startswith(_SIGNATURE_RULES)
    for cid, casset in ran:
        if casset != asset:
            continue
        if rule_id.startswith(cid + "."):
            return True
        file_scan = cid.startswith("scan.") and cid + "." != _SIGNATURE_RULES
        if file_scan and rule_id.startswith("scan.") and not signature_rule:
            return True
    return False


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
    before_store: Callable[[Report], object] | None = None,
    budget: str | None = None,
    allow: Sequence[str] = (),
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
        baseline: an earlier assess run of this project (``project.name``) to mark findings
            new/unchanged/fixed: its id, a prefix of it, or ``latest`` (this project's newest
            assess run in the store; none stored yet: no baseline, a warning).
        progress: callback ``(label, fraction)``.
        store: record the run in the database.
        include_versions: also assess each model's latest hardened version from the store.
        before_store: called with the finished report before it is stored (the CLI writes the
            report files there), so a store that fails at the end loses no work. If it raises,
            the run is still stored, then its error is raised.
        budget: the budget preset (``quick``, ``standard``, ``thorough``) when no ``settings``
            are given (``bastion.assess("bastion.yaml", budget="quick")``).
        allow: allow-list additions for the model scan, ``module.Name`` or ``module.*`` (as
            ``bastion scan --allow``; ``bastion assess --allow``): yours, so not limited to your
            own code as the project file's ``scan.allow`` is; no entry allows a deny-listed
            callable. Each global only such an entry let through is an ``info`` finding
            ``scan.pickle.user-allowed``, and the report's ``run.scan_allow_cli`` lists them.

    Returns:
        The report; see ``docs/report.schema.json``.

    Raises:
        ConfigError: invalid config, missing file, dataset not fitting a model, bad selection,
            a baseline that is another project's run or empty, a malformed ``allow`` entry.
        BastionError: unreachable database (``StoreError``), and other preflight failures.
    """
    allow = allow_entries(allow)
    if settings is not None and budget is not None:
        raise ConfigError("give the budget in settings or as budget=, not both")
    if baseline is not None and not baseline.strip():  # red-team round 28, F10: silently none
        raise ConfigError("baseline: empty; give a run id or 'latest' (None: no baseline)")
    if budget is not None and budget not in PRESETS:
        raise ConfigError(f"budget {budget!r}: expected one of {', '.join(PRESETS)}")
    s = settings or load_settings(budget=budget)
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    deadline = t0 + s.max_time if s.max_time else None
    # config and selection first (a version ``<model>.v<N>`` is known only once the store is read)
    cfg0 = load_config(config)
    pick = picked_version(cfg0, asset)
    # every problem of the project file at once, files included (trial 32, M4)
    plan(config, budget=s.budget, asset=None if pick else asset, only=only, skip=skip, files=True)
    baseline_report: Report | None = None
    versions: dict[str, Any] = {}
    if store or baseline is not None or pick:  # a picked version is read from the store
        from bastion.store import Store, preflight

        preflight(s.db_url)  # reachable and writable; writes nothing
        versions = _latest_versions(s.db_url, cfg0, pick) if include_versions else {}
        if baseline is not None:
            scope = RunScope(only=list(only), skip=list(skip), asset=asset) if only or skip or asset else None
            baseline_report = _baseline_report(s.db_url, baseline, cfg0.project.name, scope)
    the_plan = plan(config, budget=s.budget, asset=asset, only=only, skip=skip, versions=versions)
    cfg, base = the_plan.config, the_plan.base_dir
    assets = [a for a in _assets(cfg, versions) if _selected(a.name, asset)]
    _preflight_files(cfg, base, assets, own_checked=True)  # plan(files=True) checked the project's
    _preflight_model_classes(the_plan, assets)
    datasets = _load_datasets(cfg, base, assets)
    sign_key = _signing_key(cfg, base, assets)  # issue 4: verify model signatures
    from bastion.scan.signing import FolderBundles

    folders = FolderBundles(base, sign_key)  # folders signed as a whole: each verified once

    result = RunResult()
    facts: dict[str, dict[str, Any]] = {"__run__": {"db_url": s.db_url}}
    records: dict[str, AssetRecord] = {}
    targets: dict[str, Any] = {}
    preset = PRESETS[s.budget]

    # 1. scan every model file first: nothing is loaded before the scanner judged it.
    every = {x.name: x for x in _assets(cfg, versions)}
    # the gate's scans (and signature checks) that ran but are not reported (a run narrowed by
    # --only to other checks, on a file judged safe): what they found decides which baseline
    # findings are fixed, as a reported check's would (red-team round 28, F9)
    gate: list[CheckResult] = []
    formats: dict[str, str | None] = {}  # model files judged safe: the format the scan found
    members = [every[m] for a in assets for m in a.members or [] if m not in {x.name for x in assets}]
    for a in [*assets, *{m.name: m for m in members}.values()]:  # ensemble members too (issue 5)
        rec = AssetRecord(
            name=a.name,
            kind=a.kind,
            path=a.path,
            url=redact_url(a.url),
            format=a.format,
            framework=a.framework,
            owner=a.owner,
            lineage=version_lineage(a.name, versions),
        )
        facts[a.name] = {}
        if a.path:
            p = base / a.path
            sha = file_sha256(p)
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
                fr = gate_scan(base / a.path, cfg, allow)
            except ScanError as exc:
                fr = FileResult(path=a.path, verdict=Verdict.ERROR, reason=str(exc))
            facts[a.name]["scan_verdict"] = fr.verdict.value
            if fr.verdict == Verdict.SAFE and loads_file(a):
                formats[a.name] = fr.format
            facts[a.name]["scan_sha256"] = fr.sha256
            rec.scan_verdict = fr.verdict.value
            # The scan always runs (it decides whether the model may be loaded). Outside an
            # ``--only`` selection its finding is still reported when the file is not safe:
            # a run narrowed to one attack must not pass its gate on a malicious model.
            unsafe = fr.verdict in (Verdict.MALICIOUS, Verdict.SUSPICIOUS, Verdict.ERROR)
            # (not when the scan itself was turned off: ``--skip scan`` or disabled in bastion.yaml)
            skipped_explicitly = _check_enabled(cfg, "scan", a.name, (), skip) is not None
            scanned = _scan_check(a, fr, time.monotonic() - ts)
            if scan_selected or (unsafe and not skipped_explicitly):
                result.add(scanned)
            elif not skipped_explicitly:
                gate.append(scanned)  # looked at, clean: compared with the baseline, not reported
            signed = _signature_check(a, base / a.path, sign_key, rec, folders, sha256=fr.sha256)
            # like the scan: a signature that fails (or cannot be checked) is reported even in a
            # run narrowed to other checks, so its gate cannot pass on a tampered model
            bad_signature = rec.signature in ("failed", "error")
            if signed is not None and (scan_selected or (bad_signature and not skipped_explicitly)):
                result.add(signed)
            elif signed is not None and not skipped_explicitly:
                gate.append(signed)
            if progress:
                progress(f"scan {a.name}", 1.0)
        records[a.name] = rec
    # a framework whose loader cannot read the scanned format: one config error, nothing loaded
    # (trial 30, L6), from the gate's own scans (a second scan of each file before them doubled
    # the I/O of large checkpoints)
    _format_problems(the_plan, assets, formats)

    # 2. build targets for models judged safe (and endpoints).
    target_errors: dict[str, str] = {}
    needs_target = _attacked(the_plan)
    for a in sorted(assets, key=lambda x: x.framework == "ensemble"):  # ensembles after members
        if a.name not in needs_target:
            continue
        if loads_file(a):  # whatever its framework: with none, the loader picks one by suffix
            verdict = facts[a.name].get("scan_verdict")
            if verdict != Verdict.SAFE.value:
                target_errors[a.name] = f"not loaded: the scanner judged the file {verdict}"
                continue
            refused = _signature_refusal(records[a.name].signature, cfg, sign_key)
            if refused:
                target_errors[a.name] = refused
                continue
        try:
            if a.framework == "ensemble":  # issue 5: built from its members' targets
                targets[a.name] = _ensemble_target(a, every, base, facts, records, targets, cfg, sign_key)
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
        try:
            ctx = _check_context(
                cls, cfg, base, a, preset, targets.get(a.name), _splits_for(a, datasets), facts
            )
        except PluginError as exc:
            problems.append(str(exc))
            continue
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
        raise ConfigError(f"{config}: {len(problems)} problem(s) found in preflight", problems)

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
            with _interrupts() as seen:
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
        if seen:  # Ctrl-C that the check's library swallowed: the run stops, nothing is stored
            raise KeyboardInterrupt
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
            scope=RunScope(only=list(only), skip=list(skip), asset=asset) if only or skip or asset else None,
            scan_allow=list(cfg.scan.allow),
            scan_allow_cli=list(allow),
            fail_on=s.fail_on,
        ),
        reproducibility=Reproducibility(seed=cfg.seed, config_hash=config_hash(config), versions=_versions()),
        assets=list(records.values()),
        checks=result.checks,
        findings=_apply_waivers_and_baseline(cfg, result.findings, baseline_report, result.checks, gate),
        errors=result.errors,
        skipped=result.skipped,
        baseline=baseline_report.run.id if baseline_report else None,
        baseline_run=baseline_report.run if baseline_report else None,
    )
    hook_error: Exception | None = None
    if before_store is not None:
        try:
            before_store(report)
        except Exception as exc:  # the run is stored all the same, then this is raised
            hook_error = exc
    if store:
        from bastion.store import Store

        with Store.open(s.db_url) as db:
            db.save_report(report, fail_on=s.fail_on)
    if hook_error is not None:
        raise hook_error
    return report


#: How many stored runs ``--baseline latest`` looks back through for one covering the scope.
_LATEST_LOOKBACK = 200


def _covers(base: RunScope | None, mine: RunScope | None) -> bool:
    """Whether a run narrowed to ``base`` checked everything a run narrowed to ``mine`` checks.

    ``None`` is a full run: it covers every scope, and only a full run covers it.
    """
    if base is None:
        return True
    if mine is None:
        return False
    if base.asset is not None and mine.asset != base.asset:
        return False
    if base.only and (not mine.only or not all(any(selected_by(p, q) for q in base.only) for p in mine.only)):
        return False
    # what the baseline skipped, this run skips too (or selects nothing of)
    return all(
        any(selected_by(q, s) for s in mine.skip)
        or (mine.only and not any(selected_by(p, q) or selected_by(q, p) for p in mine.only))
        for q in base.skip
    )


def _baseline_report(db_url: str, ref: str, project: str, scope: RunScope | None = None) -> Report | None:
    """The run ``--baseline ref`` names: ``latest``, this project's newest covering assess run.

    ``latest`` is the newest stored assess run whose scope covers ``scope`` (this run's; a full
    run covers any).

    Trial 32: ``latest`` took the newest run even when it was narrowed to something else
    (``--only governance.runtime --asset digits_lr``), so every finding read ``not-in-baseline``,
    a model file that had just turned malicious included. Runs narrowed to less than this run
    checks are passed over (logged); when none of the newest runs covers the scope, the newest
    run is taken, as before.

    A store may be shared by several projects (one ``BASTION_DB`` on a CI server): another
    project's run is never a baseline (red-team round 28, F3: ``latest`` took the newest run of
    any project, and a finding new to this project was ``unchanged`` because another project had
    it). ``None`` when ``latest`` finds no run of this project (CI's first job: not an error).

    Raises:
        RunNotFound: no run matches ``ref``.
        ConfigError: the run named is of another project, or not an ``assess`` run.
        StoreError: the store cannot be read.
    """
    from bastion.store import Store

    with Store.open(db_url) as db:
        if ref.strip() == "latest":
            newest = db.previous_run(project, command="assess")
            found = newest
            if newest is None:
                log.warning(
                    "--baseline latest: no assess run of project %r stored yet; this run has no baseline",
                    project,
                )
                return None
            passed: list[str] = []
            while (
                found is not None and not _covers(found.run.scope, scope) and len(passed) < _LATEST_LOOKBACK
            ):
                passed.append(found.run.id)
                found = db.previous_run(project, before=found.run.id, command="assess")
            if found is None or not _covers(found.run.scope, scope):
                log.warning(
                    "--baseline latest: no stored run of project %r covers this run's scope; "
                    "comparing with the newest, run %s",
                    project,
                    newest.run.id,
                )
                return newest
            if passed:
                log.warning(
                    "--baseline latest: run %s, the newest covering this run's scope; passed over "
                    "%d newer run(s) narrowed to other checks or assets (%s)",
                    found.run.id,
                    len(passed),
                    ", ".join(passed[:5]) + (" …" if len(passed) > 5 else ""),
                )
            return found
        found = db.get_report(ref)
    if found.run.project != project or found.run.command != "assess":
        what = f"project {found.run.project!r}" if found.run.project is not None else "no project"
        raise ConfigError(
            f"--baseline {ref}: run {found.run.id} ({found.run.command}) is of {what}, not an assess "
            f"run of project {project!r} (project.name in bastion.yaml); a baseline must be this "
            "project's run (`bastion history`, or --baseline latest)"
        )
    return found


@contextlib.contextmanager
def _interrupts() -> Iterator[list[int]]:
    """Note every Ctrl-C (SIGINT) while the block runs, even one a library swallows.

    Yields a list that gets an entry per SIGINT; each still raises ``KeyboardInterrupt`` where
    it lands, as Python's own handler does. Some libraries catch that and go on: scikit-learn's
    ``MLPClassifier.fit`` says "Training interrupted by user." and returns a half-trained model
    (red-team round 28, F4: ``extraction.surrogate`` then reported its fidelity, the run was
    stored and exited 0 or 1, not 130). The caller raises ``KeyboardInterrupt`` again after the
    block. Only in the main thread, and only while Python's own handler is installed.
    """
    import signal
    import threading

    seen: list[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield seen
        return

    def on_sigint(signum: int, frame: Any) -> None:
        seen.append(signum)
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _splits_for(a: Asset, datasets: dict[str, Any]) -> dict[str, Split]:
    if a.kind == "dataset":
        ds = datasets.get(a.name)
        return dict(ds.context_data()) if ds is not None else {}
    if a.dataset and a.dataset in datasets:
        return dict(datasets[a.dataset].splits)
    return {}


def _signature_refusal(word: str | None, cfg: ProjectConfig, key: Any) -> str | None:
    """Why a model with this signature status (``assets[].signature``) is not loaded, or ``None``.

    With a project key: a signature that failed or could not be checked; no signature when
    ``signing.require`` is on (the default).
    """
    if key is None or word is None:
        return None
    if word == "failed":
        return "not loaded: its signature did not verify"
    if word == "error":
        return "not loaded: its signature could not be checked"
    if word == "unsigned" and cfg.signing.require:
        return "not loaded: unsigned, and signing.require is on"
    return None


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
    cfg: ProjectConfig,
    key: Any,
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
        if loads_file(m):
            verdict = facts.get(name, {}).get("scan_verdict")
            if verdict != Verdict.SAFE.value:
                raise TargetError(f"member {name} not loaded: the scanner judged the file {verdict}")
            refused = _signature_refusal(records[name].signature, cfg, key) if name in records else None
            if refused:
                raise TargetError(f"member {name} {refused}")
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


def write_outputs(
    report: Report, out_dir: str | Path, *, fail_on: str = "medium", project_dir: str | Path | None = None
) -> dict[str, Path]:
    """Write ``report.html``, ``report.json``, ``report.sarif`` and ``bom.json`` into ``out_dir`` atomically.

    Each file is written to a temporary name and renamed, so a failure leaves no
    half-written report. ``bom.json`` is the CycloneDX 1.6 ML-BOM of the report's assets
    (hashes, format, scan verdict, signature status; datasets).

    Args:
        report: the report.
        out_dir: the folder (created if missing).
        fail_on: the gate the HTML summary states.
        project_dir: the folder of ``bastion.yaml`` (asset paths are relative to it); recorded in
            ``report.sarif`` as the ``%SRCROOT%`` base of its relative URIs.

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
        "sarif": report_to_sarif(
            report, root=None if project_dir is None else str(Path(project_dir).resolve())
        ),
        "bom": json.dumps(report_bom(report, tool_version=__version__), indent=2) + "\n",
    }
    paths = {kind: out / ("bom.json" if kind == "bom" else f"report.{kind}") for kind in rendered}
    # a name taken by a folder (or anything but a file) would fail only at its rename, after the
    # files before it were replaced: refuse before anything is written
    blocked = [p for p in paths.values() if (p.exists() or p.is_symlink()) and not p.is_file()]
    if blocked:
        raise ConfigError(f"--output {out}: {blocked[0]} exists and is not a file; nothing was written")
    tmp_files: list[tuple[Path, Path]] = []
    current = out
    try:
        out.mkdir(parents=True, exist_ok=True)
        for kind, text in rendered.items():
            final = current = paths[kind]
            tmp = out / f".{final.name}.{os.getpid()}.tmp"
            tmp_files.append((tmp, final))
            tmp.write_text(text, encoding="utf-8")
        for tmp, final in tmp_files:
            current = final
            os.replace(tmp, final)
    except OSError as exc:
        raise ConfigError(f"--output {out}: cannot write {current}: {exc.strerror or exc}") from None
    finally:
        for tmp, _ in tmp_files:
            if tmp.exists():
                tmp.unlink()
    return paths
