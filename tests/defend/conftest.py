"""Small hardening contexts built in memory: a torch MLP on generated tabular data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.defend._data import config_of, tabular_data

from bastion.core.config import Asset
from bastion.defend.base import HardenContext


@pytest.fixture
def tabular_ctx(tmp_path: Path) -> Callable[..., HardenContext]:
    """``make(defence_cls, **params)``: a context on a trained DiagnosisMLP (6 features in [0, 10])."""
    import torch

    from bastion.examples.clinic_models import DiagnosisMLP
    from bastion.targets.torch_target import TorchTarget

    data = tabular_data()
    torch.manual_seed(0)
    model = DiagnosisMLP(n_features=6, hidden=16)
    xt, yt = torch.as_tensor(data["train"].x), torch.as_tensor(data["train"].y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()

    def make(
        cls: Any,
        *,
        model_class: str | None = "bastion.examples.clinic_models:DiagnosisMLP",
        features: list[dict[str, Any]] | None = None,
        **params: Any,
    ) -> HardenContext:
        spec: dict[str, Any] = {"shape": [6], "eps_unit": "fraction"}
        spec["features"] = features or [{"name": f"f{i}", "min": 0.0, "max": 10.0} for i in range(6)]
        asset = Asset.model_validate(
            {
                "name": "m",
                "kind": "model",
                "path": "m.pt",
                "framework": "torch",
                "format": "torch" if model_class else "torchscript",
                "model_class": model_class,
                "model_kwargs": {"n_features": 6, "hidden": 16} if model_class else {},
                "num_classes": 2,
                "dataset": "d",
                "input": spec,
            }
        )
        target = TorchTarget(model, name="m", input_shape=(6,), num_classes=2)
        return HardenContext(
            asset=asset,
            config=config_of(asset),
            base_dir=tmp_path,
            target=target,
            data=data,
            params=cls.parse_params(params),
            seed=0,
        )

    return make
