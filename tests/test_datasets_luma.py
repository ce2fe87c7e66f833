"""LUMA from the LUMA tool's data/ layout: audio/datalist.csv + WAVs + pickled image DataFrames."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures_data import one_thread, write_luma, write_wav  # noqa: F401  (autouse fixture)

from miles_tune.data import DatasetError, create_dataset
from miles_tune.data.audio import mel_spectrogram, read_wav, resample
from miles_tune.data.luma import LUMA_CLASSES, LUMA_MEAN, LUMA_STD, PAPER_CLASSES


@pytest.fixture(scope="module")
def luma_kw(tmp_path_factory) -> dict:
    return write_luma(tmp_path_factory.mktemp("luma") / "data")


def test_paper_shapes_pairs_and_split(luma_kw: dict) -> None:
    data = create_dataset("luma", **luma_kw)
    x, _ = data.train[0]
    assert x["audio"].shape == (1, 96, 96) and x["image"].shape == (3, 96, 96)
    assert data.encoders["audio"].kwargs == {"in_channels": 1, "small_input": True}
    assert data.encoders["image"].name == "resnet6" and data.encoders["image"].kwargs["in_channels"] == 3
    assert data.num_classes == 3 and data.info["classes"] == ["man", "boy", "house"]
    assert data.info["sizes"] == {"train": 9, "val": 3, "test": 3}  # 3 classes × 5 pairs
    audio = pd.read_csv(Path(luma_kw["data_root"]) / "audio" / "datalist.csv")
    images = pd.read_pickle(Path(luma_kw["data_root"]) / "image_data_unprocessed.pickle")
    all_ids = sum((data.split(s).ids for s in ("train", "val", "test")), [])
    assert len(set(all_ids)) == 15
    for split in ("train", "val", "test"):
        _, labels = data.split(split).get_batch(range(len(data.split(split))))
        for sample, y in zip(data.split(split).ids, labels.tolist(), strict=True):
            a, i = (int(p[1:]) for p in sample.split("-"))
            assert audio["label"][a] == images["label"][i] == data.info["classes"][y]  # paired within class
            assert audio["label"][a] != "dog"  # the class outside the list is ignored


def test_audio_and_image_follow_the_recipe(luma_kw: dict) -> None:
    data = create_dataset("luma", **luma_kw, cache=False)
    x, _ = data.train[0]
    a, i = (int(p[1:]) for p in data.train.ids[0].split("-"))
    root = Path(luma_kw["data_root"])
    rel = pd.read_csv(root / "audio" / "datalist.csv")["path"][a]
    samples, rate = read_wav(root / "audio" / rel)
    assert rate == 22050
    y16 = resample(torch.from_numpy(samples).double(), 22050, 16000)  # LUMA's WAVs are not 16 kHz
    mel = mel_spectrogram(y16, 16000, n_fft=400, hop_length=200, n_mels=96, f_max=8000)
    assert mel.shape[-1] < 96  # short clip: zero-padded to 96 frames
    ref = torch.log(torch.nn.functional.pad(mel, (0, 96 - mel.shape[-1])) + 1e-6).float()
    torch.testing.assert_close(x["audio"][0], ref)
    img = pd.read_pickle(root / "image_data_unprocessed.pickle")["image"][i]
    up = torch.nn.functional.interpolate(
        torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, size=(96, 96), mode="bilinear"
    )[0]
    ref_img = (up - torch.tensor(LUMA_MEAN)[:, None, None]) / torch.tensor(LUMA_STD)[:, None, None]
    torch.testing.assert_close(x["image"], ref_img)


def test_options_classes_stratify_and_layout_variants(tmp_path: Path) -> None:
    kw = write_luma(
        tmp_path / "compiled", classes=("man", "boy", "house", "woman"), pool=8, unprocessed=False
    )
    data = create_dataset(
        "luma", **{**kw, "classes": ["woman", "man"], "per_class": 6, "n_val": 4, "n_test": 2}, stratify=True
    )
    assert data.info["classes"] == ["woman", "man"] and data.num_classes == 2
    assert data.info["settings"]["image_tables"] == ["image_data.pickle", "image_data_test.pickle"]
    _, y_val = data.val.get_batch(range(4))
    assert sorted(y_val.tolist()) == [0, 0, 1, 1]  # stratified
    no_log = create_dataset("luma", **{**kw, "per_class": 6}, log_mel=False, resample_audio=False)
    assert no_log.train[0][0]["audio"].min() >= 0  # raw power, as LUMA's baseline


def test_default_split_rule_and_class_list() -> None:
    assert len(PAPER_CLASSES) == 22 and PAPER_CLASSES[-1] == "forest" and len(LUMA_CLASSES) == 50
    # 22 × 1500 = 33,000 pairs -> 25,000 / 4,000 / 4,000
    assert math.floor(22 * 1500 * 4000 / 33000) == 4000


def test_errors_name_the_file(tmp_path: Path) -> None:
    kw = write_luma(tmp_path / "e")
    root = Path(kw["data_root"])
    with pytest.raises(
        DatasetError, match="class 'man' has 6 audio clips in .*datalist.csv, fewer than data.per_class=7"
    ):
        create_dataset("luma", **{**kw, "per_class": 7})
    table = pd.read_csv(root / "audio" / "datalist.csv")
    rel = table["path"][0]
    (root / "audio" / rel).write_bytes(b"RIFFxxxxWAVEjunk")
    with pytest.raises(DatasetError, match=f"corrupt or unsupported WAV .*{rel}"):
        create_dataset("luma", **{**kw, "per_class": 6})
    (root / "audio" / rel).unlink()
    with pytest.raises(DatasetError, match=f"missing audio file .*{rel}"):
        create_dataset("luma", **{**kw, "per_class": 6})
    write_wav(root / "audio" / rel, np.zeros(10), 22050)
    frame = pd.read_pickle(root / "image_data_unprocessed.pickle")
    frame.at[3, "image"] = np.zeros((28, 28, 3), np.uint8)
    frame.to_pickle(root / "image_data_unprocessed.pickle")
    with pytest.raises(
        DatasetError, match=r"row 3 of .*image_data_unprocessed.pickle holds an image of shape \(28, 28, 3\)"
    ):
        create_dataset("luma", **kw)
    (root / "image_data_unprocessed.pickle").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="cannot read the image pickle .*image_data_unprocessed.pickle"):
        create_dataset("luma", **kw)
    (root / "image_data_unprocessed.pickle").unlink()
    with pytest.raises(DatasetError, match="no image pickle .*get_unprocessed_data.py"):
        create_dataset("luma", **kw)
    table.drop(columns=["label"]).to_csv(root / "audio" / "datalist.csv", index=False)
    pd.DataFrame({"image": [np.zeros((32, 32, 3), np.uint8)], "label": ["man"]}).to_pickle(
        root / "image_data.pickle"
    )
    with pytest.raises(DatasetError, match=r"datalist.csv lacks column\(s\) \['label'\]"):
        create_dataset("luma", **kw)
    (root / "audio" / "datalist.csv").unlink()
    with pytest.raises(
        DatasetError, match="no audio list in .*audio_data_unprocessed.csv or audio/datalist.csv"
    ):
        create_dataset("luma", **kw)
