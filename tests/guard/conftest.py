"""Fixtures of the guard tests: digits data, a numpy model, a fitted profile, keys, an audit store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.guard.helpers import SoftmaxTarget

from bastion.guard.access import new_key
from bastion.guard.config import KeySpec
from bastion.guard.profile import Profile, fit_profile


@pytest.fixture(scope="session")
def digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(x))
    tr, te = perm[:900], perm[900:]
    clf = LogisticRegression(max_iter=300).fit(x[tr], y[tr])
    return {
        "x_train": x[tr],
        "y_train": y[tr],
        "x_test": x[te],
        "y_test": y[te],
        "w": clf.coef_.T.astype(np.float64),
        "b": clf.intercept_.astype(np.float64),
    }


@pytest.fixture()
def target(digits: dict[str, np.ndarray]) -> SoftmaxTarget:
    return SoftmaxTarget(digits["w"], digits["b"])


@pytest.fixture(scope="session")
def profile(digits: dict[str, np.ndarray]) -> Profile:
    t = SoftmaxTarget(digits["w"], digits["b"])
    return fit_profile(
        digits["x_train"], num_classes=10, probs=t.predict_proba(digits["x_train"]), value_range=(0.0, 1.0)
    )


@pytest.fixture(scope="session")
def keys() -> dict[str, tuple[str, KeySpec]]:
    out = {kid: new_key(kid, ["digits"]) for kid in ("alice", "bob", "eve")}
    out["other"] = new_key("other", ["triage"])
    return out


@pytest.fixture()
def audit_db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'guard.db'}"


@pytest.fixture()
def project(tmp_path: Path, digits: dict) -> Path:
    import joblib
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([digits["x_train"], digits["x_test"]])
    y = np.concatenate([digits["y_train"], digits["y_test"]])
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data/digits.npz", x=x, y=y)
    np.savez(tmp_path / "data/splits.npz", train=np.arange(900), test=np.arange(900, len(x)))
    clf = LogisticRegression(max_iter=200).fit(digits["x_train"], digits["y_train"])
    joblib.dump(clf, tmp_path / "model.joblib")
    (tmp_path / "bastion.yaml").write_text(
        """version: 1
assets:
  - {name: digits, path: model.joblib, framework: sklearn, num_classes: 10, dataset: dg,
     input: {shape: [64], range: [0.0, 1.0]}}
datasets:
  - {name: dg, path: data/digits.npz, splits_file: data/splits.npz}
"""
    )
    return tmp_path


# -- reliability figures: every HTTP reliability test records its numbers; they are printed at the end
_FIGURES: dict[str, dict[str, object]] = {}


@pytest.fixture()
def figures(request: pytest.FixtureRequest) -> dict[str, object]:
    """A dict the test fills with its measured figures (printed in the terminal summary)."""
    return _FIGURES.setdefault(request.node.name, {})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    import json

    shown = {k: v for k, v in _FIGURES.items() if v}
    if not shown:
        return
    terminalreporter.section("guard reliability figures (real HTTP on 127.0.0.1)")
    for name, figs in shown.items():
        terminalreporter.write_line(f"{name}: {json.dumps(figs, sort_keys=True)}")
