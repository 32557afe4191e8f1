"""What the evasion attacks share: ε units, input bounds, the evaluation set and the ε-grid loop.

ε units (DESIGN.md): for an input spec whose ``eps_unit`` resolves to ``fraction`` (the tabular
default) an ε of ``0.05`` lets feature ``i`` move by ``0.05 * (max_i - min_i)`` of its declared
range; with ``absolute`` (the image default) ε is in model-input units for every value (``8/255``
on ``[0, 1]`` images). Every perturbed input stays inside the declared bounds and inside the
ε-ball around its clean input.

First-version feature rules, applied by every attack here:

* ``immutable`` features are never perturbed;
* ``categorical`` features are left unperturbed (no search over categories yet);
* ``integer`` features are rounded after the perturbation to an integer inside both the ε-ball
  and the bounds (toward the clean value when ε is under one unit); a feature whose clean value
  is not an integer and whose ball holds none keeps its clean value.

When the spec gives no range for a feature (or for an image), the train split's per-value
min/max stand in, and the result says so in ``notes["bounds"]``.

Robust accuracy counts a sample as robust only if it is classified correctly when clean *and*
the attack found no adversarial example at that ε. The grid is attacked in increasing order and
an adversarial example found at a smaller ε also counts at every larger ε (it lies inside the
larger ball), so robust accuracy never increases with ε; each ε attacks only the samples still
robust.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.assess.metrics import wilson_interval
from bastion.core.budget import BudgetMeter
from bastion.core.capability import Capability
from bastion.core.check import Check, CheckContext, Split
from bastion.core.config import InputSpec, Threshold
from bastion.core.errors import BudgetExhausted, ConfigError, PluginError, TargetError
from bastion.core.findings import Finding, Threat
from bastion.core.results import CheckResult, Series
from bastion.core.severity import Severity

log = logging.getLogger(__name__)

EpsUnit = Literal["fraction", "absolute"]

#: The ε grid used when ``params.eps`` is not set, per unit. ``absolute`` assumes inputs in
#: ``[0, 1]`` (8x8 digits need more than CIFAR's 8/255 ≈ 0.03 to move).
DEFAULT_GRIDS: dict[str, tuple[float, ...]] = {
    "fraction": (0.01, 0.02, 0.05, 0.1),
    "absolute": (0.05, 0.1, 0.2),
}
#: The ε of the default threshold: present in both default grids.
DEFAULT_THRESHOLD_EPS = 0.05
#: Fewest queries per sample and ε that still make an attack worth running.
MIN_QUERIES = 10

#: Metrics every evasion check reports once per ε (``<name>@eps=<ε>``).
PER_EPS_METRICS: tuple[str, ...] = (
    "robust_accuracy",
    "robust_accuracy_drop",
    "attack_success_rate",
    "median_perturbation",
    "queries_per_sample",
)
#: Metrics reported once per check.
SCALAR_METRICS: tuple[str, ...] = ("clean_accuracy",)

_EPS_METRIC = re.compile(r"^([a-z][a-z0-9_]*)@eps=([0-9.eE+-]+)$")


# -- names --------------------------------------------------------------------------------------
def eps_label(eps: float) -> str:
    """ε as it appears in metric names: ``0.05`` → ``"0.05"`` (``%g``, six significant digits)."""
    return f"{eps:g}"


def metric_key(name: str, eps: float) -> str:
    """``robust_accuracy`` and ``0.05`` → ``"robust_accuracy@eps=0.05"``."""
    return f"{name}@eps={eps_label(eps)}"


#: ε of the default L2 gate (in the ε unit), shared by the L2 attacks.
L2_THRESHOLD_EPS = 0.5
#: Relative slack of the L2 ball for float32 round-off (a point counts inside at ``ε·(1 + L2_TOL)``).
L2_TOL = 1e-6


def low_robust_accuracy(eps: float) -> tuple[Threshold, ...]:
    """The default gate of an evasion attack: robust accuracy at ``eps`` below 0.5 is a high finding."""
    return (
        Threshold(
            metric=metric_key("robust_accuracy", eps),
            op="lt",
            value=0.5,
            severity=Severity.HIGH,
            rule="low-robust-accuracy",
        ),
    )


def parse_eps_metric(metric: str) -> tuple[str, float] | None:
    """``"robust_accuracy@eps=0.05"`` → ``("robust_accuracy", 0.05)``; ``None`` if not of that form."""
    m = _EPS_METRIC.match(metric)
    if m is None:
        return None
    try:
        return m.group(1), float(m.group(2))
    except ValueError:
        return None


# -- input bounds -------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputBounds:
    """Per-value bounds and ε scale of one model input, all of shape ``input_shape``.

    Attributes:
        lo: lowest allowed value (model-input units), float64.
        hi: highest allowed value, float64.
        scale: model-input units per ε unit: ``hi - lo`` for ``fraction``, ``1`` for ``absolute``.
        mutable: the attacker may change this value (not immutable, not categorical, ``hi > lo``).
        integer: the value must stay an integer.
        unit: the ε unit (``fraction`` or ``absolute``).
        notes: remarks for ``CheckResult.notes`` (where the bounds came from, rules applied).
    """

    lo: np.ndarray
    hi: np.ndarray
    scale: np.ndarray
    mutable: np.ndarray
    integer: np.ndarray
    unit: EpsUnit
    notes: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample's shape."""
        return tuple(self.lo.shape)

    def max_eps(self, norm: str = "linf") -> float:
        """The largest meaningful ε in this unit under ``norm``.

        L∞: 1 for ``fraction``, the widest range for ``absolute``. L2: the L2 diameter of the box
        of mutable values in the ε unit (``sqrt(#mutable)`` for ``fraction``, the L2 norm of the
        ranges for ``absolute``): a radius beyond it cannot move any input further.
        """
        if norm == "l2":
            safe = np.where(self.scale > 0, self.scale, 1.0)
            widths = ((self.hi - self.lo) / safe)[self.mutable]
            return float(np.sqrt(np.sum(np.square(widths, dtype=np.float64)))) if widths.size else 0.0
        if self.unit == "fraction":
            return 1.0
        widths = (self.hi - self.lo)[self.mutable]
        return float(widths.max()) if widths.size else 0.0

    def eps_values(self, eps: float) -> np.ndarray:
        """ε in model-input units per value (0 where immutable), shape ``input_shape``, float64."""
        return np.where(self.mutable, eps * self.scale, 0.0)

    def box(self, x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """The per-value interval an adversarial version of ``x`` may take at ``eps``.

        The interval is the ε-ball intersected with ``[lo, hi]``, always containing the clean
        value (a clean value outside the declared range is not moved back into it); integer
        values get the integers inside it (or only the clean value when it holds none);
        immutable values get ``[x, x]``.

        Args:
            x: clean inputs ``(N, *input_shape)``.
            eps: ε in this bounds' unit.

        Returns:
            ``(low, high)``, each of ``x``'s shape, float32.
        """
        x64 = np.asarray(x, dtype=np.float64)
        e = self.eps_values(eps)
        low = np.minimum(np.maximum(self.lo, x64 - e), x64)
        high = np.maximum(np.minimum(self.hi, x64 + e), x64)
        if self.integer.any():
            ilo, ihi = np.ceil(low - 1e-9), np.floor(high + 1e-9)
            empty = ilo > ihi
            ilo, ihi = np.where(empty, x64, ilo), np.where(empty, x64, ihi)
            low, high = np.where(self.integer, ilo, low), np.where(self.integer, ihi, high)
        return low.astype(np.float32), high.astype(np.float32)

    def finalize(self, x_adv: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """``x_adv`` clipped to its box, integer values rounded inside it; float32, new array."""
        out = np.clip(np.asarray(x_adv, dtype=np.float32), low, high)
        if self.integer.any():
            out = np.where(self.integer, np.clip(np.rint(out), low, high), out).astype(np.float32)
        return out

    def finalize_l2(
        self, x_adv: np.ndarray, x: np.ndarray, low: np.ndarray, high: np.ndarray, eps: float
    ) -> np.ndarray:
        """:meth:`finalize` for an L2 attack: the result never lies outside the L2 ε-ball.

        Rounding integer values to the nearest integer can move a point that lies on the
        sphere out of the ball (by up to half a unit per value). Where it does, the values
        rounded *away* from the clean value are rounded toward it instead, those that cost the
        most norm first, only as many as needed (rounding toward the clean value never grows
        ``|δ|``); a row that is still outside (a clean value off the integer grid) is returned
        as its clean input, unperturbed. Rows whose continuous ``x_adv`` is already outside the
        ball are the caller's error and handled the same way.

        Args:
            x_adv: candidate points ``(N, *input_shape)`` (any float dtype).
            x: their clean inputs, same shape.
            low: the box's lower ends (:meth:`box` of ``x`` at ``eps``).
            high: its upper ends.
            eps: the L2 radius in the ε unit.

        Returns:
            float32 points inside the box with ``l2(out, x) <= eps·(1 + L2_TOL)`` for every row.
        """
        out = self.finalize(x_adv, low, high)
        limit = eps * (1.0 + L2_TOL)
        over = np.flatnonzero(self.l2(out, x) > limit)
        if over.size == 0:
            return out
        n, safe = over.size, np.where(self.scale > 0, self.scale, 1.0)
        xc = np.asarray(x, np.float64)[over].reshape(n, -1)
        cont = np.clip(np.asarray(x_adv, np.float64)[over], low[over], high[over]).reshape(n, -1)
        near = out[over].astype(np.float64).reshape(n, -1)
        toward = np.where(cont >= xc, np.floor(cont + 1e-9), np.ceil(cont - 1e-9))
        toward = np.clip(toward, low[over].reshape(n, -1), high[over].reshape(n, -1))
        s = safe.reshape(1, -1)
        integ = np.broadcast_to(self.integer.reshape(1, -1), near.shape)
        cost_near = ((near - xc) / s) ** 2
        cost_toward = ((toward - xc) / s) ** 2
        gain = np.where(integ, cost_near - cost_toward, 0.0)
        gain = np.maximum(gain, 0.0)
        need = cost_near.sum(axis=1) - limit**2  # squared norm to shed, > 0 on these rows
        order = np.argsort(-gain, axis=1)
        shed = np.cumsum(np.take_along_axis(gain, order, axis=1), axis=1)
        # flip the k largest gains, k the fewest whose sum covers ``need`` (all when none do)
        k = np.minimum((shed < need[:, None]).sum(axis=1) + 1, gain.shape[1])
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(order.shape[1])[None].repeat(n, axis=0), axis=1)
        flip = (rank < k[:, None]) & (gain > 0)
        fixed = np.where(flip, toward, near).reshape(n, *self.shape).astype(np.float32)
        still = self.l2(fixed, np.asarray(x)[over]) > limit
        fixed[still] = np.asarray(x, np.float32)[over][still]
        out[over] = fixed
        return out

    def l2(self, x_adv: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Per-sample L2 distance in the ε unit (``δ / scale``; zero-scale values ignored), ``(N,)``."""
        diff = np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)
        safe = np.where(self.scale > 0, self.scale, 1.0)
        scaled = np.where(self.scale > 0, diff / safe, 0.0)
        if not scaled.size:
            return np.zeros(len(x))
        return np.asarray(np.sqrt((scaled.reshape(len(scaled), -1) ** 2).sum(axis=1)))

    def norm(self, kind: str, x_adv: np.ndarray, x: np.ndarray) -> np.ndarray:
        """:meth:`l2` when ``kind`` is ``"l2"``, else :meth:`linf`."""
        return self.l2(x_adv, x) if kind == "l2" else self.linf(x_adv, x)

    def linf(self, x_adv: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Per-sample L∞ distance in the ε unit (values with a zero scale ignored), shape ``(N,)``."""
        diff = np.abs(np.asarray(x_adv, np.float64) - np.asarray(x, np.float64))
        safe = np.where(self.scale > 0, self.scale, 1.0)
        scaled = np.where(self.scale > 0, diff / safe, 0.0)
        return np.asarray(scaled.reshape(len(scaled), -1).max(axis=1) if scaled.size else np.zeros(len(x)))


def _names(spec: InputSpec | None, idx: np.ndarray, limit: int = 6) -> str:
    if spec is not None and spec.features is not None:
        names = [spec.features[int(i)].name for i in idx]
    else:
        names = [f"#{int(i)}" for i in idx]
    more = f", … ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def resolve_bounds(
    spec: InputSpec | None, input_shape: Sequence[int], train_x: np.ndarray | None
) -> InputBounds:
    """Bounds, ε scale and masks of one model input, from its spec or else the train split.

    Args:
        spec: the asset's ``input`` (``None``: not declared).
        input_shape: one sample's shape as the data holds it.
        train_x: the train split's inputs ``(N, *input_shape)``, used for values without a
            declared range (``None``: no train split).

    Returns:
        The bounds; ``notes`` says where they came from and which feature rules applied.

    Raises:
        ConfigError: the spec's shape or feature count does not fit the data, or some value has
            neither a declared range nor a train split to derive one (every problem listed).
    """
    shape = tuple(int(d) for d in input_shape)
    size = math.prod(shape)
    problems: list[str] = []
    notes: list[str] = []
    lo = np.full(size, np.nan)
    hi = np.full(size, np.nan)
    integer = np.zeros(size, dtype=bool)
    mutable = np.ones(size, dtype=bool)
    unit: EpsUnit = "fraction" if len(shape) == 1 else "absolute"
    if spec is not None:
        unit = spec.resolved_eps_unit()
        if math.prod(spec.shape) != size:
            problems.append(
                f"input.shape: {spec.shape} does not fit the data's per-sample shape {list(shape)}"
            )
        if spec.range is not None:
            lo[:], hi[:] = spec.range
        if spec.features is not None:
            if len(spec.features) != size:
                problems.append(
                    f"input.features: {len(spec.features)} declared for {size} input values "
                    f"(shape {list(shape)})"
                )
            else:
                for i, feat in enumerate(spec.features):
                    if feat.min is not None:
                        lo[i] = feat.min
                    if feat.max is not None:
                        hi[i] = feat.max
                    integer[i] = feat.type == "integer"
                    if feat.type == "categorical" or feat.immutable:
                        mutable[i] = False
                cat = np.flatnonzero([f.type == "categorical" for f in spec.features])
                imm = np.flatnonzero([f.immutable for f in spec.features])
                if imm.size:
                    notes.append(f"immutable features never perturbed: {_names(spec, imm)}")
                if cat.size:
                    notes.append(
                        "categorical features left unperturbed (no search over categories yet): "
                        + _names(spec, cat)
                    )
                if integer.any():
                    notes.append(
                        f"integer features rounded after the perturbation, within ε: "
                        f"{_names(spec, np.flatnonzero(integer))}"
                    )
    missing = np.isnan(lo) | np.isnan(hi)
    if missing.any() and not problems:
        if train_x is None or len(train_x) == 0:
            problems.append(
                "input: no declared range (input.range, or input.features[].min/max) and no train split "
                "to derive one from"
            )
        else:
            flat = np.asarray(train_x, dtype=np.float64).reshape(len(train_x), -1)
            if flat.shape[1] != size:
                problems.append(
                    f"train split: per-sample shape {list(train_x.shape[1:])} does not fit {list(shape)}"
                )
            else:
                lo = np.where(np.isnan(lo), flat.min(axis=0), lo)
                hi = np.where(np.isnan(hi), flat.max(axis=0), hi)
                if missing.all():
                    notes.append("no declared input range: using the train split's min/max per value")
                else:
                    notes.append(
                        f"no declared range for {_names(spec, np.flatnonzero(missing))}: "
                        "using the train split's min/max"
                    )
    if problems:
        raise ConfigError("cannot resolve the input bounds", problems)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    widths = hi - lo
    scale = widths if unit == "fraction" else np.ones(size)
    mutable &= widths > 0
    return InputBounds(
        lo=lo.reshape(shape),
        hi=hi.reshape(shape),
        scale=scale.reshape(shape),
        mutable=mutable.reshape(shape),
        integer=(integer & mutable).reshape(shape),
        unit=unit,
        notes=tuple(notes),
    )


# -- the ε grid ---------------------------------------------------------------------------------
def eps_grid(
    eps: Sequence[float] | None, unit: EpsUnit, thresholds: Sequence[Threshold] = ()
) -> tuple[list[float], list[float]]:
    """The sorted ε grid to attack, and the ε values added for thresholds.

    Every ε a threshold names (``robust_accuracy@eps=0.05``) joins the grid, so a threshold
    always has its metric.

    Args:
        eps: the configured grid (``None``: :data:`DEFAULT_GRIDS` for ``unit``).
        unit: the ε unit.
        thresholds: the check's effective thresholds.

    Returns:
        ``(grid, added)``: ascending unique ε values (by their metric label), and those added
        for thresholds.
    """
    chosen = {eps_label(e): float(e) for e in (eps if eps else DEFAULT_GRIDS[unit])}
    added: list[float] = []
    for th in thresholds:
        parsed = parse_eps_metric(th.metric)
        if parsed is not None and eps_label(parsed[1]) not in chosen and parsed[1] > 0:
            chosen[eps_label(parsed[1])] = parsed[1]
            added.append(parsed[1])
    return sorted(chosen.values()), added


# -- evaluation samples -------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalSet:
    """The samples an attack evaluates on (copies: the caller's arrays are never touched).

    Attributes:
        x: inputs ``(n, *input_shape)`` float32.
        y: labels ``(n,)`` int64.
        index: their row indices in the dataset file ``(n,)``.
    """

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray


def affordable_queries(meter: BudgetMeter, cap: int, n: int, eps_left: int) -> tuple[int, bool]:
    """Queries per sample for one ε: ``cap``, lowered to what the query budget leaves.

    Args:
        meter: the run's budget meter.
        cap: the attack's own queries per sample and ε.
        n: samples to attack at this ε.
        eps_left: ε values still to attack, this one included (each gets the same share).

    Returns:
        ``(queries, lowered)``: ``remaining // (n · eps_left)`` (at least 1) where that is under
        ``cap``, else ``cap``; ``lowered`` says which.
    """
    remaining = meter.remaining_queries()
    if remaining is not None:
        afford = remaining // max(1, n * eps_left)
        if afford < cap:
            return max(1, afford), True
    return cap, False


def rng_for(seed: int, stream: int) -> np.random.Generator:
    """An independent numpy generator for ``(seed, stream)`` (negative seeds allowed)."""
    return np.random.default_rng([seed % 2**32, stream])


def evaluation_set(split: Split, samples: int | None, seed: int) -> EvalSet:
    """The first ``min(samples, len(split))`` rows of ``split`` after a shuffle seeded by ``seed``.

    Raises:
        ConfigError: the split has no labels.
    """
    if split.y is None:
        raise ConfigError("the test split has no labels")
    n_all = len(split.x)
    n = n_all if samples is None else min(int(samples), n_all)
    order = rng_for(seed, 0).permutation(n_all)[:n]
    index = np.asarray(split.index) if split.index is not None else np.arange(n_all)
    return EvalSet(
        x=np.array(split.x[order], dtype=np.float32, copy=True),
        y=np.array(np.asarray(split.y)[order], dtype=np.int64, copy=True),
        index=np.array(index[order], copy=True),
    )


# -- what an attack returns ---------------------------------------------------------------------
@dataclass
class AttackOutcome:
    """The result of attacking ``n`` samples at one ε.

    Attributes:
        x_adv: the best input found per sample ``(n, *input_shape)`` float32 (inside the box).
        success: the model misclassifies ``x_adv`` ``(n,)``.
        queries: queries spent per sample ``(n,)`` int64.
    """

    x_adv: np.ndarray
    success: np.ndarray
    queries: np.ndarray


class Engine(Protocol):
    """One attack bound to one target for the duration of a run.

    Attributes:
        notes: remarks for ``CheckResult.notes`` (backend used, budget caps), filled as it runs.
    """

    notes: dict[str, str]

    def labels(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels ``(N,)`` of clean inputs, charging the meter one query per row."""
        ...

    def attack(self, x: np.ndarray, y: np.ndarray, eps: float, eps_left: int) -> AttackOutcome:
        """Attack ``x`` (all classified correctly when clean) at ``eps``; ``eps_left`` counts this one."""
        ...


class EvasionParams(BaseModel):
    """Parameters every evasion attack takes.

    Attributes:
        eps: the ε grid in the input's ε unit (``None``: 0.01, 0.02, 0.05, 0.1 for ``fraction``;
            0.05, 0.1, 0.2 for ``absolute``). ε values named by thresholds are added.
        batch_size: rows per model call.
    """

    model_config = ConfigDict(extra="forbid")

    eps: list[float] | None = Field(default=None, min_length=1, max_length=32)
    batch_size: int = Field(default=256, ge=1, le=65_536)


# -- the check ----------------------------------------------------------------------------------
class EvasionCheck(Check):
    """Base class of the evasion plugins: preflight, the evaluation set and the ε-grid loop.

    Subclasses set the plugin attributes and implement :meth:`engine`, plus
    :meth:`extra_problems` and :meth:`per_eps_metrics` where they need more.
    """

    threat: ClassVar[Threat] = Threat.EVASION
    # listed on endpoints too, so the report says why an attack could not run there
    applies_to: ClassVar[frozenset[str]] = frozenset({"model", "endpoint"})
    atlas: ClassVar[tuple[str, ...]] = ("AML.T0015", "AML.T0043", "AML.T0043.000")
    default_thresholds: ClassVar[tuple[Threshold, ...]] = low_robust_accuracy(DEFAULT_THRESHOLD_EPS)
    remediation: ClassVar[str] = (
        "Harden the model with adversarial training (PGD, Madry et al. 2018, or TRADES) and re-assess; "
        "validate inputs against their declared ranges at runtime; for endpoints, rate-limit and watch "
        "per-client query patterns (score-based attacks need many queries)."
    )
    #: Per-ε metrics this plugin reports (``<name>@eps=<ε>``).
    metric_names: ClassVar[tuple[str, ...]] = PER_EPS_METRICS
    #: The norm ε bounds: ``linf`` (every value moves by at most ε) or ``l2`` (the L2 norm of
    #: ``δ / scale`` is at most ε); ``median_perturbation`` is reported in it.
    norm: ClassVar[Literal["linf", "l2"]] = "linf"

    # -- planning --------------------------------------------------------------------------
    def applicable(self, ctx: CheckContext) -> str | None:
        """The base capability check, then a classification model and a labelled test split."""
        reason = super().applicable(ctx)
        if reason is not None:
            return reason
        if ctx.asset.task != "classification":
            return "robust accuracy needs a classification model"
        test = ctx.data.get("test")
        if test is None or test.y is None or len(test.x) == 0:
            return "needs a labelled test split"
        return None

    def preflight(self, ctx: CheckContext) -> list[str]:
        """Every problem with the data, the input spec, ε, the thresholds and the budget."""
        params = cast(EvasionParams, ctx.params)
        problems: list[str] = []
        test = ctx.data.get("test")
        if test is None:
            problems.append("needs a test split (datasets[].splits.test)")
        elif test.y is None:
            problems.append("the test split has no labels")
        elif len(test.x) == 0:
            problems.append("the test split is empty")
        bounds: InputBounds | None = None
        shape_ok = False
        if test is not None and len(test.x) > 0:
            shape = tuple(test.x.shape[1:])
            target_shape = getattr(ctx.target, "input_shape", None)
            if target_shape is not None and tuple(target_shape) != shape:
                problems.append(
                    f"test inputs have shape {list(shape)} per sample; the model takes {list(target_shape)}"
                )
            else:
                shape_ok = True
            try:
                bounds = resolve_bounds(ctx.asset.input, shape, _train_x(ctx))
            except ConfigError as exc:
                problems.extend(exc.problems or [str(exc)])
        if bounds is not None and test is not None and len(test.x) > 0:
            msg, gross = range_violations(ctx.asset.input, bounds, np.asarray(test.x), "test split")
            if msg is not None and gross:
                problems.append(msg)
            if ctx.target is not None and shape_ok:
                # probed whatever else is wrong, so every problem is listed at once
                problems.extend(probability_problems(ctx.target, np.asarray(test.x[:8], dtype=np.float32)))
        if bounds is not None and not bounds.mutable.any():
            problems.append(
                "input: every value is immutable, categorical or of zero range; nothing to perturb"
            )
        for i, e in enumerate(params.eps or []):
            if not math.isfinite(e) or e <= 0:
                problems.append(f"params.eps[{i}]: {e:g} must be positive")
            elif bounds is not None and e > bounds.max_eps(self.norm):
                if self.norm == "l2":
                    problems.append(
                        f"params.eps[{i}]: {e:g} is beyond the input box's L2 diameter "
                        f"({bounds.max_eps('l2'):g} in {bounds.unit} units)"
                    )
                elif bounds.unit == "fraction":
                    problems.append(
                        f"params.eps[{i}]: {e:g} is beyond the feature range "
                        "(a fraction of each range, at most 1)"
                    )
                else:
                    problems.append(
                        f"params.eps[{i}]: {e:g} is beyond the input range "
                        f"(widest {bounds.max_eps():g}, absolute units)"
                    )
        problems.extend(self.threshold_problems(ctx.thresholds))
        for i, th in enumerate(ctx.thresholds):
            parsed = parse_eps_metric(th.metric)
            if parsed is not None and bounds is not None and parsed[1] > bounds.max_eps(self.norm):
                problems.append(
                    f"thresholds[{i}].metric: ε {parsed[1]:g} is beyond the input range "
                    f"(at most {bounds.max_eps(self.norm):g} in {bounds.unit} units)"
                )
        if test is not None and test.y is not None and len(test.x) > 0:
            n = len(test.x) if ctx.budget.samples is None else min(ctx.budget.samples, len(test.x))
            unit = bounds.unit if bounds is not None else "fraction"
            grid, _ = eps_grid(params.eps, unit, ctx.thresholds)
            problems.extend(self.extra_problems(ctx, n, len(grid)))
        return problems

    def threshold_problems(self, thresholds: Sequence[Threshold]) -> list[str]:
        """Thresholds that name no metric of this check, or a non-positive ε.

        Data-free, so ``bastion assess --dry-run`` reports them too (``api.plan``).
        """
        problems = []
        for i, th in enumerate(thresholds):
            parsed = parse_eps_metric(th.metric)
            if th.metric in SCALAR_METRICS:
                continue
            if parsed is not None and parsed[0] in self.metric_names:
                if parsed[1] <= 0:
                    problems.append(f"thresholds[{i}].metric: ε in {th.metric!r} must be positive")
                continue
            known = ", ".join([*SCALAR_METRICS, *(f"{m}@eps=<ε>" for m in self.metric_names)])
            problems.append(f"thresholds[{i}].metric: {th.metric!r} is not a metric of {self.id} ({known})")
        return problems

    def extra_problems(self, ctx: CheckContext, n_samples: int, n_eps: int) -> list[str]:
        """Plugin-specific preflight problems (parameters against the budget); none by default."""
        return []

    @staticmethod
    def one_eps_budget(ctx: CheckContext, need: int) -> list[str]:
        """The preflight problem when the query budget cannot cover ``need`` queries (one ε)."""
        if ctx.budget.queries is not None and ctx.budget.queries < need:
            return [f"budget.queries: {ctx.budget.queries} cannot finish one ε ({need} needed)"]
        return []

    @staticmethod
    def queries_per_attack(ctx: CheckContext, n_samples: int, n_eps: int) -> int | None:
        """Queries the budget leaves per sample and ε after the clean pass (``None``: no query budget)."""
        if ctx.budget.queries is None:
            return None
        return (ctx.budget.queries - n_samples) // max(1, n_samples * n_eps)

    @staticmethod
    def per_attack_budget(ctx: CheckContext, n_samples: int, n_eps: int, need: int) -> list[str]:
        """The preflight problem when the budget leaves fewer than ``need`` queries per sample and ε."""
        per = EvasionCheck.queries_per_attack(ctx, n_samples, n_eps)
        if per is not None and per < need:
            return [
                f"budget.queries: {ctx.budget.queries} leaves {max(per, 0)} queries per sample and ε "
                f"({n_samples} samples, {n_eps} ε values); at least {need} are needed"
            ]
        return []

    # -- running ---------------------------------------------------------------------------
    def engine(
        self, ctx: CheckContext, meter: BudgetMeter, bounds: InputBounds, rng: np.random.Generator
    ) -> contextlib.AbstractContextManager[Engine]:
        """The attack bound to ``ctx.target`` for one run (a context: it may switch model modes)."""
        raise NotImplementedError

    def per_eps_metrics(self, eps: float, attacked: AttackOutcome | None) -> dict[str, float | None]:
        """Extra metrics of one ε from what the attack did there (none by default)."""
        return {}

    def run(self, ctx: CheckContext) -> CheckResult:
        """Attack the test samples at every ε of the grid and report clean and robust accuracy.

        Raises:
            PluginError: there is no target.
            ConfigError: no labelled test split, or the input bounds cannot be resolved.
        """
        start = time.monotonic()
        if ctx.target is None:
            raise PluginError(f"{self.id}: needs a model target")
        params = cast(EvasionParams, ctx.params)
        test = ctx.data.get("test")
        if test is None:
            raise ConfigError(f"{self.id}: asset {ctx.asset.name!r} has no test split")
        ev = evaluation_set(test, ctx.budget.samples, ctx.seed)
        bounds = resolve_bounds(ctx.asset.input, ev.x.shape[1:], _train_x(ctx))
        grid, added = eps_grid(params.eps, bounds.unit, ctx.thresholds)
        notes: dict[str, str] = {"eps_unit": _unit_note(bounds.unit)}
        if bounds.notes:
            notes["bounds"] = "; ".join(bounds.notes)
        range_msg, _ = range_violations(ctx.asset.input, bounds, ev.x, "evaluated")
        if range_msg is not None:
            notes["input_range"] = range_msg + " (clean values are kept; perturbations stay within the range)"
        if added:
            notes["eps_grid"] = "added for thresholds: " + ", ".join(eps_label(e) for e in added)
        if not params.eps and bounds.unit == "absolute" and bounds.max_eps() > 2.0:
            notes["eps_default"] = (
                f"the default absolute ε grid assumes inputs in [0, 1]; values here span up to "
                f"{bounds.max_eps():g}: set params.eps"
            )
        n = len(ev.x)
        meter = BudgetMeter(ctx.budget)
        rng = rng_for(ctx.seed, 1)
        tally = _Tally(n=n, grid=grid, metric_names=self.metric_names, unit=bounds.unit, norm=self.norm)
        engine_notes: dict[str, str] = {}
        try:
            meter.charge(samples=n)
            with ctx.target.metered(meter), self.engine(ctx, meter, bounds, rng) as eng:
                engine_notes = eng.notes
                pred = np.asarray(eng.labels(ev.x), dtype=np.int64)
                tally.set_clean(pred == ev.y)
                for i, eps in enumerate(grid):
                    idx = np.flatnonzero(tally.correct & ~tally.broken)
                    outcome = None
                    if idx.size:
                        outcome = eng.attack(ev.x[idx], ev.y[idx], eps, len(grid) - i)
                        tally.record(eps, idx, outcome, bounds.norm(self.norm, outcome.x_adv, ev.x[idx]))
                    else:
                        tally.record(eps, idx, None, np.zeros(0))
                    tally.extra[eps] = self.per_eps_metrics(eps, outcome)
                    ctx.report_progress((i + 1) / len(grid))
        except BudgetExhausted as exc:
            done = ", ".join(eps_label(e) for e in tally.done) or "none"
            notes["budget"] = f"stopped: {exc}; ε completed: {done}; later ε values are null"
            log.info("%s on %s: %s", self.id, ctx.asset.name, exc)
        notes.update(engine_notes)
        result = CheckResult(id=self.id, asset=ctx.asset.name, status="ok", notes=notes)
        tally.fill(result)
        result.notes.update(tally.notes)
        result.budget_used = meter.usage()
        result.seconds = round(time.monotonic() - start, 4)
        extra = {"samples": n, "eps_unit": bounds.unit}
        result.findings = self.threshold_findings(ctx, result, extra_evidence=extra)
        if "budget" in notes:
            result.findings += self.unmeasured_findings(ctx, result, notes["budget"])
        return result

    def unmeasured_findings(self, ctx: CheckContext, result: CheckResult, why: str) -> list[Finding]:
        """One finding per threshold whose metric the budget left null: the gate fails closed.

        A robust accuracy that was never measured must not pass a gate silently, so each such
        threshold yields ``<id>.unmeasured`` at the threshold's own severity.
        """
        out: list[Finding] = []
        for th in ctx.thresholds:
            if th.metric in result.metrics and result.metrics[th.metric] is None:
                out.append(
                    self.finding(
                        ctx,
                        "unmeasured",
                        f"{self.title or self.id}: {th.metric} not measured (the budget ran out); "
                        f"the gate {th.op} {th.value:g} cannot pass",
                        severity=th.severity,
                        evidence={th.metric: None, "threshold": f"{th.op} {th.value:g}", "budget": why},
                        remediation=(
                            "Raise budget.queries (or lower budget.samples / the ε grid) and re-assess."
                        ),
                    )
                )
        return out


# -- silent misuse ------------------------------------------------------------------------------
#: How far outside its declared range a value may lie before preflight objects (rounding).
RANGE_TOL = 1e-6
#: A value beyond its declared range by more than this fraction of the width is a gross violation.
RANGE_GROSS = 0.5
#: More than this fraction of rows out of range is a gross violation.
RANGE_ROWS = 0.5
#: How far a row of probabilities may sum from one.
PROB_TOL = 1e-3


def range_violations(
    spec: InputSpec | None, bounds: InputBounds, x: np.ndarray, where: str
) -> tuple[str | None, bool]:
    """Values of ``x`` outside their *declared* range (derived ranges cannot be violated).

    An attack run on inputs far outside the declared range reports on a different input domain
    than the model serves (e.g. images in [0, 255] declared as [0, 1]: every ε is 255× too
    small), so a *gross* violation — a value beyond its range by more than
    :data:`RANGE_GROSS` of the range's width, or more than :data:`RANGE_ROWS` of the rows out of
    range — is a preflight problem; a few rows slightly outside (a range declared from the
    train split) are only noted.

    Returns:
        ``(message, gross)``; ``(None, False)`` when every value is in range.
    """
    if spec is None or (spec.range is None and not spec.features) or not len(x):
        return None, False
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    lo, hi = bounds.lo.reshape(-1), bounds.hi.reshape(-1)
    width = np.maximum(hi - lo, 1e-12)
    excess = np.maximum(lo - flat, 0.0) + np.maximum(flat - hi, 0.0)
    out = excess > RANGE_TOL * np.maximum(1.0, width)
    if not out.any():
        return None, False
    bad = np.flatnonzero(out.any(axis=0))
    rows = int(out.any(axis=1).sum())
    worst = float((excess / width).max())
    gross = worst > RANGE_GROSS or rows > RANGE_ROWS * len(flat)
    msg = (
        f"input: {rows} of {len(flat)} {where} rows hold values outside the declared range "
        f"(values {_names(spec, bad)}; worst {worst:.3g}× the range width beyond it)"
    )
    if gross:
        msg += (
            "; fix input.range / input.features[].min/max or rescale the data (ε would be in the wrong units)"
        )
    return msg, gross


def probability_problems(target: Any, x: np.ndarray) -> list[str]:
    """A target declared to return probabilities whose rows do not sum to one (logits?).

    Queries ``len(x)`` rows (outside any budget meter), so only in-process targets are probed:
    a ``QUERY_LIMITED`` target (an endpoint) is checked on its answers during the run instead
    (its rows are all charged). Targets without ``PROBABILITIES`` (label-only) are not checked.
    """
    caps: frozenset[Capability] = getattr(target, "capabilities", frozenset())
    if Capability.PROBABILITIES not in caps or Capability.QUERY_LIMITED in caps or len(x) == 0:
        return []
    try:
        p = np.asarray(target.predict_proba(x), dtype=np.float64)
    except TargetError as exc:
        return [f"target: {exc}"]
    return [msg] if (msg := probability_error(p)) else []


def probability_error(p: np.ndarray) -> str | None:
    """Why ``p`` ``(n, K)`` is not a probability matrix, or ``None`` when it is."""
    if p.ndim != 2 or not len(p):
        return None
    if not np.all(np.isfinite(p)):
        return "target: the model returned NaN or infinite probabilities"
    sums = p.sum(axis=1)
    bad = (np.abs(sums - 1.0) > PROB_TOL) | (p < -PROB_TOL).any(axis=1) | (p > 1 + PROB_TOL).any(axis=1)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    return (
        f"target: output row {i} is not a probability vector (sums to {sums[i]:.4g}, range "
        f"{p[i].min():.4g}..{p[i].max():.4g}); looks like logits declared as probabilities "
        "(declare output: logits)"
    )


def check_probabilities(p: np.ndarray, who: str) -> np.ndarray:
    """``p`` unchanged, or :class:`TargetError` when its rows are not probabilities."""
    msg = probability_error(np.asarray(p))
    if msg is not None:
        raise TargetError(f"{who}: {msg}")
    return p


def _train_x(ctx: CheckContext) -> np.ndarray | None:
    train = ctx.data.get("train")
    return None if train is None else np.asarray(train.x)


def _unit_note(unit: EpsUnit) -> str:
    if unit == "fraction":
        return "fraction: ε is a fraction of each feature's declared range (eps_i = ε·(max_i − min_i))"
    return "absolute: ε is in model-input units for every value"


class _Tally:
    """Per-sample state across the ε grid, and the metrics it yields."""

    def __init__(
        self, *, n: int, grid: list[float], metric_names: tuple[str, ...], unit: EpsUnit, norm: str = "linf"
    ) -> None:
        self.n = n
        self.norm = norm
        self.unit = unit
        self.grid = grid
        self.metric_names = metric_names
        self.correct = np.zeros(n, dtype=bool)
        self.broken = np.zeros(n, dtype=bool)
        self.norms = np.full(n, np.nan)
        self.clean_done = False
        self.done: list[float] = []
        self.rows: dict[float, dict[str, Any]] = {}
        self.extra: dict[float, dict[str, float | None]] = {}
        self.notes: dict[str, str] = {}

    def set_clean(self, correct: np.ndarray) -> None:
        self.correct = np.asarray(correct, dtype=bool)
        self.clean_done = True

    def record(self, eps: float, idx: np.ndarray, outcome: AttackOutcome | None, norms: np.ndarray) -> None:
        attacked = int(idx.size)
        spent = 0
        if outcome is not None:
            hit = idx[outcome.success]
            self.broken[hit] = True
            self.norms[hit] = norms[outcome.success]
            spent = int(outcome.queries.sum())
        self.rows[eps] = {
            "robust": int((self.correct & ~self.broken).sum()),
            "broken": int(self.broken.sum()),
            "median_norm": float(np.median(self.norms[self.broken])) if self.broken.any() else None,
            "queries_per_sample": spent / attacked if attacked else None,
        }
        self.done.append(eps)

    def fill(self, result: CheckResult) -> None:
        n = self.n
        k_clean = int(self.correct.sum())
        clean = k_clean / n if n and self.clean_done else None
        result.metrics["clean_accuracy"] = clean
        if clean is not None:
            result.intervals["clean_accuracy"] = wilson_interval(k_clean, n)
        if self.clean_done and k_clean == 0:
            self.notes["attack_success_rate"] = "no sample is classified correctly when clean: null"
        robust_y: list[float | None] = []
        for eps in self.grid:
            row = self.rows.get(eps)
            if row is None:
                for name in self.metric_names:
                    result.metrics[metric_key(name, eps)] = None
                robust_y.append(None)
                continue
            robust = row["robust"] / n if n else None
            result.metrics[metric_key("robust_accuracy", eps)] = robust
            result.metrics[metric_key("robust_accuracy_drop", eps)] = (
                None if robust is None or clean is None else round(clean - robust, 12)  # no float noise
            )
            result.metrics[metric_key("attack_success_rate", eps)] = (
                row["broken"] / k_clean if k_clean else None
            )
            result.metrics[metric_key("median_perturbation", eps)] = row["median_norm"]
            result.metrics[metric_key("queries_per_sample", eps)] = row["queries_per_sample"]
            for name, value in self.extra.get(eps, {}).items():
                result.metrics[metric_key(name, eps)] = value
            if n:
                result.intervals[metric_key("robust_accuracy", eps)] = wilson_interval(row["robust"], n)
            if k_clean:
                result.intervals[metric_key("attack_success_rate", eps)] = wilson_interval(
                    row["broken"], k_clean
                )
            robust_y.append(robust)
        if any(v is None for v in robust_y) and self.done:
            self.notes.setdefault("robust_accuracy", "null where the budget ran out before that ε finished")
        self.notes.setdefault(
            "median_perturbation",
            ("L2" if self.norm == "l2" else "L∞")
            + " norm of the successful adversarial examples, in the ε unit",
        )
        self.notes.setdefault(
            "queries_per_sample",
            "mean queries per sample attacked at that ε "
            "(samples broken at a smaller ε are not attacked again)",
        )
        unit_label = f"ε ({self.unit})"
        result.series["robust_accuracy"] = Series(
            x=list(self.grid), y=robust_y, x_label=unit_label, y_label="accuracy"
        )
        result.series["clean_accuracy"] = Series(
            x=list(self.grid), y=[clean] * len(self.grid), x_label=unit_label, y_label="accuracy"
        )
