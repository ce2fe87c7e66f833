"""Helpers shared by the analysis scripts: train one configuration, summarise, format."""

from __future__ import annotations

import statistics
from typing import Any

from miles_tune.config import TrainConfig
from miles_tune.train import Trainer


def train_run(overrides: dict[str, Any], seed: int, epochs: int, data: dict[str, Any]) -> Trainer:
    """Train one configuration to the end; the data seed is the run seed."""
    cfg = TrainConfig(epochs=epochs, seed=seed, data={**data, "seed": seed}, **overrides)
    trainer = Trainer(cfg)
    for _ in trainer.run():
        pass
    return trainer


def summary_row(name: str, seed: int, trainer: Trainer) -> dict[str, Any]:
    """The run's result: test (and val) metrics at the best validation epoch."""
    s = trainer.summary()
    return {"config": name, "seed": seed, "best_epoch": s["best_epoch"], **s["best"]}


def fmt(values: list[float], digits: int = 3) -> str:
    """mean ± sample std (0 for one value); "–" for none."""
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"
