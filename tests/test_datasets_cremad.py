"""CREMA-D in its published layout (WAV + FLV) and OGM-GE's frame layout."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from fixtures_data import EMOTIONS, cremad_clip_names, one_thread, write_cremad, write_flv  # noqa: F401  (autouse fixture)

from miles_tune.data import DatasetError, create_dataset
from miles_tune.data.audio import read_wav
from miles_tune.data.cremad import KNOWN_BROKEN
from miles_tune.data.transforms import IMAGENET_MEAN, IMAGENET_STD

SMALL = {"audio_size": 32, "image_size": 32}


@pytest.fixture(scope="module")
def flv_root(tmp_path_factory) -> Path:
    return Path(write_cremad(tmp_path_factory.mktemp("cremad") / "CREMA-D", per_class=2)["data_root"])


def load(root: Path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_dataset("cremad", data_root=str(root), progress=False, **kw)


def test_paper_shapes_labels_and_split(flv_root: Path) -> None:
    data = load(flv_root)  # default sizes: 224
    x, y = data.train[0]
    assert x["audio"].shape == (1, 224, 224) and x["audio"].dtype == torch.float32
    assert x["video"].shape == (3, 224, 224) and x["video"].dtype == torch.float32
    assert data.encoders["audio"].name == "resnet18" and data.encoders["audio"].kwargs["in_channels"] == 1
    assert data.num_classes == 6 and data.info["classes"] == list(EMOTIONS)
    # 12 usable clips (the empty known-broken one skipped): val = test = floor(0.15 * 12) = 1
    assert data.info["sizes"] == {"train": 10, "val": 1, "test": 1}
    ids = {s: data.split(s).ids for s in ("train", "val", "test")}
    assert sorted(sum(ids.values(), [])) == sorted(cremad_clip_names(2))
    for s in ids:
        labels = data.split(s).get_batch(list(range(len(ids[s]))))[1]
        assert labels.tolist() == [EMOTIONS.index(c.split("_")[2]) for c in ids[s]]


def test_known_broken_clip_is_skipped_with_a_warning_and_counted(flv_root: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="skipped known-broken sample 1076_MTI_SAD_XX"):
        data = create_dataset(
            "cremad", data_root=str(flv_root), cache_dir=str(tmp_path), progress=False, **SMALL
        )
    assert data.info["n_skipped"] == 1 and "1076_MTI_SAD_XX" in data.info["skipped"]
    assert "1076_MTI_SAD_XX" in KNOWN_BROKEN
    zero = load(flv_root, broken="zero", cache_dir=str(tmp_path), **SMALL)
    assert zero.info["n_skipped"] == 0 and zero.info["zero_filled"] == ["1076_MTI_SAD_XX"]
    split = next(s for s in ("train", "val", "test") if "1076_MTI_SAD_XX" in zero.split(s).ids)
    i = zero.split(split).ids.index("1076_MTI_SAD_XX")
    x, _ = zero.split(split)[i]
    assert torch.count_nonzero(x["audio"]) == 0


def test_audio_follows_the_recipe_with_scipy(flv_root: Path) -> None:
    """WAV -> tile to 3 s -> scipy spectrogram (512/353) -> log -> z-norm -> bilinear 224."""
    data = load(flv_root, cache=False)
    clip = data.train.ids[0]
    x, _ = data.train[0]
    samples, rate = read_wav(flv_root / "AudioWAV" / f"{clip}.wav")
    assert rate == 16000
    tiled = np.tile(samples.astype(np.float64), 48000 // len(samples) + 1)[:48000].clip(-1, 1)
    _, _, spec = scipy.signal.spectrogram(tiled, 16000, nperseg=512, noverlap=353)
    assert spec.shape == (257, 299)
    spec = np.log(spec + 1e-7)
    spec = (spec - spec.mean()) / (spec.std(ddof=1) + 1e-8)
    ref = F.interpolate(torch.from_numpy(spec)[None, None].float(), size=(224, 224), mode="bilinear")
    torch.testing.assert_close(x["audio"], ref[0], atol=1e-4, rtol=1e-4)


def test_middle_frame_is_taken(tmp_path: Path) -> None:
    root = Path(write_cremad(tmp_path / "c", per_class=2, broken=False)["data_root"])
    clip = cremad_clip_names(2)[0]
    frames = np.stack([np.full((48, 64, 3), 20 * k, np.uint8) for k in range(9)])  # brightness = frame index
    write_flv(root / "VideoFlash" / f"{clip}.flv", frames)
    data = load(root, image_size=16, audio_size=16, cache=False)
    split = next(s for s in ("train", "val", "test") if clip in data.split(s).ids)
    x, _ = data.split(split)[data.split(split).ids.index(clip)]
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    pixel = (x["video"] * std + mean).mean() * 255
    assert abs(pixel.item() - 80) < 6  # frame 4 of 0..8, lossy codec
    first = load(root, image_size=16, audio_size=16, cache=False, frame_position=0.0)
    x0, _ = first.split(split)[first.split(split).ids.index(clip)]
    assert abs(((x0["video"] * std + mean).mean() * 255).item()) < 6


def test_ogm_ge_frame_layout(tmp_path: Path) -> None:
    root = Path(write_cremad(tmp_path / "frames", per_class=2, video="frames")["data_root"])
    data = load(root, **SMALL)  # video="auto" finds Image-01-FPS/ when VideoFlash/ is absent
    assert data.info["settings"]["video"] == "frames"
    x, _ = data.train[0]
    assert x["video"].shape == (3, 32, 32)
    raw = load(root, cache=False, **SMALL)
    a, b = data.train.get_batch(range(len(data.train))), raw.train.get_batch(range(len(raw.train)))
    assert torch.equal(a[0]["video"], b[0]["video"]) and torch.equal(a[0]["audio"], b[0]["audio"])


@pytest.fixture
def copy_root(flv_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(flv_root, dst, ignore=shutil.ignore_patterns(".miles_cache"))
    return dst


def test_missing_folder_and_files(copy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetError, match="data.data_root=.*nowhere is not a folder"):
        load(tmp_path / "nowhere")
    monkeypatch.setenv("MILES_TUNE_DATA", str(tmp_path / "home"))  # no data at the default location
    with pytest.raises(DatasetError, match="cremad: no data at .*home/cremad .*set data.data_root=PATH"):
        create_dataset("cremad")
    clip = cremad_clip_names(2)[3]
    (copy_root / "VideoFlash" / f"{clip}.flv").unlink()
    with pytest.raises(DatasetError, match=f"missing video for clip {clip}: .*VideoFlash/{clip}.flv"):
        load(copy_root, **SMALL)
    shutil.rmtree(copy_root / "VideoFlash")
    with pytest.raises(DatasetError, match="missing folder .*Image-01-FPS"):
        load(copy_root, **SMALL)
    shutil.rmtree(copy_root / "AudioWAV")
    with pytest.raises(DatasetError, match="missing folder .*AudioWAV"):
        load(copy_root, **SMALL)


def test_corrupt_media_are_errors_naming_the_file(copy_root: Path, flv_root: Path) -> None:
    clip = cremad_clip_names(2)[5]
    flv = copy_root / "VideoFlash" / f"{clip}.flv"
    flv.write_bytes(b"FLV\x01 not really a video" * 20)
    with pytest.raises(DatasetError, match=f"corrupt or unreadable video .*{clip}.flv"):
        load(copy_root, **SMALL)
    shutil.copy(flv_root / "VideoFlash" / f"{clip}.flv", flv)
    clip = cremad_clip_names(2)[6]
    wav = copy_root / "AudioWAV" / f"{clip}.wav"
    wav.write_bytes(b"RIFF garbage" * 10)
    with pytest.raises(DatasetError, match=f"{clip}.wav"):
        load(copy_root, **SMALL)


def test_empty_audio_of_an_unknown_clip_is_an_error(copy_root: Path) -> None:
    from fixtures_data import write_wav

    clip = cremad_clip_names(2)[0]
    write_wav(copy_root / "AudioWAV" / f"{clip}.wav", np.zeros(0), 16000)
    with pytest.raises(
        DatasetError, match=f"clip {clip} cannot be decoded: .*{clip}.wav has no audio samples"
    ):
        load(copy_root, **SMALL)


def test_bad_file_name_and_options(copy_root: Path) -> None:
    shutil.copy(
        copy_root / "AudioWAV" / f"{cremad_clip_names(2)[0]}.wav", copy_root / "AudioWAV" / "notaclip.wav"
    )
    with pytest.raises(DatasetError, match="cannot read the emotion of 'notaclip'.*notaclip.wav"):
        load(copy_root, **SMALL)
    with pytest.raises(ValueError, match="broken must be"):
        load(copy_root, broken="drop")
    with pytest.raises(ValueError, match="does not take"):
        create_dataset("cremad", data_root=str(copy_root), window=512)
