"""``membership.dp-curve``: the privacy/utility curve of ``bastion assess --budget thorough`` (issue 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.assess.membership.leaky_project import build_leaky_digits

from bastion import api
from bastion.core.errors import ConfigError
from bastion.core.settings import load_settings

pytest.importorskip("opacus")

CURVE = "membership.dp-curve"


def _project(tmp_path: Path, params: str = "{epsilons: [1, 8], epochs: 2, batch_size: 30}") -> Path:
    cfg = build_leaky_digits(tmp_path, n_train=60, n_test=60)
    cfg.write_text(cfg.read_text() + f"  {CURVE}: {{params: {params}}}\n", encoding="utf-8")
    return cfg


def test_thorough_assess_draws_the_curve_and_the_report_shows_it(tmp_path: Path) -> None:
    from bastion.cli.main import run

    cfg = _project(tmp_path)
    db = f"sqlite:///{tmp_path}/b.db"
    args = ["assess", "-c", str(cfg), "--db", db, "--fail-on", "none", "-o", str(tmp_path / "out")]
    assert run([*args, "--budget", "thorough", "--only", "membership.threshold", "--only", CURVE]) == 0
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    curve = next(c for c in rep["checks"] if c["id"] == CURVE)
    assert curve["status"] == "ok" and curve["asset"] == "digits", curve
    m, iv = curve["metrics"], curve["intervals"]
    for key in ("inf", "1", "8"):
        assert 0.0 <= m[f"test_accuracy@eps={key}"] <= 1.0 and f"test_accuracy@eps={key}" in iv
        assert 0.0 <= m[f"auc@eps={key}"] <= 1.0 and f"auc@eps={key}" in iv
        assert f"tpr@fpr=0.01,eps={key}" in m  # null with a note when 60 non-members cannot resolve 1 %
    assert 0.9 <= m["epsilon_spent@eps=1"] <= 1.0 and 7.5 <= m["epsilon_spent@eps=8"] <= 8.0
    assert "epsilon_spent@eps=inf" not in m
    # the original leaks more and is more accurate than its ε=1 retraining
    assert m["test_accuracy@eps=inf"] > m["test_accuracy@eps=1"]
    assert m["auc@eps=inf"] > m["auc@eps=1"]
    # the standalone threshold attack on the original agrees with the curve's ∞ point (same attack, seed)
    thr = next(c for c in rep["checks"] if c["id"] == "membership.threshold" and c["asset"] == "digits")
    assert m["auc@eps=inf"] >= thr["metrics"]["auc"]
    assert curve["series"]["auc"]["x"] == [1.0, 8.0] and curve["series"]["auc"]["log_x"]
    assert curve["series"]["test_accuracy"]["y"] == [m["test_accuracy@eps=1"], m["test_accuracy@eps=8"]]
    assert curve["notes"]["curve"].startswith("ε=∞ (original): test accuracy")
    # nothing recorded as a model version: the curve is drawn in memory
    assert not (tmp_path / ".bastion").exists()
    html = (tmp_path / "out" / "report.html").read_text()
    assert f'data-plot="{CURVE}/digits"' in html


def test_default_budgets_skip_it_without_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.defend import dp_sgd

    cfg = _project(tmp_path)
    monkeypatch.setattr(dp_sgd.DpTrain, "harden", lambda *a, **k: pytest.fail("trained"))
    for budget in ("quick", "standard"):
        rep = api.assess(cfg, only=[CURVE], settings=load_settings(budget=budget), store=False)
        (c,) = [c for c in rep.checks if c.id == CURVE and c.asset == "digits"]
        assert c.status == "skipped" and c.reason is not None
        assert "runs under --budget thorough" in c.reason and "1800 s" in c.reason


def test_unreachable_epsilon_is_a_preflight_error_writing_nothing(tmp_path: Path) -> None:
    cfg = _project(tmp_path, "{epsilons: [0.01, 8], epochs: 40, batch_size: 30, delta: 0.001}")
    db = f"sqlite:///{tmp_path}/b.db"
    with pytest.raises(ConfigError) as exc:
        api.assess(cfg, only=[CURVE], settings=load_settings(budget="thorough", db_url=db))
    problems = "\n".join(exc.value.problems)
    assert "ε=0.01" in problems and "cannot be reached" in problems and "ε=8:" not in problems
    assert not (tmp_path / "b.db").exists() and not (tmp_path / ".bastion").exists()


def test_bad_attack_id_and_params_are_preflight_errors(tmp_path: Path) -> None:
    cfg = _project(tmp_path, "{attacks: [membership.nope], epochs: 2, batch_size: 30}")
    with pytest.raises(ConfigError) as exc:
        api.assess(cfg, only=[CURVE], settings=load_settings(budget="thorough"), store=False)
    assert any("membership.nope" in p for p in exc.value.problems)
    cfg = _project(tmp_path, "{epsilons: [0], epochs: 2}")
    with pytest.raises(ConfigError):
        api.preflight(cfg, budget="thorough", only=[CURVE])


def test_reference_attack_recipe_that_raises_is_a_preflight_error(tmp_path: Path) -> None:
    """A curve running LiRA with a recipe that raises: one preflight line, before any DP training."""
    cfg = _project(tmp_path, "{attacks: [membership.threshold, membership.lira], epochs: 2, batch_size: 30}")
    broken = "tests.assess.membership.tiny_recipe:broken"
    cfg.write_text(cfg.read_text().replace("bastion.examples.clinic_recipes:digits_mlp", broken))
    db = f"sqlite:///{tmp_path}/b.db"
    with pytest.raises(ConfigError) as exc:
        api.assess(cfg, only=[CURVE], settings=load_settings(budget="thorough", db_url=db))
    assert any(broken in p and "ValueError" in p for p in exc.value.problems), exc.value.problems
    assert not (tmp_path / "b.db").exists() and not (tmp_path / ".bastion").exists()
