"""Batch transforms applied when a split is read, identically for the cache and the raw path.

A file dataset stores each sample in a compact *stored* form (e.g. a 224×224 RGB frame
as uint8) and turns a batch of them into model input here (uint8 → float, normalise,
upsample). Both the memory-mapped cache and the decode-every-time path call the same
transform on the same stored arrays, so their tensors are identical.

Transforms are small classes, not lambdas, so splits can be pickled into DataLoader
workers. Each maps a batch ``(B, ...)`` to a batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


class Transform:
    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    def __init__(self, *steps: Transform) -> None:
        self.steps = steps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return x


class ToFloat(Transform):
    """Cast to float32, dividing by ``scale`` (255 for uint8 images)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        return x / self.scale if self.scale != 1.0 else x


class HWCToCHW(Transform):
    """(B, H, W, C) -> (B, C, H, W), contiguous."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2).contiguous()


class Normalize(Transform):
    """Per-channel ``(x - mean) / std`` on (B, C, H, W)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


class Standardize(Transform):
    """Scalar or per-feature ``(x - mean) / std`` with statistics of the training split."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        self.mean = mean
        self.std = std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=x.dtype)
        std = torch.as_tensor(self.std, dtype=x.dtype)
        return (x - mean) / std


class Resize(Transform):
    """Bilinear resize of (B, C, H, W) to ``size`` (align_corners=False)."""

    def __init__(self, size: tuple[int, int], antialias: bool = False) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.antialias = antialias

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        return F.interpolate(
            x, size=self.size, mode="bilinear", align_corners=False, antialias=self.antialias
        )


class ToLong(Transform):
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.long()


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_to_input(
    mean: Sequence[float], std: Sequence[float], size: tuple[int, int] | None = None
) -> Transform:
    """Stored uint8 HWC images -> normalised float CHW (optionally upsampled to ``size``)."""
    steps: list[Transform] = [HWCToCHW(), ToFloat(255.0)]
    if size is not None:
        steps.append(Resize(size))
    steps.append(Normalize(mean, std))
    return Compose(*steps)
