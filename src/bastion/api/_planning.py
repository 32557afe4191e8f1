"""Planning an assessment: which checks run on which assets, and preflight."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.api._plugins import PLANNED_KINDS, load_plugins
from bastion.core.budget import PRESETS
from bastion.core.config import Asset, ProjectConfig, load_config
from bastion.core.errors import BastionError, ConfigError, OptionError
from bastion.core.registry import REGISTRIES
from bastion.core.report import VersionLineage

log = logging.getLogger(__name__)


@dataclass
class PlannedCheck:
    """One (check, asset) pair in the plan, with why it will not run if skipped.

    ``by_config``: ``skip_reason`` is the check's own ``config_skip`` (no recipe, a short
    budget ...); a problem of the whole model found later (it will not load) replaces it.
    """

    check_id: str
    asset: str
    kind: str
    skip_reason: str | None = None
    by_config: bool = False


@dataclass
class Plan:
    """What an assessment will run and skip."""

    config: ProjectConfig
    base_dir: Path
    budget: str
    items: list[PlannedCheck] = field(default_factory=list)
    #: allow entries typed for this run (``--allow``, ``allow=``): not limited to the user's own
    #: code as the project file's ``scan.allow`` is, and shown apart from it
    scan_allow_cli: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for ``--dry-run``."""
        return {
            "project": self.config.project.name,
            "budget": self.budget,
            # the project file's additions to the scanner's allow-list (only the user's own code:
            # core.project_trust); each global they let through is an info finding of the run
            "scan_allow": list(self.config.scan.allow),
            # the command line's --allow entries (typed by the user, not limited to their own
            # code); each global only they let through is an info finding too (user-allowed)
            "scan_allow_cli": list(self.scan_allow_cli),
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


#: Where ``bastion harden`` writes a model's versions, under the project folder; a recorded
#: version's file must resolve inside it (:func:`version_problem`).
VERSIONS_DIR = Path(".bastion") / "models"
#: The formats ``bastion harden`` records for a version (a torch state_dict, a skops file).
_VERSION_FORMATS = frozenset({"torch", "skops"})
#: The model classes a version may name instead of its model's own: the students of
#: ``defend.distill`` (:mod:`bastion.defend.students`).
_STUDENT_CLASSES = frozenset({"bastion.defend.students:StudentMLP", "bastion.defend.students:StudentCNN"})


def version_problem(a: Asset, v: Any, base: Path) -> str | None:
    """Why the recorded version ``v`` of model ``a`` cannot be assessed, or ``None``.

    The store sits in the project folder, which may be someone else's (a cloned repository): a
    ``model_versions`` row is trusted only as far as it names a file ``bastion harden`` could
    have written, one that resolves inside ``<project>/.bastion/models/`` (``base`` is the
    project folder). An absolute path, a ``..``, or a symbolic link out of that folder made
    ``assess`` load a file outside the project as the model's hardened version (red-team round
    31, 04).
    """
    name = f"{a.name}.v{v.version}"
    if not v.path:
        return f"{name}: the store records no file for it"
    rel = Path(v.path)
    root = base / VERSIONS_DIR
    if rel.is_absolute() or ".." in rel.parts or not (base / rel).resolve().is_relative_to(root):
        return (
            f"{name}: the store records its file as {v.path!r}, outside {root}{os.sep} (a store "
            "copied from another project, or written by someone else); remove that row of "
            "model_versions from the store, or use another store with --db"
        )
    return None


def check_versions(versions: dict[str, Any] | None, cfg: ProjectConfig, base: Path) -> None:
    """Refuse recorded versions whose files are not the project's own (:func:`version_problem`).

    Raises:
        ConfigError: every such version, named with its recorded path.
    """
    models = {a.name: a for a in cfg.assets if a.kind == "model"}
    problems = [
        p
        for name, v in (versions or {}).items()
        if name in models and (p := version_problem(models[name], v, base)) is not None
    ]
    if problems:
        raise ConfigError(
            f"{len(problems)} recorded model version(s) refused: a version's file must be the "
            f"project's own, under {base / VERSIONS_DIR}{os.sep}; nothing was run",
            problems,
        )


def _version_asset(a: Asset, v: Any) -> Asset:
    """The asset for a recorded version ``v`` of model ``a`` (its file, hash and class).

    The version is ``a`` retrained: its framework, model class and keyword arguments are
    ``a``'s own, whatever the store's row says, but for a distilled student (one of
    Bastion's own student classes, with its arguments); its format is ``torch`` or ``skops``
    as recorded, else ``a``'s. A row cannot make Bastion import another class.
    """
    details = dict(v.details)
    recorded_class = details.get("model_class")
    student = isinstance(recorded_class, str) and recorded_class in _STUDENT_CLASSES
    kwargs = details.get("model_kwargs")
    fmt = details.get("format")
    return a.model_copy(
        update={
            "name": f"{a.name}.v{v.version}",
            "path": v.path,
            "sha256": v.sha256,
            "format": fmt if fmt in _VERSION_FORMATS else a.format,
            "framework": a.framework,
            "model_class": recorded_class if student else a.model_class,
            "model_kwargs": dict(kwargs) if student and isinstance(kwargs, dict) else a.model_kwargs,
            "tags": [*a.tags, f"version-of:{a.name}", f"procedure:{v.procedure}"]
            + (
                [f"dp-epsilon:{details['epsilon']}"]  # the claimed ε, checked by membership attacks
                if v.procedure == "defend.dp-train" and "epsilon" in details
                else []
            )
            + (
                [f"dp-delta:{details['delta']}"]  # shown beside the claimed ε in the report
                if v.procedure == "defend.dp-train" and "delta" in details
                else []
            ),
        }
    )


#: Keys of a version's recorded ``details`` that :func:`version_lineage` lifts into their own fields.
_LIFTED = ("params", "parent_sha256")


def version_lineage(name: str, versions: dict[str, Any] | None) -> VersionLineage | None:
    """The lineage of asset ``name`` when it is a recorded version ``<model>.v<N>`` in ``versions``.

    ``versions`` maps a model asset to its recorded version (``store.versions.ModelVersion``) as
    :func:`_latest_versions` returns it; ``None`` for any other asset.
    """
    m = VERSION_NAME.match(name)
    v = (versions or {}).get(m.group("base")) if m else None
    if m is None or v is None or v.version != int(m.group("n")):
        return None
    return lineage_of(v)


def lineage_of(v: Any) -> VersionLineage:
    """The report's :class:`VersionLineage` of a recorded ``store.versions.ModelVersion``."""
    details = dict(v.details)
    private = "delta" in details  # (ε, δ)-DP procedures record δ; an adversarial ε is a perturbation
    params = details.get("params")
    return VersionLineage(
        version_of=v.asset,
        version=v.version,
        id=v.id,
        created=v.created,
        procedure=v.procedure,
        params=dict(params) if isinstance(params, dict) else {},
        epsilon_spent=_number(details.get("epsilon")) if private else None,
        delta=_number(details.get("delta")) if private else None,
        parent_id=v.parent_id,
        parent_sha256=details.get("parent_sha256") if isinstance(details.get("parent_sha256"), str) else None,
        datasets=list(v.datasets),
        details={k: val for k, val in details.items() if k not in _LIFTED},
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _selected(name: str, asset: str | None) -> bool:
    """Whether ``--asset`` selects ``name``.

    A model selects its version too; a version ``<model>.v<N>`` selects its model too (so the
    report compares them).
    """
    if asset is None or name == asset or name.startswith(asset + ".v"):
        return True
    m = VERSION_NAME.match(asset)
    return m is not None and name == m.group("base")


#: ``<model>.v<N>``: a recorded version of a model asset, as ``--asset`` may name it.
VERSION_NAME = re.compile(r"^(?P<base>.+)\.v(?P<n>[0-9]+)$")


def picked_version(cfg: ProjectConfig, asset: str | None) -> tuple[str, int] | None:
    """``(model, N)`` when ``asset`` names a version ``<model>.v<N>`` of a model asset, else ``None``."""
    m = VERSION_NAME.match(asset or "")
    if m is None or m.group("base") not in {a.name for a in cfg.assets if a.kind == "model"}:
        return None
    return m.group("base"), int(m.group("n"))


def _latest_versions(
    db_url: str, cfg: ProjectConfig, pick: tuple[str, int] | None = None, *, read_only: bool = False
) -> dict[str, Any]:
    """The latest recorded version of each model asset; empty when the store does not exist yet.

    ``pick`` (``(model, N)``, from ``--asset <model>.v<N>``) takes version ``N`` of that model
    instead of its latest. ``read_only``: the store is only read as it is (``--dry-run``: an
    older schema, which a run would migrate first, counts as no versions).

    Raises:
        ConfigError: the picked version is not recorded (the recorded ones are named).
        StoreError: the database cannot be read.
    """
    from sqlalchemy.engine import make_url

    u = make_url(db_url)
    st = None
    if u.get_backend_name() != "sqlite" or (u.database and Path(u.database).is_file()):
        from bastion.store import Store

        st = Store.open_read_only(db_url) if read_only else Store.open(db_url)
    found: dict[str, Any] = {}
    if st is not None:
        from bastion.store.versions import latest_version, list_versions

        with st:
            found = {a.name: latest_version(st, a.name) for a in cfg.assets if a.kind == "model"}
            if pick is not None:
                recorded = list_versions(st, pick[0])
                chosen = next((v for v in recorded if v.version == pick[1]), None)
                if chosen is None:
                    have = ", ".join(f"{pick[0]}.v{v.version}" for v in recorded) or "none"
                    raise ConfigError(
                        f"--asset {pick[0]}.v{pick[1]}: no such version recorded; recorded: {have}"
                    )
                found[pick[0]] = chosen
    if pick is not None and pick[0] not in found:
        raise ConfigError(f"--asset {pick[0]}.v{pick[1]}: no version of {pick[0]} is recorded in {db_url}")
    return {k: v for k, v in found.items() if v is not None}


def selected_by(pid: str, pattern: str) -> bool:
    """Whether ``--only``/``--skip`` ``pattern`` (an id or prefix) names plugin ``pid``.

    Also true for a rule id of that plugin (``evasion.pgd.low-robust-accuracy`` under ``evasion``).
    """
    return pid == pattern or pid.startswith(pattern + ".") or pid.split(".")[0] == pattern


def _check_enabled(
    cfg: ProjectConfig, pid: str, asset: str, only: Sequence[str], skip: Sequence[str]
) -> str | None:
    if only and not any(selected_by(pid, p) for p in only):
        return "not selected by --only"
    if any(selected_by(pid, p) for p in skip):
        return "excluded by --skip"
    cc = cfg.checks.get(pid)
    if cc is not None:
        if not cc.enabled:
            return "disabled in bastion.yaml"
        if cc.assets is not None and asset not in cc.assets:
            return "asset not listed under checks." + pid + ".assets"
    return None


def selectable_ids() -> list[str]:
    """The ids ``--only``/``--skip`` (``only=``/``skip=`` of the API) take, sorted: one list.

    Every planned plugin (attacks and checks, entry points included) and ``scan``, the model-file
    scan (one step whatever the file's format). The scanners' own ids (``scan.pickle``) are not
    among them: they select nothing (trial 30, L5: the API listed them once something had
    imported the scanners, 38 ids against the CLI's 24).
    """
    load_plugins()
    return sorted({pid for kind in PLANNED_KINDS for pid in REGISTRIES[kind]} | {"scan"})


def _validate_selection(only: Sequence[str], skip: Sequence[str]) -> None:
    known = selectable_ids()
    prefixes = {p.split(".")[0] for p in known} | set(known)
    bad = [p for p in [*only, *skip] if p not in prefixes and not any(k.startswith(p + ".") for k in known)]
    if bad:
        raise OptionError(
            f"unknown plugin id(s) in --only/--skip: {', '.join(bad)}; known: {', '.join(known)}"
        )


def plan(
    config: str | Path,
    *,
    budget: str = "standard",
    asset: str | None = None,
    only: Sequence[str] = (),
    skip: Sequence[str] = (),
    versions: dict[str, Any] | None = None,
    files: bool = False,
) -> Plan:
    """Which checks would run on which assets, and why the others are skipped.

    ``versions`` (asset name → latest recorded version) adds each hardened version as an
    asset ``<name>.v<N>`` assessed beside the original, so reports compare before and after.

    Capability-based skips (a label-only endpoint cannot give loss gradients) are decided
    from the asset's declared framework and output, without loading anything.

    The project file's own problems that need nothing loaded (unknown check ids, parameters
    that do not validate, thresholds naming no metric and, with ``files``, missing or unreadable
    files) are raised together as one :class:`ConfigError` naming the file (trial 32, M4: they
    came in four rounds).

    Raises:
        ConfigError: invalid config, unknown ``--asset`` or plugin id; a recorded version whose
            file is not under ``.bastion/models/`` (:func:`check_versions`).
    """
    load_plugins()
    path = Path(config)
    cfg = load_config(path)
    check_versions(versions, cfg, path.resolve().parent)
    if budget not in PRESETS:
        raise ConfigError(f"--budget must be one of {', '.join(PRESETS)}, got {budget!r}")
    _validate_selection(only, skip)
    known = {pid for kind in PLANNED_KINDS for pid in REGISTRIES[kind]}
    problems = [
        f"checks.{k}: unknown check id; known: {', '.join(sorted(known))}"
        + (
            " (the scanner always runs before a model is loaded; tune it with scan.allow)"
            if k.startswith("scan")
            else ""
        )
        for k in cfg.checks
        if k not in known
    ]
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
                if reason is None and kind == "attack" and a.dataset:
                    ds = cfg.dataset(a.dataset)  # the config checked that it exists
                    if not ds.splits and not ds.splits_file:
                        reason = (
                            f"dataset {ds.name} records no splits (datasets[].splits or splits_file); "
                            "attacks evaluate on its labelled test split"
                        )
                by_config = False
                if reason is None:
                    reason = _config_skip(cfg, cls, a, budget)
                    by_config = reason is not None
                p.items.append(PlannedCheck(pid, a.name, kind, reason, by_config))
    problems += _params_problems(cfg, p)
    problems += _threshold_problems(cfg, p)
    if files:
        from bastion.api._assessing import file_problems

        problems += file_problems(cfg, p.base_dir, _assets(cfg, versions))
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s)", problems)
    return p


def _params_problems(cfg: ProjectConfig, p: Plan) -> list[str]:
    """Every planned check's ``params`` that do not validate, one entry per check."""
    problems: list[str] = []
    for pid in sorted({i.check_id for i in p.items if i.kind in PLANNED_KINDS and i.skip_reason is None}):
        cc = cfg.checks.get(pid)
        cls = next(REGISTRIES[k].get(pid) for k in PLANNED_KINDS if pid in REGISTRIES[k])
        try:
            cls.parse_params(cc.params if cc else None, where=f"checks.{pid}.params")
        except BastionError as exc:
            problems.append(str(exc))
    return problems


def _config_skip(cfg: ProjectConfig, cls: Any, a: Asset, budget: str) -> str | None:
    """The check's own reason to skip ``a`` that the project file tells (``Check.config_skip``).

    The same call, on the same params and effective budget, as the run's ``applicable``. Params
    that do not validate are left to the run, which reports them as a config error.
    """
    hook = getattr(cls, "config_skip", None)
    if hook is None:
        return None
    cc = cfg.checks.get(cls.id)
    try:
        params = cls.parse_params(cc.params if cc else None, where=f"checks.{cls.id}.params")
    except BastionError:
        return None
    reason: str | None = cls().config_skip(a, params, PRESETS[budget].merged(cc.budget if cc else None))
    return reason


def _threshold_problems(cfg: ProjectConfig, p: Plan) -> list[str]:
    """Thresholds naming no metric of their check, as the real run's preflight refuses them.

    So the plan (and ``--dry-run``) does too, for every check that can tell without data
    (a ``threshold_problems(thresholds)`` method).
    """
    problems: list[str] = []
    done: set[str] = set()
    for item in p.items:
        if item.skip_reason is not None or item.kind not in PLANNED_KINDS or item.check_id in done:
            continue
        done.add(item.check_id)
        cc = cfg.checks.get(item.check_id)
        cls = REGISTRIES[item.kind].get(item.check_id)
        hook = getattr(cls, "threshold_problems", None)
        if cc is None or not cc.thresholds or hook is None:
            continue
        problems += [f"checks.{item.check_id}.{msg}" for msg in hook(cls(), cc.thresholds)]
    return problems


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
