"""What LiRA and RMIA share: the audit sample, the reference pool, the reference models, reporting.

Both attacks audit ``n`` members (from ``train``) and ``n`` non-members (from ``test``) and
compare the target with ``K`` reference models trained by the user's recipe
(:mod:`bastion.assess.membership.reference`). With the same seed, ``K``, mode and population
the two attacks query the same reference models, so the second one reads them from the cache.

* online: the pool is the audited records plus population records; each pool record is in
  exactly ``⌊K/2⌋`` reference models (Carlini et al. 2022) — each model trains on half the pool,
  sized to match the target's training set when the population allows;
* offline: reference models train on random subsets (the target's training-set size) of the
  population only; no reference model sees an audited record.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
from pydantic import ConfigDict, Field, field_validator

from bastion.assess import metrics as M
from bastion.assess.membership import _common as C
from bastion.assess.membership import reference as R
from bastion.assess.membership.threshold import (
    MembershipMetricParams,
    MembershipThreshold,
    MembershipThresholdParams,
    _nonmembers,
)
from bastion.core.budget import Budget, BudgetMeter
from bastion.core.check import CheckContext, Split
from bastion.core.config import Asset, Threshold
from bastion.core.errors import BudgetExhausted
from bastion.core.findings import Finding
from bastion.core.results import CheckResult
from bastion.core.severity import Severity

log = logging.getLogger(__name__)


class RefParams(MembershipMetricParams):
    """Parameters shared by ``membership.lira`` and ``membership.rmia``.

    Attributes:
        recipe: the training recipe, ``package.module:function`` (required; the check is
            skipped without one).
        n_references: reference models ``K``.
        mode: ``online`` (references trained with and without each audited record) or
            ``offline`` (references never see an audited record; cheaper to reuse).
        population_split: the dataset split reference models draw extra records from.
        z_count: population records used as RMIA's ``z`` (and queried on the target).
        workers: ``0`` trains the references in this process (vectorised); ``> 0`` uses a
            process pool of that many workers, one chunk each.
        cache: cache reference outputs under ``<project>/.bastion/cache/``.
        fprs, calibration_fpr, calibration_fraction, top_k, n_boot: as ``membership.threshold``.
    """

    model_config = ConfigDict(extra="forbid")

    recipe: str | None = None
    n_references: int = Field(default=8, ge=1, le=512)
    mode: Literal["online", "offline"] = "online"
    population_split: str = "population"
    z_count: int = Field(default=500, ge=1, le=100_000)
    workers: int = Field(default=0, ge=0, le=256)
    cache: bool = True

    @field_validator("recipe")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        if v is not None and not R.RECIPE_REF.match(v):
            raise ValueError(f"{v!r} is not a training recipe reference 'package.module:function'")
        return v


@dataclass
class Audit:
    """One audit: what was sampled, the reference models' outputs and the target's."""

    n: int
    member_rows: np.ndarray  # (n,) dataset row indices
    y_audit: np.ndarray  # (2n,) labels, members first
    y_z: np.ndarray  # (Z,)
    ref_in: np.ndarray  # (K, 2n) bool
    ref_proba: np.ndarray  # (K, 2n + Z, C)
    target_proba: np.ndarray  # (2n + Z, C)
    ref_seconds: float
    cached: bool
    mode: str


class RefBasedAttack(MembershipThreshold):
    """Base of the reference-model attacks; subclasses implement :meth:`scores`."""

    Params = RefParams
    needs_z: bool = False
    default_thresholds = (
        Threshold(metric="auc", op="gt", value=0.6, severity=Severity.MEDIUM, rule="membership-leakage"),
        Threshold(metric="tpr@fpr=0.01", op="gt", value=0.05, severity=Severity.HIGH, rule="low-fpr-leakage"),
    )

    def config_skip(self, asset: Asset, params: Any, budget: Budget) -> str | None:
        """No training recipe configured (``params.recipe``): known before anything loads."""
        if cast(RefParams, params).recipe is None:
            return f"needs a training recipe: set checks.{self.id}.params.recipe to 'package.module:function'"
        return super().config_skip(asset, params, budget)

    def _population(self, ctx: CheckContext) -> Split | None:
        params = cast(RefParams, ctx.params)
        return ctx.data.get(params.population_split)

    def preflight(self, ctx: CheckContext) -> list[str]:
        """Bad recipe, population too small, unresolvable FPRs asked for — before any training."""
        params = cast(RefParams, ctx.params)
        where = f"checks.{self.id} (asset {ctx.asset.name})"
        problems = self.recipe_problems(ctx)
        train, test = ctx.data.get("train"), ctx.data.get("test")
        if train is None or test is None:
            return problems
        pop = self._population(ctx)
        n_pop = 0 if pop is None else len(pop.x)
        if pop is not None and pop.y is None:
            problems.append(
                f"{where}: split {params.population_split!r} needs labels to train reference models"
            )
        if params.mode == "offline" and n_pop < 2:
            problems.append(
                f"{where}: offline reference models need a population split ({params.population_split!r}) "
                f"of at least 2 records; it has {n_pop}"
            )
        if params.mode == "online" and params.n_references < 2:
            problems.append(f"{where}: online LiRA/RMIA needs n_references >= 2 (IN and OUT models)")
        if self.needs_z and n_pop < 1:
            problems.append(
                f"{where}: RMIA needs population records z; split {params.population_split!r} is empty"
            )
        n = self._sample_size(ctx, len(train.x), len(_nonmembers(train, test).x))
        problems += C.fpr_problems(where, params, n)
        return problems

    def recipe_problems(self, ctx: CheckContext) -> list[str]:
        """The recipe imports and runs: a trial call on a handful of ``train`` records (one model).

        Cheap (one small model, once per process and recipe); a recipe that raises is one line
        naming it and the exception, before any reference model trains (issue 6, "Bad input").
        """
        params = cast(RefParams, ctx.params)
        if params.recipe is None:
            return []
        where = f"checks.{self.id} (asset {ctx.asset.name}): params.recipe"
        try:
            R.load_recipe(params.recipe, where=where)
        except Exception as exc:
            return [str(exc)]
        train = ctx.data.get("train")
        if train is None or train.y is None or not len(train.x):
            return []
        problem = R.trial_recipe(params.recipe, train.x, train.y, where=where)
        return [] if problem is None else [problem]

    # -- the audit ---------------------------------------------------------------------------
    def audit(self, ctx: CheckContext, meter: BudgetMeter) -> Audit:
        """Sample, train (or read) the reference models, query the target.

        Raises:
            BudgetExhausted: the target's query budget ran out.
            PluginError: the recipe failed.
        """
        params = cast(RefParams, ctx.params)
        assert params.recipe is not None
        train = ctx.data["train"]
        test = _nonmembers(train, ctx.data["test"])
        pop = self._population(ctx)
        n = self._sample_size(ctx, len(train.x), len(test.x))
        if params.z_count and ctx.budget.queries is not None:
            n = min(
                n, max(1, (ctx.budget.queries - min(params.z_count, 0 if pop is None else len(pop.x))) // 2)
            )
        rng, mem, non = C.draw_pairs(ctx.seed, len(train.x), len(test.x), n)
        assert train.y is not None and test.y is not None
        x_audit = np.concatenate([train.x[mem], test.x[non]])
        y_audit = np.concatenate([train.y[mem], test.y[non]]).astype(np.int64)
        if pop is not None and len(pop.x) and pop.y is not None:
            pop_x, pop_y = pop.x, np.asarray(pop.y, dtype=np.int64)
        else:
            pop_x, pop_y = x_audit[:0], y_audit[:0]
        perm = rng.permutation(len(pop_x))
        m_target = len(train.x)
        k_models = params.n_references
        if params.mode == "online":
            extra = int(min(len(pop_x), max(0, 2 * m_target - 2 * n)))
            pool_x = np.concatenate([x_audit, pop_x[perm[:extra]]])
            pool_y = np.concatenate([y_audit, pop_y[perm[:extra]]])
            masks = M.balanced_inclusion(k_models, len(pool_x), ctx.seed + 1)
            ref_in = masks[:, : 2 * n]
        else:
            pool_x, pool_y = pop_x, pop_y
            size = min(m_target, len(pop_x) // 2 if len(pop_x) < 2 * m_target else m_target)
            mrng = np.random.default_rng(ctx.seed + 1)
            masks = np.zeros((k_models, len(pool_x)), dtype=bool)
            for k in range(k_models):
                masks[k, mrng.choice(len(pool_x), size=max(1, size), replace=False)] = True
            ref_in = np.zeros((k_models, 2 * n), dtype=bool)
        n_z = min(params.z_count, len(pop_x)) if self.needs_z or params.z_count else 0
        z_idx = perm[:n_z]
        query = np.concatenate([x_audit, pop_x[z_idx]])
        executor: R.Executor = R.PoolExecutor(workers=params.workers) if params.workers else R.LocalExecutor()
        cache_dir = ctx.base_dir / ".bastion" / "cache" if params.cache else None
        meter.charge(samples=n)
        with ctx.target.metered(meter):
            target_proba = np.asarray(ctx.target.predict_proba(query), dtype=np.float64)
        ctx.report_progress(0.1)
        refs = R.reference_outputs(
            params.recipe,
            pool_x,
            pool_y,
            masks,
            query,
            seed=ctx.seed,
            cache_dir=cache_dir,
            executor=executor,
            chunk_size=math.ceil(k_models / params.workers) if params.workers else None,
        )
        ctx.report_progress(0.8)
        return Audit(
            n=n,
            member_rows=np.asarray(train.index)[mem],
            y_audit=y_audit,
            y_z=pop_y[z_idx],
            ref_in=ref_in,
            ref_proba=refs.proba,
            target_proba=target_proba,
            ref_seconds=refs.seconds,
            cached=refs.cached,
            mode=params.mode,
        )

    def scores(self, audit: Audit, params: RefParams) -> np.ndarray:  # pragma: no cover - abstract
        """``(2n,)`` membership scores of the audited records, members first."""
        raise NotImplementedError

    def run(self, ctx: CheckContext) -> CheckResult:
        """Audit, score and report AUC, TPR at low FPR, ε lower bound and the exposed records."""
        params = cast(RefParams, ctx.params)
        meter = BudgetMeter(ctx.budget)
        try:
            audit = self.audit(ctx, meter)
        except BudgetExhausted as exc:
            return C.budget_error(self, ctx, exc, meter, None)
        s = self.scores(audit, params)
        n = audit.n
        s_mem, s_non = s[:n], s[n:]
        result = CheckResult(id=self.id, asset=ctx.asset.name)
        tparams = cast(MembershipThresholdParams, params)
        self._roc_metrics(result, s_mem, s_non, tparams, ctx.seed)
        self._calibrated(result, s_mem, s_non, tparams, np.random.default_rng(ctx.seed))
        exposed = [int(audit.member_rows[i]) for i in C.top_members(audit.member_rows, s_mem, params.top_k)]
        C.note_exposed(result, exposed, "with the highest score")
        result.notes["reference_models"] = (
            f"{params.n_references} {audit.mode} reference models by recipe {params.recipe}; "
            + ("read from the cache" if audit.cached else f"trained in {audit.ref_seconds:.2f} s")
        )
        result.notes["sample"] = f"{n} members (train) and {n} non-members (test), drawn with seed {ctx.seed}"
        findings = self.threshold_findings(
            ctx, result, extra_evidence={"members": n, "nonmembers": n, "exposed_records": exposed}
        )
        findings += self._dp_claim(ctx, result)
        result.findings = findings
        result.budget_used = meter.usage()
        ctx.report_progress(1.0)
        return result

    def _dp_claim(self, ctx: CheckContext, result: CheckResult) -> list[Finding]:
        """A critical finding when the empirical ε lower bound exceeds the ε a DP version claims."""
        claimed = claimed_epsilon(ctx.asset.tags)
        lower = result.metrics.get("epsilon_lower_bound")
        if claimed is None or lower is None:
            return []
        result.metrics["claimed_epsilon"] = claimed
        result.notes["claimed_epsilon"] = (
            "the ε the DP training run spent (its accountant), from the version's record"
        )
        delta = claimed_delta(ctx.asset.tags)
        if delta is not None:
            result.metrics["claimed_delta"] = delta
            result.notes["claimed_epsilon"] += (
                f", with δ = {delta:.3g}; the lower bound is taken at δ = 0, which differs from the "
                "bound at this δ by less than δ/FPR in the log-ratio"
            )
        if lower <= claimed:
            return []
        return [
            self.finding(
                ctx,
                "dp-claim-violated",
                f"{self.title}: empirical ε lower bound {lower:.3g} exceeds the claimed ε {claimed:.3g}",
                severity=Severity.CRITICAL,
                evidence={"epsilon_lower_bound": lower, "claimed_epsilon": claimed},
                remediation="The differential-privacy claim is false: audit the DP training (clipping, "
                "noise, sampling, accountant) before relying on it.",
            )
        ]


def claimed_epsilon(tags: list[str]) -> float | None:
    """The ε a DP-trained version claims, from its ``dp-epsilon:<ε>`` tag; ``None`` when absent."""
    return _tag_value(tags, "dp-epsilon:")


def claimed_delta(tags: list[str]) -> float | None:
    """The δ of a DP-trained version's guarantee, from its ``dp-delta:<δ>`` tag; ``None`` when absent."""
    return _tag_value(tags, "dp-delta:")


def _tag_value(tags: list[str], prefix: str) -> float | None:
    for t in tags:
        if t.startswith(prefix):
            try:
                return float(t.split(":", 1)[1])
            except ValueError:
                return None
    return None
