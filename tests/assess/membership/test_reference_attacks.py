"""LiRA / RMIA with recipe-trained reference models, and DP-SGD cutting their advantage (issue 6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.assess.membership.leaky_project import build_leaky_digits

from bastion.assess.membership import reference as R
from bastion.core.errors import ConfigError


def test_recipe_reference_is_validated_and_imported() -> None:
    assert R.parse_recipe_ref("bastion.examples.clinic_recipes:digits_mlp") == (
        "bastion.examples.clinic_recipes",
        "digits_mlp",
    )
    for bad in ("os.system", "a:b:c", "1pkg:f", "pkg.mod:"):
        with pytest.raises(ConfigError, match="recipe"):
            R.parse_recipe_ref(bad)
    with pytest.raises(ConfigError, match="cannot import"):
        R.load_recipe("bastion.no_such_module:f")
    with pytest.raises(ConfigError, match="no callable"):
        R.load_recipe("bastion.examples.clinic_recipes:nope")


def test_reference_outputs_are_seeded_and_cached(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((40, 64)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    masks = np.zeros((2, 40), dtype=bool)
    masks[0, :20] = True
    masks[1, 20:] = True
    ref = "tests.assess.membership.tiny_recipe:linear"
    first = R.reference_outputs(ref, x, y, masks, x[:5], seed=3, cache_dir=tmp_path)
    again = R.reference_outputs(ref, x, y, masks, x[:5], seed=3, cache_dir=tmp_path)
    assert first.proba.shape == (2, 5, 10) and not first.cached and again.cached
    np.testing.assert_array_equal(first.proba, again.proba)
    files = sorted(p.suffix for p in tmp_path.iterdir())
    assert files == [".json", ".npz"]
    meta = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert meta["recipe"] == ref and meta["models"] == 2
    # tampering with the cached arrays is detected (hash in the JSON record) and retrains
    npz = next(tmp_path.glob("*.npz"))
    npz.write_bytes(npz.read_bytes()[:-3] + b"xyz")
    third = R.reference_outputs(ref, x, y, masks, x[:5], seed=3, cache_dir=tmp_path)
    assert not third.cached
    np.testing.assert_allclose(third.proba, first.proba)
    # a different seed is a different cache entry
    assert not R.reference_outputs(ref, x, y, masks, x[:5], seed=4, cache_dir=tmp_path).cached


def test_bad_recipe_is_a_preflight_error(tmp_path: Path) -> None:
    from bastion import api
    from bastion.core.settings import load_settings

    cfg = build_leaky_digits(tmp_path, n_train=60, n_test=60)
    text = cfg.read_text().replace("clinic_recipes:digits_mlp", "clinic_recipes:missing")
    cfg.write_text(text)
    with pytest.raises(ConfigError) as exc:
        api.assess(cfg, only=["membership.lira"], settings=load_settings(db_url=f"sqlite:///{tmp_path}/b.db"))
    assert any("no callable 'missing'" in p for p in exc.value.problems)
    assert not (tmp_path / "b.db").exists()  # nothing half-written


def test_dp_training_cuts_membership_leakage_cli(tmp_path: Path) -> None:
    """Headline: a leaky digits MLP (200 records) → dp-train ε=3 → attacks near chance."""
    from bastion.cli.main import run

    cfg = build_leaky_digits(tmp_path)
    db = f"sqlite:///{tmp_path}/b.db"
    common = ["-c", str(cfg), "--only", "membership", "--budget", "quick", "--db", db, "--fail-on", "none"]
    assert run(["assess", *common, "-o", str(tmp_path / "before")]) == 0
    assert run(["harden", "dp-train", "--asset", "digits", "-c", str(cfg), "--epsilon", "3", "--db", db]) == 0
    assert run(["assess", *common, "-o", str(tmp_path / "after")]) == 0
    rep = json.loads((tmp_path / "after" / "report.json").read_text())
    auc = {(c["asset"], c["id"]): c["metrics"]["auc"] for c in rep["checks"] if c["status"] == "ok"}
    before = {k[1]: v for k, v in auc.items() if k[0] == "digits"}
    after = {k[1]: v for k, v in auc.items() if k[0] == "digits.v2"}
    attacks = {"membership.threshold", "membership.lira", "membership.rmia", "membership.label-only"}
    assert set(before) == set(after) == attacks
    print("membership AUC before", before, "after", after)
    assert max(before.values()) >= 0.65  # the original leaks
    assert before["membership.lira"] > before["membership.threshold"]  # reference models help
    # issue 6's criterion: the DP version's STRONGEST attack within 0.05 of chance (all 200
    # members against 200 non-members per attack)
    assert max(abs(v - 0.5) for v in after.values()) <= 0.05, after
    lira_v2 = next(c for c in rep["checks"] if c["asset"] == "digits.v2" and c["id"] == "membership.lira")
    claimed = lira_v2["metrics"]["claimed_epsilon"]
    assert 2.5 <= claimed <= 3.0  # the accountant's ε, recorded with the version
    assert 0 < lira_v2["metrics"]["claimed_delta"] < 1 / 200  # δ beside ε, below 1/(records)
    assert lira_v2["metrics"]["epsilon_lower_bound"] <= claimed
    assert not [f for f in rep["findings"] if f["rule_id"].endswith("dp-claim-violated")]
    lira_v1 = next(c for c in rep["checks"] if c["asset"] == "digits" and c["id"] == "membership.lira")
    assert (
        "exposed_records" in lira_v1["notes"]
        and "read from the cache" in lira_v2["notes"]["reference_models"]
    )


def test_dp_sweep_prints_the_privacy_utility_curve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``harden dp-train --sweep``: one version per ε and a table of ε spent and test accuracy."""
    from bastion.cli.main import run

    cfg = build_leaky_digits(tmp_path, n_train=100, n_test=100)
    db = f"sqlite:///{tmp_path}/b.db"
    args = ["harden", "dp-train", "--asset", "digits", "-c", str(cfg), "--db", db, "--sweep", "8,1"]
    assert run([*args, "-p", "epochs=3", "-p", "batch_size=50"]) == 0
    out = capsys.readouterr().err
    assert "privacy / utility" in out and "∞ (original)" in out
    rows = [line for line in out.splitlines() if line.strip().startswith("│")]
    firsts = [r.split("│")[1].strip() for r in rows]
    assert firsts[:3] == ["∞ (original)", "1", "8"]  # ascending ε after the original


def test_population_too_small_is_a_preflight_error(overfit_digits, make_ctx) -> None:  # type: ignore[no-untyped-def]
    """Offline LiRA with a 1-record population, RMIA with none: preflight problems, nothing trained."""
    import numpy as np

    from bastion.assess.membership.lira import MembershipLira
    from bastion.assess.membership.rmia import MembershipRmia
    from bastion.core.check import Split

    data = overfit_digits.data()
    x, y = overfit_digits.x, overfit_digits.y
    one = Split(x=x[:1], y=y[:1], index=np.array([0]))
    empty = Split(x=x[:0], y=y[:0], index=np.array([], dtype=np.int64))
    recipe = "bastion.examples.clinic_recipes:digits_mlp"
    lira = make_ctx(
        MembershipLira,
        overfit_digits,
        params={"recipe": recipe, "mode": "offline"},
        data={**data, "population": one},
    )
    assert any(
        "population split" in p and "at least 2 records; it has 1" in p
        for p in MembershipLira().preflight(lira)
    )
    rmia = make_ctx(
        MembershipRmia, overfit_digits, params={"recipe": recipe}, data={**data, "population": empty}
    )
    assert any("RMIA needs population records z" in p for p in MembershipRmia().preflight(rmia))
    online = make_ctx(MembershipLira, overfit_digits, params={"recipe": recipe, "n_references": 1}, data=data)
    assert any("n_references >= 2" in p for p in MembershipLira().preflight(online))


def test_empirical_epsilon_above_the_claim_is_a_critical_finding(overfit_digits, make_ctx) -> None:  # type: ignore[no-untyped-def]
    """A DP version claiming ε=0.5 whose audit proves ε ≥ 2 is flagged; a claim of ε=3 holds."""
    from bastion.assess.membership.lira import MembershipLira
    from bastion.core.results import CheckResult
    from bastion.core.severity import Severity

    ctx = make_ctx(
        MembershipLira, overfit_digits, params={"recipe": "bastion.examples.clinic_recipes:digits_mlp"}
    )
    for claimed, flagged in ((0.5, True), (3.0, False)):
        tags = ["version-of:model", f"dp-epsilon:{claimed}", "dp-delta:1e-05"]
        ctx.asset = ctx.asset.model_copy(update={"tags": tags})
        res = CheckResult(id=MembershipLira.id, asset="model", metrics={"epsilon_lower_bound": 2.0})
        found = MembershipLira()._dp_claim(ctx, res)
        assert res.metrics["claimed_epsilon"] == claimed  # shown next to the lower bound
        assert res.metrics["claimed_delta"] == 1e-05 and "δ = 1e-05" in res.notes["claimed_epsilon"]
        assert [f.rule_id for f in found] == (["membership.lira.dp-claim-violated"] if flagged else [])
        if flagged:
            assert found[0].severity == Severity.CRITICAL
            assert found[0].evidence == {"epsilon_lower_bound": 2.0, "claimed_epsilon": 0.5}


BROKEN = "tests.assess.membership.tiny_recipe:broken"


def test_recipe_that_raises_is_one_preflight_line_api_and_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recipe that imports but raises: one line naming it and the exception, exit 2, no store."""
    from tests.assess.membership import tiny_recipe

    from bastion import api
    from bastion.cli.main import run
    from bastion.core.settings import load_settings

    cfg = build_leaky_digits(tmp_path, n_train=60, n_test=60)
    cfg.write_text(cfg.read_text().replace("bastion.examples.clinic_recipes:digits_mlp", BROKEN))
    db = f"sqlite:///{tmp_path}/b.db"
    tiny_recipe.CALLS.clear()
    R._TRIALS.clear()
    with pytest.raises(ConfigError) as exc:
        api.assess(cfg, only=["membership.lira", "membership.rmia"], settings=load_settings(db_url=db))
    bad = [p for p in exc.value.problems if BROKEN in p]
    assert len(bad) == 2  # lira and rmia, each named
    for p in bad:
        assert "ValueError: shapes (12,64) and (30,128) not aligned" in p and "\n" not in p
        assert "trial run (1 model" in p
    assert tiny_recipe.CALLS == [1]  # one trial of one model, shared by both checks; nothing trained
    assert not (tmp_path / "b.db").exists() and not (tmp_path / ".bastion").exists()
    capsys.readouterr()
    code = run(["assess", "-c", str(cfg), "--only", "membership.lira", "--db", db, "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert BROKEN in err and "ValueError" in err and "Traceback" not in err
    assert not (tmp_path / "b.db").exists() and not (tmp_path / "o").exists()


def test_recipe_that_raises_stops_the_sweep_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``harden --sweep`` with LiRA among the attacks: the broken recipe stops it before any DP training."""
    from bastion import api
    from bastion.core.settings import load_settings
    from bastion.defend import dp_sgd

    cfg = build_leaky_digits(tmp_path, n_train=60, n_test=60)
    cfg.write_text(cfg.read_text().replace("bastion.examples.clinic_recipes:digits_mlp", BROKEN))
    monkeypatch.setattr(dp_sgd.DpTrain, "harden", lambda *a, **k: pytest.fail("trained"))
    db = f"sqlite:///{tmp_path}/b.db"
    with pytest.raises(ConfigError) as exc:
        api.harden_sweep(
            cfg,
            "dp-train",
            asset="digits",
            epsilons=[3.0],
            params={"epochs": 2, "batch_size": 30},
            attacks=["membership.threshold", "membership.lira"],
            settings=load_settings(db_url=db),
        )
    assert any(BROKEN in p and "ValueError" in p for p in exc.value.problems)
    assert not (tmp_path / ".bastion").exists()


def test_recipe_trial_restores_random_state_and_passes_good_recipes() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((50, 64)).astype(np.float32)
    y = rng.integers(0, 10, 50)
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    assert R.trial_recipe("tests.assess.membership.tiny_recipe:linear", x, y) is None
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    # a recipe returning the wrong shape is caught by the trial as well
    msg = R.trial_recipe("tests.assess.membership.tiny_recipe:wrong_shape", x, y, where="here")
    assert msg is not None and msg.startswith("here: training recipe") and "PluginError" in msg


def test_results_do_not_depend_on_the_executor_or_chunking() -> None:
    """The executor interface is open (a Ray executor fits it): same seeds, same outputs anywhere."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(1)
    x = rng.random((30, 64)).astype(np.float32)
    y = rng.integers(0, 10, 30)
    masks = rng.random((5, 30)) < 0.5
    ref = "tests.assess.membership.tiny_recipe:linear"
    local = R.reference_outputs(ref, x, y, masks, x[:4], seed=7).proba

    class ThreadExecutor:  # a third-party executor: only `map(fn, items)` is required
        def __init__(self) -> None:
            self.chunks = 0

        def map(self, fn: Any, items: Any) -> list[np.ndarray]:
            self.chunks = len(items)
            with ThreadPoolExecutor(max_workers=2) as pool:
                return list(pool.map(lambda item: fn(*item), items))

    threads = ThreadExecutor()
    chunked = R.reference_outputs(ref, x, y, masks, x[:4], seed=7, executor=threads, chunk_size=2).proba
    assert threads.chunks == 3  # 5 models in chunks of 2
    np.testing.assert_array_equal(chunked, local)
    pooled = R.reference_outputs(
        ref, x, y, masks, x[:4], seed=7, executor=R.PoolExecutor(workers=2), chunk_size=3
    ).proba  # spawned processes import the recipe by reference
    np.testing.assert_array_equal(pooled, local)
