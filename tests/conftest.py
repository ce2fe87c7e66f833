from __future__ import annotations

import os

import pytest
from hypothesis import settings

from miles_tune.config import TrainConfig

# CI replays the same examples every run; locally hypothesis explores new ones.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

TINY_DATA = {"n_train": 96, "n_val": 48, "n_test": 48, "d_fast": 16, "d_slow": 8}


@pytest.fixture
def tiny_config() -> TrainConfig:
    """A run that takes well under a second on CPU."""
    return TrainConfig(data=dict(TINY_DATA), epochs=3, batch_size=32, seed=0)
