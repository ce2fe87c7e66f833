"""ResNet encoders in plain torch, with torchvision's parameter names.

Why not torchvision: it is not a dependency of this project (it pins torch
versions tightly and is not installable everywhere we run), yet its ImageNet
checkpoints are the usual starting point for visual encoders. So the modules
here reproduce torchvision's layout *name for name* (``conv1``, ``bn1``,
``layer1.0.downsample.0`` ...) and :func:`load_torchvision_state_dict` loads
its checkpoints directly.

Used as encoders, the networks have no classifier by default: ``forward``
returns the pooled feature vector, of width ``out_dim``. Two switches adapt them
to the small inputs common in multimodal benchmarks:

* ``small_input=True``: CIFAR-style stem (3x3 stride-1 conv, no max-pool) so a
  32x32 image is not shrunk to 8x8 before the first residual block;
* ``in_channels=1``: greyscale images and spectrograms.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from miles_tune.errors import ConfigError
from miles_tune.models import create_encoder, register_encoder

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "load_torchvision_state_dict",
    "resnet6",
    "resnet10",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet_from_torchvision_checkpoint",
]


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    # bias=False everywhere: every conv is followed by a BN whose shift makes a bias redundant.
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs plus identity (ResNet-18/34); output has ``planes`` channels."""

    expansion: int = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        """The BN before the residual sum (zeroed by ``zero_init_residual``)."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))  # (B, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) plus identity (ResNet-50).

    The stride sits on the 3x3 conv ("ResNet v1.5", as in torchvision), which is
    slightly more accurate than striding the first 1x1 conv and is what its
    checkpoints were trained with.
    """

    expansion: int = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        """The BN before the residual sum (zeroed by ``zero_init_residual``)."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))  # (B, planes, H, W)
        out = self.relu(self.bn2(self.conv2(out)))  # (B, planes, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (B, 4*planes, H/s, W/s)
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """A ResNet feature extractor: ``forward(x)`` maps (B, C, H, W) to (B, out_dim).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, 1 to 4 stages; stage ``k`` (1-based) is module
            ``layer{k}`` with ``width * 2**(k-1)`` planes, stride 1 for the first
            stage and 2 after.
        in_channels: input channels of ``conv1`` (1 for spectrograms/greyscale).
        small_input: CIFAR-style stem for ~28..96 px inputs: 3x3 stride-1 ``conv1``
            and no max-pool (``maxpool`` is an ``nn.Identity`` so names do not move).
        width: planes of the first stage (64 in torchvision).
        zero_init_residual: zero each block's last BN gamma so every block starts
            as the identity; helps large-batch training (Goyal et al., 2017).
        num_classes: if given, add a linear classifier ``fc``; an encoder does not need it.

    Attributes:
        feature_dim: width of the pooled features (before ``fc``).
        out_dim: width of what ``forward`` returns: ``feature_dim`` without ``fc``,
            ``num_classes`` with it.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        *,
        in_channels: int = 3,
        small_input: bool = False,
        width: int = 64,
        zero_init_residual: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        layers = list(layers)
        if not 1 <= len(layers) <= 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be 1 to 4 positive block counts, got {layers}")
        if in_channels < 1:
            raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
        if width < 1:
            raise ConfigError(f"width must be >= 1, got {width}")
        if num_classes is not None and num_classes < 1:
            raise ConfigError(f"num_classes must be None or >= 1, got {num_classes}")

        self.in_channels = in_channels
        self.small_input = small_input
        if small_input:
            # Small images: keep full resolution into layer1 (no /4 stem).
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        )

        inplanes = width
        self._stage_names: tuple[str, ...] = tuple(f"layer{k + 1}" for k in range(len(layers)))
        for k, (name, n_blocks) in enumerate(zip(self._stage_names, layers, strict=True)):
            stride = 1 if k == 0 else 2
            stage, inplanes = self._make_stage(block, inplanes, width * 2**k, int(n_blocks), stride)
            self.add_module(name, stage)

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim: int = inplanes
        self.fc: nn.Linear | None = None
        if num_classes is not None:
            self.fc = nn.Linear(self.feature_dim, num_classes)
        self.out_dim: int = self.feature_dim if num_classes is None else num_classes

        self._init_weights(zero_init_residual)

    @staticmethod
    def _make_stage(
        block: Block, inplanes: int, planes: int, n_blocks: int, stride: int
    ) -> tuple[nn.Sequential, int]:
        out_planes = planes * block.expansion
        downsample: nn.Module | None = None
        if stride != 1 or inplanes != out_planes:
            # Project the shortcut when the block changes resolution or channels.
            downsample = nn.Sequential(_conv1x1(inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))
        blocks: list[nn.Module] = [block(inplanes, planes, stride, downsample)]
        blocks += [block(out_planes, planes) for _ in range(1, n_blocks)]
        return nn.Sequential(*blocks), out_planes

    def _init_weights(self, zero_init_residual: bool) -> None:
        # Same scheme as torchvision, so a model trained from scratch here behaves like theirs.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock | Bottleneck):
                    nn.init.zeros_(m.last_bn().weight)

    def stages(self) -> list[nn.Sequential]:
        """The residual stages in order (``layer1``, ``layer2``, ...)."""
        return [getattr(self, name) for name in self._stage_names]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, (B, C, H, W) -> (B, feature_dim), ignoring ``fc``."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(f"expected input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        x = self.relu(self.bn1(self.conv1(x)))  # (B, width, H/2, W/2); (B, width, H, W) if small_input
        x = self.maxpool(x)  # (B, width, H/4, W/4); unchanged if small_input
        for stage in self.stages():
            x = stage(x)  # stage k: (B, width * 2**(k-1) * expansion, H', W'), H' halved for k > 1
        x = self.avgpool(x)  # (B, feature_dim, 1, 1)
        return torch.flatten(x, 1)  # (B, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, out_dim): features, or logits when ``fc`` exists."""
        feats = self.forward_features(x)
        return feats if self.fc is None else self.fc(feats)  # (B, out_dim)


# --- registered variants ---------------------------------------------------------------------
# Each factory spells its keyword arguments out (no **kwargs) so the registry can refuse a typo
# in a config before anything is built.


# name -> (block, blocks per stage, what it is); ResNet-6/-10 are not defined by the MILES
# paper: these are the common readings (two stages of one block; four stages of one block).
ARCHITECTURES: dict[str, tuple[type[nn.Module], list[int], str]] = {
    "resnet6": (BasicBlock, [1, 1], "two BasicBlock stages (layer1, layer2 only); out_dim 2*width"),
    "resnet10": (BasicBlock, [1, 1, 1, 1], "one BasicBlock per stage, four stages; out_dim 8*width"),
    "resnet18": (BasicBlock, [2, 2, 2, 2], "ResNet-18; out_dim 8*width"),
    "resnet34": (BasicBlock, [3, 4, 6, 3], "ResNet-34; out_dim 8*width"),
    "resnet50": (Bottleneck, [3, 4, 6, 3], "ResNet-50 v1.5; out_dim 32*width (2048 at width 64)"),
}


def _factory(name: str) -> Callable[..., ResNet]:
    """Build and register the factory for one architecture (its keyword arguments are checked)."""
    block, layers, doc = ARCHITECTURES[name]

    def build(
        *,
        in_channels: int = 3,
        small_input: bool = False,
        width: int = 64,
        zero_init_residual: bool = False,
        num_classes: int | None = None,
    ) -> ResNet:
        return ResNet(
            block,
            layers,
            in_channels=in_channels,
            small_input=small_input,
            width=width,
            zero_init_residual=zero_init_residual,
            num_classes=num_classes,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    return register_encoder(name)(build)


resnet6 = _factory("resnet6")
resnet10 = _factory("resnet10")
resnet18 = _factory("resnet18")
resnet34 = _factory("resnet34")
resnet50 = _factory("resnet50")


_VARIANTS = tuple(ARCHITECTURES)


# --- torchvision checkpoints -----------------------------------------------------------------


def _name_keys(keys: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown}, ... ({len(keys) - limit} more)"


def load_torchvision_state_dict(
    model: ResNet, state_dict: Mapping[str, torch.Tensor], *, strict: bool = True
) -> None:
    """Load a torchvision ResNet checkpoint (same key names) into ``model`` in place.

    Adaptations, so an ImageNet checkpoint can seed an encoder:

    * ``fc.*`` keys are dropped when the model has no ``fc`` (the usual encoder case).
    * If the model's ``conv1`` takes 1 channel and the checkpoint's takes 3, the RGB
      filters are **summed** into one. A greyscale image ``g`` then gives exactly
      the response the RGB model gives to ``(g, g, g)``, which keeps the pretrained
      activation statistics (and so the BN running stats) valid.
    * ``*.num_batches_tracked`` buffers missing from old checkpoints (saved before
      torch 0.4.1) are tolerated; they only matter for BN momentum=None.

    With ``strict=True`` any other missing or unexpected key, or shape mismatch,
    raises ``ValueError`` naming the keys; nothing is loaded in that case. With
    ``strict=False`` the matching tensors are loaded, the rest is left as
    initialised and a warning lists what was skipped (e.g. the 7x7 ``conv1`` of an
    ImageNet checkpoint when the model uses ``small_input=True``).
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"expected a state dict (a mapping of names to tensors), got {type(state_dict)}")
    own = model.state_dict()
    ckpt: dict[str, torch.Tensor] = dict(state_dict)
    if model.fc is None:
        ckpt = {k: v for k, v in ckpt.items() if not k.startswith("fc.")}

    w = ckpt.get("conv1.weight")
    if isinstance(w, torch.Tensor) and w.dim() == 4 and w.shape[1] == 3 and own["conv1.weight"].shape[1] == 1:
        # (out, 3, k, k) -> (out, 1, k, k): conv(g, sum_c W_c) == sum_c conv(g, W_c).
        ckpt["conv1.weight"] = w.float().sum(dim=1, keepdim=True).to(w.dtype)

    missing = [k for k in own if k not in ckpt and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in ckpt if k not in own]
    mismatched = [
        k
        for k in own
        if k in ckpt and (not isinstance(ckpt[k], torch.Tensor) or ckpt[k].shape != own[k].shape)
    ]

    def shape_of(v: object) -> str:
        return str(tuple(v.shape)) if isinstance(v, torch.Tensor) else type(v).__name__

    problems = []
    if missing:
        problems.append(f"missing keys: {_name_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_name_keys(unexpected)}")
    if mismatched:
        detail = [f"{k} (checkpoint {shape_of(ckpt[k])}, model {tuple(own[k].shape)})" for k in mismatched]
        problems.append(f"shape mismatches: {_name_keys(detail)}")

    if problems and strict:
        raise ConfigError("checkpoint does not fit the model; " + "; ".join(problems))
    if problems:
        warnings.warn("partial checkpoint load; " + "; ".join(problems), stacklevel=2)

    bad = set(mismatched)
    to_load = {k: v for k, v in ckpt.items() if k in own and k not in bad}
    for k in own:
        # Fill absent counters with the model's own so load_state_dict never sees them missing.
        if k.endswith("num_batches_tracked") and k not in to_load:
            to_load[k] = own[k]
    with torch.no_grad():
        model.load_state_dict(to_load, strict=not problems)


def resnet_from_torchvision_checkpoint(
    name: str, path: str | os.PathLike[str], *, strict: bool = True, **kw: object
) -> ResNet:
    """Build encoder ``name`` with factory kwargs ``kw`` and load a torchvision checkpoint file.

    The file is read with ``weights_only=True`` (no arbitrary unpickling) on CPU;
    see :func:`load_torchvision_state_dict` for the adaptations applied.
    """
    if name not in _VARIANTS:
        raise ConfigError(f"{name!r} is not a ResNet encoder; choose from {', '.join(_VARIANTS)}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint file at {str(p)!r}")
    model = create_encoder(name, **kw)
    assert isinstance(model, ResNet)
    state_dict = torch.load(p, map_location="cpu", weights_only=True)
    load_torchvision_state_dict(model, state_dict, strict=strict)
    return model
