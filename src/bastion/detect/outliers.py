"""Outlying rows by PyOD's ECOD (default) or Isolation Forest.

Threat model: poisoned rows crafted to move a decision boundary often sit far from the clean
data (feature-space outliers); so do corrupted records. Outlier detection cannot see clean-label
attacks that stay inside the data distribution.

Method: ECOD scores each row by the summed tail probabilities of its features under the
empirical cumulative distribution of the reference (parameter-free, deterministic); Isolation
Forest by its average path length in random trees. Rows are flattened to ``(N, F)``.

The threshold (``threshold_``) is chosen at fit time by one of two rules:

* ``contamination`` (default): PyOD's own, the ``1 - contamination`` quantile of the reference
  scores -- it flags that fraction of the reference by construction.
* ``robust``: ``median + z * 1.4826 * MAD`` of the reference scores (a robust z-score), so the
  flagged fraction measures how many rows stand out; used by the data-health check.

References: Li, Zhao, Hu, Botta, Ionescu, Chen, "ECOD: Unsupervised Outlier Detection Using
Empirical Cumulative Distribution Functions", IEEE TKDE 2022, arXiv:2201.00382; Liu, Ting, Zhou,
"Isolation Forest", ICDM 2008; Zhao, Nasrullah, Li, "PyOD", JMLR 2019, arXiv:1901.01588.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import require
from bastion.core.findings import Threat
from bastion.core.registry import register
from bastion.detect.base import Detector


class OutlierParams(BaseModel):
    """Parameters of :class:`OutlierDetector`.

    Attributes:
        method: ``ecod`` or ``iforest``.
        contamination: expected outlier fraction (PyOD's threshold rule).
        threshold: ``contamination`` (PyOD's quantile) or ``robust`` (median + z MAD).
        z: robust z-score above which a row is an outlier (``threshold="robust"``).
        n_estimators: trees of the isolation forest.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["ecod", "iforest"] = "ecod"
    contamination: float = Field(default=0.05, gt=0, le=0.5)
    threshold: Literal["contamination", "robust"] = "contamination"
    z: float = Field(default=5.0, gt=0)
    n_estimators: int = Field(default=100, ge=10, le=2000)


@register("detector")
class OutlierDetector(Detector):
    """Rows far from the reference distribution.

    Shapes: ``x: (N, *input_shape)``; labels are ignored.

    Attributes:
        reference_scores_: outlier scores of the reference rows ``(N,)``.
        reference_flags_: bool ``(N,)``, reference rows above ``threshold_``.
        threshold_: score above which a row is an outlier.
    """

    id: ClassVar[str] = "detect.outliers"
    title: ClassVar[str] = "Outlying rows (ECOD / Isolation Forest)"
    threat: ClassVar[Threat] = Threat.POISONING
    Params: ClassVar[type[BaseModel]] = OutlierParams
    references: ClassVar[tuple[str, ...]] = (
        "Li et al., ECOD: Unsupervised Outlier Detection Using Empirical Cumulative "
        "Distribution Functions, IEEE TKDE 2022, arXiv:2201.00382",
        "Liu, Ting, Zhou, Isolation Forest, ICDM 2008",
        "Zhao, Nasrullah, Li, PyOD: A Python Toolbox for Scalable Outlier Detection, "
        "JMLR 2019, arXiv:1901.01588",
    )
    threat_model: ClassVar[str] = (
        "The attacker inserts rows into the training data; rows that lie far from the clean "
        "distribution are detectable, clean-label rows inside it are not."
    )
    atlas: ClassVar[tuple[str, ...]] = ("AML.T0020", "AML.T0059")

    params: OutlierParams

    def __init__(self, *, seed: int = 0, **params: Any) -> None:
        super().__init__(seed=seed, **params)
        self.reference_scores_ = np.empty(0, dtype=np.float64)
        self.reference_flags_ = np.empty(0, dtype=bool)
        self._model: Any = None

    def _fit(self, x: np.ndarray, y: np.ndarray | None) -> None:
        p = self.params
        if p.method == "ecod":
            require("pyod.models.ecod", "data")
            from pyod.models.ecod import ECOD

            model: Any = ECOD(contamination=p.contamination, n_jobs=1)
        else:
            require("pyod.models.iforest", "data")
            from pyod.models.iforest import IForest

            model = IForest(
                contamination=p.contamination,
                n_estimators=p.n_estimators,
                random_state=self.seed,
                n_jobs=1,
            )
        model.fit(x)
        self._model = model
        scores = np.asarray(model.decision_scores_, dtype=np.float64)
        self.reference_scores_ = scores
        if p.threshold == "contamination":
            self.threshold_ = float(model.threshold_)
        else:
            self.threshold_ = robust_threshold(scores, p.z)
        self.reference_flags_ = scores > self.threshold_

    def _score(self, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        if self._is_reference(x, y):
            # ECOD scores new rows against reference + batch; the reference's own scores are exact.
            return self.reference_scores_.copy()
        return np.asarray(self._model.decision_function(x), dtype=np.float64)


def robust_threshold(scores: np.ndarray, z: float) -> float:
    """``median + z * 1.4826 * MAD`` of ``scores`` (falls back to the standard deviation).

    Args:
        scores: reference outlier scores ``(N,)``.
        z: how many robust standard deviations above the median.

    Returns:
        The threshold; ``inf`` when every score is equal (nothing stands out).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0 or bool(np.all(s == s.flat[0])):
        return float("inf")  # every score equal (the std of equal tiny floats can round above 0)
    med = float(np.median(s))
    spread = 1.4826 * float(np.median(np.abs(s - med)))
    if spread <= 0:
        spread = float(s.std())
    if spread <= 0:
        return float("inf")
    return med + z * spread
