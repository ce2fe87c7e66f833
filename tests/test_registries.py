"""One test per registry entry: every method and every dataset runs through the real loop."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from fixtures_data import SMOKE, single_thread, smoke_args  # noqa: F401  (tests/ is on sys.path)

from miles_tune.balance import METHODS, list_methods
from miles_tune.config import TrainConfig
from miles_tune.data import create_dataset, list_datasets
from miles_tune.train import Trainer

# Smoke arguments per dataset live in tests/fixtures_data.py (SMOKE): in-memory datasets give
# plain kwargs, file-based ones write a tiny copy of their published layout into tmp_path first.
# A new dataset adds its entry there.


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
@pytest.mark.filterwarnings("ignore::miles_tune.data.errors.BrokenSampleWarning")
@pytest.mark.usefixtures("single_thread")
def test_every_dataset_builds_and_trains(name: str, tmp_path: Path) -> None:
    assert name in SMOKE, f"add smoke arguments for dataset {name!r} to tests/fixtures_data.py SMOKE"
    data_args, encoders = smoke_args(name, tmp_path)
    data = create_dataset(name, **data_args)
    assert len(data.modalities) >= 2
    x, y = data.train[0]
    assert set(x) == set(data.modalities)
    cfg = TrainConfig(
        dataset=name, data=data_args, encoders=encoders, method="vanilla", epochs=1, batch_size=32
    )
    records = list(Trainer(cfg, data=data).run())
    assert len(records) == 1
    assert all(math.isfinite(v) for v in records[-1].flat().values())


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
