"""What every membership check shares: sample sizes, the audit draw, early results, exposure, the end.

Private to :mod:`bastion.assess.membership`; each check keeps its own module and class and calls
these helpers where its logic is the same as another's (same RNG draws in the same order, same
texts, same numbers).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from bastion.assess import metrics as M
from bastion.core.budget import BudgetMeter
from bastion.core.check import Check, CheckContext
from bastion.core.errors import BudgetExhausted
from bastion.core.results import CheckResult

if TYPE_CHECKING:
    from bastion.assess.membership.threshold import MembershipMetricParams


def sample_size(ctx: CheckContext, n_train: int, n_test: int, queries_per_pair: int) -> int:
    """Records per side: the smaller split, capped by ``budget.samples`` and ``budget.queries``.

    Args:
        ctx: the check's context (its budget).
        n_train: members available.
        n_test: non-members available.
        queries_per_pair: target queries one member plus one non-member cost.

    Returns:
        ``n >= 0``.
    """
    n = min(n_train, n_test)
    if ctx.budget.samples is not None:
        n = min(n, ctx.budget.samples)
    if ctx.budget.queries is not None:
        n = min(n, ctx.budget.queries // queries_per_pair)
    return max(0, n)


def draw_pairs(
    seed: int, n_train: int, n_test: int, n: int
) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """Draw ``n`` members and ``n`` non-members without replacement, seeded.

    Returns:
        ``(rng, mem, non)``: the generator (for later draws, in order), and the sorted ``(n,)``
        row positions in ``train`` and in ``test``.
    """
    rng = np.random.default_rng(seed)
    mem = np.sort(rng.choice(n_train, size=n, replace=False))
    non = np.sort(rng.choice(n_test, size=n, replace=False))
    return rng, mem, non


def fpr_problems(where: str, params: MembershipMetricParams, n: int) -> list[str]:
    """Preflight lines for the FPRs the user set (``params.fprs``) that ``n`` non-members cannot resolve."""
    problems: list[str] = []
    if "fprs" in params.model_fields_set:
        for f in params.fprs:
            reason = M.unresolvable_fpr_reason(f, n)
            if reason is not None:
                problems.append(
                    f"{where}: params.fprs: {reason} (raise budget.samples or hold out more records)"
                )
    return problems


def skipped(check: Check, ctx: CheckContext, reason: str) -> CheckResult:
    """The result of a check that found nothing to attack within the data and budget."""
    return CheckResult(id=check.id, asset=ctx.asset.name, status="skipped", reason=reason)


def budget_error(
    check: Check, ctx: CheckContext, exc: BudgetExhausted, meter: BudgetMeter, t0: float | None
) -> CheckResult:
    """The result of a check whose query budget ran out; ``t0`` (``time.monotonic()``) times it."""
    result = CheckResult(
        id=check.id,
        asset=ctx.asset.name,
        status="error",
        reason=f"BudgetExhausted: {exc}",
        budget_used=meter.usage(),
    )
    if t0 is not None:
        result.seconds = round(time.monotonic() - t0, 4)
    return result


def top_members(member_rows: np.ndarray, s_mem: np.ndarray, top_k: int) -> np.ndarray:
    """Positions of the ``top_k`` highest-scoring members, ties broken by dataset row index."""
    return np.lexsort((member_rows, -s_mem))[:top_k]


def note_exposed(result: CheckResult, rows: list[int], why: str) -> None:
    """Cite the exposed training records by dataset row (``notes["exposed_records"]``), if any."""
    if rows:
        result.notes["exposed_records"] = (
            f"dataset rows of the {len(rows)} training records {why}: " + ", ".join(str(i) for i in rows)
        )


def finish(
    check: Check,
    ctx: CheckContext,
    result: CheckResult,
    meter: BudgetMeter,
    t0: float,
    extra_evidence: dict[str, Any],
) -> CheckResult:
    """Budget used, threshold findings (with ``extra_evidence``), wall time, progress done."""
    result.budget_used = meter.usage()
    result.findings = check.threshold_findings(ctx, result, extra_evidence=extra_evidence)
    result.seconds = round(time.monotonic() - t0, 4)
    ctx.report_progress(1.0)
    return result
