"""Fitted detectors with ``fit(reference)`` / ``score(batch)``: label issues, duplicates, outliers.

Importing this package registers its detectors (``detect.label-issues``, ``detect.duplicates``,
``detect.outliers``, ``detect.class-outliers``); scikit-learn, cleanlab and PyOD load only when a
detector is fitted.
"""

from bastion.detect.base import Detector
from bastion.detect.class_outliers import ClassConditionalOutlierDetector
from bastion.detect.duplicates import DuplicateDetector, DuplicateReport, find_duplicates, row_hashes
from bastion.detect.label_issues import LabelIssueDetector
from bastion.detect.outliers import OutlierDetector, robust_threshold

__all__ = [
    "ClassConditionalOutlierDetector",
    "Detector",
    "DuplicateDetector",
    "DuplicateReport",
    "LabelIssueDetector",
    "OutlierDetector",
    "find_duplicates",
    "robust_threshold",
    "row_hashes",
]
