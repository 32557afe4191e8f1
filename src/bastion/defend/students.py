"""Small student models for ``defend.distill``, shipped in the package so their state_dicts load.

A distilled version names its class as ``bastion.defend.students:StudentMLP`` or
``bastion.defend.students:StudentCNN`` with ``model_kwargs``. Importing this module imports torch
(it is loaded only when a student is built or loaded).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class StudentMLP(nn.Module):
    """A one-hidden-layer MLP on flattened inputs, standardised inside the model.

    Args:
        n_features: input values per sample (the product of the input shape).
        hidden: hidden units.
        n_classes: output classes.

    Shapes: ``x: (N, *input_shape)`` with ``prod(input_shape) == n_features`` → logits ``(N, n_classes)``.
    The buffers ``mean`` and ``scale`` (shape ``(n_features,)``) are set from the train split
    before training and saved with the weights.
    """

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, n_features: int, hidden: int = 32, n_classes: int = 2) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for ``x``."""
        flat = x.reshape(len(x), -1)
        return self.net((flat - self.mean) / self.scale)


class StudentCNN(nn.Module):
    """One convolution, a 2×2 max-pool and a linear head: a small student for small images.

    Args:
        channels: convolution channels.
        n_classes: output classes.
        in_channels: image channels.
        height: image height (8 for scikit-learn digits).
        width: image width.

    Shapes: ``x: (N, in_channels, height, width)`` → logits ``(N, n_classes)``.
    """

    def __init__(
        self, channels: int = 8, n_classes: int = 10, in_channels: int = 1, height: int = 8, width: int = 8
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        )
        flat = channels * math.prod((height // 2, width // 2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images ``x``."""
        return self.head(self.features(x))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
