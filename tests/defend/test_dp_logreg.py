"""defend.dp-logreg: objective perturbation's budget and sensitivity, skops loading, the CLI (issue 6)."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from bastion.core.errors import ConfigError, TargetError
from bastion.defend.dp_logreg import LOGISTIC_C, fit_binary, objective_perturbation_budget, sample_noise


def test_budget_follows_chaudhuri_algorithm_2() -> None:
    eps_p, extra = objective_perturbation_budget(1.0, 1000, 0.01)
    assert extra == 0.0
    assert eps_p == pytest.approx(1.0 - math.log(1 + 2 * LOGISTIC_C / 10 + LOGISTIC_C**2 / 100))
    # tiny n·Λ: ε′ would be negative → ε/2 and the extra ridge Δ = c/(n(e^{ε/4}−1)) − Λ
    eps_p, extra = objective_perturbation_budget(1.0, 10, 0.001)
    assert eps_p == 0.5
    assert extra == pytest.approx(LOGISTIC_C / (10 * math.expm1(0.25)) - 0.001)
    with pytest.raises(ConfigError):
        objective_perturbation_budget(0.0, 10, 0.1)


def test_noise_norm_is_gamma_d_two_over_eps() -> None:
    rng = np.random.default_rng(0)
    norms = np.array([np.linalg.norm(sample_noise(5, 0.5, rng)) for _ in range(4000)])
    assert norms.mean() == pytest.approx(2 * 5 / 0.5, rel=0.03)  # Gamma(d, 2/ε′) mean = 2d/ε′


def test_sensitivity_of_the_noise_between_neighbours_is_at_most_two() -> None:
    """The proof's core: the noise that yields the same w on a neighbouring data set differs by ≤ 2."""
    rng = np.random.default_rng(1)
    n, d, lam = 60, 4, 0.05
    x = rng.standard_normal((n, d))
    x /= np.maximum(1.0, np.linalg.norm(x, axis=1, keepdims=True))  # ‖x‖ ≤ 1
    s = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    b = sample_noise(d, 1.0, rng)
    w = fit_binary(x, s, lam=lam, extra=0.0, b=b)

    def implied_noise(xs: np.ndarray, ss: np.ndarray) -> np.ndarray:
        z = ss * (xs @ w)
        grad = -(xs * (ss / (1 + np.exp(z)))[:, None]).mean(axis=0)
        return -n * (grad + lam * w)

    np.testing.assert_allclose(implied_noise(x, s), b, atol=1e-3)  # w is the perturbed optimum
    for i in range(0, n, 7):
        x2, s2 = x.copy(), s.copy()
        x2[i] = rng.standard_normal(d)
        x2[i] /= np.linalg.norm(x2[i])
        s2[i] = -s[i]
        assert np.linalg.norm(implied_noise(x2, s2) - b) <= 2.0 + 1e-3


def test_skops_loader_refuses_untrusted_types(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import FunctionTransformer

    from bastion.targets.sklearn_target import load_skops_verified

    x = np.random.default_rng(0).random((20, 3))
    ok = LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int))
    loaded = load_skops_verified(tmp_path / "m.skops", expected_sha256=None, model_bytes=sio.dumps(ok))
    np.testing.assert_allclose(loaded.predict_proba(x), ok.predict_proba(x))
    bad = FunctionTransformer(func=math.floor)  # a builtin function: not trusted by default
    with pytest.raises(TargetError, match="untrusted types"):
        load_skops_verified(tmp_path / "bad.skops", expected_sha256=None, model_bytes=sio.dumps(bad))
    with pytest.raises(TargetError, match="not a readable skops"):
        load_skops_verified(tmp_path / "x.skops", expected_sha256=None, model_bytes=b"not a zip")


def test_harden_dp_logreg_on_the_clinic_triage_model_cli(tmp_path: Path) -> None:
    from bastion.cli.main import run
    from bastion.examples.clinic import build_clinic

    cfg = build_clinic(tmp_path)
    db = f"sqlite:///{tmp_path}/b.db"
    harden = ["harden", "dp-logreg", "--asset", "triage", "-c", str(cfg), "--epsilon", "3", "--db", db]
    assert run(harden) == 0
    (details,) = sqlite3.connect(tmp_path / "b.db").execute("select details from model_versions").fetchone()
    details = json.loads(details)
    assert details["format"] == "skops" and details["epsilon"] == 3.0 and details["delta"] == 0.0
    assert 0.5 <= details["test_accuracy"] <= details["original_test_accuracy"]
    assert next((tmp_path / ".bastion" / "models").glob("triage-dp-logreg-*.skops"))
    out = tmp_path / "out"
    common = ["-c", str(cfg), "--asset", "triage", "--only", "membership.threshold", "--db", db]
    assert run(["assess", *common, "--budget", "quick", "--fail-on", "none", "-o", str(out)]) == 0
    rep = json.loads((out / "report.json").read_text())
    v2 = next(c for c in rep["checks"] if c["asset"] == "triage.v2")
    assert v2["status"] == "ok"  # loaded through the skops loader, attacked like the original
    assert abs(v2["metrics"]["auc"] - 0.5) < 0.15
