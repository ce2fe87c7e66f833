"""The two fusions of the MILES paper: one linear layer on the fused features.

- ``concat``: logits = W [z_1; ...; z_M] + b
- ``sum``:    logits = W (z_1 + ... + z_M) + b   (feature-level sum; needs one common width,
  which :class:`~miles_tune.models.joint.JointFusionModel` guarantees with per-modality projections)

Both expose ``modality_logits``: each modality's share of the fused logits (W_m z_m + b/M),
the "fusion slice" scores that OGM's official code uses.

Both are affine in the features (``affine = True``): f(z) = Σ_m W_m z_m + b. The loop's
missing-modality metrics rely on it. With z_m replaced by a vector μ,
f(z | z_m := μ) = f(z | z_m := 0) + [f(0, …, μ, …, 0) − f(0, …, 0)], so the fused logits with
z_m at its training mean follow from the zeroed ones once the mean is known, without keeping
the features or running the encoders again. A new fusion that is not affine must say
``affine = False``; the loop then refuses to compute those metrics rather than get them wrong.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from miles_tune.registry import Registry


class ConcatFusion(nn.Module):
    affine: ClassVar[bool] = True  # see the module docstring

    def __init__(self, in_dims: list[int], num_classes: int) -> None:
        super().__init__()
        self.in_dims = list(in_dims)
        self.linear = nn.Linear(sum(in_dims), num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.linear(torch.cat(features, dim=1))  # M × (B, d_m) -> (B, Σd) -> (B, C)

    def modality_logits(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        weights = torch.split(self.linear.weight, self.in_dims, dim=1)
        bias = self.linear.bias / len(features)
        return [z @ w.t() + bias for z, w in zip(features, weights, strict=True)]


class SumFusion(nn.Module):
    affine: ClassVar[bool] = True  # see the module docstring

    def __init__(self, in_dims: list[int], num_classes: int) -> None:
        super().__init__()
        if len(set(in_dims)) != 1:
            raise ValueError(f"sum fusion needs one common feature width, got {in_dims}")
        self.in_dims = list(in_dims)
        self.linear = nn.Linear(in_dims[0], num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.linear(torch.stack(features).sum(0))  # M × (B, d) -> (B, d) -> (B, C)

    def modality_logits(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        bias = self.linear.bias / len(features)
        return [z @ self.linear.weight.t() + bias for z in features]


FUSIONS: Registry[nn.Module] = Registry("fusion")
FUSIONS.register("concat")(ConcatFusion)
FUSIONS.register("sum")(SumFusion)


def create_fusion(name: str, in_dims: list[int], num_classes: int) -> nn.Module:
    return FUSIONS.create(name, in_dims=in_dims, num_classes=num_classes)
