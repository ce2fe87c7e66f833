"""LUMA (Bezirganyan et al. 2024): spoken words + CIFAR-like images, in the LUMA tool's ``data/`` layout.

Layout under ``data_root`` (default ``$MILES_TUNE_DATA/luma`` or
``~/.cache/miles_tune/data/luma``; LUMA's ``data/`` folder after cloning the HF dataset
``bezirganyan/LUMA`` and running its tooling)::

    audio/datalist.csv                 columns path, label, tts_label (path relative to audio/)
    audio/cv_audio/<label>/<n>.wav ... the clips (also ls_audio/, sw_audio/, re_audio/)
    audio_data_unprocessed.csv         optional; preferred over audio/datalist.csv (get_unprocessed_data.py)
    image_data_unprocessed.pickle      pandas DataFrame: image (32×32×3 uint8), label (class name), ...
      or image_data.pickle [+ image_data_test.pickle]   (the same columns; used when the former is absent)

The image pickles are what LUMA's ``get_unprocessed_data.py`` / ``compile_dataset.py``
write from the CIFAR pickles and ``edm_images.pickle``; building them from CIFAR here is
not supported. Reading them needs pandas.

**Security: the image tables are Python pickles** (``pd.read_pickle``), because that is
the format LUMA publishes. Unpickling runs code chosen by whoever wrote the file, so only
point ``data_root`` at files you produced yourself from the official HF dataset and
CIFAR download, or got from a source you trust.

The probe stats the tables and reads the audio table's header line (columns ``path``
and ``label``); it does not unpickle anything. NaN or infinite audio (a float WAV can
hold them) is refused when the cache is built, naming the WAV.

**Split (MILES).** "Top 22 classes having 1,500 or more samples ... 1,500 instances per
class, totaling 33,000 pairs ... 25,000 training, 4,000 validation, and 4,000 test". The
class list and the sampling are not published. Defaults: the first 22 classes of LUMA's
``label_class_mapping`` (it looks frequency-ordered; man ... forest) [inferred]; per
class, ``per_class`` audio rows and ``per_class`` image rows are drawn without
replacement (seeded) and paired in draw order; the pairs are shuffled and cut into
``n_val``/``n_test`` (default ``floor(total · 4000 / 33000)`` each) and the rest for
training (``stratify=True`` keeps class proportions per split). Pass ``classes=[...]``
to use another list; it is recorded in ``info["classes"]`` and the cache's meta.json.

**Preprocessing (MILES: 96-bin mel spectrogram → 96×96×1; CIFAR → 96×96×3).** Audio:
read the WAV header's rate, resample to 16 kHz (``resample_audio``; LUMA's own baseline
does not resample and applies a 16 kHz filter bank to ~22 kHz audio: ``resample_audio=
False`` reproduces that), power mel spectrogram with torchaudio's ``MelSpectrogram``
defaults except 96 mels (n_fft 400, hop 200, f_max 8 kHz, HTK scale, no filter norm),
zero-pad or cut the time axis to 96 frames, then ``log(mel + 1e-6)`` (``log_mel``; a
declared deviation from LUMA's baseline, which feeds raw power). Clips are 0.24-0.67 s,
so most of the 96 frames are padding. Image: stored as the 32×32×3 uint8 original,
bilinearly upsampled to 96×96 and normalised with LUMA's statistics at read time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from miles_tune.data import register_dataset
from miles_tune.data.audio import mel_spectrogram, read_wav, resample
from miles_tune.data.base import EncoderSpec, MultimodalData
from miles_tune.data.cache import LABEL, Field, FileDataset, Plan, dataset_factory
from miles_tune.data.errors import DatasetError, int_option, require
from miles_tune.data.splits import stratified_split
from miles_tune.data.transforms import image_to_input

# LUMA's label_class_mapping order; 0..41 in-distribution, 42..49 out-of-distribution
LUMA_CLASSES = (
    "man", "boy", "house", "woman", "girl", "table", "road", "horse", "dog", "ship",
    "bird", "mountain", "bed", "train", "bridge", "fish", "cloud", "chair", "cat", "baby",
    "castle", "forest", "television", "bear", "camel", "sea", "fox", "plain", "bus", "snake",
    "lamp", "clock", "lion", "tank", "palm", "rabbit", "pine", "cattle", "oak", "mouse",
    "frog", "ray", "bicycle", "truck", "elephant", "roses", "wolf", "telephone", "bee", "whale",
)  # fmt: skip
PAPER_CLASSES = LUMA_CLASSES[:22]  # MILES's 22 classes: not published, the first 22 are our guess
LUMA_MEAN, LUMA_STD = (0.51, 0.49, 0.44), (0.27, 0.26, 0.28)
MODALITIES = ("audio", "image")
AUDIO_TABLES = ("audio_data_unprocessed.csv", "audio/datalist.csv")
IMAGE_TABLES = (("image_data_unprocessed.pickle",), ("image_data.pickle", "image_data_test.pickle"))


class Luma(FileDataset):
    name = "luma"
    version = 1
    modalities = MODALITIES
    classes: tuple[str, ...] = PAPER_CLASSES  # data.classes changes it per instance

    def __init__(
        self,
        data_root: str | os.PathLike[str] | None,
        *,
        classes: Sequence[str] | None = None,
        per_class: int = 1500,
        n_val: int | None = None,
        n_test: int | None = None,
        stratify: bool = False,
        seed: int = 0,
        sample_rate: int = 16000,
        resample_audio: bool = True,
        n_mels: int = 96,
        n_frames: int = 96,
        n_fft: int = 400,
        hop_length: int = 200,
        log_mel: bool = True,
        image_size: int = 96,
    ) -> None:
        n = self.name
        if classes is not None and (isinstance(classes, str) or not isinstance(classes, Sequence)):
            raise DatasetError(f"luma: data.classes must be a list of class names, got {classes!r}")
        self.classes = tuple(classes) if classes is not None else PAPER_CLASSES
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise DatasetError(
                f"luma: data.classes must be at least two distinct names, got {list(self.classes)}"
            )
        unknown = [c for c in self.classes if c not in LUMA_CLASSES]
        if unknown:
            raise DatasetError(
                f"luma: data.classes has names that are not LUMA classes: {unknown}; "
                f"choose from {', '.join(LUMA_CLASSES)}"
            )
        self.per_class = int_option(n, "per_class", per_class)
        total = self.per_class * len(self.classes)
        default_held_out = math.floor(total * 4000 / 33000)
        self.n_val = int_option(n, "n_val", n_val if n_val is not None else default_held_out)
        self.n_test = int_option(n, "n_test", n_test if n_test is not None else default_held_out)
        if self.n_val + self.n_test >= total:
            raise DatasetError(
                f"luma: data.n_val + data.n_test = {self.n_val + self.n_test} leaves no training pairs out "
                f"of {total} (data.per_class {self.per_class} × {len(self.classes)} classes); lower them"
            )
        self.stratify, self.seed = bool(stratify), int_option(n, "seed", seed, minimum=0)
        self.sample_rate, self.resample_audio = (
            int_option(n, "sample_rate", sample_rate),
            bool(resample_audio),
        )
        self.n_mels = int_option(n, "n_mels", n_mels)
        self.n_frames = int_option(n, "n_frames", n_frames)
        self.n_fft = int_option(n, "n_fft", n_fft, minimum=2)
        self.hop_length = int_option(n, "hop_length", hop_length)
        self.log_mel, self.image_size = bool(log_mel), int_option(n, "image_size", image_size)
        super().__init__(data_root)
        self.audio_table = next((self.root / t for t in AUDIO_TABLES if (self.root / t).is_file()), None)
        if self.audio_table is None:
            raise self.files_error(
                f"luma: no audio list in {self.root}: expected {' or '.join(AUDIO_TABLES)}",
                self.root / AUDIO_TABLES[1],
            )
        self.image_tables = next(
            (
                [self.root / t for t in group if (self.root / t).is_file()]
                for group in IMAGE_TABLES
                if (self.root / group[0]).is_file()
            ),
            None,
        )
        if not self.image_tables:
            raise self.files_error(
                f"luma: no image pickle in {self.root}: expected image_data_unprocessed.pickle or "
                "image_data.pickle (run LUMA's get_unprocessed_data.py, which builds them from CIFAR "
                "and edm_images.pickle)",
                self.root / IMAGE_TABLES[0][0],
            )
        self.audio_root = self.root / "audio"
        self._audio: Any = None  # pandas DataFrame (path, label)
        self._images: np.ndarray | None = None  # (N, H, W, 3) uint8
        self._image_labels: np.ndarray | None = None

    def settings(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "per_class": self.per_class,
            "n_val": self.n_val,
            "n_test": self.n_test,
            "stratify": self.stratify,
            "seed": self.seed,
            "sample_rate": self.sample_rate,
            "resample_audio": self.resample_audio,
            "n_mels": self.n_mels,
            "n_frames": self.n_frames,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "log_mel": self.log_mel,
            "image_size": self.image_size,
            "audio_table": self.audio_table.name,
            "image_tables": [p.name for p in self.image_tables],
        }

    def source_files(self) -> list[Path]:
        # tables only: stat'ing every WAV of the full audio pool would cost more than it protects
        # (the clips are referenced by the table, which changes when they do)
        return [self.audio_table, *self.image_tables]

    def fields(self) -> dict[str, Field]:
        return {
            "audio": Field((1, self.n_mels, self.n_frames), "float32"),
            "image": Field((32, 32, 3), "uint8"),
            LABEL: Field((), "int64"),
        }

    def transforms(self, stats: dict[str, list[float]]):
        return {"image": image_to_input(LUMA_MEAN, LUMA_STD, (self.image_size, self.image_size))}

    def sample_source(self, sample_id: str, field: str) -> str:
        a_part, i_part = sample_id.split("-")
        if field == "audio" and self._audio is not None:
            wav = self.audio_root / str(self._audio["path"][int(a_part[1:])])
            return f"{wav}, row {a_part[1:]} of {self.audio_table}"
        return f"audio row {a_part[1:]} of {self.audio_table}, image row {i_part[1:]} of the image tables"

    def check_headers(self) -> None:
        """The audio table's header line must name the columns the loader reads (no pandas, no pickle)."""
        import csv

        try:
            with open(self.audio_table, newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), [])
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(f"luma: cannot read {self.audio_table}: {exc}", self.audio_table) from exc
        self._check_columns(header)

    def _check_columns(self, columns: Sequence[str]) -> None:
        missing = {"path", "label"} - set(columns)
        if missing:
            raise DatasetError(
                f"luma: {self.audio_table} lacks column(s) {sorted(missing)}; has {list(columns)}",
                self.audio_table,
            )

    # --- tables -----------------------------------------------------------------------------
    def _load_audio_table(self):
        if self._audio is None:
            pd = require("pandas", "reading LUMA's tables")
            try:
                table = pd.read_csv(self.audio_table)
            except Exception as exc:
                raise DatasetError(f"luma: cannot read {self.audio_table}: {exc}", self.audio_table) from exc
            self._check_columns(list(table.columns))
            self._audio = table[["path", "label"]].reset_index(drop=True)
        return self._audio

    def _load_images(self) -> tuple[np.ndarray, np.ndarray]:
        if self._images is None:
            pd = require("pandas", "reading LUMA's image pickles")
            images, labels = [], []
            for path in self.image_tables:
                try:
                    frame = pd.read_pickle(path)
                except Exception as exc:
                    raise DatasetError(f"luma: cannot read the image pickle {path}: {exc}", path) from exc
                if not hasattr(frame, "columns") or not {"image", "label"} <= set(frame.columns):
                    cols = list(getattr(frame, "columns", []))
                    raise DatasetError(
                        f"luma: {path} is not a DataFrame with image and label columns ({cols})", path
                    )
                for i, img in enumerate(frame["image"]):
                    arr = np.asarray(img)
                    if arr.shape != (32, 32, 3):
                        raise DatasetError(
                            f"luma: row {i} of {path} holds an image of shape {arr.shape}, "
                            "expected (32, 32, 3)",
                            path,
                        )
                    images.append(arr.astype(np.uint8, copy=False))
                labels.extend(str(v) for v in frame["label"])
            self._images = np.stack(images) if images else np.zeros((0, 32, 32, 3), np.uint8)
            self._image_labels = np.asarray(labels, dtype=object)
        return self._images, self._image_labels

    # --- planning ---------------------------------------------------------------------------
    def plan(self) -> Plan:
        audio = self._load_audio_table()
        _, image_labels = self._load_images()
        audio_labels = audio["label"].astype(str).to_numpy()
        rng = np.random.default_rng(self.seed)
        pairs, pair_class = [], []
        for c, name in enumerate(self.classes):
            a_rows = np.flatnonzero(audio_labels == name)
            i_rows = np.flatnonzero(image_labels == name)
            for what, rows, table in (
                ("audio clips", a_rows, self.audio_table),
                ("images", i_rows, self.image_tables[0]),
            ):
                if len(rows) < self.per_class:
                    raise DatasetError(
                        f"luma: class {name!r} has {len(rows)} {what} in {table}, fewer than "
                        f"data.per_class={self.per_class}; lower data.per_class or choose other data.classes",
                        table,
                    )
            a_pick = rng.choice(a_rows, self.per_class, replace=False)
            i_pick = rng.choice(i_rows, self.per_class, replace=False)
            pairs += [f"a{a}-i{i}" for a, i in zip(a_pick, i_pick, strict=True)]
            pair_class += [c] * self.per_class
        total = len(pairs)
        n_train = total - self.n_val - self.n_test
        if self.stratify:
            parts = stratified_split(np.asarray(pair_class), [n_train, self.n_val, self.n_test], self.seed)
        else:
            perm = rng.permutation(total)
            parts = [perm[:n_train], perm[n_train : n_train + self.n_val], perm[n_train + self.n_val :]]
        ids = {s: [pairs[i] for i in part] for s, part in zip(("train", "val", "test"), parts, strict=True)}
        return Plan(ids=ids, info={"classes": list(self.classes)})

    # --- decoding ---------------------------------------------------------------------------
    def _mel(self, rel: str) -> np.ndarray:
        path = self.audio_root / rel
        samples, rate = read_wav(path)
        if samples.size == 0:
            raise DatasetError(f"luma: {path} has no audio samples", path)
        x = torch.from_numpy(samples).to(torch.float64)
        if self.resample_audio and rate != self.sample_rate:
            x = resample(x, rate, self.sample_rate)
        mel = mel_spectrogram(
            x,
            self.sample_rate,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            f_max=self.sample_rate / 2,
        )  # (n_mels, T)
        t = mel.shape[-1]
        mel = (
            mel[:, : self.n_frames]
            if t >= self.n_frames
            else torch.nn.functional.pad(mel, (0, self.n_frames - t))
        )
        if self.log_mel:
            mel = torch.log(mel + 1e-6)
        return mel[None].float().numpy()

    def decode_batch(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        audio_table = self._load_audio_table()
        images, image_labels = self._load_images()
        n = len(ids)
        audio = np.empty((n, 1, self.n_mels, self.n_frames), np.float32)
        image = np.empty((n, 32, 32, 3), np.uint8)
        labels = np.empty(n, np.int64)
        paths = audio_table["path"].to_numpy()
        audio_labels = audio_table["label"].astype(str).to_numpy()
        for k, sample in enumerate(ids):
            a_part, i_part = sample.split("-")
            a, i = int(a_part[1:]), int(i_part[1:])
            audio[k] = self._mel(str(paths[a]))
            image[k] = images[i]
            labels[k] = self.classes.index(audio_labels[a])
        return {"audio": audio, "image": image, LABEL: labels}

    def close(self) -> None:
        self._audio = self._images = self._image_labels = None

    def make_data(self, splits: dict[str, Dataset], info: dict[str, Any]) -> MultimodalData:
        return MultimodalData(
            name=self.name,
            modalities=self.modalities,
            task=self.task,
            num_classes=len(self.classes),
            train=splits["train"],
            val=splits["val"],
            test=splits["test"],
            encoders={
                "audio": EncoderSpec("resnet6", {"in_channels": 1, "small_input": True}),
                "image": EncoderSpec("resnet6", {"in_channels": 3, "small_input": True}),
            },
            default_metric=self.default_metric,
            info=info,
        )


luma = register_dataset("luma", Luma.describe())(
    dataset_factory(
        Luma,
        "LUMA audio (mel) + image over a configurable class list; see :mod:`miles_tune.data.luma`.",
    )
)
