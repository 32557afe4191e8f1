"""SPECTRE (Hayase et al. 2021): robust covariance, whitening and QUantum Entropy scores.

Threat model: as for activation clustering -- trigger-carrying samples relabelled to a target
class (dirty-label backdoor). Spectral signatures look for the poison along the top singular
direction of the *plain* covariance, which a small or a spread-out poison does not dominate.
SPECTRE first estimates the clean rows' mean and covariance robustly (so the poison cannot
hide in them), whitens the class's representations with that estimate -- the clean rows then
look like isotropic noise and the poison's direction stands out -- and scores each row with
the QUantum Entropy (QUE) score, which interpolates between the squared norm (``alpha = 0``)
and the squared projection on the top whitened direction (``alpha -> inf``).

Method, per analysed class (``n`` rows):

1. centre the class's representations and keep the top ``n_components`` (``k``) principal axes;
2. robust mean and covariance: the minimum covariance determinant on a ``1 - eps`` share of the
   rows (FastMCD, Rousseeuw and Van Driessen 1999; the paper uses the filter-based robust
   estimator of Diakonikolas et al.; both tolerate an ``eps`` share of poison, here up to just
   below 0.5);
3. whiten: ``z_i = C^{-1/2} (r_i - mu)``; ``M = mean(z z^T)``;
4. QUE: ``Q = exp(alpha (M - I) / (||M||_2 - 1))``, ``tau_i = z_i^T Q z_i / tr(Q)``.

For clean Gaussian rows ``tau = sum_j q_j g_j^2 / sum_j q_j`` (``q_j`` the eigenvalues of
``Q``, ``g ~ N(0, I_k)``; ``k tau`` is chi-square with ``k`` degrees of freedom when
``alpha = 0``); a row's score is ``tau_i`` divided by the ``quantile`` of that null
distribution (seeded Monte Carlo, 20 000 draws), so ``threshold_ = 1`` for every class.
Decision rules: ``decision="separation"`` (default) analyses only the classes that
hold a separate group of rows -- the 2-means Fisher ratio of the class in its top ``k`` axes is
at least ``min_separation`` and, with three or more classes, a robust outlier among the classes
(robust z >= ``z``; the class test of :mod:`activation_clustering`) -- or the ``classes`` given,
and flags rows scoring above 1. ``decision="paper"`` removes the ``1.5 eps n`` highest-scoring
rows of every analysed class (every class unless ``classes`` is given), as in the paper, which
assumes the target class is known.

Known limit: the robust estimate needs the clean rows to be the majority of their class; when a
class holds more poison than clean rows (``eps >= 0.5``) the poison is taken for the clean data.

Reference: Hayase, Kong, Somani, Oh, "SPECTRE: Defending Against Backdoor Attacks Using Robust
Statistics", ICML 2021, arXiv:2104.11315.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import require
from bastion.core.findings import Threat
from bastion.core.registry import register
from bastion.detect.poisoning.base import (
    RepresentationDetector,
    class_separation_z,
    fisher_ratio,
    separated,
    two_means,
)


class SpectreParams(BaseModel):
    """Parameters of :class:`SpectreDetector`.

    Attributes:
        n_components: principal axes ``k`` kept per class before the robust estimate.
        eps: upper bound on the poisoned share of a class (robust support ``1 - eps``).
        alpha: QUE temperature (0: squared norm; large: top whitened direction only). The paper uses 4.
        quantile: quantile of the clean rows' QUE score (its Gaussian null) above which a row is flagged.
        decision: ``separation`` (default) or ``paper`` (the ``1.5 eps n`` highest per class).
        classes: analyse only these classes (e.g. a known target); ``None``: decided per rule.
        min_separation: ``separation``: 2-means Fisher ratio a poisoned class must reach.
        z: ``separation``: robust z-score of that ratio among the classes (three or more classes).
    """

    model_config = ConfigDict(extra="forbid")

    n_components: int = Field(default=16, ge=1, le=512)
    eps: float = Field(default=0.45, gt=0, lt=0.5)
    alpha: float = Field(default=4.0, ge=0, le=64)
    quantile: float = Field(default=0.999, gt=0.5, lt=1)
    decision: Literal["separation", "paper"] = "separation"
    classes: list[int] | None = None
    min_separation: float = Field(default=20.0, gt=0)
    z: float = Field(default=3.5, gt=0)


class _ClassModel:
    """What scoring a new row of one class needs (fitted on that class's reference rows)."""

    def __init__(
        self, mean: np.ndarray, axes: np.ndarray, mu: np.ndarray, white: np.ndarray, q: np.ndarray, cut: float
    ) -> None:
        self.mean, self.axes, self.mu, self.white, self.q, self.cut = mean, axes, mu, white, q, cut

    def score(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) @ self.axes.T - self.mu) @ self.white
        return np.einsum("ij,jk,ik->i", z, self.q, z) / float(np.trace(self.q)) / self.cut


@register("detector")
class SpectreDetector(RepresentationDetector):
    """Robust whitening and QUE scores per class (SPECTRE); flags rows scoring above 1.

    Shapes: ``x: (N, *input_shape)`` with a model, else ``(N, D)`` activations; ``y: (N,)``.

    Attributes:
        class_stats_: per class ``{n, k, fisher, z, spectral_norm, analysed, flagged}``.
    """

    id: ClassVar[str] = "detect.spectre"
    title: ClassVar[str] = "Backdoor: SPECTRE (robust whitening + QUE)"
    threat: ClassVar[Threat] = Threat.POISONING
    Params: ClassVar[type[BaseModel]] = SpectreParams
    references: ClassVar[tuple[str, ...]] = (
        "Hayase, Kong, Somani, Oh, SPECTRE: Defending Against Backdoor Attacks Using Robust "
        "Statistics, ICML 2021, arXiv:2104.11315",
    )

    params: SpectreParams

    def _fit(self, x: np.ndarray, y: np.ndarray | None) -> None:
        assert y is not None
        p = self.params
        classes = [int(c) for c in np.unique(y).tolist()]
        self._models: dict[int, _ClassModel] = {}
        stats: dict[int, dict[str, float]] = {}
        proj: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        for c in classes:
            idx = np.flatnonzero(y == c)
            if idx.size < 4:
                continue
            mean = x[idx].mean(axis=0)
            _, _, vt = np.linalg.svd(x[idx] - mean, full_matrices=False)
            k = int(min(p.n_components, idx.size - 2, vt.shape[0]))
            if k < 1:
                continue
            axes = vt[:k]
            pr = (x[idx] - mean) @ axes.T
            proj[c] = (idx, mean, axes, pr)
            stats[c] = {"n": float(idx.size), "k": float(k), "fisher": _two_means_fisher(pr, self.seed)}
        keys = class_separation_z(stats, self.id)

        if p.classes is not None:
            analysed = [c for c in keys if c in set(p.classes)]
        elif p.decision == "paper":
            analysed = keys
        else:
            analysed = [c for c in keys if separated(stats[c], len(keys), p.min_separation, p.z)]
        flags = np.zeros(x.shape[0], dtype=bool)
        scores = np.zeros(x.shape[0], dtype=np.float64)
        for c in keys:
            stats[c]["analysed"] = float(c in analysed)
            stats[c]["flagged"] = 0.0
        for c in analysed:
            idx, mean, axes, pr = proj[c]
            k = pr.shape[1]
            mu, cov = robust_covariance(pr, support=1.0 - p.eps, seed=self.seed)
            white = _inverse_sqrt(cov)
            z = (pr - mu) @ white
            q, lam = que_matrix(z, p.alpha)
            cut = null_quantile(q, p.quantile, seed=self.seed)
            model = _ClassModel(mean, axes, mu, white, q, cut)
            s = model.score(x[idx])
            scores[idx] = s
            if p.decision == "paper":
                m = int(np.floor(1.5 * p.eps * idx.size))
                hit = np.zeros(idx.size, dtype=bool)
                hit[np.argsort(s)[::-1][:m]] = True
            else:
                hit = s > 1.0
            flags[idx[hit]] = True
            self._models[c] = model
            stats[c]["spectral_norm"] = lam
            stats[c]["flagged"] = float(hit.sum())
        self.class_stats_ = stats
        self.flagged_classes_ = sorted({int(c) for c in y[flags]})
        self.reference_flags_ = flags
        self.reference_scores_ = scores
        self.threshold_ = 1.0

    def _score(self, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        assert y is not None
        if self._is_reference(x, y):
            return self.reference_scores_.copy()
        out = np.zeros(x.shape[0], dtype=np.float64)
        for c, model in self._models.items():
            rows = y == c
            if rows.any():
                out[rows] = model.score(x[rows])
        return out


def robust_covariance(x: np.ndarray, *, support: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Robust mean ``(k,)`` and covariance ``(k, k)`` of rows ``x: (n, k)``.

    The minimum covariance determinant (FastMCD, Rousseeuw and Van Driessen 1999, via
    scikit-learn's ``MinCovDet``): the ``support`` share of rows whose covariance has the least
    determinant, rescaled for consistency and reweighted. It tolerates up to ``1 - support`` of
    the rows being anything.

    Args:
        x: rows ``(n, k)``.
        support: share of rows the estimate rests on, in ``(0.5, 1]``.
        seed: seed of FastMCD's random starts.
    """
    require("sklearn", "data")
    import warnings

    from sklearn.covariance import MinCovDet

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-singular subsets of small classes
        mcd = MinCovDet(support_fraction=support, random_state=seed).fit(x)
    return np.asarray(mcd.location_, dtype=np.float64), np.asarray(mcd.covariance_, dtype=np.float64)


def que_matrix(z: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """The QUE weighting ``Q = exp(alpha (M - I) / (||M||_2 - 1))`` of whitened rows ``z: (n, k)``.

    Returns:
        ``(Q (k, k), ||M||_2)``; ``Q = I`` when ``alpha = 0`` or ``||M||_2 <= 1``.
    """
    n, k = z.shape
    m = z.T @ z / n
    w, v = np.linalg.eigh(m)
    lam = float(w[-1])
    if alpha == 0 or lam <= 1.0 + 1e-9:
        return np.eye(k), lam
    e = np.exp(alpha * (w - 1.0) / (lam - 1.0) - alpha)  # scaled by exp(-alpha): tau is scale-free
    return (v * e) @ v.T, lam


def null_quantile(q: np.ndarray, quantile: float, *, seed: int = 0, draws: int = 20_000) -> float:
    """The ``quantile`` of ``tau = g^T Q g / tr(Q)`` for ``g ~ N(0, I_k)`` (seeded Monte Carlo)."""
    w = np.clip(np.linalg.eigvalsh(q), 0.0, None)
    g2 = np.random.default_rng(seed).standard_normal((draws, w.size)) ** 2
    return float(np.quantile(g2 @ w / float(w.sum()), quantile))


def _inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, 1e-12 * max(float(w.max()), 1e-300))
    return (v / np.sqrt(w)) @ v.T


def _two_means_fisher(x: np.ndarray, seed: int) -> float:
    """Fisher ratio of a 2-means split of ``x`` (activation clustering's class test); 0 if degenerate."""
    lab = two_means(x, seed)
    return 0.0 if lab is None else fisher_ratio(x, lab)
