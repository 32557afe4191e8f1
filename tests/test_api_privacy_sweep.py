"""``bastion harden dp-train --sweep``: the privacy/utility curve with membership attacks per ε (issue 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.assess.membership.leaky_project import build_leaky_digits

from bastion import api
from bastion.core.errors import ConfigError
from bastion.core.settings import load_settings

pytest.importorskip("opacus")


def test_sweep_prints_and_writes_the_curve_with_attack_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion.cli.main import run

    cfg = build_leaky_digits(tmp_path, n_train=100, n_test=100)
    db = f"sqlite:///{tmp_path}/b.db"
    out = tmp_path / "sweep.json"
    args = ["harden", "dp-train", "--asset", "digits", "-c", str(cfg), "--db", db, "--sweep", "8,1"]
    assert run([*args, "-p", "epochs=3", "-p", "batch_size=50", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "privacy / utility" in err and "TPR@1%FPR" in err and "strongest attack" in err

    doc = json.loads(out.read_text())
    assert doc["attacks"] == ["membership.threshold", "membership.label-only"]
    curve = doc["curve"]
    assert [p["epsilon_target"] for p in curve] == [None, 1.0, 8.0]  # ∞ (original) first, then ascending
    assert [p["asset"] for p in curve] == ["digits", "digits.v2", "digits.v3"]
    for p in curve:
        assert set(p["attacks"]) == {"membership.threshold", "membership.label-only"}
        assert all(a["status"] == "ok" for a in p["attacks"].values())
        aucs = {k: a["auc"] for k, a in p["attacks"].items()}
        assert p["auc"] == max(aucs.values()) and p["strongest_attack"] == max(aucs, key=aucs.__getitem__)
        assert p["tpr@fpr=0.01"] == p["attacks"][p["strongest_attack"]]["tpr@fpr=0.01"]
        assert 0.0 <= p["test_accuracy"] <= 1.0
    original, dp1, dp8 = curve
    assert original["epsilon"] is None and 0.9 <= dp1["epsilon"] <= 1.0 and 7.5 <= dp8["epsilon"] <= 8.0
    assert original["test_accuracy"] > max(dp1["test_accuracy"], dp8["test_accuracy"])  # utility cost
    # measured: strongest AUC 0.633 (original), 0.532 (ε=1), 0.556 (ε=8)
    assert original["auc"] > 0.6 and max(dp1["auc"], dp8["auc"]) < original["auc"] - 0.05
    # each point is a recorded version, assessable beside the original
    assert {p["version"] for p in curve} == {None, 2, 3}
    assert all((tmp_path / p["path"]).is_file() for p in curve[1:])


def test_sweep_problems_are_reported_before_any_training(tmp_path: Path) -> None:
    cfg = build_leaky_digits(tmp_path, n_train=60, n_test=60)
    settings = load_settings(db_url=f"sqlite:///{tmp_path}/b.db")
    with pytest.raises(ConfigError) as exc:
        api.harden_sweep(
            cfg,
            "dp-train",
            asset="digits",
            epsilons=[1.0, -2.0, 500.0, 1.0],
            attacks=["membership.threshold", "membership.nope", "evasion.pgd"],
            settings=settings,
        )
    problems = "\n".join(exc.value.problems)
    assert "ε must be > 0, got -2" in problems
    assert "ε 1 given more than once" in problems
    assert "--attack membership.nope: not a membership-inference attack" in problems
    assert "--attack evasion.pgd: not a membership-inference attack" in problems
    known = next(p for p in exc.value.problems if "known: " in p).split("known: ")[1]
    assert "membership.lira" in known and "evasion." not in known
    assert "ε=500" in problems  # the defence's own bound on epsilon
    assert not (tmp_path / ".bastion").exists()  # nothing trained, nothing written


def test_sweep_retrains_the_model_and_audits_it_as_served(tmp_path: Path) -> None:
    """An asset with output hardening: DP-SGD trains the unhardened model; the audit sees rounded scores."""
    cfg = build_leaky_digits(tmp_path, n_train=60, n_test=60)
    text = cfg.read_text().replace(
        "    num_classes: 10\n", "    num_classes: 10\n    output: {decimals: 1}\n", 1
    )
    cfg.write_text(text)
    swept = api.harden_sweep(
        cfg,
        "dp-train",
        asset="digits",
        epsilons=[8.0],
        params={"epochs": 1, "batch_size": 30},
        attacks=["membership.threshold"],
        settings=load_settings(db_url=f"sqlite:///{tmp_path}/b.db"),
    )
    original, dp = swept.points
    assert dp.version is not None and dp.version.details["epsilon"] <= 8.0
    for p in (original, dp):
        r = p.attacks["membership.threshold"]
        assert r.status == "ok" and p.strongest == "membership.threshold" and p.auc == r.metrics["auc"]
    # rounded to 1 decimal, the confident records tie: no threshold reaches 10 % FPR on the original
    assert original.attacks["membership.threshold"].metrics["tpr@fpr=0.1"] == 0.0


def _nothing_written(tmp_path: Path, db: str) -> None:
    """No model file written, and no version recorded (the store, if created at all, is empty)."""
    assert not (tmp_path / ".bastion").exists()
    if (tmp_path / "b.db").exists():
        from bastion.store import Store
        from bastion.store.versions import latest_version

        with Store.open(db) as st:
            assert latest_version(st, "digits") is None


def test_sweep_with_one_unreachable_epsilon_fails_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ε=0.01 cannot be reached in 40 epochs: exit 2 before the original is audited or ε=8 trains."""
    from bastion.api import _hardening
    from bastion.cli.main import run

    cfg = build_leaky_digits(tmp_path, n_train=60, n_test=60)
    db = f"sqlite:///{tmp_path}/b.db"
    audited: list[str] = []
    real_audit = _hardening._privacy_audit
    monkeypatch.setattr(
        _hardening, "_privacy_audit", lambda *a, **k: audited.append(a[2].name) or real_audit(*a, **k)
    )
    args = ["harden", "dp-train", "--asset", "digits", "-c", str(cfg), "--db", db, "--sweep", "8,0.01"]
    assert run([*args, "-p", "epochs=40", "-p", "batch_size=30", "-p", "delta=1e-3"]) == 2
    err = capsys.readouterr().err
    assert "ε=0.01" in err and "cannot be reached" in err and "ε=8:" not in err  # only the bad one
    assert audited == []  # no attack ran, nothing trained
    _nothing_written(tmp_path, db)


def test_single_epsilon_unreachable_or_bad_delta_is_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bastion.cli.main import run

    cfg = build_leaky_digits(tmp_path, n_train=60, n_test=60)
    db = f"sqlite:///{tmp_path}/b.db"
    args = ["harden", "dp-train", "--asset", "digits", "-c", str(cfg), "--db", db]
    assert run([*args, "--epsilon", "0.01", "-p", "epochs=40", "-p", "batch_size=30", "--delta", "1e-3"]) == 2
    assert "cannot be reached" in capsys.readouterr().err
    assert run([*args, "--epsilon", "3", "-p", "batch_size=30", "--delta", "0.05"]) == 2  # δ ≥ 1/n = 1/60
    assert "must be below 1/n" in capsys.readouterr().err
    _nothing_written(tmp_path, db)


def test_cli_sweep_input_is_checked_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Empty items, --attack without --sweep and an unwritable -o fail at once, exit 2, no version."""
    from bastion.cli.main import run

    cfg = build_leaky_digits(tmp_path, n_train=60, n_test=60)
    db = f"sqlite:///{tmp_path}/b.db"
    base = ["harden", "dp-train", "--asset", "digits", "-c", str(cfg), "--db", db]
    for extra, message in (
        (["--sweep", ""], "expected comma-separated ε values"),
        (["--sweep", "3,,8"], "expected comma-separated ε values"),
        (["--epsilon", "3", "--attack", "membership.threshold"], "--attack applies to --sweep only"),
        (["--sweep", "3", "-o", "/proc/sweep.json"], "--output /proc/sweep.json: cannot write there"),
        (["--sweep", "3", "-o", str(tmp_path)], "is a folder"),
    ):
        assert run([*base, *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert not (tmp_path / ".bastion").exists() and not list(tmp_path.glob("models/*.v*"))


def test_a_models_folder_that_cannot_be_written_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hardened model's folder is proved writable before training (was: an internal error after)."""
    from bastion.cli.main import run

    cfg = build_leaky_digits(tmp_path, n_train=60, n_test=60)
    db = f"sqlite:///{tmp_path}/b.db"
    (cfg.parent / ".bastion").mkdir(exist_ok=True)
    (cfg.parent / ".bastion" / "models").write_text("a file where the folder should be")
    args = ["harden", "dp-train", "--asset", "digits", "-c", str(cfg), "--db", db, "--epsilon", "3"]
    assert run([*args, "-p", "batch_size=30", "--delta", "1e-3"]) == 2
    err = capsys.readouterr().err
    assert "cannot store the hardened model there" in err and "internal error" not in err


def test_dp_train_passes_on_no_secure_rng_warning_and_records_secure_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """New-user trial: Opacus' "Secure RNG turned off" UserWarning leaked onto the user's stderr."""
    import warnings

    from bastion.cli.main import run

    cfg = build_leaky_digits(tmp_path, n_train=60, n_test=60)
    db = f"sqlite:///{tmp_path}/b.db"
    args = ["harden", "dp-train", "--asset", "digits", "-c", str(cfg), "--db", db, "--epsilon", "3"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run([*args, "-p", "batch_size=30", "-p", "epochs=2", "--delta", "1e-3"]) == 0
    assert not [w for w in caught if "Secure RNG" in str(w.message)]
    captured = capsys.readouterr()
    assert "Secure RNG" not in captured.err
    assert json.loads(captured.out)["details"]["secure_mode"] is False
    assert "secure_mode" in captured.err  # the summary says which run it was


def _secure_mode_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], str]:
    """Run ``harden dp-train -p secure_mode=true`` on the leaky digits, training forbidden; exit 2.

    Returns the command's arguments (without the params) and the store URL.
    """
    from bastion.cli.main import run
    from bastion.defend import dp_sgd

    monkeypatch.setattr(dp_sgd.DpTrain, "harden", lambda *a, **k: pytest.fail("trained"))
    cfg = build_leaky_digits(tmp_path, n_train=60, n_test=60)
    db = f"sqlite:///{tmp_path}/b.db"
    args = ["harden", "dp-train", "--asset", "digits", "-c", str(cfg), "--db", db, "--epsilon", "3"]
    assert run([*args, "-p", "batch_size=30", "--delta", "1e-3", "-p", "secure_mode=true"]) == 2
    return args, db


def test_dp_train_secure_mode_without_torchcsprng_is_one_error_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from bastion.cli.main import run

    monkeypatch.setitem(sys.modules, "torchcsprng", None)  # an import of it fails
    args, db = _secure_mode_refused(tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert "1 problem(s) before hardening digits" in err
    assert "secure_mode=true needs torchcsprng" in err and "pip install torchcsprng" in err
    assert "internal error" not in err and "Traceback" not in err
    _nothing_written(tmp_path, db)
    assert run([*args, "--sweep", "3", "-p", "batch_size=30", "--delta", "1e-3", "-p", "secure_mode=1"]) == 2
    assert "secure_mode=true needs torchcsprng" in capsys.readouterr().err
    _nothing_written(tmp_path, db)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            'raise OSError("libtorchcsprng.so: undefined symbol: _ZN3c1015SmallVectorBase")\n',
            "OSError: libtorchcsprng",
        ),
        ("# an API without create_random_device_generator\n", "AttributeError: module 'torchcsprng'"),
    ],
    ids=["abi-mismatch", "old-api"],
)
def test_dp_train_secure_mode_with_an_unusable_torchcsprng_is_one_error_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, body: str, said: str
) -> None:
    """Red-team round 28, F7: a torchcsprng that is installed but does not load (built for another
    torch) or lacks the generator Opacus calls gave `internal error: OSError/AttributeError`."""
    import sys

    site = tmp_path / "site"
    (site / "torchcsprng").mkdir(parents=True)
    (site / "torchcsprng" / "__init__.py").write_text(body)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "torchcsprng", raising=False)
    _args, db = _secure_mode_refused(tmp_path, monkeypatch)
    err = capsys.readouterr().err
    assert "1 problem(s) before hardening digits" in err
    assert "secure_mode=true needs torchcsprng" in err and "installed but unusable: " + said in err
    assert "internal error" not in err and "Traceback" not in err
    _nothing_written(tmp_path, db)


def test_dp_train_secure_mode_is_plumbed_to_opacus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With torchcsprng present, Opacus runs in secure mode (its generator, no seeded one); recorded."""
    import sys
    import types

    import opacus
    import torch

    made: list[str] = []
    fake = types.ModuleType("torchcsprng")
    fake.create_random_device_generator = lambda path: made.append(path) or torch.Generator()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchcsprng", fake)
    engines: list[bool] = []
    real_init = opacus.PrivacyEngine.__init__

    def spy(self: object, **kw: object) -> None:
        engines.append(bool(kw.get("secure_mode")))
        real_init(self, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(opacus.PrivacyEngine, "__init__", spy)
    cfg = build_leaky_digits(tmp_path, n_train=60, n_test=60)
    res = api.harden(
        cfg,
        "dp-train",
        asset="digits",
        params={"epsilon": 3, "delta": 1e-3, "batch_size": 30, "epochs": 2, "secure_mode": True},
        settings=load_settings(db_url=f"sqlite:///{tmp_path}/b.db"),
    )
    assert engines == [True] and set(made) == {"/dev/urandom"}  # preflight makes one too
    assert res.details["secure_mode"] is True and res.details["params"]["secure_mode"] is True
