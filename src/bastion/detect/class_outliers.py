"""Class-conditional feature anomalies in tabular data: rows unusual *for their own label*.

Threat model: a poisoner inserts or edits rows so that a feature takes a value ordinary in the
data set as a whole but extraordinary within the row's class (a tumour of benign size labelled
malignant, a fraud amount typical of legitimate payments). A global outlier detector does not
see such rows -- the value is common elsewhere -- but the class's own distribution does.

Method, per class ``k`` seen at fit: each feature's median and robust spread
(``1.4826 * MAD``; the standard deviation where the MAD is 0; 1 where both are 0) over the
class's reference rows; a row's raw score is the largest absolute robust z-score over its
features, ``max_j |x_j - med_kj| / s_kj``. The class threshold is a robust z-score of ``z``
over the class's raw reference scores (:func:`bastion.detect.outliers.robust_threshold`), so
heavy-tailed features do not flag the clean rows. :meth:`score` returns raw score / class
threshold, so :meth:`flag` (``score > threshold_ = 1``) applies each class's own threshold;
a row labelled with a class never seen at fit scores ``inf``. :attr:`feature_` names, for each
reference row, the feature with the largest z-score (the evidence of *which* feature is odd).

Shapes: ``x: (N, F)`` (images are flattened, though this detector is meant for tabular rows);
``y: (N,)`` integer labels, required.

References: Rousseeuw, Croux, "Alternatives to the Median Absolute Deviation", JASA 1993 (the
1.4826 MAD consistency factor); Chandola, Banerjee, Kumar, "Anomaly Detection: A Survey",
ACM CSUR 2009, sec. 7 (conditional / contextual anomalies).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import ConfigError
from bastion.core.findings import Threat
from bastion.core.registry import register
from bastion.detect.base import Detector
from bastion.detect.outliers import robust_threshold


class ClassOutlierParams(BaseModel):
    """Parameters of :class:`ClassConditionalOutlierDetector`.

    Attributes:
        z: robust z-score of a class's raw scores above which a row is flagged.
        min_rows: a class needs this many reference rows to get its own model.
    """

    model_config = ConfigDict(extra="forbid")

    z: float = Field(default=5.0, gt=0)
    min_rows: int = Field(default=5, ge=3)


@register("detector")
class ClassConditionalOutlierDetector(Detector):
    """Rows whose features are anomalous for their own class (robust per-class z-scores).

    Attributes:
        classes_: classes with their own model ``(K,)``.
        median_: per-class feature medians ``(K, F)``.
        spread_: per-class robust feature spreads ``(K, F)``.
        class_thresholds_: per-class thresholds on the raw score ``(K,)``.
        reference_scores_: normalised scores of the reference rows ``(N,)``.
        reference_flags_: bool ``(N,)``, reference rows flagged.
        feature_: int ``(N,)``, index of each reference row's most anomalous feature.
    """

    id: ClassVar[str] = "detect.class-outliers"
    title: ClassVar[str] = "Class-conditional feature anomalies (tabular)"
    threat: ClassVar[Threat] = Threat.POISONING
    Params: ClassVar[type[BaseModel]] = ClassOutlierParams
    uses_labels: ClassVar[bool] = True
    references: ClassVar[tuple[str, ...]] = (
        "Rousseeuw, Croux, Alternatives to the Median Absolute Deviation, JASA 1993",
        "Chandola, Banerjee, Kumar, Anomaly Detection: A Survey, ACM Computing Surveys 2009",
    )
    threat_model: ClassVar[str] = (
        "The attacker inserts or edits labelled rows whose feature values are ordinary in the "
        "data set but not within the row's class; needs labels, sees no clean-label attack that "
        "stays inside its class's distribution."
    )
    atlas: ClassVar[tuple[str, ...]] = ("AML.T0020", "AML.T0059")

    params: ClassOutlierParams

    def __init__(self, *, seed: int = 0, **params: Any) -> None:
        super().__init__(seed=seed, **params)
        self.classes_ = np.empty(0, dtype=np.int64)
        self.median_ = np.empty((0, 0))
        self.spread_ = np.empty((0, 0))
        self.class_thresholds_ = np.empty(0)
        self.reference_scores_ = np.empty(0)
        self.reference_flags_ = np.empty(0, dtype=bool)
        self.feature_ = np.empty(0, dtype=np.int64)

    def _fit(self, x: np.ndarray, y: np.ndarray | None) -> None:
        if y is None:
            raise ConfigError(f"{self.id}: needs labels (class-conditional)")
        p = self.params
        classes, counts = np.unique(y, return_counts=True)
        keep = classes[counts >= p.min_rows]
        if keep.size == 0:
            raise ConfigError(f"{self.id}: no class has {p.min_rows} rows or more")
        med = np.empty((keep.size, x.shape[1]))
        spread = np.empty_like(med)
        for k, c in enumerate(keep):
            rows = x[y == c]
            med[k] = np.median(rows, axis=0)
            s = 1.4826 * np.median(np.abs(rows - med[k]), axis=0)
            sd = rows.std(axis=0)
            s = np.where(s > 0, s, sd)
            spread[k] = np.where(s > 0, s, 1.0)
        self.classes_, self.median_, self.spread_ = keep.astype(np.int64), med, spread
        raw, feat = self._raw(x, y)
        thr = np.full(keep.size, np.inf)
        for k, c in enumerate(keep):
            thr[k] = robust_threshold(raw[y == c], p.z)
        self.class_thresholds_ = thr
        self.threshold_ = 1.0
        self.reference_scores_ = self._normalise(raw, y)
        self.reference_flags_ = self.reference_scores_ > self.threshold_
        self.feature_ = feat

    def _raw(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Largest absolute robust z-score of each row within its class, and its feature."""
        raw = np.full(x.shape[0], np.inf)
        feat = np.full(x.shape[0], -1, dtype=np.int64)
        for k, c in enumerate(self.classes_):
            m = y == c
            if not m.any():
                continue
            z = np.abs(x[m] - self.median_[k]) / self.spread_[k]
            feat[m] = z.argmax(axis=1)
            raw[m] = z.max(axis=1)
        return raw, feat

    def _normalise(self, raw: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.full(raw.shape, np.inf)
        for k, c in enumerate(self.classes_):
            m = y == c
            t = self.class_thresholds_[k]
            out[m] = 0.0 if not np.isfinite(t) else raw[m] / max(t, 1e-12)
        return out

    def _score(self, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        if y is None:
            raise ConfigError(f"{self.id}: scoring needs the rows' labels")
        if self._is_reference(x, y):
            return self.reference_scores_.copy()
        raw, _ = self._raw(x, y)
        return self._normalise(raw, y)

    def features(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Index of each row's most anomalous feature within its class (-1: unseen class).

        Raises:
            NotFittedError: before :meth:`fit`.
            ConfigError: labels missing.
        """
        xm, yv = self._prepare(x, y)
        if yv is None:
            raise ConfigError(f"{self.id}: needs the rows' labels")
        return self._raw(xm, yv)[1]
