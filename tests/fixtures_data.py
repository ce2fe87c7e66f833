"""Tiny datasets written in each published format, for tests and benchmarks.

Each ``write_<name>(root, ...)`` writes real files (WAV, FLV, JPEG, npy, JSON, CSV,
pickled DataFrames, HDF5) into ``root`` and returns the ``create_dataset`` keyword
arguments that read them. ``smoke_args(name, tmp_path)`` gives, for every registered
dataset, the data arguments and the encoder overrides of a fast one-epoch run; a new
dataset adds its entry to :data:`SMOKE`.

The media carry a class-dependent signal (a tone per emotion, a colour per class), so a
model can learn them, but nothing here is meant to be realistic.
"""

from __future__ import annotations

import json
import math
import wave
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Import into a test module (autouse there): one intra-op thread for its tests, restored after.
    On a small shared machine, tiny ops with two threads were 10-40x slower (OpenMP barriers)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def single_thread():
    """The same for one test (request it by name)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- media writers --------------------------------------------------------------------------------


def write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> Path:
    """Integer PCM WAV through the stdlib; ``samples`` in [-1, 1], shape (n,) or (n, channels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.asarray(samples, dtype=np.float64)
    x = x.reshape(len(x), -1) if x.size else np.zeros((0, channels))
    if x.shape[1] != channels:
        x = np.repeat(x[:, :1], channels, axis=1)
    if width == 1:
        raw = np.clip(np.rint(x * 127 + 128), 0, 255).astype(np.uint8).tobytes()
    elif width == 2:
        raw = np.clip(np.rint(x * 32767), -32768, 32767).astype("<i2").tobytes()
    elif width == 3:
        v = np.clip(np.rint(x * (2**23 - 1)), -(2**23), 2**23 - 1).astype(np.int32).reshape(-1)
        raw = np.stack([(v >> s) & 0xFF for s in (0, 8, 16)], axis=1).astype(np.uint8).tobytes()
    elif width == 4:
        raw = np.clip(np.rint(x * (2**31 - 1)), -(2**31), 2**31 - 1).astype("<i4").tobytes()
    else:
        raise ValueError(width)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return path


def tone(freq: float, seconds: float, rate: int, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    return 0.5 * np.sin(2 * math.pi * freq * t) + noise * rng.standard_normal(n)


def write_flv(path: Path, frames: np.ndarray, rate: int = 30) -> Path:
    """An FLV (Sorenson H.263, ``flv1``) through PyAV; ``frames`` (n, H, W, 3) uint8, H and W even."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="flv") as container:
        stream = container.add_stream("flv1", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_jpeg(path: Path, image: np.ndarray, quality: int = 95) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB").save(path, "JPEG", quality=quality)
    return path


def class_colour(c: int, n_classes: int) -> np.ndarray:
    hue = c / n_classes
    return (np.array([math.sin(2 * math.pi * (hue + k / 3)) for k in range(3)]) * 100 + 128).astype(np.uint8)


def coloured_frames(c: int, n_classes: int, n: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.broadcast_to(class_colour(c, n_classes), (n, h, w, 3)).astype(np.int16)
    ramp = np.linspace(-30, 30, n, dtype=np.int16)[:, None, None, None]  # frames differ over time
    return np.clip(base + ramp + rng.integers(-10, 10, (n, h, w, 3)), 0, 255).astype(np.uint8)


# --- CREMA-D ----------------------------------------------------------------------------------------


def cremad_clip_names(per_class: int) -> list[str]:
    names = []
    for c, emo in enumerate(EMOTIONS):
        for k in range(per_class):
            names.append(f"{1001 + k:04d}_{SENTENCES[(c + k) % len(SENTENCES)]}_{emo}_XX")
    return names


def write_cremad(
    root: Path,
    per_class: int = 2,
    *,
    video: str = "flv",
    broken: bool = True,
    size: tuple[int, int] = (48, 64),
    n_frames: int = 9,
    rate: int = 16000,
    seconds: float = 0.6,
) -> dict[str, Any]:
    """``AudioWAV/`` + ``VideoFlash/`` (or ``Image-01-FPS/``); with ``broken``, also the README's
    ``1076_MTI_SAD_XX`` as an empty WAV (a known-broken clip, to be skipped)."""
    root.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(cremad_clip_names(per_class)):
        c = EMOTIONS.index(clip.split("_")[2])
        write_wav(
            root / "AudioWAV" / f"{clip}.wav",
            tone(220 * (c + 1), seconds + 0.1 * (i % 3), rate, seed=i),
            rate,
        )
        frames = coloured_frames(c, len(EMOTIONS), n_frames, *size, seed=i)
        if video == "flv":
            write_flv(root / "VideoFlash" / f"{clip}.flv", frames)
        else:
            for k in range(0, n_frames, 3):  # "first frame of each second"
                write_jpeg(root / "Image-01-FPS" / clip / f"{k // 3:05d}.jpg", frames[k])
    if broken:
        clip = "1076_MTI_SAD_XX"
        write_wav(root / "AudioWAV" / f"{clip}.wav", np.zeros(0), rate)
        if video == "flv":
            write_flv(root / "VideoFlash" / f"{clip}.flv", coloured_frames(2, 6, 2, *size, seed=99))
        else:
            write_jpeg(
                root / "Image-01-FPS" / clip / "00000.jpg", coloured_frames(2, 6, 1, *size, seed=99)[0]
            )
    return {"data_root": str(root), "progress": False}


# --- S-MNIST ----------------------------------------------------------------------------------------


def write_smnist(
    root: Path,
    n_train: int = 80,
    n_test: int = 30,
    *,
    image_dtype: str = "uint8",
    one_hot: bool = False,
    duplicate_audio: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """The six Zenodo files; ``duplicate_audio=k`` repeats each spoken vector k times (as the real
    60k file does) so ``dedupe`` has something to do."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for part, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        img = np.zeros((n, 28, 28), np.float32)
        for i, y in enumerate(labels):  # a bright bar whose row encodes the digit
            img[i, 2 + 2 * y : 4 + 2 * y, 4:24] = 1.0
        img += 0.1 * rng.random((n, 28, 28), dtype=np.float32)
        img = np.clip(img, 0, 1)
        wr = (img * 255).round().astype(np.uint8) if image_dtype == "uint8" else img.astype(image_dtype)
        n_unique = max(1, n // duplicate_audio)
        base_labels = labels[:n_unique]
        base = rng.standard_normal((n_unique, 39, 13)).astype(np.float32)
        base[np.arange(n_unique), base_labels * 3, :] += 3.0  # a frame-band per digit
        # row i takes the spoken vector of its own label class (from the unique pool)
        sp = np.empty((n, 39, 13), np.float32)
        for i, y in enumerate(labels):
            same = np.flatnonzero(base_labels == y)
            sp[i] = base[same[i % len(same)]] if len(same) else base[i % n_unique]
        np.save(root / f"data_wr_{part}.npy", wr.reshape(n, 784))
        np.save(root / f"data_sp_{part}.npy", sp.reshape(n, 507))
        np.save(
            root / f"labels_{part}.npy",
            np.eye(10, dtype=np.float32)[labels] if one_hot else labels.astype(np.int64),
        )
    return {"data_root": str(root), "progress": False}


# --- LUMA -------------------------------------------------------------------------------------------


def write_luma(
    root: Path,
    classes: Sequence[str] = ("man", "boy", "house"),
    pool: int = 6,
    *,
    rate: int = 22050,
    unprocessed: bool = True,
    extra_class: str = "dog",
) -> dict[str, Any]:
    """``audio/datalist.csv`` + WAVs under ``audio/cv_audio/<label>/`` and a pickled image DataFrame
    (``image_data_unprocessed.pickle``, or ``image_data.pickle`` + ``image_data_test.pickle``)."""
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    rows, images, labels = [], [], []
    names = [*classes, extra_class]  # one class outside the chosen list, to be ignored
    for c, name in enumerate(names):
        for k in range(pool):
            rel = f"cv_audio/{name}/{k}.wav"
            write_wav(
                root / "audio" / rel, tone(300 + 150 * c, 0.25 + 0.05 * (k % 3), rate, seed=10 * c + k), rate
            )
            rows.append({"path": rel, "label": name, "tts_label": name})
            rng = np.random.default_rng(100 * c + k)
            img = np.broadcast_to(class_colour(c, len(names)), (32, 32, 3)).astype(np.int16)
            images.append(np.clip(img + rng.integers(-20, 20, (32, 32, 3)), 0, 255).astype(np.uint8))
            labels.append(name)
    pd.DataFrame(rows).to_csv(root / "audio" / "datalist.csv", index=False)
    frame = pd.DataFrame({"image": images, "label": labels, "source": "cifar100"})
    if unprocessed:
        frame["original_split"] = ["train" if i % 5 else "test" for i in range(len(frame))]
        frame.to_pickle(root / "image_data_unprocessed.pickle")
    else:
        half = len(frame) // 2
        frame.iloc[:half].reset_index(drop=True).to_pickle(root / "image_data.pickle")
        frame.iloc[half:].reset_index(drop=True).to_pickle(root / "image_data_test.pickle")
    return {
        "data_root": str(root),
        "classes": list(classes),
        "per_class": pool - 1,
        "n_val": 3,
        "n_test": 3,
        "progress": False,
    }


# --- MM-IMDb ----------------------------------------------------------------------------------------

GENRE_WORDS = {
    "Drama": "tears family",
    "Comedy": "jokes laugh",
    "Horror": "ghost blood",
    "Romance": "love kiss",
}


def write_mmimdb(root: Path, n: int = 12, *, poster: tuple[int, int] = (60, 40)) -> dict[str, Any]:
    """``mmimdb/split.json`` + ``mmimdb/dataset/<id>.json`` (IMDbPY-like) + ``<id>.jpeg``."""
    base = root / "mmimdb"
    (base / "dataset").mkdir(parents=True, exist_ok=True)
    genres = list(GENRE_WORDS)
    ids = [f"{114709 + i:07d}" for i in range(n)]
    for i, movie in enumerate(ids):
        g = (
            [genres[i % len(genres)]]
            + (["News"] if i % 5 == 0 else [])
            + ([genres[(i + 1) % 4]] if i % 3 == 0 else [])
        )
        doc = {
            "title": f"Movie {i}",
            "year": 1990 + i,
            "genres": g,
            "plot": [f"short {i}.", f"A longer plot about {GENRE_WORDS[g[0]]} number {i}, with detail."],
            "plot outline": "unused",
            "director": [{"name": "Someone"}],
        }
        (base / "dataset" / f"{movie}.json").write_text(json.dumps(doc))
        img = np.broadcast_to(class_colour(i % 4, 4), (*poster, 3)).astype(np.uint8)
        write_jpeg(base / "dataset" / f"{movie}.jpeg", img)
    n_test = max(1, n // 4)
    n_dev = max(1, n // 6)
    split = {
        "train": ids[: n - n_dev - n_test],
        "dev": ids[n - n_dev - n_test : n - n_test],
        "test": ids[n - n_test :],
    }
    (base / "split.json").write_text(json.dumps(split))
    return {"data_root": str(root), "text_model": "tiny-random", "progress": False}


def write_mmimdb_hdf5(
    root: Path, counts: tuple[int, int, int] = (6, 2, 3), size: tuple[int, int] = (32, 20)
) -> dict[str, Any]:
    """Fuel's ``multimodal_imdb.hdf5`` (BGR mean-subtracted int32 images, word-id sequences, genres
    with ``target_names``, a ``split`` attribute) + ``metadata.npy`` (``ix_to_word``)."""
    import h5py

    root.mkdir(parents=True, exist_ok=True)
    vocab = ["_UNK_", "the", "a", "ghost", "love", "jokes", "family", "story", "N", "."]
    n = sum(counts)
    rng = np.random.default_rng(0)
    target_names = ["Comedy", "Drama", "Horror", "Romance"] + [
        f"Other{i}" for i in range(19)
    ]  # a different order
    with h5py.File(root / "multimodal_imdb.hdf5", "w") as f:
        rgb = rng.integers(0, 256, (n, 3, *size))
        bgr = rgb[:, ::-1].astype(np.float64) - np.array([103.939, 116.779, 123.68])[None, :, None, None]
        f.create_dataset("images", data=np.rint(bgr).astype(np.int32))
        seqs = f.create_dataset("sequences", (n,), dtype=h5py.vlen_dtype(np.dtype("int32")))
        for i in range(n):
            seqs[i] = np.array([1, 3 + i % 3, 7, 8, 9], np.int32)
        genres = np.zeros((n, 23), np.int32)
        genres[np.arange(n), np.arange(n) % 4] = 1
        ds = f.create_dataset("genres", data=genres)
        ds.attrs["target_names"] = json.dumps(target_names)
        f.create_dataset("imdb_ids", data=np.array([f"{i:07d}" for i in range(n)], dtype="S7"))
        dtype = np.dtype([("split", "S5"), ("source", "S9"), ("start", "<i8"), ("stop", "<i8")])
        rows, start = [], 0
        for name, c in zip(("train", "dev", "test"), counts, strict=True):
            for source in ("images", "genres"):
                rows.append((name.encode(), source.encode(), start, start + c))
            start += c
        f.attrs["split"] = np.array(rows, dtype=dtype)
    np.save(
        root / "metadata.npy",
        {"ix_to_word": dict(enumerate(vocab)), "vocab_size": len(vocab)},
        allow_pickle=True,
    )
    return {"data_root": str(root), "form": "hdf5", "text_model": "tiny-random", "progress": False}


# --- smoke arguments per registered dataset -----------------------------------------------------------

TINY_RESNET = {"name": "resnet6", "width": 4, "small_input": False}

# name -> (tmp_path -> (data kwargs, encoder overrides))
SMOKE: dict[str, Callable[[Path], tuple[dict[str, Any], dict[str, dict[str, Any]]]]] = {
    "synthetic": lambda tmp: ({"n_train": 64, "n_val": 32, "n_test": 32, "d_fast": 16, "d_slow": 8}, {}),
    "mfeat": lambda tmp: ({"n_train": 300, "n_val": 100, "n_test": 100}, {}),
    "cremad": lambda tmp: (
        {**write_cremad(tmp / "cremad", per_class=2), "audio_size": 32, "image_size": 32},
        {"audio": {**TINY_RESNET, "in_channels": 1}, "video": {**TINY_RESNET, "in_channels": 3}},
    ),
    "smnist": lambda tmp: (
        {**write_smnist(tmp / "smnist"), "n_train": 40, "n_val": 20, "n_test": 20},
        {"image": {"width": 4}, "audio": {"width": 4}},
    ),
    "luma": lambda tmp: (
        {**write_luma(tmp / "luma"), "n_mels": 32, "n_frames": 32, "image_size": 32},
        {"audio": {"width": 4}, "image": {"width": 4}},
    ),
    "mmimdb": lambda tmp: (
        {**write_mmimdb(tmp / "mmimdb"), "image_size": 32, "resize": 36},
        {"image": {"width": 2}},
    ),
}


def smoke_args(name: str, tmp_path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    if name not in SMOKE:
        raise KeyError(f"add a smoke entry for dataset {name!r} to tests/fixtures_data.py SMOKE")
    return SMOKE[name](tmp_path)
