"""``defend.dp-logreg``: ε-differentially private logistic regression by objective perturbation.

Chaudhuri, Monteleoni & Sarwate 2011, "Differentially Private Empirical Risk Minimization"
(JMLR 12; arXiv:0912.0071), Algorithm 2: with every record scaled to ``‖x‖ ≤ 1`` and a loss
whose second derivative is at most ``c`` (``c = 1/4`` for the logistic loss), minimising

    ``J(w) = (1/n) Σ ℓ(y_i wᵀx_i) + (Λ/2)‖w‖² + (1/n) bᵀw + (Δ/2)‖w‖²``

with ``b`` drawn from the density ``∝ exp(−ε′‖b‖/2)`` (norm ``~ Gamma(d, 2/ε′)``, uniform
direction) is ε-DP (δ = 0), where ``ε′ = ε − log(1 + 2c/(nΛ) + c²/(n²Λ²))`` and ``Δ = 0`` when
that is positive, else ``Δ = c/(n(e^{ε/4} − 1)) − Λ`` and ``ε′ = ε/2``. Multi-class models are
one-vs-rest, each binary problem spending ``ε/K`` (basic composition). The intercept is a
constant feature: rows are L2-normalised and ``[x, 1]/√2`` keeps ``‖x‖ ≤ 1``.

The result is a ``Pipeline(StandardScaler, Normalizer, LogisticRegression)`` saved with skops.
The scaler's mean/scale come from the training data and are NOT covered by the guarantee (as
the input standardisation buffers of ``defend.dp-train``); the report says so.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import ConfigError, require
from bastion.core.findings import Threat
from bastion.core.registry import register
from bastion.defend.base import Defence, HardenContext, Hardened

log = logging.getLogger(__name__)

#: Bound on the logistic loss' second derivative ``ℓ''(z) = σ(z)(1 − σ(z)) ≤ 1/4``.
LOGISTIC_C = 0.25


def objective_perturbation_budget(
    epsilon: float, n: int, lam: float, c: float = LOGISTIC_C
) -> tuple[float, float]:
    """``(ε′, Δ)`` of Chaudhuri et al. 2011, Algorithm 2, for one binary problem.

    Args:
        epsilon: ε of this problem, > 0.
        n: training records, ≥ 1.
        lam: regulariser ``Λ > 0``.
        c: bound on the loss' second derivative.

    Returns:
        ``(eps_prime, extra_reg)``: the noise density's ε′ and the extra ridge ``Δ ≥ 0``.

    Raises:
        ConfigError: non-positive ε, n or Λ.
    """
    if epsilon <= 0 or n < 1 or lam <= 0:
        raise ConfigError(f"objective perturbation: need ε > 0, n >= 1, Λ > 0; got {epsilon}, {n}, {lam}")
    eps_p = epsilon - math.log(1 + 2 * c / (n * lam) + c**2 / (n**2 * lam**2))
    if eps_p > 0:
        return eps_p, 0.0
    return epsilon / 2, max(0.0, c / (n * math.expm1(epsilon / 4)) - lam)


def sample_noise(d: int, eps_prime: float, rng: np.random.Generator) -> np.ndarray:
    """``b ∈ ℝ^d`` with density ``∝ exp(−ε′‖b‖/2)``: norm ``~ Gamma(d, 2/ε′)``, uniform direction."""
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    return direction * rng.gamma(shape=d, scale=2.0 / eps_prime)


def fit_binary(x: np.ndarray, s: np.ndarray, *, lam: float, extra: float, b: np.ndarray) -> np.ndarray:
    """Minimise the perturbed objective for labels ``s ∈ {−1, +1}``; ``x`` rows must have ``‖x‖ ≤ 1``.

    Args:
        x: ``(n, d)``.
        s: ``(n,)`` in ``{−1, +1}``.
        lam: ``Λ``.
        extra: ``Δ``.
        b: ``(d,)`` noise.

    Returns:
        ``(d,)`` weights.
    """
    from scipy.optimize import minimize

    n = len(x)

    def fun(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = s * (x @ w)
        loss = np.logaddexp(0.0, -z).mean()
        sig = 0.5 * (1.0 - np.tanh(z / 2.0))  # σ(−z), stable
        grad = -(x * (s * sig)[:, None]).mean(axis=0)
        reg = lam + extra
        return (
            float(loss + 0.5 * reg * w @ w + b @ w / n),
            grad + reg * w + b / n,
        )

    res = minimize(fun, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return np.asarray(res.x, dtype=np.float64)


class DpLogRegParams(BaseModel):
    """Parameters of ``defend.dp-logreg``.

    Attributes:
        epsilon: ε of pure ε-DP over the training records (δ = 0), split evenly over classes.
        regularization: ``Λ`` (ridge strength of the averaged loss).
        seed: noise seed (``None``: the project seed).
    """

    model_config = ConfigDict(extra="forbid")

    epsilon: float = Field(default=3.0, gt=0.0, le=100.0)
    regularization: float = Field(default=0.01, gt=0.0)
    seed: int | None = None


@register("defence")
class DpLogReg(Defence):
    """Replace a scikit-learn classifier by an ε-DP logistic regression (objective perturbation).

    Threat model: membership and attribute inference on the training records; the weights are
    ε-DP (δ = 0) with respect to any one training record (the feature standardisation is not).

    References: Chaudhuri, Monteleoni & Sarwate 2011, "Differentially Private Empirical Risk
    Minimization", JMLR 12:1069–1109 (arXiv:0912.0071).
    """

    id: ClassVar[str] = "defend.dp-logreg"
    title: ClassVar[str] = "Differentially private logistic regression (objective perturbation)"
    threat: ClassVar[Threat] = Threat.PRIVACY
    frameworks: ClassVar[frozenset[str]] = frozenset({"sklearn"})
    Params: ClassVar[type[BaseModel]] = DpLogRegParams
    references: ClassVar[tuple[str, ...]] = (
        "Chaudhuri, Monteleoni & Sarwate 2011, Differentially Private Empirical Risk Minimization, "
        "JMLR 12, arXiv:0912.0071",
    )

    def preflight(self, ctx: HardenContext) -> list[str]:
        """Framework, labelled train split with at least two classes."""
        problems = super().preflight(ctx)
        train = ctx.data.get("train")
        if not problems and train is not None and train.y is not None and len(np.unique(train.y)) < 2:
            problems.append(f"{self.id} on {ctx.asset.name}: the train split has a single class")
        return problems

    def harden(self, ctx: HardenContext) -> Hardened:
        """Fit the DP model and return it as a skops file."""
        require("sklearn", "data")
        sio = require("skops.io", "data")
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import Normalizer, StandardScaler

        p = cast(DpLogRegParams, ctx.params)
        seed = ctx.seed if p.seed is None else p.seed
        train, test = ctx.data["train"], ctx.data.get("test")
        assert train.y is not None
        x = np.asarray(train.x, dtype=np.float64).reshape(len(train.x), -1)
        y = np.asarray(train.y)
        classes = np.unique(y)
        n, d = x.shape
        scaler = StandardScaler().fit(x)
        norm = Normalizer()
        xn = norm.fit_transform(scaler.transform(x))
        xa = np.hstack([xn, np.ones((n, 1))]) / math.sqrt(2.0)  # ‖[x, 1]/√2‖ ≤ 1
        binary = len(classes) == 2
        problems = [classes[1]] if binary else list(classes)
        eps_each = p.epsilon / len(problems)
        eps_p, extra = objective_perturbation_budget(eps_each, n, p.regularization)
        rng = np.random.default_rng(seed)
        weights = []
        for cls in problems:
            s = np.where(y == cls, 1.0, -1.0)
            w = fit_binary(xa, s, lam=p.regularization, extra=extra, b=sample_noise(d + 1, eps_p, rng))
            weights.append(w / math.sqrt(2.0))
        wm = np.stack(weights)
        lr = LogisticRegression()
        lr.classes_ = classes
        lr.coef_ = wm[:, :d]
        lr.intercept_ = wm[:, d]
        lr.n_features_in_ = d
        lr.n_iter_ = np.zeros(1, dtype=np.int32)
        model = Pipeline([("scale", scaler), ("normalise", norm), ("dp_logreg", lr)])

        def acc(est: Any, xs: Any, ys: Any) -> float | None:
            if ys is None or len(xs) == 0:
                return None
            pred = est.predict(np.asarray(xs, dtype=np.float64).reshape(len(xs), -1))
            return round(float((pred == np.asarray(ys)).mean()), 6)

        details: dict[str, Any] = {
            "epsilon": p.epsilon,
            "delta": 0.0,
            "mechanism": "objective perturbation (Chaudhuri et al. 2011, Algorithm 2)",
            "epsilon_per_class_problem": round(eps_each, 6),
            "epsilon_prime": round(eps_p, 6),
            "extra_regularization": round(extra, 8),
            "regularization": p.regularization,
            "train_accuracy": acc(model, train.x, train.y),
            "test_accuracy": acc(model, test.x, test.y) if test is not None else None,
            "original_test_accuracy": (
                acc(ctx.target.estimator, test.x, test.y)
                if test is not None and getattr(ctx.target, "estimator", None) is not None
                else None
            ),
            "not_covered": "feature standardisation (mean/scale from the training data)",
        }
        if details["test_accuracy"] is not None and details["original_test_accuracy"] is not None:
            details["accuracy_cost"] = round(details["original_test_accuracy"] - details["test_accuracy"], 6)
        log.info("dp-logreg %s: ε=%g, ε′=%.3g per problem, Δ=%.3g", ctx.asset.name, p.epsilon, eps_p, extra)
        return Hardened(payload=sio.dumps(model), format="skops", extension=".skops", details=details)
