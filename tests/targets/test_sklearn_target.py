"""SklearnTarget (probabilities, labels, analytic LR gradients) and the hash-verified joblib loader."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
from tests.targets.conftest import Cancer, f64

from bastion.core.budget import Budget, BudgetMeter
from bastion.core.capability import Capability
from bastion.core.errors import BudgetExhausted, IntegrityError, TargetError
from bastion.targets.sklearn_target import SklearnTarget, load_joblib_verified

sk = pytest.importorskip("sklearn")
joblib = pytest.importorskip("joblib")

from sklearn.datasets import load_digits, load_wine  # noqa: E402
from sklearn.linear_model import LogisticRegression, Perceptron  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, StandardScaler  # noqa: E402
from sklearn.svm import SVC, LinearSVC  # noqa: E402
from sklearn.tree import DecisionTreeClassifier  # noqa: E402


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def fd_gradient(est: object, x: np.ndarray, y: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
    """Central finite differences of -log p_y(x) in float64, row by row."""
    x64 = x.reshape(len(x), -1).astype(np.float64)
    h = 1e-5
    out = np.zeros_like(x64)
    for i in range(len(x64)):
        col = y[i] if cols is None else int(np.flatnonzero(cols == y[i])[0])
        for j in range(x64.shape[1]):
            xp, xm = x64[i : i + 1].copy(), x64[i : i + 1].copy()
            xp[0, j] += h
            xm[0, j] -= h
            lp = -np.log(est.predict_proba(xp)[0, col])  # type: ignore[attr-defined]
            lm = -np.log(est.predict_proba(xm)[0, col])  # type: ignore[attr-defined]
            out[i, j] = (lp - lm) / (2 * h)
    return out.reshape(x.shape)


@pytest.fixture(scope="module")
def wine() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_wine(return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


def test_logreg_probabilities_and_capabilities(logreg: LogisticRegression, cancer: Cancer) -> None:
    t = SklearnTarget(logreg, name="lr", input_shape=(30,), num_classes=2)
    assert t.capabilities == {Capability.PROBABILITIES, Capability.LOSS_GRADIENTS, Capability.BATCHED}
    p = t.predict_proba(cancer.x_test)
    np.testing.assert_allclose(p, logreg.predict_proba(f64(cancer.x_test)), atol=1e-12)
    np.testing.assert_array_equal(t.predict_label(cancer.x_test), logreg.predict(f64(cancer.x_test)))
    assert (t.predict_label(cancer.x_test) == cancer.y_test).mean() > 0.9
    with pytest.raises(TargetError, match="logits"):
        t.predict_logits(cancer.x_test)


def test_binary_logreg_gradient_matches_finite_differences(
    logreg: LogisticRegression, cancer: Cancer
) -> None:
    t = SklearnTarget(logreg, name="lr", input_shape=(30,), num_classes=2)
    x, y = cancer.x_test[:4], cancer.y_test[:4]
    g = t.loss_gradient(x, y)
    assert g.shape == x.shape
    np.testing.assert_allclose(g, fd_gradient(logreg, x, y), rtol=1e-4, atol=1e-6)


def test_multinomial_pipeline_gradient_matches_finite_differences(
    wine: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = wine
    for pre in (StandardScaler(), MinMaxScaler()):
        pipe = make_pipeline(pre, LogisticRegression(max_iter=1000)).fit(x, y)
        t = SklearnTarget(pipe, name="wine", input_shape=(13,), num_classes=3)
        assert Capability.LOSS_GRADIENTS in t.capabilities
        idx = [0, 70, 140]
        g = t.loss_gradient(x[idx], y[idx])
        np.testing.assert_allclose(g, fd_gradient(pipe, x[idx], y[idx]), rtol=1e-3, atol=1e-5)


def test_gradient_rows_are_independent(logreg: LogisticRegression, cancer: Cancer) -> None:
    t = SklearnTarget(logreg, name="lr", input_shape=(30,), num_classes=2)
    x, y = cancer.x_test[:6], cancer.y_test[:6]
    alone = np.concatenate([t.loss_gradient(x[i : i + 1], y[i : i + 1]) for i in range(6)])
    np.testing.assert_allclose(t.loss_gradient(x, y), alone, atol=1e-7)


def test_non_linear_model_offers_no_gradients(cancer: Cancer) -> None:
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(cancer.x_train, cancer.y_train)
    t = SklearnTarget(tree, name="tree", input_shape=(30,), num_classes=2)
    assert t.capabilities == {Capability.PROBABILITIES, Capability.BATCHED}
    with pytest.raises(TargetError, match="loss-gradients"):
        t.loss_gradient(cancer.x_test[:2], cancer.y_test[:2])


def test_label_only_estimator_with_shifted_classes(cancer: Cancer) -> None:
    y = cancer.y_train + 1  # classes 1, 2 -> columns 0, 1 (2 is out of range for num_classes=2)
    est = SVC(kernel="rbf").fit(cancer.x_train, y)  # no predict_proba, not linear: labels only
    t = SklearnTarget(est, name="svc", input_shape=(30,), num_classes=2)
    assert t.capabilities == {Capability.LABEL_ONLY, Capability.BATCHED}
    labels = t.predict_label(cancer.x_test)
    np.testing.assert_array_equal(labels, est.predict(f64(cancer.x_test)) - 1)
    with pytest.raises(TargetError, match="probabilities"):
        t.predict_proba(cancer.x_test)


def test_subset_of_classes_is_padded(wine: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = wine
    keep = y != 1  # train on classes 0 and 2 only, the model declares 3 classes
    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x[keep], y[keep])
    t = SklearnTarget(est, name="wine", input_shape=(13,), num_classes=3)
    p = t.predict_proba(x[:5])
    assert p.shape == (5, 3) and np.all(p[:, 1] == 0)
    np.testing.assert_allclose(p[:, [0, 2]], est.predict_proba(f64(x[:5])))
    g = t.loss_gradient(x[[0, 150]], y[[0, 150]])
    np.testing.assert_allclose(
        g, fd_gradient(est, x[[0, 150]], y[[0, 150]], cols=np.array([0, 2])), rtol=1e-3
    )


def test_image_inputs_are_flattened() -> None:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    est = LogisticRegression(max_iter=300).fit(x[:500], y[:500])
    t = SklearnTarget(est, name="digits", input_shape=(1, 8, 8), num_classes=10)
    imgs = x[500:520].reshape(-1, 1, 8, 8)
    np.testing.assert_allclose(t.predict_proba(imgs), est.predict_proba(f64(x[500:520])), atol=1e-12)
    g = t.loss_gradient(imgs[:2], y[500:502])
    assert g.shape == (2, 1, 8, 8)
    np.testing.assert_allclose(
        g.reshape(2, -1), fd_gradient(est, x[500:502], y[500:502]), rtol=1e-3, atol=1e-5
    )
    with pytest.raises(TargetError, match="shape"):
        t.predict_proba(x[:3])


def test_misfit_estimators_are_rejected(cancer: Cancer) -> None:
    with pytest.raises(TargetError, match="no predict"):
        SklearnTarget(object(), name="x", input_shape=(30,), num_classes=2)
    with pytest.raises(TargetError, match="not a fitted"):
        SklearnTarget(LogisticRegression(), name="x", input_shape=(30,), num_classes=2)
    est = LogisticRegression().fit(cancer.x_train, np.where(cancer.y_train == 1, "a", "b"))
    with pytest.raises(TargetError, match="do not map"):
        SklearnTarget(est, name="x", input_shape=(30,), num_classes=3)


def test_budget(logreg: LogisticRegression, cancer: Cancer) -> None:
    t = SklearnTarget(logreg, name="lr", input_shape=(30,), num_classes=2, batch_size=16)
    meter = BudgetMeter(Budget(queries=50))
    with t.metered(meter):
        t.predict_proba(cancer.x_test[:50])
        with pytest.raises(BudgetExhausted):
            t.predict_label(cancer.x_test[:1])
    assert meter.queries == 50 and t.queries == 50


# -- load_joblib_verified -------------------------------------------------------------------


def test_verified_load_round_trips(logreg_file: Path, logreg: LogisticRegression, cancer: Cancer) -> None:
    est = load_joblib_verified(logreg_file, expected_sha256=sha(logreg_file).upper())
    np.testing.assert_allclose(est.predict_proba(cancer.x_test), logreg.predict_proba(cancer.x_test))


def test_compressed_joblib_loads(tmp_path: Path, logreg: LogisticRegression) -> None:
    p = tmp_path / "lr.joblib"
    joblib.dump(logreg, p, compress=3)
    est = load_joblib_verified(p, expected_sha256=sha(p))
    np.testing.assert_array_equal(est.coef_, logreg.coef_)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_file_changed_after_hashing_is_an_integrity_error(tmp_path: Path, logreg_file: Path) -> None:
    p = tmp_path / "model.joblib"
    p.write_bytes(logreg_file.read_bytes())
    recorded = sha(p)  # what the scanner recorded with its "safe" verdict
    marker = tmp_path / "pwned"
    p.write_bytes(pickle.dumps(_Evil(marker)))  # swapped after the scan
    with pytest.raises(IntegrityError, match="changed after it was scanned"):
        load_joblib_verified(p, expected_sha256=recorded)
    assert not marker.exists()


def test_loads_the_verified_bytes_not_the_file(tmp_path: Path, logreg_file: Path) -> None:
    p = tmp_path / "model.joblib"
    data = logreg_file.read_bytes()
    recorded = hashlib.sha256(data).hexdigest()
    marker = tmp_path / "pwned"
    p.write_bytes(pickle.dumps(_Evil(marker)))  # the path now holds something else
    est = load_joblib_verified(p, expected_sha256=recorded, model_bytes=data)
    assert isinstance(est, LogisticRegression) and not marker.exists()
    with pytest.raises(IntegrityError):
        load_joblib_verified(p, expected_sha256=recorded, model_bytes=data + b"x")


def test_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="not found"):
        load_joblib_verified(tmp_path / "none.joblib", expected_sha256="0" * 64)
    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"\x80\x04junk")
    with pytest.raises(TargetError, match="cannot load"):
        load_joblib_verified(junk, expected_sha256=sha(junk))
    with pytest.raises(TargetError, match="SHA-256"):
        load_joblib_verified(junk, expected_sha256="")


# -- linear margin classifiers (issue 5: white-box for differentiable linear models) -----------
def _ce_of_logits(t: SklearnTarget, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = t.predict_logits(x)
    z = z - z.max(axis=1, keepdims=True)
    return np.asarray(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y])


@pytest.mark.parametrize(
    ("make_est", "data"),
    [
        (lambda: make_pipeline(StandardScaler(), LinearSVC(max_iter=5000, random_state=0)), "wine"),
        (lambda: LinearSVC(max_iter=5000, random_state=0), "cancer"),
        (lambda: Perceptron(random_state=0), "cancer"),
    ],
)
def test_linear_svm_offers_logits_and_gradients(
    make_est: object, data: str, cancer: Cancer, wine: tuple[np.ndarray, np.ndarray]
) -> None:
    if data == "wine":
        x, y = wine
        x, y = x.astype(np.float32), y.astype(np.int64)
    else:
        x, y = cancer.x_train, cancer.y_train
    est = make_est().fit(x, y)  # type: ignore[operator]
    k = int(y.max()) + 1
    t = SklearnTarget(est, name="svm", input_shape=(x.shape[1],), num_classes=k)
    assert t.capabilities == {Capability.LOGITS, Capability.LOSS_GRADIENTS, Capability.BATCHED}
    xs, ys = x[:12], y[:12]
    np.testing.assert_array_equal(t.predict_label(xs), est.predict(f64(xs)))
    z = t.predict_logits(xs)
    assert z.shape == (12, k)
    g = t.loss_gradient(xs, ys)
    assert g.shape == xs.shape and np.abs(g).max() > 0
    h = 1e-2 * (x.std(axis=0) + 1e-6)
    fd = np.zeros_like(g, dtype=np.float64)
    for j in range(x.shape[1]):
        xp, xm = xs.astype(np.float64).copy(), xs.astype(np.float64).copy()
        xp[:, j] += h[j]
        xm[:, j] -= h[j]
        fd[:, j] = (_ce_of_logits(t, xp, ys) - _ce_of_logits(t, xm, ys)) / (2 * h[j])
    np.testing.assert_allclose(g, fd, rtol=2e-2, atol=1e-4 * np.abs(fd).max())
    with pytest.raises(TargetError, match="probabilities"):
        t.predict_proba(xs)
