"""defend.distill: students shipped in the package, trained from soft labels."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.defend._data import config_of, image_data

from bastion.core.config import Asset
from bastion.defend.base import HardenContext
from bastion.defend.distillation import Distillation
from bastion.defend.students import StudentCNN, StudentMLP, count_parameters
from bastion.targets.torch_target import TorchTarget, load_state_dict_model

Make = Callable[..., HardenContext]


def test_mlp_student_from_tabular_teacher(tabular_ctx: Make) -> None:
    ctx = tabular_ctx(Distillation, epochs=30, hidden=8)
    assert Distillation().preflight(ctx) == []
    out = Distillation().harden(ctx)
    assert out.model_class == "bastion.defend.students:StudentMLP"
    assert out.model_kwargs == {"n_features": 6, "hidden": 8, "n_classes": 2}
    model = load_state_dict_model("s.pt", out.model_class, out.model_kwargs, model_bytes=out.payload)
    d = out.details
    assert d["student_parameters"] == count_parameters(model) < d["teacher_parameters"]
    assert d["test_accuracy"] >= d["teacher_test_accuracy"] - 0.1
    assert d["agreement_with_teacher"] > 0.85


def test_deterministic_and_population(tabular_ctx: Make) -> None:
    a = Distillation().harden(tabular_ctx(Distillation, epochs=3, use_population=True))
    b = Distillation().harden(tabular_ctx(Distillation, epochs=3, use_population=True))
    assert a.details["train_rows"] == 120 + 60
    sa, sb = torch.load(io.BytesIO(a.payload)), torch.load(io.BytesIO(b.payload))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_cnn_student_for_images(tmp_path: Path) -> None:
    data = image_data()
    torch.manual_seed(0)
    teacher = StudentCNN(channels=6, n_classes=2, height=4, width=4)
    opt = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    xt, yt = torch.as_tensor(data["train"].x), torch.as_tensor(data["train"].y)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(teacher(xt), yt).backward()
        opt.step()
    asset = Asset.model_validate(
        {
            "name": "img",
            "path": "t.ts",
            "framework": "torch",
            "format": "torchscript",
            "num_classes": 2,
            "dataset": "d",
            "input": {"shape": [1, 4, 4], "range": [0, 1]},
        }
    )
    ctx = HardenContext(
        asset=asset,
        config=config_of(asset),
        base_dir=tmp_path,
        target=TorchTarget(teacher.eval(), name="img", input_shape=(1, 4, 4), num_classes=2),
        data=data,
        params=Distillation.parse_params({"epochs": 60, "channels": 4, "lr": 0.01}),
        seed=0,
    )
    assert Distillation().preflight(ctx) == []  # a TorchScript teacher is fine: the student ships
    out = Distillation().harden(ctx)
    assert out.model_class == "bastion.defend.students:StudentCNN", out.details
    assert out.details["teacher_test_accuracy"] > 0.9, out.details
    student = load_state_dict_model("s.pt", out.model_class, out.model_kwargs, model_bytes=out.payload)
    pred = student(torch.as_tensor(data["test"].x)).argmax(1).numpy()
    assert float((pred == data["test"].y).mean()) > 0.9


def test_preflight_problems(tabular_ctx: Make) -> None:
    ctx = tabular_ctx(Distillation, architecture="cnn", use_population=True)
    ctx.data = {k: v for k, v in ctx.data.items() if k != "population"}
    problems = Distillation().preflight(ctx)
    assert any("architecture cnn needs (C, H, W)" in p for p in problems)
    assert any("no population split" in p for p in problems)


def test_student_mlp_flattens_and_standardises() -> None:
    m = StudentMLP(n_features=4, hidden=3, n_classes=2)
    m.mean.fill_(1.0)
    out = m(torch.ones(5, 2, 2))
    assert out.shape == (5, 2)
    assert np.allclose(out.detach().numpy(), out.detach().numpy()[0])


@pytest.mark.parametrize("raw", [{"temperature": 0.5}, {"alpha": 2}, {"epochs": 0}, {"architecture": "rnn"}])
def test_params_have_bounds(raw: dict[str, object]) -> None:
    from bastion.core.errors import PluginError

    with pytest.raises(PluginError):
        Distillation.parse_params(raw)
