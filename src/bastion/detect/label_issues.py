"""Mislabelled rows by confident learning on cross-validated predicted probabilities.

Threat model: an attacker (or a careless pipeline) flips the labels of some training rows
(label-flipping poisoning, MITRE ATLAS AML.T0020). Confident learning estimates the joint
distribution of given and true labels from out-of-sample predicted probabilities and prunes
the rows most likely mislabelled.

Method: inputs are flattened ``(N, F)`` and standardised; a multinomial logistic regression is
fitted by ``folds``-fold stratified cross-validation (``sklearn.model_selection.cross_val_predict``)
so every row's probabilities come from a model that never saw it; cleanlab's
``find_label_issues`` flags rows and ``get_label_quality_scores`` scores them
(score = 1 - label quality). A final model fitted on every reference row scores new batches;
a new row is flagged when some other class ``k`` gets probability at least ``t_k``, the mean
self-confidence of class ``k`` on the reference (the confident-learning per-class threshold),
or when its label quality is below that of every reference row cleanlab kept.

Reference: Northcutt, Jiang, Chuang, "Confident Learning: Estimating Uncertainty in Dataset
Labels", JAIR 2021, arXiv:1911.00068.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import ConfigError, require
from bastion.core.findings import Threat
from bastion.core.registry import register
from bastion.detect.base import Detector, column_stats, standardise


class LabelIssueParams(BaseModel):
    """Parameters of :class:`LabelIssueDetector`.

    Attributes:
        folds: cross-validation folds for out-of-sample probabilities (reduced to the smallest
            class's size when that is smaller, never below 2).
        c: inverse L2 regularisation strength of the logistic regression.
        max_iter: solver iterations.
        filter_by: cleanlab's pruning rule.
    """

    model_config = ConfigDict(extra="forbid")

    folds: int = Field(default=5, ge=2, le=20)
    c: float = Field(default=1.0, gt=0)
    max_iter: int = Field(default=1000, ge=10)
    filter_by: Literal[
        "prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given"
    ] = "prune_by_noise_rate"


@register("detector")
class LabelIssueDetector(Detector):
    """Rows whose given label disagrees confidently with out-of-sample predictions.

    ``fit(x, y)`` runs the cross-validated procedure on the reference and keeps its verdicts
    (``issues_``, ``quality_``); ``score``/``flag`` on that same data return them, and on new
    data use the final model. Labels are required.

    Shapes: ``x: (N, *input_shape)``, ``y: (N,)`` integer classes.

    Attributes:
        classes_: the sorted class labels seen at fit.
        issues_: bool ``(N,)``, cleanlab's verdict on the reference rows.
        quality_: float ``(N,)``, label quality of the reference rows (0 bad .. 1 good).
        pred_probs_: out-of-sample probabilities ``(N, K)`` of the reference rows.
        class_thresholds_: per-class self-confidence thresholds ``(K,)``.
        folds_: folds actually used.

    Raises:
        ConfigError: labels missing, fewer than two classes, or a class with a single row.
    """

    id: ClassVar[str] = "detect.label-issues"
    title: ClassVar[str] = "Label issues (confident learning)"
    threat: ClassVar[Threat] = Threat.POISONING
    Params: ClassVar[type[BaseModel]] = LabelIssueParams
    references: ClassVar[tuple[str, ...]] = (
        "Northcutt et al., Confident Learning: Estimating Uncertainty in Dataset Labels, "
        "JAIR 2021, arXiv:1911.00068",
    )
    threat_model: ClassVar[str] = (
        "The attacker controls the labels of a fraction of the training rows (label flipping) "
        "but not the features; the defender holds the labelled data set."
    )
    atlas: ClassVar[tuple[str, ...]] = ("AML.T0020",)
    uses_labels: ClassVar[bool] = True

    params: LabelIssueParams

    def __init__(self, *, seed: int = 0, **params: Any) -> None:
        super().__init__(seed=seed, **params)
        self.classes_ = np.empty(0, dtype=np.int64)
        self.issues_ = np.empty(0, dtype=bool)
        self.quality_ = np.empty(0, dtype=np.float64)
        self.pred_probs_ = np.empty((0, 0), dtype=np.float64)
        self.class_thresholds_ = np.empty(0, dtype=np.float64)
        self.folds_ = 0
        self._mean = np.empty(0)
        self._std = np.empty(0)
        self._model: Any = None

    def _fit(self, x: np.ndarray, y: np.ndarray | None) -> None:
        require("sklearn", "data")
        require("cleanlab", "data")
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        if y is None:
            raise ConfigError(f"{self.id}: needs labels; the data set has none")
        classes, encoded, counts = np.unique(y, return_inverse=True, return_counts=True)
        if classes.size < 2:
            raise ConfigError(f"{self.id}: needs at least two classes, got {classes.size}")
        folds = int(min(self.params.folds, counts.min()))
        if folds < 2:
            small = int(classes[np.argmin(counts)])
            raise ConfigError(f"{self.id}: class {small} has a single row; every class needs two")
        self._mean, self._std = column_stats(x)
        xs = standardise(x, self._mean, self._std)
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.seed)
        probs = cross_val_predict(self._new_model(), xs, encoded, cv=cv, method="predict_proba")
        probs = np.asarray(probs, dtype=np.float64)
        self.pred_probs_ = probs
        self.issues_ = np.asarray(
            find_label_issues(labels=encoded, pred_probs=probs, filter_by=self.params.filter_by),
            dtype=bool,
        )
        self.quality_ = np.asarray(get_label_quality_scores(encoded, probs), dtype=np.float64)
        self.class_thresholds_ = np.array(
            [probs[encoded == k, k].mean() for k in range(classes.size)], dtype=np.float64
        )
        self.classes_ = classes.astype(np.int64)
        self.folds_ = folds
        self._model = self._new_model().fit(xs, encoded)
        # Every reference row scoring above this was flagged by cleanlab (its pruning is by
        # rank within each class, so a few flagged rows may score below it).
        kept = self.quality_[~self.issues_]
        self.threshold_ = float(1.0 - kept.min()) if kept.size else 0.0

    def _new_model(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.params.c, max_iter=self.params.max_iter)

    def _encode(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class positions of ``y`` and a mask of labels unseen at fit."""
        pos = np.searchsorted(self.classes_, y)
        pos = np.clip(pos, 0, self.classes_.size - 1)
        known = self.classes_[pos] == y
        return pos, known

    def _probs(self, x: np.ndarray) -> np.ndarray:
        xs = standardise(x, self._mean, self._std)
        return np.asarray(self._model.predict_proba(xs), dtype=np.float64)

    def _score(self, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        if y is None:
            raise ConfigError(f"{self.id}: scoring needs the labels of the rows")
        if self._is_reference(x, y):
            return 1.0 - self.quality_
        pos, known = self._encode(y)
        probs = self._probs(x)
        quality = probs[np.arange(len(y)), pos]
        quality[~known] = 0.0
        return 1.0 - quality

    def flag(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Rows judged mislabelled: cleanlab's verdict on the reference, else per-class thresholds.

        A new row with label ``j`` is flagged when some class ``k != j`` has predicted
        probability ``>= t_k`` and above the probability of ``j`` (a confident off-diagonal
        entry), when its score is above ``threshold_`` (its label quality is below that of
        every reference row cleanlab kept), or when ``j`` was not seen at fit.

        Raises:
            NotFittedError: before :meth:`fit`.
            ConfigError: labels missing or of the wrong length.
        """
        xm, yv = self._prepare(x, y)
        if yv is None:
            raise ConfigError(f"{self.id}: flagging needs the labels of the rows")
        if self._is_reference(xm, yv):
            return self.issues_.copy()
        pos, known = self._encode(yv)
        probs = self._probs(xm)
        rows = np.arange(len(yv))
        given = probs[rows, pos]
        other = probs.copy()
        other[rows, pos] = -np.inf
        confident = (other >= self.class_thresholds_[None, :]) & (other > given[:, None])
        low_quality = given < 1.0 - self.threshold_
        return np.asarray(confident.any(axis=1) | low_quality | ~known, dtype=bool)
