"""Tiny torch model classes that state_dict tests name as ``tests.targets.tiny_models:<Class>``."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Two-layer perceptron: ``(N, in_features)`` -> logits ``(N, num_classes)``."""

    def __init__(self, in_features: int = 30, hidden: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class DeepMLP(nn.Module):
    """Another architecture: its state_dict keys differ from :class:`MLP`'s."""

    def __init__(self, in_features: int = 30, hidden: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


class DropoutMLP(MLP):
    """:class:`MLP` with dropout: outputs are random unless the module is in eval mode."""

    def __init__(self, in_features: int = 30, hidden: int = 16, num_classes: int = 2) -> None:
        super().__init__(in_features, hidden, num_classes)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


class NotAModule:
    """A class that is not an ``nn.Module``."""


NOT_A_CLASS = 3
