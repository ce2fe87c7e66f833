"""One test per registry entry: every method and every dataset runs through the real loop."""

from __future__ import annotations

import dataclasses
import math

import pytest

from miles_tune.balance import METHODS, list_methods
from miles_tune.config import TrainConfig
from miles_tune.data import create_dataset, list_datasets
from miles_tune.train import Trainer

# small arguments per dataset for smoke runs; a new dataset adds its entry here
DATASET_SMOKE_ARGS = {
    "synthetic": {"n_train": 64, "n_val": 32, "n_test": 32, "d_fast": 16, "d_slow": 8},
}


@pytest.mark.parametrize("fusion", ["concat", "sum"])
@pytest.mark.parametrize("method", list_methods())
def test_every_method_trains_two_epochs(tiny_config: TrainConfig, method: str, fusion: str) -> None:
    data = create_dataset("synthetic", **tiny_config.data)
    args = METHODS.get(method).example_args(data.modalities)
    cfg = dataclasses.replace(tiny_config, method=method, method_args=args, fusion=fusion, epochs=2)
    trainer = Trainer(cfg, data=data)
    records = list(trainer.run())
    assert len(records) == 2
    assert all(math.isfinite(v) for v in records[-1].flat().values())
    assert trainer.summary()["best_epoch"] in (0, 1)


@pytest.mark.parametrize("name", list_datasets())
def test_every_dataset_builds_and_trains(name: str) -> None:
    assert name in DATASET_SMOKE_ARGS, f"add smoke arguments for dataset {name!r}"
    data = create_dataset(name, **DATASET_SMOKE_ARGS[name])
    assert len(data.modalities) >= 2
    x, y = data.train[0]
    assert set(x) == set(data.modalities)
    cfg = TrainConfig(dataset=name, data=DATASET_SMOKE_ARGS[name], method="vanilla", epochs=1, batch_size=32)
    assert len(list(Trainer(cfg, data=data).run())) == 1


def test_synthetic_is_deterministic_by_seed() -> None:
    a = create_dataset("synthetic", n_train=50, n_val=10, n_test=10, seed=3)
    b = create_dataset("synthetic", n_train=50, n_val=10, n_test=10, seed=3)
    c = create_dataset("synthetic", n_train=50, n_val=10, n_test=10, seed=4)
    assert all((a.train.inputs[m] == b.train.inputs[m]).all() for m in a.modalities)
    assert not (a.train.inputs["fast"] == c.train.inputs["fast"]).all()


def test_synthetic_image_form_shapes() -> None:
    data = create_dataset("synthetic", form="image", n_train=20, n_val=5, n_test=5)
    x, y = data.train[0]
    assert x["fast"].shape == x["slow"].shape == (1, 28, 28)
    assert data.encoders["fast"].name == "resnet6"
    again = create_dataset("synthetic", form="image", n_train=20, n_val=5, n_test=5)
    assert all((data.train.inputs[m] == again.train.inputs[m]).all() for m in data.modalities)
