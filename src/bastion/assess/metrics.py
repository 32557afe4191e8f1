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


# --- reference-model attacks (issue 6): LiRA, RMIA, DP sensitivity -------------------------
def logit_confidence(proba: ArrayLike, labels: ArrayLike, floor: float = 1e-12) -> FloatArray:
    """The logit-scaled confidence of the true label, ``log p_y − log Σ_{c≠y} p_c``.

    Carlini et al. 2022 (arXiv:2112.03570, §4) show this statistic is close to Gaussian
    across models trained with and without a record, which LiRA's Gaussian fits assume.
    Computed from the other classes' mass so it stays finite when ``p_y`` rounds to 1.

    Args:
        proba: ``(..., N, C)`` class probabilities (rows sum to 1).
        labels: ``(N,)`` integer labels in ``[0, C)``.
        floor: lower bound on each probability mass before the log.

    Returns:
        ``(..., N)`` float64 scores; strictly increasing in ``p_y`` for a fixed row.

    Raises:
        ValueError: the label count does not match ``N`` or a label is out of range.
    """
    p = np.asarray(proba, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if p.ndim < 2 or p.shape[-2] != y.size:
        raise ValueError(f"proba of shape {p.shape} does not match {y.size} labels")
    if y.size and (y.min() < 0 or y.max() >= p.shape[-1]):
        raise ValueError(f"labels must lie in [0, {p.shape[-1]})")
    p_y = np.take_along_axis(p, np.broadcast_to(y[:, None], (*p.shape[:-1], 1)), axis=-1)[..., 0]
    others = np.clip(p.sum(axis=-1) - p_y, 0.0, None)
    return np.asarray(np.log(np.maximum(p_y, floor)) - np.log(np.maximum(others, floor)), dtype=np.float64)


def reference_stats(
    target_stat: ArrayLike, ref_stat: ArrayLike, ref_in: ArrayLike
) -> tuple[FloatArray, FloatArray, NDArray[np.bool_]]:
    """The reference-model attacks' inputs as arrays, checked: ``(N,)`` target, ``(K, N)`` refs and mask.

    Raises:
        ValueError: shapes disagree, ``K < 1``, or NaN.
    """
    t = np.asarray(target_stat, dtype=np.float64).reshape(-1)
    s = np.asarray(ref_stat, dtype=np.float64)
    m = np.asarray(ref_in, dtype=bool)
    if s.ndim != 2 or s.shape != m.shape or s.shape[1] != t.size or s.shape[0] < 1:
        raise ValueError(f"ref_stat {s.shape} / ref_in {m.shape} must both be (K, {t.size}) with K >= 1")
    if np.isnan(s).any() or np.isnan(t).any():
        raise ValueError("statistics hold NaN")
    return t, s, m


def _masked_moments(stat: FloatArray, mask: NDArray[np.bool_]) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-column count, mean and (population) variance of ``stat`` where ``mask`` holds."""
    n = mask.sum(axis=0).astype(np.float64)
    s = np.where(mask, stat, 0.0).sum(axis=0)
    mean = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
    dev = np.where(mask, stat - mean[None, :], 0.0)
    var = np.divide((dev**2).sum(axis=0), n, out=np.zeros_like(s), where=n > 0)
    return n, mean, var


def _gauss_logpdf(x: FloatArray, mean: FloatArray, std: FloatArray) -> FloatArray:
    return np.asarray(-0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi))


def lira_scores(
    target_stat: ArrayLike,
    ref_stat: ArrayLike,
    ref_in: ArrayLike,
    *,
    global_variance: bool = True,
    min_std: float = 1e-3,
) -> FloatArray:
    """LiRA membership scores (Carlini et al. 2022, arXiv:2112.03570, Algorithm 1).

    Online (some reference models trained on each record): the score is the log likelihood
    ratio ``log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out)`` of the target's statistic ``φ``.
    Offline (no reference model saw the record, ``ref_in`` all false): the score is the
    one-sided ``log Φ((φ − μ_out)/σ_out)`` — how far above the OUT distribution ``φ`` lies.
    A record with too few IN (or OUT) fits in an otherwise online run falls back to the
    offline score; scores of the two kinds are not mixed in one call unless the caller
    accepts that.

    Args:
        target_stat: ``(N,)`` the target model's statistic per record (:func:`logit_confidence`).
        ref_stat: ``(K, N)`` each reference model's statistic per record.
        ref_in: ``(K, N)`` bool, whether reference ``k`` trained on record ``n``.
        global_variance: use one variance per side pooled over records (the paper's choice
            for few reference models) instead of a per-record variance.
        min_std: floor on each standard deviation.

    Returns:
        ``(N,)`` float64 scores, higher = more likely a member.

    Raises:
        ValueError: shapes disagree, ``K < 1``, a record with no OUT reference, or NaN.
    """
    t, s, m = reference_stats(target_stat, ref_stat, ref_in)
    if min_std <= 0:
        raise ValueError(f"min_std must be positive, got {min_std}")
    n_in, mu_in, var_in = _masked_moments(s, m)
    n_out, mu_out, var_out = _masked_moments(s, ~m)
    if (n_out < 1).any():
        raise ValueError("every record needs at least one reference model that did not train on it")
    if global_variance:
        pooled_out = float(np.mean(var_out[n_out >= 2])) if (n_out >= 2).any() else 0.0
        pooled_in = float(np.mean(var_in[n_in >= 2])) if (n_in >= 2).any() else pooled_out
        sd_out = np.full(t.size, math.sqrt(max(pooled_out, min_std**2)))
        sd_in = np.full(t.size, math.sqrt(max(pooled_in, min_std**2)))
    else:
        sd_out = np.sqrt(np.maximum(var_out, min_std**2))
        sd_in = np.sqrt(np.maximum(var_in, min_std**2))
    from scipy.special import log_ndtr

    offline = np.asarray(log_ndtr((t - mu_out) / sd_out), dtype=np.float64)
    online = _gauss_logpdf(t, mu_in, sd_in) - _gauss_logpdf(t, mu_out, sd_out)
    return np.where(n_in >= 1, online, offline)


def rmia_scores(
    target_p_x: ArrayLike,
    ref_p_x: ArrayLike,
    target_p_z: ArrayLike,
    ref_p_z: ArrayLike,
    *,
    gamma: float = 1.0,
    offline_a: float | None = None,
    floor: float = 1e-12,
) -> FloatArray:
    """RMIA membership scores (Zarifzadeh et al. 2024, arXiv:2312.03262, §3).

    ``Pr(x)`` is the mean of the reference models' probability of the true label; with only
    OUT references (``offline_a`` set) it is ``½((1 + a)·Pr_OUT(x) + (1 − a))``, the paper's
    linear correction. The score of ``x`` is the fraction of population records ``z`` with
    ``(Pr(x|θ)/Pr(x)) / (Pr(z|θ)/Pr(z)) ≥ γ``.

    Args:
        target_p_x: ``(N,)`` target's probability of each audited record's true label.
        ref_p_x: ``(K, N)`` the same under each reference model.
        target_p_z: ``(Z,)`` target's probability of each population record's true label.
        ref_p_z: ``(K, Z)`` the same under each reference model.
        gamma: the likelihood-ratio threshold ``γ > 0`` (the paper uses 1 or 2).
        offline_a: the offline scaling ``a ∈ [0, 1]``; ``None`` for online references.
        floor: lower bound on probabilities before division.

    Returns:
        ``(N,)`` scores in ``[0, 1]``, higher = more likely a member.

    Raises:
        ValueError: shapes disagree, ``gamma <= 0``, ``offline_a`` outside ``[0, 1]``, no ``z``.
    """
    tx = np.asarray(target_p_x, dtype=np.float64).reshape(-1)
    tz = np.asarray(target_p_z, dtype=np.float64).reshape(-1)
    rx = np.asarray(ref_p_x, dtype=np.float64)
    rz = np.asarray(ref_p_z, dtype=np.float64)
    if rx.ndim != 2 or rx.shape[1] != tx.size or rz.ndim != 2 or rz.shape[1] != tz.size:
        raise ValueError(f"ref_p_x {rx.shape} / ref_p_z {rz.shape} do not match ({tx.size},) / ({tz.size},)")
    if rx.shape[0] != rz.shape[0] or rx.shape[0] < 1:
        raise ValueError("ref_p_x and ref_p_z need the same K >= 1 reference models")
    if tz.size == 0:
        raise ValueError("needs at least one population record z")
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    if offline_a is not None and not 0.0 <= offline_a <= 1.0:
        raise ValueError(f"offline_a must be in [0, 1], got {offline_a}")

    def prior(r: FloatArray) -> FloatArray:
        mean = r.mean(axis=0)
        if offline_a is not None:
            mean = 0.5 * ((1.0 + offline_a) * mean + (1.0 - offline_a))
        return np.asarray(np.maximum(mean, floor))

    ratio_x = np.maximum(tx, floor) / prior(rx)
    ratio_z = np.sort(np.maximum(tz, floor) / prior(rz))
    # count z with ratio_x / ratio_z >= gamma  <=>  ratio_z <= ratio_x / gamma
    count = np.searchsorted(ratio_z, ratio_x / gamma, side="right")
    return np.asarray(count / tz.size, dtype=np.float64)


def balanced_inclusion(n_models: int, n_records: int, seed: int) -> NDArray[np.bool_]:
    """A ``(K, N)`` inclusion mask with each record IN exactly ``⌊K/2⌋`` models (LiRA's design).

    Args:
        n_models: ``K ≥ 1`` reference models.
        n_records: ``N ≥ 0`` records.
        seed: seed of the assignment.

    Returns:
        bool ``(K, N)``; every column has ``K // 2`` true entries.

    Raises:
        ValueError: ``n_models < 1`` or ``n_records < 0``.
    """
    if n_models < 1 or n_records < 0:
        raise ValueError(f"need n_models >= 1 and n_records >= 0, got {n_models}, {n_records}")
    rng = np.random.default_rng(seed)
    order = rng.random((n_models, n_records)).argsort(axis=0)
    return np.asarray(order < n_models // 2)


def logistic_sensitivity(n: int, lam: float) -> float:
    """L2 sensitivity of the minimiser of L2-regularised logistic regression (Chaudhuri et al. 2011).

    For ``J(w) = (1/n) Σ ℓ(y_i wᵀx_i) + (λ/2)‖w‖²`` with ``‖x_i‖ ≤ 1`` and a 1-Lipschitz loss,
    changing one record moves the minimiser by at most ``2 / (n λ)`` (Corollary 7, arXiv:0912.0071).

    Raises:
        ValueError: ``n < 1`` or ``lam <= 0``.
    """
    if n < 1 or lam <= 0:
        raise ValueError(f"need n >= 1 and lam > 0, got {n}, {lam}")
    return 2.0 / (n * lam)


__all__ += [
    "balanced_inclusion",
    "lira_scores",
    "logistic_sensitivity",
    "logit_confidence",
    "rmia_scores",
]
