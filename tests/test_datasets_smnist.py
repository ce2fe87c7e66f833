"""S-MNIST (Khacef et al.) from its six .npy files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures_data import one_thread, write_smnist  # noqa: F401  (autouse fixture)

from miles_tune.data import DatasetError, create_dataset

SIZES = {"n_train": 40, "n_val": 20, "n_test": 20}


def test_shapes_scaling_labels_and_split(tmp_path: Path) -> None:
    kw = write_smnist(tmp_path / "u8")
    data = create_dataset("smnist", **kw, **SIZES)
    x, _ = data.train[0]
    assert x["image"].shape == x["audio"].shape == (1, 28, 28)
    assert data.encoders["image"].name == "resnet10" and data.encoders["audio"].kwargs == {
        "in_channels": 1,
        "small_input": True,
    }
    assert data.info["sizes"] == {"train": 40, "val": 20, "test": 20}
    assert all(i.startswith("train/") for i in data.train.ids + data.val.ids)
    assert all(i.startswith("test/") for i in data.test.ids)
    assert not set(data.train.ids) & set(data.val.ids)
    images, labels = data.train.get_batch(range(40))
    assert images["image"].min() >= 0.0 and images["image"].max() <= 1.0  # uint8 / 255
    raw_labels = np.load(Path(kw["data_root"]) / "labels_train.npy")
    assert labels.tolist() == [int(raw_labels[int(i.split("/")[1])]) for i in data.train.ids]
    # audio: the 507 values as 39×13 (time-major), bilinearly resized to 28×28
    row = int(data.train.ids[0].split("/")[1])
    sp = np.load(Path(kw["data_root"]) / "data_sp_train.npy")[row].reshape(1, 1, 39, 13)
    ref = F.interpolate(torch.from_numpy(sp), size=(28, 28), mode="bilinear", align_corners=False)[0]
    assert torch.equal(images["audio"][0], ref)


def test_float_images_and_one_hot_labels_give_the_same_data(tmp_path: Path) -> None:
    a = create_dataset("smnist", **write_smnist(tmp_path / "a"), **SIZES)
    b = create_dataset("smnist", **write_smnist(tmp_path / "b", image_dtype="float32", one_hot=True), **SIZES)
    assert a.train.ids == b.train.ids  # same seed, same row counts -> same draw
    xa, ya = a.train.get_batch(range(40))
    xb, yb = b.train.get_batch(range(40))
    assert torch.equal(ya, yb)
    assert (xa["image"] - xb["image"]).abs().max() <= 0.5 / 255 + 1e-6  # uint8 rounding only


def test_dedupe_keeps_identical_audio_out_of_train_and_val(tmp_path: Path) -> None:
    kw = write_smnist(tmp_path / "d", n_train=200, duplicate_audio=4)
    sp = np.load(Path(kw["data_root"]) / "data_sp_train.npy")

    def groups(ids):
        return {hashlib.sha1(sp[int(i.split("/")[1])].tobytes()).hexdigest() for i in ids}

    plain = create_dataset("smnist", **kw, n_train=120, n_val=40, n_test=20)
    assert groups(plain.train.ids) & groups(plain.val.ids)  # duplicates leak without dedupe
    dedup = create_dataset("smnist", **kw, n_train=120, n_val=40, n_test=20, dedupe=True)
    assert len(dedup.train) == 120 and len(dedup.val) == 40
    assert not groups(dedup.train.ids) & groups(dedup.val.ids)
    with pytest.raises(DatasetError, match="with dedupe only .* distinct spoken vectors"):
        create_dataset("smnist", **kw, n_train=199, n_val=1, n_test=20, dedupe=True)


def test_standardize_uses_training_statistics(tmp_path: Path) -> None:
    data = create_dataset("smnist", **write_smnist(tmp_path / "s"), **SIZES, standardize=True)
    x, _ = data.train.get_batch(range(40))
    for m in ("image", "audio"):
        assert abs(x[m].mean().item()) < 1e-4 and abs(x[m].std().item() - 1) < 1e-2
    assert set(data.info["stats"]) == {"image", "audio"}


def test_errors_name_the_file(tmp_path: Path) -> None:
    kw = write_smnist(tmp_path / "e")
    root = Path(kw["data_root"])
    with pytest.raises(DatasetError, match="exceeds the 80 rows of .*data_wr_train.npy"):
        create_dataset("smnist", **kw, n_train=70, n_val=20)
    np.save(root / "data_sp_test.npy", np.zeros((30, 100), np.float32))
    with pytest.raises(DatasetError, match=r"data_sp_test.npy has shape \(30, 100\)"):
        create_dataset("smnist", **kw, **SIZES)
    np.save(root / "data_sp_test.npy", np.zeros((29, 507), np.float32))
    with pytest.raises(DatasetError, match="data_sp_test.npy has 29 rows but data_wr_test.npy has 30"):
        create_dataset("smnist", **kw, **SIZES)
    (root / "data_sp_test.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DatasetError, match="cannot read .*data_sp_test.npy as a NumPy array"):
        create_dataset("smnist", **kw, **SIZES)
    (root / "data_sp_test.npy").unlink()
    with pytest.raises(DatasetError, match="missing file .*data_sp_test.npy"):
        create_dataset("smnist", **kw, **SIZES)
