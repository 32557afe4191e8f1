"""defend.pgd-at and defend.trades on a small MLP: output, determinism, bounds, preflight."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
import torch

from bastion import api
from bastion.core.errors import PluginError
from bastion.core.registry import defences
from bastion.defend._training import TorchBox, bounds_for, pgd_examples, trades_examples
from bastion.defend.adversarial_training import PGDAdversarialTraining
from bastion.defend.base import HardenContext
from bastion.defend.trades import TRADES
from bastion.examples.clinic_models import DiagnosisMLP

Make = Callable[..., HardenContext]


def _load(payload: bytes) -> DiagnosisMLP:
    model = DiagnosisMLP(n_features=6, hidden=16)
    model.load_state_dict(torch.load(io.BytesIO(payload), weights_only=True))
    return model.eval()


def test_registered_with_ids() -> None:
    api.load_plugins()
    assert {"defend.pgd-at", "defend.trades", "defend.distill"} <= set(defences)


@pytest.mark.parametrize("cls", [PGDAdversarialTraining, TRADES])
def test_harden_returns_a_loadable_state_dict(tabular_ctx: Make, cls: type) -> None:
    ctx = tabular_ctx(cls, epochs=3, steps=3, epsilon=0.1, eval_steps=5)
    assert cls().preflight(ctx) == []
    out = cls().harden(ctx)
    assert out.format == "torch" and out.extension == ".pt"
    assert out.model_class == "bastion.examples.clinic_models:DiagnosisMLP"
    model = _load(out.payload)
    d = out.details
    assert d["epochs"] == 3 and d["epsilon"] == 0.1 and d["eps_unit"] == "fraction"
    for key in ("train_accuracy", "test_accuracy", "robust_test_accuracy", "robust_test_accuracy_before"):
        assert 0.0 <= d[key] <= 1.0
    x = torch.as_tensor(ctx.data["test"].x)
    acc = float((model(x).argmax(1).numpy() == ctx.data["test"].y).mean())
    assert acc == pytest.approx(d["test_accuracy"], abs=1e-6)
    assert acc > 0.8


@pytest.mark.parametrize("cls", [PGDAdversarialTraining, TRADES])
def test_deterministic_under_seed(tabular_ctx: Make, cls: type) -> None:
    a = cls().harden(tabular_ctx(cls, epochs=2, steps=2, eval_steps=0))
    b = cls().harden(tabular_ctx(cls, epochs=2, steps=2, eval_steps=0))
    sa, sb = torch.load(io.BytesIO(a.payload)), torch.load(io.BytesIO(b.payload))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_original_model_is_not_changed(tabular_ctx: Make) -> None:
    ctx = tabular_ctx(PGDAdversarialTraining, epochs=2, steps=2, eval_steps=0)
    before = {k: v.clone() for k, v in ctx.target.module.state_dict().items()}
    PGDAdversarialTraining().harden(ctx)
    after = ctx.target.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_adversarial_training_raises_robust_accuracy(tabular_ctx: Make) -> None:
    ctx = tabular_ctx(PGDAdversarialTraining, epochs=15, steps=5, epsilon=0.08, eval_steps=10)
    d = PGDAdversarialTraining().harden(ctx).details
    assert d["robust_test_accuracy"] > d["robust_test_accuracy_before"] + 0.03
    assert d["test_accuracy"] >= d["test_accuracy_before"] - 0.05


def test_scratch_init_resets_weights(tabular_ctx: Make) -> None:
    ctx = tabular_ctx(PGDAdversarialTraining, epochs=1, steps=1, eval_steps=0, init="scratch", lr=1e-9)
    out = PGDAdversarialTraining().harden(ctx)
    state = torch.load(io.BytesIO(out.payload))
    orig = ctx.target.module.state_dict()
    assert not torch.allclose(state["net.0.weight"], orig["net.0.weight"])


@pytest.mark.parametrize("fn", ["pgd", "trades"])
def test_examples_stay_in_the_box(tabular_ctx: Make, fn: str) -> None:
    feats = [{"name": f"f{i}", "min": 0.0, "max": 10.0} for i in range(6)]
    feats[0]["immutable"] = True
    ctx = tabular_ctx(PGDAdversarialTraining, features=feats)
    bounds = bounds_for(ctx)
    box = TorchBox.of(bounds, 0.1, 0.05)
    x = torch.as_tensor(ctx.data["test"].x)
    y = torch.as_tensor(ctx.data["test"].y)
    gen = torch.Generator().manual_seed(0)
    model = ctx.target.module
    adv = pgd_examples(model, x, y, box, 5, gen) if fn == "pgd" else trades_examples(model, x, box, 5, gen)
    diff = (adv - x).abs().numpy()
    assert diff.max() <= 0.1 * 10.0 + 1e-5  # ε = 0.1 of the range 10
    assert diff[:, 0].max() == 0.0  # immutable
    assert adv.min() >= 0.0 and adv.max() <= 10.0
    assert diff.max() > 0.5  # it moved


def test_preflight_lists_torchscript_and_eps(tabular_ctx: Make) -> None:
    ctx = tabular_ctx(PGDAdversarialTraining, model_class=None)
    problems = PGDAdversarialTraining().preflight(ctx)
    assert any("needs model_class to save a state_dict" in p for p in problems)
    ctx = tabular_ctx(PGDAdversarialTraining, epsilon=2.0)
    problems = PGDAdversarialTraining().preflight(ctx)
    assert any("epsilon 2 is beyond the input range" in p for p in problems)


def test_preflight_needs_a_labelled_train_split(tabular_ctx: Make) -> None:
    ctx = tabular_ctx(TRADES)
    ctx.data = {"test": ctx.data["test"]}
    assert any("labelled train split" in p for p in TRADES().preflight(ctx))


@pytest.mark.parametrize(
    "raw",
    [
        {"epsilon": -0.1},
        {"steps": 0},
        {"epochs": 0},
        {"lr": 0},
        {"batch_size": 0},
        {"beta": -1},
        {"bogus": 1},
    ],
)
def test_params_have_bounds(raw: dict[str, float]) -> None:
    with pytest.raises(PluginError):
        TRADES.parse_params(raw)


def test_trades_beta_reported(tabular_ctx: Make) -> None:
    out = TRADES().harden(tabular_ctx(TRADES, epochs=1, steps=1, beta=2.5, eval_steps=0))
    assert out.details["beta"] == 2.5
    assert np.isfinite(out.details["final_loss"])
