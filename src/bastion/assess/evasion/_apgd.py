"""The APGD iteration (Croce & Hein 2020, arXiv:2003.01690), shared by the APGD attacks.

Used by ``evasion.apgd-ce``, ``evasion.apgd-dlr`` and ``evasion.worst-case``.

Auto-PGD is L∞ PGD without a step size to tune: a momentum step (α = 0.75) whose size starts at
``2ε`` and halves at checkpoints when, since the last checkpoint, the loss rose in at most 75 %
of the steps, or the step was not halved at the last checkpoint and the best loss did not
improve; on a halving the iterate restarts from the best point so far.
Every iterate is a candidate: a sample is broken as soon as any iterate is misclassified
(checked again after integer rounding, one more query).

The checkpoints are those of the reference code (``fra31/auto-attack``, also torchattacks): the
first after ``⌊0.22·N⌋`` steps, then windows shrinking by ``⌊0.03·N⌋`` down to ``⌊0.06·N⌋``
steps — the paper's ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)`` with the code's integer
rounding (equal for ``N = 100``; for ``N = 50``: 11, 21, 30, 38, 45). The oscillation test is the
code's ``rises ≤ ρ·window``; the "no improvement" halving is skipped at the first checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bastion.assess.evasion._common import AttackOutcome
from bastion.assess.evasion._gradients import GradientOracle, LossName, bcast

#: Momentum of the APGD update.
MOMENTUM = 0.75
#: Fraction of steps since the last checkpoint in which the loss must have risen.
RHO = 0.75


def checkpoints(n_iter: int) -> list[int]:
    """The iterations where APGD may halve its step, ascending, all below ``n_iter``.

    The reference code's schedule: a first window of ``max(⌊0.22·N⌋, 1)`` steps, each next window
    ``max(⌊0.03·N⌋, 1)`` shorter, never under ``max(⌊0.06·N⌋, 1)``.
    """
    window = max(int(0.22 * n_iter), 1)
    shrink, shortest = max(int(0.03 * n_iter), 1), max(int(0.06 * n_iter), 1)
    out: list[int] = []
    mark = window
    while mark < n_iter:
        out.append(mark)
        window = max(window - shrink, shortest)
        mark += window
    return out


def apgd(
    oracle: GradientOracle,
    x: np.ndarray,
    y: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    eps_values: np.ndarray,
    *,
    n_iter: int,
    loss: LossName,
    rng: np.random.Generator,
    finalize: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    y_target: np.ndarray | None = None,
) -> AttackOutcome:
    """One APGD run on a batch (untargeted success: any label but ``y``).

    Args:
        oracle: loss values and gradients of the target.
        x: clean inputs ``(n, *input_shape)`` float32.
        y: true labels ``(n,)``.
        low: lower end of the box (ε-ball ∩ bounds) per value, shape of ``x``.
        high: upper end of the box.
        eps_values: ε per value in model units ``input_shape`` (0: fixed).
        n_iter: gradient steps (``n_iter + 2`` queries per sample, the start and the final check
            included).
        loss: ``ce`` or ``dlr`` (maximised).
        rng: random source for the start point.
        finalize: clips to the box and rounds integer values.
        y_target: target classes for the targeted losses (``None``: untargeted).

    Returns:
        The first misclassified iterate per broken sample (else the best-loss point), success
        after finalisation, queries per sample.
    """
    n = len(x)
    queries = np.full(n, n_iter + 2, dtype=np.int64)
    if n == 0:
        return AttackOutcome(x_adv=x.copy(), success=np.zeros(0, dtype=bool), queries=queries)
    e = np.asarray(eps_values, dtype=np.float32)
    start = x + rng.uniform(-1.0, 1.0, size=x.shape).astype(np.float32) * e
    xk = np.clip(start, low, high).astype(np.float32)
    val, grad, z = oracle.value_and_grad(xk, y, loss, y_target)
    found = z.argmax(axis=1) != y
    x_adv = xk.copy()
    best_val = val.copy()
    x_max, g_max = xk.copy(), grad.copy()
    eta = np.full(n, 2.0, dtype=np.float32)
    x_prev = xk.copy()
    marks = set(checkpoints(n_iter))
    last_mark = 0
    rises = np.zeros(n, dtype=np.int64)
    best_at_mark = best_val.copy()
    halved_at_mark = np.ones(n, dtype=bool)  # no 'no improvement' test at the first mark
    prev_val = val.copy()
    for k in range(n_iter):
        step = bcast(eta, xk) * e * np.sign(grad)
        z1 = np.clip(xk + step, low, high)
        momentum = 1.0 if k == 0 else MOMENTUM
        nxt = np.clip(xk + momentum * (z1 - xk) + (1 - momentum) * (xk - x_prev), low, high)
        x_prev, xk = xk, nxt.astype(np.float32)
        val, grad, z = oracle.value_and_grad(xk, y, loss, y_target)
        hit = (z.argmax(axis=1) != y) & ~found
        x_adv[hit] = xk[hit]
        found |= hit
        rises += val > prev_val
        prev_val = val
        better = val > best_val
        x_max[better], g_max[better], best_val[better] = xk[better], grad[better], val[better]
        if k + 1 in marks:
            span = k + 1 - last_mark
            halve = (rises <= RHO * span) | (~halved_at_mark & (best_val <= best_at_mark))
            eta[halve] /= 2.0
            xk[halve], grad[halve] = x_max[halve], g_max[halve]
            halved_at_mark, best_at_mark = halve, best_val.copy()
            rises[:] = 0
            last_mark = k + 1
    x_adv[~found] = x_max[~found]
    final = finalize(x_adv, low, high)
    success = oracle.labels(final) != y
    return AttackOutcome(x_adv=final, success=np.asarray(success), queries=queries)
