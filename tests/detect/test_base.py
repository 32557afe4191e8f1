"""The shared detector base: verbs, errors, fingerprints; the packages import nothing heavy."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bastion.core.errors import ConfigError, NotFittedError, PluginError
from bastion.core.registry import detectors
from bastion.detect import Detector, DuplicateDetector, LabelIssueDetector, OutlierDetector
from bastion.detect.base import as_labels, as_matrix, column_stats, fingerprint


def test_every_builtin_is_a_registered_detector() -> None:
    for cls in (LabelIssueDetector, DuplicateDetector, OutlierDetector):
        assert issubclass(cls, Detector)
        assert detectors.get(cls.id) is cls
        assert cls.references and cls.threat_model and cls.atlas


def test_unknown_or_bad_params_raise_plugin_error() -> None:
    with pytest.raises(PluginError, match="tol"):
        DuplicateDetector(tol=0)
    with pytest.raises(PluginError, match="nope"):
        OutlierDetector(nope=1)


def test_not_fitted_and_feature_count() -> None:
    det = DuplicateDetector()
    assert not det.fitted
    with pytest.raises(NotFittedError, match=r"detect\.duplicates: call fit\(\)"):
        det.flag(np.zeros((2, 3)))
    det.fit(np.random.default_rng(0).normal(size=(20, 3)))
    assert det.fitted and det.n_features_ == 3
    with pytest.raises(ConfigError, match="rows of 4 features; fitted on 3"):
        det.score(np.zeros((2, 4)))


def test_images_are_flattened() -> None:
    x = np.random.default_rng(0).normal(size=(30, 1, 4, 4)).astype(np.float32)
    det = DuplicateDetector().fit(x)
    assert det.n_features_ == 16
    assert det.score(x).shape == (30,)


def test_helpers() -> None:
    with pytest.raises(ConfigError, match="no rows"):
        as_matrix(np.zeros((0, 3)), "t")
    with pytest.raises(ConfigError, match="labels of shape"):
        as_labels(np.zeros(4), 3, "t")
    x = np.arange(6.0).reshape(3, 2)
    assert fingerprint(x, None) != fingerprint(x, np.array([0, 1, 0]))
    assert fingerprint(x, None) == fingerprint(x.copy(), None)
    mean, std = column_stats(np.array([[1.0, 5.0], [3.0, 5.0]]))
    assert mean.tolist() == [2.0, 5.0] and std.tolist() == [1.0, 1.0]


def test_packages_import_no_heavy_framework() -> None:
    code = (
        "import sys, bastion.detect, bastion.data, bastion.governance, bastion.assess.poisoning; "
        "print(','.join(m for m in ('sklearn','cleanlab','pyod','torch','pandas','sqlalchemy') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""
