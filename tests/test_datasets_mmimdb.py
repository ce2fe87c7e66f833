"""MM-IMDb: raw JSON/JPEG + split.json, and Fuel's HDF5 form; text through a tiny random BERT."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from fixtures_data import one_thread, write_mmimdb, write_mmimdb_hdf5  # noqa: F401  (autouse fixture)

from miles_tune.data import DatasetError, create_dataset
from miles_tune.data.media import center_crop, read_image, resize_shorter_side
from miles_tune.data.mmimdb import GENRES, MMIMDB_MEAN, MMIMDB_STD
from miles_tune.data.text import TextFeaturizer

SMALL = {"image_size": 24, "resize": 28}


@pytest.fixture(scope="module")
def raw_kw(tmp_path_factory) -> dict:
    return write_mmimdb(tmp_path_factory.mktemp("mmimdb") / "root")


def test_raw_form_shapes_labels_split_and_text(raw_kw: dict) -> None:
    data = create_dataset("mmimdb", **raw_kw)  # default image size 224, frozen-feature text
    x, y = data.train[0]
    assert x["text"].shape == (32,) and x["text"].dtype == torch.float32  # tiny-random hidden size
    assert x["image"].shape == (3, 224, 224)
    assert data.task == "multilabel" and data.num_classes == 23 and data.info["classes"] == list(GENRES)
    assert data.default_metric == "f1_micro"
    assert data.encoders["text"].name == "mlp" and data.encoders["text"].kwargs["in_dim"] == 32
    assert data.encoders["image"].name == "resnet50"
    base = Path(raw_kw["data_root"]) / "mmimdb"
    split = json.loads((base / "split.json").read_text())
    assert (
        data.train.ids == split["train"] and data.val.ids == split["dev"] and data.test.ids == split["test"]
    )
    docs = [json.loads((base / "dataset" / f"{i}.json").read_text()) for i in data.train.ids]
    _, labels = data.train.get_batch(range(len(data.train)))
    for doc, row in zip(docs, labels, strict=True):
        assert {GENRES[k] for k in np.flatnonzero(row.numpy())} == {g for g in doc["genres"] if g != "News"}
    # text features: the frozen model on the *longest* plot
    featurizer = TextFeaturizer("tiny-random")
    ref = featurizer.embed([max(docs[0]["plot"], key=len)])[0]
    np.testing.assert_allclose(x["text"].numpy(), ref, atol=1e-5)
    # poster: shorter side 256, centre crop 224, MM-IMDb normalisation
    img = center_crop(
        resize_shorter_side(read_image(base / "dataset" / f"{data.train.ids[0]}.jpeg"), 256), (224, 224)
    )
    ref_img = (
        torch.from_numpy(img).permute(2, 0, 1).float() / 255 - torch.tensor(MMIMDB_MEAN)[:, None, None]
    ) / (torch.tensor(MMIMDB_STD)[:, None, None])
    torch.testing.assert_close(x["image"], ref_img)


def test_token_form_feeds_the_bert_encoder(raw_kw: dict) -> None:
    data = create_dataset("mmimdb", **raw_kw, **SMALL, text="tokens", max_length=48)
    x, _ = data.train[0]
    assert x["text"].shape == (48,) and x["text"].dtype == torch.int64
    assert x["text"][0].item() == 2  # [CLS] of the tiny vocabulary
    spec = data.encoders["text"]
    assert spec.name == "bert" and spec.kwargs["source"] == "tiny-random"


def test_text_model_is_part_of_the_cache_key(raw_kw: dict) -> None:
    a = create_dataset("mmimdb", **raw_kw, **SMALL)
    b = create_dataset("mmimdb", **raw_kw, **SMALL, text_seed=1)  # other random weights
    c = create_dataset("mmimdb", **raw_kw, **SMALL, text_pooling="mean")
    assert len({a.info["cache_dir"], b.info["cache_dir"], c.info["cache_dir"]}) == 3
    assert not torch.equal(a.train[0][0]["text"], b.train[0][0]["text"])


def test_hdf5_form(tmp_path: Path) -> None:
    kw = write_mmimdb_hdf5(tmp_path / "h")
    data = create_dataset("mmimdb", **kw, **SMALL)
    assert data.info["sizes"] == {"train": 6, "val": 2, "test": 3}
    assert data.train.ids[0] == "h0" and data.test.ids[0] == "h8"
    _, labels = data.train.get_batch(range(6))
    # file order Comedy, Drama, Horror, Romance -> our GENRES order by name
    expect = [GENRES.index(["Comedy", "Drama", "Horror", "Romance"][r % 4]) for r in range(6)]
    assert [int(np.flatnonzero(row.numpy())[0]) for row in labels] == expect
    with h5py.File(Path(kw["data_root"]) / "multimodal_imdb.hdf5") as f:
        bgr = f["images"][0].astype(np.float64) + np.array([103.939, 116.779, 123.68])[:, None, None]
    rgb = np.clip(np.rint(bgr[::-1].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
    stored = center_crop(resize_shorter_side(rgb, 28), (24, 24))
    x, _ = data.train[0]
    back = x["image"] * torch.tensor(MMIMDB_STD)[:, None, None] + torch.tensor(MMIMDB_MEAN)[:, None, None]
    torch.testing.assert_close(
        back * 255, torch.from_numpy(stored).permute(2, 0, 1).float(), atol=1e-3, rtol=0
    )


def test_hdf5_errors(tmp_path: Path) -> None:
    kw = write_mmimdb_hdf5(tmp_path / "h")
    (Path(kw["data_root"]) / "metadata.npy").unlink()
    with pytest.raises(DatasetError, match="missing .*metadata.npy"):
        create_dataset("mmimdb", **kw)
    np.save(Path(kw["data_root"]) / "metadata.npy", {"vocab_size": 3}, allow_pickle=True)
    with pytest.raises(DatasetError, match="cannot read the vocabulary .*metadata.npy"):
        create_dataset("mmimdb", **kw, **SMALL)
    (Path(kw["data_root"]) / "multimodal_imdb.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match="cannot read .*multimodal_imdb.hdf5"):
        create_dataset("mmimdb", **kw, **SMALL)


def test_raw_errors_name_the_file(tmp_path: Path) -> None:
    kw = write_mmimdb(tmp_path / "r")
    base = Path(kw["data_root"]) / "mmimdb"
    movie = json.loads((base / "split.json").read_text())["train"][2]
    doc_path, jpeg = base / "dataset" / f"{movie}.json", base / "dataset" / f"{movie}.jpeg"
    doc = doc_path.read_text()
    doc_path.write_text(doc[:30])
    with pytest.raises(DatasetError, match=f"corrupt JSON .*{movie}.json"):
        create_dataset("mmimdb", **kw, **SMALL)
    doc_path.write_text(json.dumps({"genres": ["Drama"], "plot": []}))
    with pytest.raises(DatasetError, match=f"{movie}.json has no 'plot' text"):
        create_dataset("mmimdb", **kw, **SMALL)
    doc_path.write_text(doc)
    good = jpeg.read_bytes()
    jpeg.write_bytes(good[: len(good) // 2])  # truncated JPEG
    with pytest.raises(DatasetError, match=f"corrupt or unreadable image .*{movie}.jpeg"):
        create_dataset("mmimdb", **kw, **SMALL)
    jpeg.unlink()
    with pytest.raises(DatasetError, match=f"missing file .*{movie}.jpeg"):
        create_dataset("mmimdb", **kw, **SMALL)
    (base / "split.json").write_text("{not json")
    with pytest.raises(DatasetError, match="corrupt split file .*split.json"):
        create_dataset("mmimdb", **kw, **SMALL)
    (base / "split.json").unlink()
    with pytest.raises(DatasetError, match="missing .*split.json"):
        create_dataset("mmimdb", **kw, **SMALL)


def test_unavailable_text_model_is_a_clear_error(raw_kw: dict, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="text model folder .*no-model does not exist"):
        create_dataset("mmimdb", **{**raw_kw, "text_model": str(tmp_path / "no-model")}, **SMALL, cache=False)
    with pytest.raises(
        DatasetError, match="cannot load text model 'no-such-org/no-such-bert'.*minilm-offline"
    ):
        create_dataset(
            "mmimdb",
            **{**raw_kw, "text_model": "no-such-org/no-such-bert"},
            **SMALL,
            local_files_only=True,
            cache_dir=str(tmp_path / "c"),
        )


def test_fine_tuning_the_text_encoder_in_the_loop(raw_kw: dict) -> None:
    from miles_tune.config import TrainConfig
    from miles_tune.train import Trainer

    data_args = {**raw_kw, **SMALL, "text": "tokens", "max_length": 32}
    cfg = TrainConfig(
        dataset="mmimdb",
        data=data_args,
        encoders={"image": {"width": 2}},
        method="miles",
        method_args={"tau": 0.1, "mu": 0.5},
        epochs=1,
        batch_size=4,
    )
    trainer = Trainer(cfg)
    before = [p.detach().clone() for p in trainer.model.encoders["text"].parameters()]
    records = list(trainer.run())
    assert len(records) == 1 and np.isfinite(records[0].flat()["val/mm/f1_micro"])
    after = list(trainer.model.encoders["text"].parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # BERT was trained
