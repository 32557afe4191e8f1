"""Model extraction by surrogate training: fidelity of a black-box clone vs query budget.

An attacker labels ``N`` inputs by querying the target's predicted labels and trains a small
surrogate (scikit-learn ``MLPClassifier``) on them (Tramèr et al. 2016; Orekondy et al. 2019).
Two query pools are tried: *natural* records (the ``population`` split, else ``train``, never
rows of the fidelity set) and *synthetic* inputs drawn uniformly within the declared feature
ranges. Fidelity — agreement of surrogate and target on the held-out ``test`` split — is
reported for each ``N`` of a grid; the surrogate's accuracy on the true labels beside it.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bastion.assess import metrics as M
from bastion.core import atlas as atlas_ids
from bastion.core.budget import BudgetMeter
from bastion.core.check import Check, CheckContext, Split
from bastion.core.config import Threshold
from bastion.core.errors import BudgetExhausted, require
from bastion.core.findings import Threat
from bastion.core.registry import register
from bastion.core.results import CheckResult, Series
from bastion.core.severity import Severity

log = logging.getLogger(__name__)

Pool = Literal["natural", "synthetic"]
#: Query counts tried when ``params.queries`` is not set (capped by the budget and pool size).
DEFAULT_QUERIES: tuple[int, ...] = (50, 100, 200, 500, 1000)
DEFAULT_POOLS: tuple[Pool, ...] = ("natural", "synthetic")
#: Fewest labelled queries a surrogate is trained on.
MIN_QUERIES = 10


def fidelity_metric(queries: int, pool: str) -> str:
    """Metric name of the fidelity after ``queries`` queries from ``pool``."""
    return f"fidelity@queries={queries},pool={pool}"


def accuracy_metric(queries: int, pool: str) -> str:
    """Metric name of the surrogate's accuracy after ``queries`` queries from ``pool``."""
    return f"accuracy@queries={queries},pool={pool}"


class SurrogateParams(BaseModel):
    """Parameters of ``extraction.surrogate``.

    Attributes:
        queries: query counts ``N`` to train a surrogate on, per pool; values above the budget
            or the natural pool are capped (noted in the result).
        pools: which query pools to try: ``natural`` records and/or ``synthetic`` inputs.
        hidden_layer_sizes: the surrogate MLP's hidden layers.
        max_iter: the surrogate's training epochs (Adam).
    """

    model_config = ConfigDict(extra="forbid")

    queries: list[int] = Field(default_factory=lambda: list(DEFAULT_QUERIES), min_length=1)
    pools: list[Pool] = Field(default_factory=lambda: list(DEFAULT_POOLS), min_length=1)
    hidden_layer_sizes: list[int] = Field(default_factory=lambda: [64], min_length=1, max_length=4)
    max_iter: int = Field(default=300, ge=10, le=5000)

    @field_validator("queries")
    @classmethod
    def _counts(cls, v: list[int]) -> list[int]:
        for n in v:
            if not MIN_QUERIES <= n <= 10_000_000:
                raise ValueError(f"every query count must lie in [{MIN_QUERIES}, 10000000], got {n}")
        return sorted(set(v))

    @field_validator("pools")
    @classmethod
    def _unique(cls, v: list[Pool]) -> list[Pool]:
        return list(dict.fromkeys(v))

    @field_validator("hidden_layer_sizes")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        if any(not 1 <= w <= 4096 for w in v):
            raise ValueError("hidden layer widths must lie in [1, 4096]")
        return v


@dataclass
class _Plan:
    """What the check will query: the fidelity rows and each pool's query grid."""

    fidelity: Split
    natural: Split | None
    grids: dict[str, list[int]]
    notes: dict[str, str]


@register("attack")
class SurrogateExtraction(Check):
    """Black-box extraction: train a surrogate from ``N`` label queries, measure its fidelity.

    Threat model: an attacker with query access to the target's predicted labels only (no
    probabilities needed; ``LABEL_ONLY`` targets work) and either unlabelled natural records
    from the same population or just the input ranges, wants a functional copy of the model
    (to avoid paying for it, or to stage transfer attacks). The surrogate is an MLP on the
    flattened inputs, standardised on the attacker's own queries.

    Data: fidelity set ``ctx.data["test"]`` (at most ``budget.samples`` rows, seeded); natural
    pool ``ctx.data["population"]`` if present else ``ctx.data["train"]``, minus any row whose
    dataset index is in the fidelity set. Synthetic pool: uniform within each feature's
    declared ``min``/``max`` (``asset.input.features``), else ``asset.input.range``, else the
    ``train`` split's per-feature min/max (noted); ``integer`` features are rounded and
    ``categorical`` ones drawn from their categories.

    Budget: queries = fidelity-set labels + the largest ``N`` of each pool (smaller ``N`` reuse a
    prefix of the same queries); ``budget.queries`` caps the grid, ``budget.samples`` the
    fidelity set; the time budget stops further surrogates (what was reached is reported).

    Metrics: ``fidelity@queries=N,pool=P`` and ``accuracy@queries=N,pool=P`` (Wilson intervals),
    ``target_accuracy`` on the fidelity set, and ``fidelity@max_queries``: the higher of the
    pools' fidelities at their largest ``N`` (a stable name for thresholds; the pool and ``N``
    in ``notes``). Series: ``fidelity_natural``, ``fidelity_synthetic`` (fidelity vs ``N``, log x).

    Default threshold: ``fidelity@max_queries >= 0.9`` → medium
    ``extraction.surrogate.high-fidelity-clone``.

    References: Tramèr et al. 2016, "Stealing Machine Learning Models via Prediction APIs"
    (arXiv:1609.02943); Orekondy et al. 2019, "Knockoff Nets: Stealing Functionality of
    Black-Box Models" (arXiv:1812.02766).
    """

    id: ClassVar[str] = "extraction.surrogate"
    title: ClassVar[str] = "Model extraction (surrogate from label queries)"
    threat: ClassVar[Threat] = Threat.EXTRACTION
    applies_to: ClassVar[frozenset[str]] = frozenset({"model", "endpoint"})
    Params: ClassVar[type[BaseModel]] = SurrogateParams
    atlas: ClassVar[tuple[str, ...]] = (atlas_ids.EXTRACT_MODEL, atlas_ids.PROXY_VIA_REPLICATION)
    references: ClassVar[tuple[str, ...]] = (
        "Tramèr et al. 2016, Stealing Machine Learning Models via Prediction APIs, arXiv:1609.02943",
        "Orekondy et al. 2019, Knockoff Nets: Stealing Functionality of Black-Box Models, arXiv:1812.02766",
    )
    threat_model: ClassVar[str] = (
        "Black-box attacker with label-only query access and unlabelled in-distribution records "
        "(or only the input ranges) trains a clone on the target's answers."
    )
    default_thresholds: ClassVar[tuple[Threshold, ...]] = (
        Threshold(
            metric="fidelity@max_queries",
            op="ge",
            value=0.9,
            severity=Severity.MEDIUM,
            rule="high-fidelity-clone",
        ),
    )
    remediation: ClassVar[str] = (
        "Limit and monitor per-client query volume (rate limits, extraction detection on query "
        "patterns in the guard), return labels or coarsened scores only, and watermark the model "
        "so a clone can be proven."
    )

    # -- planning --------------------------------------------------------------------------
    def applicable(self, ctx: CheckContext) -> str | None:
        """Needs a model target and a non-empty ``test`` split (the fidelity set)."""
        if ctx.target is None:
            return "needs a loaded model target"
        test = ctx.data.get("test")
        if test is None or len(test.x) == 0:
            return "needs a 'test' split (the fidelity set); the asset's dataset has none"
        return None

    def preflight(self, ctx: CheckContext) -> list[str]:
        """A query budget too small to label the fidelity set and train one surrogate."""
        if ctx.data.get("test") is None or ctx.target is None:
            return []
        plan = self._plan(ctx, cast(SurrogateParams, ctx.params), np.random.default_rng(ctx.seed))
        if not any(plan.grids.values()):
            where = f"checks.{self.id} (asset {ctx.asset.name})"
            why = "; ".join(plan.notes.values()) or "no query pool available"
            return [f"{where}: no surrogate can be trained: {why}"]
        return []

    def _plan(self, ctx: CheckContext, params: SurrogateParams, rng: np.random.Generator) -> _Plan:
        notes: dict[str, str] = {}
        test = ctx.data["test"]
        n_fid = len(test.x)
        if ctx.budget.samples is not None and ctx.budget.samples < n_fid:
            n_fid = ctx.budget.samples
            notes["fidelity_set"] = f"{n_fid} of {len(test.x)} test rows (budget.samples)"
        pick = np.sort(rng.choice(len(test.x), size=n_fid, replace=False))
        fidelity = _take(test, pick)

        natural: Split | None = None
        if "natural" in params.pools:
            source = "population" if "population" in ctx.data else "train"
            raw = ctx.data.get(source)
            if raw is None or len(raw.x) == 0:
                notes["pool=natural"] = "no 'population' or 'train' split to draw natural queries from"
            else:
                # Disjoint from the whole test split, not just the sampled rows.
                keep = ~np.isin(np.asarray(raw.index), np.asarray(test.index))
                natural = _take(raw, np.flatnonzero(keep))
                if not keep.all():
                    notes["pool=natural"] = (
                        f"'{source}' split, {int((~keep).sum())} rows also in the fidelity set removed"
                    )
                else:
                    notes["pool=natural"] = f"'{source}' split ({len(natural.x)} rows)"

        cap: int | None = None
        if ctx.budget.queries is not None:
            left = ctx.budget.queries - n_fid
            cap = max(0, left // len(params.pools))
        grids: dict[str, list[int]] = {}
        for pool in params.pools:
            limit = cap
            if pool == "natural":
                if natural is None:
                    continue
                limit = len(natural.x) if limit is None else min(limit, len(natural.x))
            grid = sorted({n if limit is None else min(n, limit) for n in params.queries})
            grid = [n for n in grid if n >= MIN_QUERIES]
            if not grid:
                notes[f"pool={pool}"] = (
                    f"fewer than {MIN_QUERIES} queries left for this pool "
                    f"(budget.queries {ctx.budget.queries}, fidelity set {n_fid})"
                )
                continue
            if grid[-1] < params.queries[-1]:
                notes[f"grid_{pool}"] = f"query grid capped at {grid[-1]} by the budget or pool size"
            grids[pool] = grid
        return _Plan(fidelity=fidelity, natural=natural, grids=grids, notes=notes)

    # -- running ---------------------------------------------------------------------------
    def run(self, ctx: CheckContext) -> CheckResult:
        """Label the fidelity set, query each pool once, train surrogates on growing prefixes.

        Raises:
            MissingExtraError: scikit-learn is not installed.
            TargetError: the target rejects the inputs.
        """
        t0 = time.monotonic()
        params = cast(SurrogateParams, ctx.params)
        rng = np.random.default_rng(ctx.seed)
        plan = self._plan(ctx, params, rng)
        result = CheckResult(id=self.id, asset=ctx.asset.name, notes=dict(plan.notes))
        meter = BudgetMeter(ctx.budget)
        if not plan.grids:
            result.status = "skipped"
            result.reason = "no query pool fits the data and budget: " + "; ".join(plan.notes.values())
            return result
        require("sklearn", "data")
        fid = plan.fidelity
        shape = tuple(ctx.target.input_shape)

        queried: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        try:
            meter.charge(samples=len(fid.x))
            with ctx.target.metered(meter):
                fid_labels = np.asarray(ctx.target.predict_label(fid.x), dtype=np.int64)
                for pool, grid in plan.grids.items():
                    if pool == "natural":
                        assert plan.natural is not None
                        order = rng.permutation(len(plan.natural.x))[: grid[-1]]
                        xq = np.asarray(plan.natural.x[order], dtype=np.float32)
                    else:
                        xq, how = _synthetic(ctx, grid[-1], shape, rng)
                        result.notes["pool=synthetic"] = how
                    queried[pool] = (xq, np.asarray(ctx.target.predict_label(xq), dtype=np.int64))
        except BudgetExhausted as exc:
            if not queried:
                result.status = "error"
                result.reason = f"BudgetExhausted: {exc}"
                result.budget_used = meter.usage()
                result.seconds = round(time.monotonic() - t0, 4)
                return result
            result.notes["budget"] = f"stopped early: {exc}"
        ctx.report_progress(0.2)

        if fid.y is not None:
            acc, lo, hi = M.accuracy_interval(fid.y, fid_labels)
            result.metrics["target_accuracy"] = acc
            result.intervals["target_accuracy"] = (lo, hi)

        fits = sum(len(plan.grids[p]) for p in queried)
        done = 0
        x_fid = fid.x.reshape(len(fid.x), -1)
        try:
            for pool, (xq, yq) in queried.items():
                for n in plan.grids[pool]:
                    meter.check_time()
                    pred = _fit_predict(xq[:n].reshape(n, -1), yq[:n], x_fid, params, ctx.seed)
                    f_val, f_lo, f_hi = M.accuracy_interval(fid_labels, pred)
                    result.metrics[fidelity_metric(n, pool)] = f_val
                    result.intervals[fidelity_metric(n, pool)] = (f_lo, f_hi)
                    if fid.y is not None:
                        a_val, a_lo, a_hi = M.accuracy_interval(fid.y, pred)
                        result.metrics[accuracy_metric(n, pool)] = a_val
                        result.intervals[accuracy_metric(n, pool)] = (a_lo, a_hi)
                    done += 1
                    ctx.report_progress(0.2 + 0.8 * done / max(1, fits))
        except BudgetExhausted as exc:  # the time budget: report the surrogates reached
            result.notes["budget"] = f"stopped early: {exc}"

        best: tuple[float, str, int] | None = None
        for pool in queried:
            reached = [n for n in plan.grids[pool] if fidelity_metric(n, pool) in result.metrics]
            if not reached:
                continue
            ys = [result.metrics[fidelity_metric(n, pool)] for n in reached]
            result.series[f"fidelity_{pool}"] = Series(
                x=[float(n) for n in reached],
                y=ys,
                x_label="queries",
                y_label="fidelity (agreement with the target)",
                log_x=True,
            )
            last = ys[-1]
            if last is not None and (best is None or last > best[0]):
                best = (last, pool, reached[-1])

        if best is not None:
            value, pool, n = best
            result.metrics["fidelity@max_queries"] = value
            result.intervals["fidelity@max_queries"] = result.intervals[fidelity_metric(n, pool)]
            result.notes["fidelity@max_queries"] = f"{pool} pool, {n} queries (the higher of the pools)"
        result.budget_used = meter.usage()
        extra: dict[str, Any] = {"fidelity_set": len(fid.x)}
        if best is not None:
            extra.update({"pool": best[1], "queries": best[2]})
        if "target_accuracy" in result.metrics:
            extra["target_accuracy"] = result.metrics["target_accuracy"]
        result.findings = self.threshold_findings(ctx, result, extra_evidence=extra)
        result.seconds = round(time.monotonic() - t0, 4)
        ctx.report_progress(1.0)
        return result


def _take(split: Split, rows: np.ndarray) -> Split:
    y = None if split.y is None else np.asarray(split.y)[rows]
    return Split(x=np.asarray(split.x)[rows], y=y, index=np.asarray(split.index)[rows])


def _synthetic(
    ctx: CheckContext, n: int, shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """``n`` inputs ``(n, *shape)`` float32 uniform within the feature ranges, and where those came from."""
    d = int(np.prod(shape))
    spec = ctx.asset.input
    train = ctx.data.get("train") or ctx.data.get("population") or ctx.data["test"]
    flat = np.asarray(train.x, dtype=np.float64).reshape(len(train.x), -1)
    data_lo, data_hi = flat.min(axis=0), flat.max(axis=0)
    lo, hi = data_lo.copy(), data_hi.copy()
    how = "uniform within the training data's per-feature min/max (no ranges declared)"
    kinds: list[str] = ["continuous"] * d
    categories: dict[int, list[float]] = {}
    if spec is not None and spec.features is not None and len(spec.features) == d:
        undeclared = 0
        for i, feat in enumerate(spec.features):
            if feat.min is not None:
                lo[i] = feat.min
            if feat.max is not None:
                hi[i] = feat.max
            undeclared += feat.min is None or feat.max is None
            kinds[i] = feat.type
            if feat.type == "categorical" and feat.categories:
                categories[i] = list(feat.categories)
        how = "uniform within the declared feature ranges"
        if undeclared:
            how += f" ({undeclared} features without a declared range use the training data's min/max)"
    elif spec is not None and spec.range is not None:
        lo[:] = spec.range[0]
        hi[:] = spec.range[1]
        how = f"uniform within the declared input range [{spec.range[0]:g}, {spec.range[1]:g}]"
    hi = np.maximum(hi, lo)
    x = rng.uniform(lo, hi, size=(n, d))
    for i, kind in enumerate(kinds):
        if i in categories:
            x[:, i] = rng.choice(np.asarray(categories[i], dtype=np.float64), size=n)
        elif kind in ("integer", "categorical"):
            x[:, i] = np.clip(np.rint(x[:, i]), np.ceil(lo[i]), np.floor(hi[i]))
    return x.reshape((n, *shape)).astype(np.float32), how


def _fit_predict(
    xq: np.ndarray, yq: np.ndarray, x_eval: np.ndarray, params: SurrogateParams, seed: int
) -> np.ndarray:
    """Train the surrogate on ``(xq, yq)`` and predict ``x_eval`` (flattened rows)."""
    classes = np.unique(yq)
    if classes.size < 2:  # one answer seen: the best clone is a constant
        return np.full(len(x_eval), classes[0] if classes.size else 0, dtype=np.int64)
    neural: Any = require("sklearn.neural_network", "data")
    pre: Any = require("sklearn.preprocessing", "data")
    exc_mod: Any = require("sklearn.exceptions", "data")
    scaler = pre.StandardScaler().fit(xq)
    model = neural.MLPClassifier(
        hidden_layer_sizes=tuple(params.hidden_layer_sizes),
        max_iter=params.max_iter,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", exc_mod.ConvergenceWarning)
        model.fit(scaler.transform(xq), yq)
    return np.asarray(model.predict(scaler.transform(x_eval)), dtype=np.int64)
