"""The training configuration: plain data, validated before anything is built."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from miles_tune.errors import ConfigError
from miles_tune.value_types import parse_annotation, show

OPTIMIZERS = ("adam", "adamw", "sgd")
U_SOURCES = ("val", "train")
FUSIONS = ("concat", "sum")
AMP = ("off", "bf16")
# metric names per task (miles_tune.metrics computes them; kept here so config stays torch-free)
MULTICLASS_METRICS = ("acc", "f1_macro")
MULTILABEL_METRICS = ("f1_micro", "f1_macro", "f1_samples", "f1_weighted", "acc")
METRICS = tuple(dict.fromkeys(MULTICLASS_METRICS + MULTILABEL_METRICS))
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
SEED_LIMIT = 2**32  # numpy's seed range; larger seeds overflow the loop's derived torch seeds


@dataclass
class TrainConfig:
    """Everything that determines a run. Same config + same seed = same metrics on CPU."""

    dataset: str = "synthetic"
    data: dict[str, Any] = field(default_factory=dict)  # dataset keyword arguments
    method: str = "miles"
    method_args: dict[str, Any] = field(default_factory=dict)  # e.g. {"tau": 0.2, "mu": 0.5}
    fusion: str = "concat"
    fusion_width: int | None = None  # sum fusion: common width (default: widest encoder)
    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)  # {modality: {"name": .., **kwargs}}
    epochs: int = 30
    lr: float = 1e-3
    # each encoder's rate is lr × lr_mult[modality] (default 1; the fusion and heads run at lr);
    # what PBT mutates (`--scheduler pbt`), and a fixed per-modality setting otherwise
    lr_mult: dict[str, float] = field(default_factory=dict)
    optimizer: str = "adam"  # the paper: Adam(β = 0.9, 0.999)
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    # step decay (torch's StepLR): every lr_step_size epochs, every group's rate × lr_gamma
    # (OGM's official setting: SGD, step 70 of 100 epochs, γ 0.1); None = no decay
    lr_step_size: int | None = None
    lr_gamma: float = 0.1
    batch_size: int = 128
    eval_batch_size: int = 1024
    metric: str | None = None  # M of Eq. 4 and model selection; None = the dataset's default
    u_source: str = "val"  # split whose metrics give u ("train" = the paper's Table VI)
    heads_with_encoders: bool = False  # unimodal heads in their encoder's param group
    seed: int = 0
    device: str = "auto"  # "auto" = cuda when available, else cpu
    num_workers: int = 0
    # mixed precision: "bf16" autocasts forward and loss to bfloat16 (no loss scaling needed);
    # "off" (the default) trains in float32. Meant for GPUs: on a CPU bf16 is usually slower.
    amp: str = "off"
    channels_last: bool = False  # 4-D weights and inputs in NHWC (faster convolutions on GPUs)
    # keep the splits on the device for the whole run (no copy per batch): None = on a GPU, when
    # the splits take at most DEVICE_DATA_LIMIT bytes as model input (S-MNIST, LUMA, mfeat, synthetic)
    data_on_device: bool | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted((k for k in values if k not in known), key=str)
        if unknown:
            raise ConfigError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Refuse values that cannot work, naming the setting: first every field's type (from
        its annotation, so a new field is checked too), then the ranges that matter."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            vt = parse_annotation(f.type)
            if not vt.accepts(value):
                raise ConfigError(f"{f.name} must be {vt.describe()}, got {show(value)}")

        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not _finite(self.lr) or self.lr <= 0:
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        for modality, mult in self.lr_mult.items():
            if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not _finite(mult) or mult <= 0:
                raise ConfigError(f"lr_mult.{modality} must be a positive number, got {show(mult)}")
        if not _finite(self.weight_decay) or self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not (_finite(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        if self.lr_step_size is not None and self.lr_step_size < 1:
            raise ConfigError(f"lr_step_size must be a positive integer or null, got {self.lr_step_size!r}")
        if not (_finite(self.lr_gamma) and 0 < self.lr_gamma <= 1):
            raise ConfigError(f"lr_gamma must lie in (0, 1], got {self.lr_gamma!r}")
        if self.fusion_width is not None and self.fusion_width < 1:
            raise ConfigError(f"fusion_width must be a positive integer or null, got {self.fusion_width!r}")
        if self.num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {self.num_workers!r}")
        if not 0 <= self.seed < SEED_LIMIT:
            raise ConfigError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("u_source", U_SOURCES),
            ("fusion", FUSIONS),
            ("amp", AMP),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {show(getattr(self, name))}")
        if self.metric is not None and self.metric not in METRICS:
            raise ConfigError(
                f"metric must be null (the dataset's default) or one of {METRICS}, got {show(self.metric)}"
            )
        if not DEVICE.fullmatch(self.device):
            raise ConfigError(
                f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {show(self.device)}"
            )


def _finite(value: float) -> bool:
    """math.isfinite that also says no to ints too large for a float (1e400 typed as digits)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
