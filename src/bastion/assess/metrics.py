"""Pure maths of attack evaluation: ROC, AUC, TPR at fixed FPR, binomial intervals, ε bounds.

Everything here is a pure function of numpy arrays (scipy only for Clopper-Pearson), with
no state, no I/O and no Bastion imports, so it is tested with hypothesis. Conventions:

* A membership score is higher for "more likely a member"; members are the positive class.
* A ROC curve is ``(fpr, tpr, thresholds)`` with ``fpr``/``tpr`` non-decreasing, starting at
  ``(0, 0)`` (threshold ``+inf``) and ending at ``(1, 1)``; a record is called a member when its
  score is ``>= threshold``. Ties in scores move the curve diagonally, so the AUC counts a tie
  as one half (the Mann-Whitney convention, as ``sklearn.metrics.roc_auc_score``).
* The field reports the true-positive rate at a low false-positive rate (Carlini et al. 2022,
  "Membership Inference Attacks From First Principles", arXiv:2112.03570); a rate an evaluation
  set is too small to resolve (fewer than ``1/FPR`` non-members) is ``None`` with a reason.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "accuracy_interval",
    "balanced_accuracy",
    "bootstrap_auc_interval",
    "clopper_pearson",
    "downsample_curve",
    "empirical_epsilon_lower_bound",
    "epsilon_lower_bound_ci",
    "membership_advantage",
    "roc_auc",
    "roc_curve",
    "tpr_at_fpr",
    "unresolvable_fpr_reason",
    "wilson_interval",
]

FloatArray = NDArray[np.float64]


def _scores(values: ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name}: needs at least one score")
    if np.isnan(arr).any():
        raise ValueError(f"{name}: holds NaN scores")
    return arr


def roc_curve(
    scores_members: ArrayLike, scores_nonmembers: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The ROC curve of a score separating members (positives) from non-members.

    Args:
        scores_members: scores of the members, shape ``(P,)``; higher means "member".
        scores_nonmembers: scores of the non-members, shape ``(N,)``.

    Returns:
        ``(fpr, tpr, thresholds)``, each of shape ``(T + 1,)`` where ``T`` is the number of
        distinct scores: ``thresholds`` descending from ``+inf``; ``fpr[i]``/``tpr[i]`` are the
        fractions of non-members/members with score ``>= thresholds[i]``. The curve starts at
        ``(0, 0)`` and ends at ``(1, 1)``.

    Raises:
        ValueError: a score set is empty or holds NaN.
    """
    pos = _scores(scores_members, "scores_members")
    neg = _scores(scores_nonmembers, "scores_nonmembers")
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    pos_sorted = np.sort(pos)
    neg_sorted = np.sort(neg)
    tp = pos.size - np.searchsorted(pos_sorted, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg_sorted, thresholds, side="left")
    fpr = np.concatenate([[0.0], fp / neg.size])
    tpr = np.concatenate([[0.0], tp / pos.size])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def roc_auc(scores_members: ArrayLike, scores_nonmembers: ArrayLike) -> float:
    """Area under the ROC curve: P(member score > non-member score) + ½ P(tie).

    Computed exactly from ranks (Mann-Whitney U / (P·N)) in ``O((P+N) log N)``.

    Args:
        scores_members: ``(P,)`` scores of members.
        scores_nonmembers: ``(N,)`` scores of non-members.

    Returns:
        The AUC in ``[0, 1]``; 0.5 is chance.

    Raises:
        ValueError: a score set is empty or holds NaN.
    """
    pos = _scores(scores_members, "scores_members")
    neg = np.sort(_scores(scores_nonmembers, "scores_nonmembers"))
    below = np.searchsorted(neg, pos, side="left")
    at_or_below = np.searchsorted(neg, pos, side="right")
    u = float(below.sum()) + 0.5 * float((at_or_below - below).sum())
    return min(1.0, max(0.0, u / (pos.size * neg.size)))


def unresolvable_fpr_reason(target_fpr: float, n_nonmembers: int) -> str | None:
    """Why ``n_nonmembers`` cannot resolve ``target_fpr`` (fewer than ``1/target_fpr``), else ``None``."""
    if n_nonmembers * target_fpr < 1.0 - 1e-9:
        need = math.ceil(1.0 / target_fpr - 1e-9)
        return (
            f"FPR {target_fpr:g} needs at least {need} non-members to resolve; the sample has {n_nonmembers}"
        )
    return None


def tpr_at_fpr(
    fpr: ArrayLike, tpr: ArrayLike, target_fpr: float, *, n_nonmembers: int | None = None
) -> tuple[float | None, str | None]:
    """The highest TPR on the curve at an FPR not above ``target_fpr`` (no interpolation).

    Args:
        fpr: ``(T,)`` false-positive rates of a ROC curve, as :func:`roc_curve` returns.
        tpr: ``(T,)`` matching true-positive rates.
        target_fpr: the FPR bound, in ``(0, 1]``.
        n_nonmembers: how many non-members the curve was computed on; when given and fewer
            than ``1/target_fpr``, the rate is unresolvable and ``None`` is returned.

    Returns:
        ``(value, reason)``: ``value`` the TPR (``reason`` ``None``), or ``(None, reason)``
        when the sample cannot resolve ``target_fpr``.

    Raises:
        ValueError: ``target_fpr`` outside ``(0, 1]``, or ``fpr``/``tpr`` of different lengths.
    """
    if not 0.0 < target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be in (0, 1], got {target_fpr}")
    f = np.asarray(fpr, dtype=np.float64).reshape(-1)
    t = np.asarray(tpr, dtype=np.float64).reshape(-1)
    if f.shape != t.shape or f.size == 0:
        raise ValueError(f"fpr and tpr must be non-empty and of equal length, got {f.size} and {t.size}")
    if n_nonmembers is not None:
        reason = unresolvable_fpr_reason(target_fpr, n_nonmembers)
        if reason is not None:
            return None, reason
    ok = f <= target_fpr + 1e-12
    if not ok.any():
        return 0.0, None
    return float(t[ok].max()), None


def membership_advantage(fpr: ArrayLike, tpr: ArrayLike) -> float:
    """Yeom et al.'s membership advantage: ``max(TPR − FPR)`` over the curve (arXiv:1709.01604).

    Args:
        fpr: ``(T,)`` false-positive rates.
        tpr: ``(T,)`` true-positive rates.

    Returns:
        A value in ``[0, 1]`` when the curve includes ``(0, 0)``; 0 is chance.
    """
    f = np.asarray(fpr, dtype=np.float64)
    t = np.asarray(tpr, dtype=np.float64)
    return float(np.max(t - f))


def balanced_accuracy(tpr: float, fpr: float) -> float:
    """Balanced accuracy of a decision with these rates: ``(TPR + (1 − FPR)) / 2``.

    The best balanced accuracy over a ROC curve is ``0.5 + advantage / 2``.

    Raises:
        ValueError: a rate outside ``[0, 1]``.
    """
    _rate(tpr, "tpr")
    _rate(fpr, "fpr")
    return 0.5 * (tpr + 1.0 - fpr)


def _rate(v: float, name: str) -> None:
    if not 0.0 <= v <= 1.0 or math.isnan(v):
        raise ValueError(f"{name} must be in [0, 1], got {v}")


def _counts(k: int, n: int) -> None:
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k/n``.

    Args:
        k: successes.
        n: trials; ``n == 0`` gives ``(0, 1)``.
        z: normal quantile (1.96: 95 %).

    Returns:
        ``(low, high)`` within ``[0, 1]``, containing ``k/n``.

    Raises:
        ValueError: ``k`` outside ``[0, n]``, or ``z <= 0``.
    """
    _counts(k, n)
    if z <= 0:
        raise ValueError(f"z must be positive, got {z}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, min(p, centre - half))
    high = 1.0 if k == n else min(1.0, max(p, centre + half))
    return low, high


def _beta_ppf(q: float | FloatArray, a: FloatArray | float, b: FloatArray | float) -> Any:
    from bastion.core.errors import require

    stats: Any = require("scipy.stats", "data")
    return stats.beta.ppf(q, a, b)


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Clopper-Pearson ("exact") interval of a binomial proportion ``k/n``.

    Args:
        k: successes.
        n: trials; ``n == 0`` gives ``(0, 1)``.
        alpha: 1 − confidence (two-sided).

    Returns:
        ``(low, high)`` within ``[0, 1]``.

    Raises:
        ValueError: ``k`` outside ``[0, n]`` or ``alpha`` outside ``(0, 1)``.
        MissingExtraError: scipy is not installed.
    """
    _counts(k, n)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n == 0:
        return 0.0, 1.0
    low = 0.0 if k == 0 else float(_beta_ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(_beta_ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def _cp_arrays(counts: NDArray[np.int64], n: int, alpha: float) -> tuple[FloatArray, FloatArray]:
    k = np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, _beta_ppf(alpha / 2, np.maximum(k, 1), n - k + 1), 0.0)
        high = np.where(k < n, _beta_ppf(1 - alpha / 2, k + 1, np.maximum(n - k, 1)), 1.0)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def bootstrap_auc_interval(
    scores_members: ArrayLike,
    scores_nonmembers: ArrayLike,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the AUC, resampling members and non-members separately.

    Args:
        scores_members: ``(P,)`` member scores.
        scores_nonmembers: ``(N,)`` non-member scores.
        n_boot: bootstrap replicates.
        seed: seed of the resampling.
        alpha: 1 − confidence (two-sided).

    Returns:
        ``(low, high)`` within ``[0, 1]``.

    Raises:
        ValueError: empty scores, ``n_boot < 1`` or ``alpha`` outside ``(0, 1)``.
    """
    pos = _scores(scores_members, "scores_members")
    neg = _scores(scores_nonmembers, "scores_nonmembers")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    for i in range(n_boot):
        p = pos[rng.integers(0, pos.size, pos.size)]
        q = neg[rng.integers(0, neg.size, neg.size)]
        aucs[i] = roc_auc(p, q)
    low, high = np.quantile(aucs, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def empirical_epsilon_lower_bound(tpr: float, fpr: float, delta: float = 0.0) -> float:
    """Lower bound on the ε of an (ε, δ)-DP training run implied by an attack's rates.

    A test distinguishing "in" from "out" with these rates forces (Kairouz et al. 2015;
    Jagielski et al. 2020, arXiv:2006.07709)
    ``ε ≥ max(log((TPR − δ)/FPR), log((1 − FPR − δ)/(1 − TPR)))``.

    Args:
        tpr: true-positive rate in ``[0, 1]``.
        fpr: false-positive rate in ``[0, 1]``.
        delta: the δ of the DP guarantee, in ``[0, 1)``.

    Returns:
        ε ≥ 0; ``0`` when no term is positive; ``math.inf`` when a positive numerator meets a
        zero denominator (a perfect test on point estimates — use :func:`epsilon_lower_bound_ci`
        for a finite, statistically valid bound).

    Raises:
        ValueError: a rate outside ``[0, 1]`` or ``delta`` outside ``[0, 1)``.
    """
    _rate(tpr, "tpr")
    _rate(fpr, "fpr")
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta}")
    best = 0.0
    for num, den in ((tpr - delta, fpr), (1.0 - fpr - delta, 1.0 - tpr)):
        if num <= 0:
            continue
        if den <= 0:
            return math.inf
        best = max(best, math.log(num / den))
    return best


def epsilon_lower_bound_ci(
    tp: ArrayLike,
    fp: ArrayLike,
    n_members: int,
    n_nonmembers: int,
    *,
    alpha: float = 0.05,
    delta: float = 0.0,
) -> float:
    """A finite ε lower bound from counts, with Clopper-Pearson bounds on the rates.

    For each threshold, TPR is replaced by its lower and FPR by its upper Clopper-Pearson
    bound (the method of Jagielski et al. 2020, arXiv:2006.07709), then
    :func:`empirical_epsilon_lower_bound` is taken and maximised over thresholds. Taking the
    maximum over thresholds chosen on the same data makes the bound somewhat optimistic.

    Args:
        tp: ``(T,)`` members called members at each threshold.
        fp: ``(T,)`` non-members called members at each threshold.
        n_members: members evaluated (``P``).
        n_nonmembers: non-members evaluated (``N``).
        alpha: 1 − confidence of each two-sided interval.
        delta: the δ of the DP guarantee.

    Returns:
        ε ≥ 0 (finite for positive counts).

    Raises:
        ValueError: counts out of range or arrays of different lengths.
        MissingExtraError: scipy is not installed.
    """
    tp_a = np.asarray(tp, dtype=np.int64).reshape(-1)
    fp_a = np.asarray(fp, dtype=np.int64).reshape(-1)
    if tp_a.shape != fp_a.shape:
        raise ValueError("tp and fp must have equal length")
    if n_members < 1 or n_nonmembers < 1:
        raise ValueError("need at least one member and one non-member")
    if (tp_a < 0).any() or (tp_a > n_members).any() or (fp_a < 0).any() or (fp_a > n_nonmembers).any():
        raise ValueError("counts must lie in [0, n]")
    tpr_low, _ = _cp_arrays(tp_a, n_members, alpha)
    _, fpr_high = _cp_arrays(fp_a, n_nonmembers, alpha)
    best = 0.0
    for t, f in zip(tpr_low.tolist(), fpr_high.tolist(), strict=True):
        best = max(best, empirical_epsilon_lower_bound(min(1.0, max(0.0, t)), min(1.0, max(0.0, f)), delta))
    return best


def accuracy_interval(y_true: ArrayLike, y_pred: ArrayLike, z: float = 1.96) -> tuple[float, float, float]:
    """Accuracy of predictions with its Wilson interval.

    Args:
        y_true: ``(N,)`` reference labels.
        y_pred: ``(N,)`` predicted labels.
        z: normal quantile of the interval.

    Returns:
        ``(accuracy, low, high)``; ``(0, 0, 1)`` when ``N == 0``.

    Raises:
        ValueError: the arrays differ in length.
    """
    a = np.asarray(y_true).reshape(-1)
    b = np.asarray(y_pred).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"y_true and y_pred differ in length: {a.size} and {b.size}")
    n = int(a.size)
    k = int((a == b).sum())
    low, high = wilson_interval(k, n, z)
    return (k / n if n else 0.0), low, high


def downsample_curve(
    x: ArrayLike, y: ArrayLike, max_points: int = 200, *, log: bool = True
) -> tuple[list[float], list[float]]:
    """Thin a monotone curve (e.g. ROC) to at most ``max_points`` points for plotting.

    With ``log``, points with ``x <= 0`` or ``y <= 0`` are dropped (they cannot be drawn on
    log axes) and the kept points are spread evenly in ``log x``; at each grid value the last
    point at or below it is kept, so a ROC keeps its upper envelope.

    Args:
        x: ``(T,)`` non-decreasing x values (FPR).
        y: ``(T,)`` y values (TPR).
        max_points: the most points returned (at least 2).
        log: prepare for log axes.

    Returns:
        ``(x, y)`` as lists of floats.

    Raises:
        ValueError: different lengths or ``max_points < 2``.
    """
    xa = np.asarray(x, dtype=np.float64).reshape(-1)
    ya = np.asarray(y, dtype=np.float64).reshape(-1)
    if xa.shape != ya.shape:
        raise ValueError("x and y must have equal length")
    if max_points < 2:
        raise ValueError("max_points must be at least 2")
    if log:
        keep = (xa > 0) & (ya > 0)
        xa, ya = xa[keep], ya[keep]
    if xa.size <= max_points:
        return xa.tolist(), ya.tolist()
    spread = np.geomspace if log else np.linspace
    grid = spread(xa[0], xa[-1], max_points)
    idx = np.searchsorted(xa, grid, side="right") - 1
    idx = np.unique(np.clip(idx, 0, xa.size - 1))
    idx = np.unique(np.concatenate([[0], idx, [xa.size - 1]]))
    if idx.size > max_points:  # the endpoints may add one
        idx = np.concatenate([idx[: max_points - 1], [xa.size - 1]])
    return xa[idx].tolist(), ya[idx].tolist()
