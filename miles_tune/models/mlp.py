"""MLP encoder for vector modalities (and anything small enough to flatten)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from miles_tune.errors import ConfigError
from miles_tune.models import register_encoder


class MLPEncoder(nn.Module):
    """Linear → ReLU (→ Dropout) blocks; the last hidden width is ``out_dim``."""

    def __init__(self, in_dim: int, hidden_dims: Sequence[int] = (128, 128), dropout: float = 0.0) -> None:
        super().__init__()
        if not hidden_dims:
            raise ConfigError("mlp needs at least one hidden layer")
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden_dims:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))  # (B, ...) -> (B, in_dim) -> (B, out_dim)


@register_encoder("mlp")
def mlp(in_dim: int, hidden_dims: Sequence[int] = (128, 128), dropout: float = 0.0) -> MLPEncoder:
    return MLPEncoder(in_dim, tuple(hidden_dims), dropout)
