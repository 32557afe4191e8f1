"""Hardening: defences that write new model versions, and the privacy/utility sweep (issues 5, 6)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.api._assessing import (
    _build_target,
    _check_context,
    _load_datasets,
    _preflight_files,
    _splits_for,
    allow_entries,
    gate_scan,
    scan_allowed,
)
from bastion.api._data import _trained_on
from bastion.api._planning import VERSIONS_DIR, ProgressFn, _version_asset, version_problem
from bastion.api._plugins import load_plugins
from bastion.api._scanning import _refuse_failed_signature
from bastion.core.budget import PRESETS
from bastion.core.check import Check, CheckContext, Split
from bastion.core.config import Asset, ProjectConfig, load_config
from bastion.core.errors import ConfigError, OptionError, PluginError
from bastion.core.registry import REGISTRIES
from bastion.core.results import CheckResult
from bastion.core.scanning import Verdict
from bastion.core.settings import Settings, load_settings

log = logging.getLogger(__name__)


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
        reused: ``True`` when the new model was byte-identical to an already recorded version
            of the asset with the same parent: that version is returned and no new one recorded.
    """

    asset: str
    version: int
    name: str
    path: str
    sha256: str
    procedure: str
    details: dict[str, Any]
    reused: bool = False


def harden(
    config: str | Path,
    procedure: str,
    *,
    asset: str,
    params: dict[str, Any] | None = None,
    settings: Settings | None = None,
    progress: Callable[[float], None] | None = None,
    allow: Sequence[str] = (),
) -> HardenResult:
    """Run a defence (``defend.*`` plugin) on a model asset and record the result as a new version.

    The original file is scanned first and loaded only if judged safe; the new model is
    written atomically under ``.bastion/models/`` in the project folder and recorded in the
    store with its hash, procedure, parameters and training data (lineage). ``bastion assess``
    then assesses it beside the original (``<asset>.v<N>``). When the new model is
    byte-identical to a version already recorded for the asset from the same original file (a
    deterministic procedure run again), that version is returned (``reused``) and no duplicate
    is recorded.

    ``allow``: allow-list additions for the model scan, as :func:`~bastion.api.assess`'s
    (``bastion harden --allow``): not limited to your own code, no entry allows a deny-listed
    callable; each global only such an entry let through is recorded with the version
    (``details["scan_allowed"]``), as is each one the project file's ``scan.allow`` let through.

    Raises:
        ConfigError: invalid config, unknown asset or procedure, bad parameters, a malformed
            ``allow`` entry, or the defence's preflight problems (all listed), before any
            training.
        IntegrityError: the model file changed after it was scanned.
        StoreError: the database cannot be reached (checked before training).
    """
    from bastion.core.registry import defences
    from bastion.store import Store, preflight
    from bastion.store.versions import add_version, find_version, list_versions

    allow = allow_entries(allow)
    s, cfg, base, a = _open_project(config, asset, settings)
    if a.kind != "model" or not a.path:
        raise ConfigError(f"--asset {asset}: only model files can be hardened (kind {a.kind})")
    if procedure not in defences:
        pid = f"defend.{procedure}"
        if pid not in defences:
            known = ", ".join(p.removeprefix("defend.") for p in defences) or "none"
            raise OptionError(f"unknown hardening procedure {procedure!r}; known: {known}")
        procedure = pid
    cls = defences.get(procedure)
    try:
        parsed = cls.parse_params(params, where="params")
    except PluginError as exc:
        raise ConfigError(str(exc)) from None
    _preflight_files(cfg, base, [a])
    datasets = _load_datasets(cfg, base, [a])
    preflight(s.db_url)
    fr = gate_scan(base / a.path, cfg, allow)
    if fr.verdict != Verdict.SAFE:
        raise ConfigError(f"{base / a.path}: not loaded: the scanner judged the file {fr.verdict.value}")
    _refuse_failed_signature(cfg, base, a, sha256=fr.sha256)  # as assess: a bad signature stops it
    target = _build_target(a, base, {"scan_sha256": fr.sha256})
    target = getattr(target, "inner", target) if a.output is not None else target  # the model, unhardened
    ctx = _harden_context(cfg, base, a, target, _splits_for(a, datasets), parsed, progress)
    defence = cls()
    problems = defence.preflight(ctx)
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) before hardening {asset}", problems)
    _check_own_folder(base, VERSIONS_DIR)  # assess takes versions only from there (version_problem)
    _check_writable(base / VERSIONS_DIR)  # before training: the new version must be storable
    out = defence.harden(ctx)
    sha = hashlib.sha256(out.payload).hexdigest()
    rel = (
        Path(".bastion")
        / "models"
        / f"{a.name}-{procedure.removeprefix('defend.')}-{sha[:12]}{out.extension}"
    )
    dest = base / rel
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(out.payload)
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{dest.parent}: cannot write the hardened model: {exc.strerror or exc}") from None
    details = {
        **out.details,
        "format": "torch" if out.format == "torch" else "skops",
        "model_class": out.model_class or a.model_class,
        "model_kwargs": out.model_kwargs or a.model_kwargs,
        "params": parsed.model_dump(mode="json"),
        "parent_sha256": fr.sha256,
    }
    allowed = scan_allowed(fr)
    if allowed:  # the parent was loaded because an allow-list addition let these through
        details["scan_allowed"] = allowed
    with Store.open(s.db_url) as st:
        # A deterministic procedure run again yields the same bytes: reuse that version (its file
        # must still be there) instead of recording a duplicate row.
        same = find_version(st, asset=a.name, sha256=sha, parent_id=None, parent_sha256=fr.sha256)
        # ... and only a version whose file is the project's own (a planted row names any path)
        if (
            same is not None
            and same.path
            and version_problem(a, same, base) is None
            and (base / same.path).is_file()
        ):
            if rel.as_posix() not in {v.path for v in list_versions(st, a.name)}:
                dest.unlink(missing_ok=True)  # the same bytes under another recorded name: one copy
            log.info("%s: identical to the recorded version %s.v%d; reused", rel, a.name, same.version)
            return HardenResult(
                asset=a.name,
                version=same.version,
                name=f"{a.name}.v{same.version}",
                path=same.path,
                sha256=sha,
                procedure=same.procedure or procedure,
                details=same.details,
                reused=True,
            )
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


def _open_project(
    config: str | Path, asset: str, settings: Settings | None
) -> tuple[Settings, ProjectConfig, Path, Asset]:
    """Plugins loaded; the settings, the parsed ``bastion.yaml``, its folder and the asset ``asset``.

    Raises:
        ConfigError: invalid config or unknown asset.
    """
    load_plugins()
    path = Path(config)
    cfg = load_config(path)
    return settings or load_settings(), cfg, path.resolve().parent, cfg.asset(asset)


def _harden_context(
    cfg: ProjectConfig,
    base: Path,
    a: Asset,
    target: Any,
    data: dict[str, Split],
    params: Any,
    progress: Callable[[float], None] | None = None,
) -> Any:
    """The :class:`~bastion.defend.base.HardenContext` of one defence run on ``a``."""
    from bastion.defend.base import HardenContext

    return HardenContext(
        asset=a,
        config=cfg,
        base_dir=base,
        target=target,
        data=data,
        params=params,
        seed=cfg.seed,
        progress=progress,
    )


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
    allow: Sequence[str] = (),
) -> SweepResult:
    """Harden ``asset`` once per ε and audit every version: the privacy/utility curve.

    Preflight first, all problems in one error before any attack runs or anything trains or is
    written: every ε's parameters and the defence's own preflight for each ε (δ below ``1/n``, ε
    reachable in the epochs given, layers Opacus can train), the files, the dataset and the
    store. The original model is then audited (ε = ∞), so a membership attack that cannot run on
    this data (its preflight) also stops the sweep before any training. Then, per ε ascending,
    :func:`harden` records a new version, which is scanned, loaded (with the asset's output
    hardening, as served) and attacked with
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
        allow: allow-list additions for every model scan of the sweep (see :func:`harden`).

    Returns:
        The curve, the original first.

    Raises:
        ConfigError: no ε, a non-positive ε, an unknown attack or procedure, bad parameters, or
            an attack's or the defence's preflight problems (before any training).
        IntegrityError: a model file changed after it was scanned.
    """
    from bastion.core.registry import defences

    allow = allow_entries(allow)
    s, cfg, base, a = _open_project(config, asset, settings)
    problems: list[str] = []
    if not epsilons:
        problems.append("--sweep: no ε given")
    problems += [f"--sweep: ε must be > 0, got {e:g}" for e in epsilons if not e > 0]
    repeated = sorted({e for e in epsilons if epsilons.count(e) > 1})
    if repeated:
        problems.append(f"--sweep: ε {', '.join(f'{e:g}' for e in repeated)} given more than once")
    known = [k for k in REGISTRIES["attack"] if k.startswith("membership.")]
    unknown = [
        f"--attack {pid}: not a membership-inference attack; known: {', '.join(known)}"
        for pid in attacks
        if pid not in known
    ]
    pid = procedure if procedure in defences else f"defend.{procedure}"
    if pid not in defences:
        names = ", ".join(p.removeprefix("defend.") for p in defences) or "none"
        unknown.append(f"unknown hardening procedure {procedure!r}; known: {names}")
    problems += unknown
    if pid in defences:
        for eps in (e for e in epsilons if e > 0):  # ε ≤ 0 is reported once, above
            try:
                defences.get(pid).parse_params({**(params or {}), "epsilon": eps}, where=f"ε={eps:g}: params")
            except PluginError as exc:
                problems.append(str(exc))
    if problems:
        # only unknown names (a typo of a procedure or attack id): a usage error, 4, as harden's
        error = OptionError if len(unknown) == len(problems) else ConfigError
        raise error(f"{len(problems)} problem(s) before the sweep on {asset}", problems)
    if a.kind != "model" or not a.path:
        raise ConfigError(f"--asset {asset}: only model files can be hardened (kind {a.kind})")
    _preflight_files(cfg, base, [a])
    data = _splits_for(a, _load_datasets(cfg, base, [a]))
    from bastion.store import preflight as store_preflight

    store_preflight(s.db_url)  # reachable and writable; writes nothing
    # The defence's own preflight for EVERY ε (δ < 1/n, ε reachable in the epochs given, layers
    # Opacus can train) before the first attack or training: one error listing them all, and
    # nothing written (issue 6, "Bad input").
    fr0 = gate_scan(base / a.path, cfg, allow)
    if fr0.verdict != Verdict.SAFE:
        raise ConfigError(f"{base / a.path}: not loaded: the scanner judged the file {fr0.verdict.value}")
    _refuse_failed_signature(cfg, base, a, sha256=fr0.sha256)
    original = _build_target(a, base, {"scan_sha256": fr0.sha256})
    model = getattr(original, "inner", original) if a.output is not None else original
    cls = defences.get(pid)
    for eps in sorted(epsilons):
        parsed = cls.parse_params({**(params or {}), "epsilon": eps}, where=f"ε={eps:g}")
        problems += [
            f"ε={eps:g}: {p}" for p in cls().preflight(_harden_context(cfg, base, a, model, data, parsed))
        ]
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) before the sweep on {asset}", problems)
    result = SweepResult(asset=a.name, procedure=pid, attacks=list(attacks), budget=s.budget)

    def audit(va: Asset, eps_target: float | None, version: HardenResult | None) -> SweepPoint:
        fr = gate_scan(base / str(va.path), cfg, allow)
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
        res = harden(
            config, pid, asset=asset, params={**(params or {}), "epsilon": eps}, settings=s, allow=allow
        )
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
        try:
            ctx = _check_context(cls, cfg, base, a, preset, target, data, {"__run__": {"db_url": s.db_url}})
        except PluginError as exc:
            problems.append(str(exc))
            continue
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


def _check_own_folder(base: Path, rel: Path) -> None:
    """Refuse ``base / rel`` when a symbolic link leads out of it (``.bastion`` or ``models``).

    A hardened model is written into the project's own ``.bastion/models/``, the only folder
    ``assess`` takes recorded versions from; through a link it would be written elsewhere.

    Raises:
        ConfigError: ``base / rel`` is not where it resolves to (``base`` is resolved).
    """
    folder = base / rel
    if folder.resolve() != folder:
        raise ConfigError(
            f"{folder}: reached through a symbolic link (to {folder.resolve()}): hardened models are "
            "written only into the project's own .bastion/models/ folder; replace the link with a folder"
        )


def _check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be written in it (a probe, then removed).

    ``os.access`` is not enough: root passes it on a read-only mount or an immutable folder.

    Raises:
        ConfigError: the folder cannot be created or written.
    """
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot store the hardened model there: {exc.strerror or exc}") from None
