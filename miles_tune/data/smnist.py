"""S-MNIST: Khacef et al.'s "Written and spoken digits database for multimodal learning" (Zenodo 3515934).

Layout under ``data_root`` (default ``$MILES_TUNE_DATA/smnist`` or
``~/.cache/miles_tune/data/smnist``; the six files of the Zenodo record)::

    data_wr_train.npy  (60000, 784)   MNIST images
    data_sp_train.npy  (60000, 507)   spoken digits: 39 frames × 13 MFCC (12 + energy), time-major
    labels_train.npy   (60000,)
    data_wr_test.npy, data_sp_test.npy, labels_test.npy   (10000, ...)

The dtypes are not documented: images may be uint8 (0..255) or floats (0..1 or 0..255;
anything above 1.5 is divided by 255), labels integers or one-hot rows (argmax).
Images may also come as (N, 28, 28[, 1]) and MFCCs as (N, 39, 13). Labels must be whole
numbers in 0..9 (float labels such as 3.7 are refused, not truncated) or exact one-hot
rows; NaN or infinite features are refused when the cache is built, naming the file and
row. The probe reads only the ``.npy`` headers (shapes against ``n_train``/``n_val``/
``n_test``).

**Split (MILES).** 8,000 training and 2,000 validation samples drawn at random (seeded)
from the 60,000 training rows, 2,000 test samples from the 10,000 test rows (options
``n_train``/``n_val``/``n_test``). The spoken vectors were *duplicated* to reach 60,000
rows, so a plain draw can put the same MFCC array in training and validation;
``dedupe=True`` groups the rows by identical MFCC vectors and gives each group to one
split only (groups are taken in the random order of their first row; whole groups
fill validation first, then training; rows of a group beyond a split's need are
unused). Off by default because the paper does not mention it.

**Preprocessing (MILES: "reshape and resize both modalities to be 28×28").** Image:
(1, 28, 28) in [0, 1]. Audio: (1, 39, 13) bilinearly resized to (1, 28, 28)
(align_corners=False). Both float32. ``standardize=True`` additionally applies
``(x - mean) / std`` per modality with scalar statistics of the training split (off by
default: the published MFCCs are already standardised).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from miles_tune.data import register_dataset
from miles_tune.data.base import EncoderSpec, MultimodalData
from miles_tune.data.cache import LABEL, Field, FileDataset, Plan, dataset_factory
from miles_tune.data.errors import DatasetError, int_option
from miles_tune.data.transforms import Standardize

MODALITIES = ("image", "audio")
FILES = {"image": "data_wr_{}.npy", "audio": "data_sp_{}.npy", LABEL: "labels_{}.npy"}
MFCC_SHAPE = (39, 13)
IMAGE_SHAPES = ((784,), (28, 28), (28, 28, 1), (1, 28, 28))


def parse_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    """(N,) int64 digits from integer labels, whole-number floats or exact one-hot rows; anything
    else (3.7, NaN, soft or empty one-hot rows, strings) is refused naming the file and row."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        hot = np.isin(labels, (0, 1)).all(axis=1) & (labels.sum(axis=1) == 1)
        if not hot.all():
            r = int(np.flatnonzero(~hot)[0])
            raise DatasetError(
                f"smnist: labels in {path} are not one-hot rows (row {r} is {labels[r].tolist()})", path
            )
        return labels.argmax(1).astype(np.int64)
    if labels.ndim != 1:
        raise DatasetError(f"smnist: {path} has shape {labels.shape}; expected (N,) or one-hot (N, 10)", path)
    if labels.dtype.kind == "f":
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            r = int(np.flatnonzero(~whole)[0])
            raise DatasetError(
                f"smnist: labels in {path} are not whole numbers (row {r} is {float(labels[r]):g})", path
            )
    elif labels.dtype.kind not in "iu":
        raise DatasetError(f"smnist: labels in {path} have dtype {labels.dtype}; expected integers", path)
    out = labels.astype(np.int64)
    bad = (out < 0) | (out > 9)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DatasetError(f"smnist: labels outside 0..9 in {path} (row {r} is {out[r]})", path)
    return out


class SMnist(FileDataset):
    name = "smnist"
    version = 1
    modalities = MODALITIES
    classes = tuple(str(d) for d in range(10))

    def __init__(
        self,
        data_root: str | os.PathLike[str] | None,
        *,
        n_train: int = 8000,
        n_val: int = 2000,
        n_test: int = 2000,
        seed: int = 0,
        dedupe: bool = False,
        image_size: int = 28,
        standardize: bool = False,
    ) -> None:
        self.n_train = int_option(self.name, "n_train", n_train)
        self.n_val = int_option(self.name, "n_val", n_val)
        self.n_test = int_option(self.name, "n_test", n_test)
        self.seed = int_option(self.name, "seed", seed, minimum=0)
        self.image_size = int_option(self.name, "image_size", image_size)
        self.dedupe, self.standardize = bool(dedupe), bool(standardize)
        super().__init__(data_root)
        self.paths = {
            (part, key): self.root / pattern.format(part)
            for part in ("train", "test")
            for key, pattern in FILES.items()
        }
        for path in self.paths.values():
            if not path.is_file():
                raise self.missing(path, detail="one of the six S-MNIST .npy files of Zenodo 3515934")
        self._arrays: dict[str, dict[str, np.ndarray]] | None = None
        self._scale: dict[str, float] = {}

    def settings(self) -> dict[str, Any]:
        return {
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_test": self.n_test,
            "seed": self.seed,
            "dedupe": self.dedupe,
            "image_size": self.image_size,
            "standardize": self.standardize,
        }

    def source_files(self) -> list[Path]:
        return list(self.paths.values())

    def fields(self) -> dict[str, Field]:
        s = self.image_size
        return {
            "image": Field((1, s, s), "float32"),
            "audio": Field((1, s, s), "float32"),
            LABEL: Field((), "int64"),
        }

    def stats_fields(self) -> tuple[str, ...]:
        return MODALITIES if self.standardize else ()

    def transforms(self, stats: dict[str, list[float]]):
        return {m: Standardize(*stats[m]) for m in MODALITIES if m in stats}

    def sample_source(self, sample_id: str, field: str) -> str:
        part, row = sample_id.split("/")
        return f"row {row} of {self.paths[part, field]}"

    # --- reading and checking the files -------------------------------------------------------
    def _load_npy(self, path: Path) -> np.ndarray:
        if not path.is_file():
            raise self.missing(path)
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)  # reads the header only
        except Exception as exc:  # ValueError for pickled/corrupt headers, OSError for truncated files
            raise DatasetError(f"smnist: cannot read {path} as a NumPy array: {exc}", path) from exc

    def _open(self, part: str) -> dict[str, np.ndarray]:
        """The memory-mapped arrays of ``part`` with their shapes checked (headers only, no data read)."""
        image = self._load_npy(self.paths[part, "image"])
        audio = self._load_npy(self.paths[part, "audio"])
        labels = self._load_npy(self.paths[part, LABEL])
        if image.shape[1:] not in IMAGE_SHAPES:
            raise DatasetError(
                f"smnist: {self.paths[part, 'image']} has shape {image.shape}; "
                "expected (N, 784) MNIST images",
                self.paths[part, "image"],
            )
        if audio.shape[1:] not in ((507,), MFCC_SHAPE):
            raise DatasetError(
                f"smnist: {self.paths[part, 'audio']} has shape {audio.shape}; "
                "expected (N, 507) = 39×13 MFCCs",
                self.paths[part, "audio"],
            )
        if labels.ndim not in (1, 2):
            raise DatasetError(
                f"smnist: {self.paths[part, LABEL]} has shape {labels.shape}; "
                "expected (N,) or one-hot (N, 10)",
                self.paths[part, LABEL],
            )
        n = len(image)
        for key, arr in (("audio", audio), (LABEL, labels)):
            if len(arr) != n:
                raise DatasetError(
                    f"smnist: {self.paths[part, key]} has {len(arr)} rows but "
                    f"{self.paths[part, 'image'].name} has {n}",
                    self.paths[part, key],
                )
        return {"image": image, "audio": audio, LABEL: labels}

    def _check_sizes(self, n_rows: int, n_test_rows: int) -> None:
        need = self.n_train + self.n_val
        if need > n_rows:
            raise DatasetError(
                f"smnist: data.n_train + data.n_val = {need} exceeds the {n_rows} rows of "
                f"{self.paths['train', 'image']}; lower them",
                self.paths["train", "image"],
            )
        if self.n_test > n_test_rows:
            raise DatasetError(
                f"smnist: data.n_test = {self.n_test} exceeds the {n_test_rows} rows of "
                f"{self.paths['test', 'image']}; lower it",
                self.paths["test", "image"],
            )

    def check_headers(self) -> None:
        train, test = self._open("train"), self._open("test")
        self._check_sizes(len(train["image"]), len(test["image"]))

    def _load(self) -> dict[str, dict[str, np.ndarray]]:
        if self._arrays is not None:
            return self._arrays
        arrays: dict[str, dict[str, np.ndarray]] = {}
        for part in ("train", "test"):
            a = self._open(part)
            a[LABEL] = parse_labels(a[LABEL], self.paths[part, LABEL])
            image = a["image"]
            # uint8, or floats above 1.5: 0..255 pixel values (NaN is refused when the cache is written)
            big = image.dtype == np.uint8 or (len(image) > 0 and float(np.nanmax(image)) > 1.5)
            self._scale[part] = 255.0 if big else 1.0
            arrays[part] = a
        self._arrays = arrays
        return arrays

    # --- planning ---------------------------------------------------------------------------
    def _draw_train_val(self, audio: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
        need = self.n_train + self.n_val
        rng = np.random.default_rng(self.seed)
        perm = rng.permutation(n_rows)
        if not self.dedupe:
            return perm[: self.n_train], perm[self.n_train : need]
        group: dict[bytes, int] = {}
        gid = np.empty(n_rows, np.int64)
        flat = np.ascontiguousarray(audio.reshape(n_rows, -1))
        for r in range(n_rows):
            gid[r] = group.setdefault(hashlib.blake2b(flat[r].tobytes(), digest_size=16).digest(), len(group))
        # groups in the order of their first row in the permutation (a row-weighted random order);
        # each whole group goes to validation until it is full, then to training
        members: dict[int, list[int]] = {}
        for r in perm:
            members.setdefault(int(gid[r]), []).append(int(r))
        val: list[int] = []
        train: list[int] = []
        for rows in members.values():
            if len(val) < self.n_val:
                val += rows[: self.n_val - len(val)]
            elif len(train) < self.n_train:
                train += rows[: self.n_train - len(train)]
            else:
                break
        if len(val) < self.n_val or len(train) < self.n_train:
            raise DatasetError(
                f"smnist: with dedupe only {len(train)} training and {len(val)} validation rows "
                f"could be drawn from {len(group)} distinct spoken vectors; lower data.n_train/data.n_val",
                self.paths["train", "audio"],
            )
        return np.asarray(train), np.asarray(val)

    def plan(self) -> Plan:
        arrays = self._load()
        n_rows, n_test_rows = len(arrays["train"][LABEL]), len(arrays["test"][LABEL])
        self._check_sizes(n_rows, n_test_rows)
        train, val = self._draw_train_val(arrays["train"]["audio"], n_rows)
        test = np.random.default_rng(self.seed + 1).permutation(n_test_rows)[: self.n_test]
        ids = {
            "train": [f"train/{r}" for r in train],
            "val": [f"train/{r}" for r in val],
            "test": [f"test/{r}" for r in test],
        }
        return Plan(ids=ids, info={"dedupe": self.dedupe, "image_scale": dict(self._scale)})

    # --- decoding ---------------------------------------------------------------------------
    def decode_batch(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        arrays = self._load()
        n = len(ids)
        s = self.image_size
        image = np.empty((n, 1, 28, 28), np.float32)
        audio = np.empty((n, 1, *MFCC_SHAPE), np.float32)
        labels = np.empty(n, np.int64)
        for i, sample in enumerate(ids):
            part, row = sample.split("/")
            a = arrays[part]
            r = int(row)
            image[i, 0] = np.asarray(a["image"][r], dtype=np.float32).reshape(28, 28) / self._scale[part]
            audio[i, 0] = np.asarray(a["audio"][r], dtype=np.float32).reshape(MFCC_SHAPE)
            labels[i] = a[LABEL][r]
        img = torch.from_numpy(image)
        if s != 28:
            img = F.interpolate(img, size=(s, s), mode="bilinear", align_corners=False, antialias=s < 28)
        aud = F.interpolate(torch.from_numpy(audio), size=(s, s), mode="bilinear", align_corners=False)
        return {"image": img.numpy(), "audio": aud.numpy(), LABEL: labels}

    def close(self) -> None:
        self._arrays = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def make_data(self, splits: dict[str, Dataset], info: dict[str, Any]) -> MultimodalData:
        enc = EncoderSpec("resnet10", {"in_channels": 1, "small_input": True})
        return MultimodalData(
            name=self.name,
            modalities=self.modalities,
            task=self.task,
            num_classes=len(self.classes),
            train=splits["train"],
            val=splits["val"],
            test=splits["test"],
            encoders={"image": enc, "audio": enc},
            default_metric=self.default_metric,
            info=info,
        )


smnist = register_dataset("smnist", SMnist.describe())(
    dataset_factory(SMnist, "S-MNIST written + spoken digits; see :mod:`miles_tune.data.smnist`.")
)
