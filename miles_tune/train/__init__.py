"""The training loop (:mod:`miles_tune.train.loop`), usable without Ray.

``python -m miles_tune.train`` runs the command line of :mod:`miles_tune.cli`, which sits
above the loop: the loop never imports it.
"""

from __future__ import annotations

from miles_tune.train.loop import (
    CHECKPOINT_VERSION,
    CheckpointError,
    NonFiniteLossError,
    Trainer,
    build_model,
    build_optimizer,
    read_checkpoint,
    read_history,
    resolve_device,
    seed_everything,
    split_holdout,
    train_pass,
    write_history,
)

__all__ = [
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "NonFiniteLossError",
    "Trainer",
    "build_model",
    "build_optimizer",
    "read_checkpoint",
    "read_history",
    "resolve_device",
    "seed_everything",
    "split_holdout",
    "train_pass",
    "write_history",
]
