"""The training configuration: plain data, validated before anything is built."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("adam", "adamw", "sgd")
U_SOURCES = ("val", "train")
FUSIONS = ("concat", "sum")


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
    optimizer: str = "adam"  # the paper: Adam(β = 0.9, 0.999)
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    batch_size: int = 128
    eval_batch_size: int = 1024
    metric: str | None = None  # M of Eq. 4 and model selection; None = the dataset's default
    u_source: str = "val"  # split whose metrics give u ("train" = the paper's Table VI)
    heads_with_encoders: bool = False  # unimodal heads in their encoder's param group
    seed: int = 0
    device: str = "auto"  # "auto" = cuda when available, else cpu
    num_workers: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Refuse values that cannot work, naming the setting."""

        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        for name in ("epochs", "batch_size", "eval_batch_size"):
            positive_int(name)
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.u_source not in U_SOURCES:
            raise ValueError(f"u_source must be one of {U_SOURCES}, got {self.u_source!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers!r}")
