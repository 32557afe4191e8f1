"""Generated data for the defence tests (tabular blobs, tiny images) and a config wrapper."""

from __future__ import annotations

import numpy as np

from bastion.core.check import Split
from bastion.core.config import Asset, ProjectConfig


def _split(x: np.ndarray, y: np.ndarray) -> Split:
    return Split(x=x.astype(np.float32), y=y.astype(np.int64), index=np.arange(len(x)))


def tabular_data(seed: int = 0, n: int = 240, d: int = 6) -> dict[str, Split]:
    """Two Gaussian blobs in ``[0, 10]^d``; train / test / population."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = np.clip(5.0 + (2 * y[:, None] - 1) * 1.2 + rng.normal(0, 1.0, (n, d)), 0.0, 10.0)
    a, b = n // 2, 3 * n // 4
    return {"train": _split(x[:a], y[:a]), "test": _split(x[a:b], y[a:b]), "population": _split(x[b:], y[b:])}


def image_data(seed: int = 0, n: int = 200) -> dict[str, Split]:
    """4×4 one-channel images in ``[0, 1]``: class 1 is bright on the left half."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.uniform(0, 0.5, (n, 1, 4, 4))
    x[y == 1, :, :, :2] += 0.5
    a, b = n // 2, 3 * n // 4
    return {"train": _split(x[:a], y[:a]), "test": _split(x[a:b], y[a:b]), "population": _split(x[b:], y[b:])}


def config_of(asset: Asset) -> ProjectConfig:
    return ProjectConfig.model_validate(
        {"version": 1, "project": {"name": "t"}, "assets": [asset.model_dump(exclude_none=True)]}
    )
