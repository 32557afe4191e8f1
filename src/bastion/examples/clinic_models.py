"""Model classes of the clinic example, shipped in the package so state_dicts can be loaded.

``bastion.yaml`` names them as ``bastion.examples.clinic_models:DiagnosisMLP`` and
``bastion.examples.clinic_models:DigitsCNN``. Importing this module imports torch.
"""

from __future__ import annotations

import torch
from torch import nn


class DiagnosisMLP(nn.Module):
    """Breast-cancer diagnosis MLP on the 30 raw features (standardisation inside the model).

    Args:
        n_features: input features (30).
        hidden: hidden units.
        n_classes: output classes (2: malignant, benign).

    Shapes: ``x: (N, n_features)`` raw feature units → logits ``(N, n_classes)``.
    """

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, n_features: int = 30, hidden: int = 64, n_classes: int = 2) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for raw features ``x``."""
        return self.net((x - self.mean) / self.scale)


class DigitsCNN(nn.Module):
    """A small CNN for scikit-learn's 8×8 digits scaled to [0, 1].

    Shapes: ``x: (N, 1, 8, 8)`` in [0, 1] → logits ``(N, 10)``.
    """

    def __init__(self, channels: int = 16, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * channels * 16, 64), nn.ReLU(), nn.Linear(64, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images ``x``."""
        return self.head(self.features(x))
