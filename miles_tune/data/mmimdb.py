"""MM-IMDb (Arevalo et al. 2017): movie plot + poster, 23 genres, multilabel.

Two published forms under ``data_root`` (default ``$MILES_TUNE_DATA/mmimdb`` or
``~/.cache/miles_tune/data/mmimdb``; the folder of ``mmimdb.tar.gz``'s ``mmimdb/``, or its
parent):

- **raw** (``form="raw"``)::

      split.json                 {"train": [ids], "dev": [ids], "test": [ids]}  (15,552 / 2,608 / 7,799)
      dataset/<imdb_id>.json     IMDbPY dump: "plot" (list of strings), "genres" (list), ...
      dataset/<imdb_id>.jpeg     the poster

- **HDF5** (``form="hdf5"``; Fuel's ``multimodal_imdb.hdf5`` + ``metadata.npy``): rows
  ordered train → dev → test (split from the file's ``split`` attribute, else the
  published counts); ``images`` (N, 3, 256, 160) int32, BGR, VGG-mean-subtracted (undone
  here); ``sequences`` (word ids, turned back into text through ``metadata.npy``'s
  ``ix_to_word``: lower-cased, digits replaced by ``N``, punctuation split, so not the
  original plot); ``genres`` (N, 23) 0/1 with ``attrs["target_names"]``. Needs h5py.

**Security: ``metadata.npy`` is a Python pickle** (read with ``np.load(allow_pickle=True)``,
because the published HDF5 form ships its vocabulary that way). Unpickling runs code
chosen by whoever wrote the file, so only use a ``metadata.npy`` from a source you trust
(the official archive); the raw form (JSON + JPEG) loads no pickle at all.

``form="auto"`` takes raw when ``split.json`` exists, else HDF5.

**Labels.** The 23 genres of :data:`GENRES` (frequency order), multi-hot float32; the
order is stored in ``info["classes"]``. Other genres (e.g. News) are ignored; a genre
entry that is not a string (raw form) or a ``genres`` value other than 0/1 (HDF5) is an
error naming the file and row.

**Probe.** Stats ``split.json``'s listed ``<id>.json``/``<id>.jpeg`` (raw) or the HDF5
and ``metadata.npy`` (reading ``split.json``, no pickle, no text model).

**Text (MILES: pre-trained BERT-base on the plot).** The longest ``plot`` entry (as
MMF does). Two input forms, ``text=``:

- ``"features"`` (default; the CPU-friendly one): the frozen backbone ``text_model``
  embeds every plot once while the cache is built ([CLS] pooling by default) and an MLP
  encoder is trained on the stored vectors. Fine-tuning BERT-base on a CPU costs hours
  per epoch; computing the features of all 25,959 plots with MiniLM takes ~30 min on
  two cores, once.
- ``"tokens"``: token ids (``max_length``, padded) are stored and the ``"bert"`` encoder
  fine-tunes the same backbone (``miles_tune.models.text``). Use it on a GPU.

``text_model``: ``"bert-base-uncased"`` (default, needs the network or the HF cache), a
local folder, ``"minilm-offline"`` or ``"tiny-random"``; see :mod:`miles_tune.data.text`.
``max_length`` defaults to 512 (BERT), 256 for MiniLM. The text model's identity (name,
or a local folder's file stats) is part of the cache key.

**Image (MILES: ResNet-50).** Pillow RGB; shorter side resized to 256 (antialiased
bilinear), centre crop 224×224, stored uint8; normalised at read time with the MM-IMDb
statistics of the HF transformers example (mean 0.4678/0.4453/0.4066, std
0.1222/0.1215/0.1438). Whether MILES's ResNet-50 was ImageNet-pretrained is unknown;
load torchvision weights with :func:`miles_tune.models.resnet.load_torchvision_state_dict`.

**Metric.** ``f1_micro`` by default (the paper says "F1"; its numbers, ~64 for text, fit
micro rather than macro averaging) [inferred].
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from miles_tune.data import register_dataset
from miles_tune.data.base import EncoderSpec, MultimodalData
from miles_tune.data.cache import LABEL, Field, FileDataset, Plan, dataset_factory
from miles_tune.data.errors import DatasetError, choice_option, int_option, require
from miles_tune.data.media import center_crop, read_image, resize_shorter_side
from miles_tune.data.text import POOLINGS, TextFeaturizer, describe_source
from miles_tune.data.transforms import ToLong, image_to_input

GENRES = (
    "Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror",
    "Documentary", "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History",
    "Music", "Animation", "Musical", "Western", "Sport", "Short", "Film-Noir",
)  # fmt: skip
MMIMDB_MEAN, MMIMDB_STD = (0.4678, 0.4453, 0.4066), (0.1222, 0.1215, 0.1438)
VGG_MEAN_BGR = (103.939, 116.779, 123.68)
HDF5_FILE, SPLIT_FILE = "multimodal_imdb.hdf5", "split.json"
HDF5_COUNTS = (15552, 2608, 7799)
MODALITIES = ("text", "image")


def longest_plot(doc: dict[str, Any], path: Path) -> str:
    plot = doc.get("plot")
    if isinstance(plot, str):
        plot = [plot]
    if not isinstance(plot, list) or not any(isinstance(p, str) and p.strip() for p in plot):
        raise DatasetError(f"mmimdb: {path} has no 'plot' text", path)
    return max((p for p in plot if isinstance(p, str)), key=len)


def multi_hot(genres: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    y = np.zeros(len(classes), np.float32)
    for g in genres:
        if g in classes:
            y[classes.index(g)] = 1.0
    return y


class MMImdb(FileDataset):
    name = "mmimdb"
    version = 1
    task = "multilabel"
    modalities = MODALITIES
    classes = GENRES
    default_metric = "f1_micro"
    decode_threads = None  # the text model's forward pass uses every thread

    def __init__(
        self,
        data_root: str | os.PathLike[str] | None,
        *,
        form: str = "auto",
        text: str = "features",
        text_model: str = "bert-base-uncased",
        text_pooling: str = "cls",
        max_length: int | None = None,
        text_batch_size: int = 16,
        text_seed: int = 0,
        local_files_only: bool = False,
        image_size: int = 224,
        resize: int = 256,
    ) -> None:
        n = self.name
        form = choice_option(n, "form", form, ("auto", "raw", "hdf5"))
        self.text = choice_option(n, "text", text, ("features", "tokens"))
        text_pooling = choice_option(n, "text_pooling", text_pooling, POOLINGS)
        self.image_size = int_option(n, "image_size", image_size)
        self.resize = int_option(n, "resize", resize)
        if self.resize < self.image_size:
            raise DatasetError(
                f"mmimdb: data.resize ({self.resize}) must be >= data.image_size ({self.image_size})"
            )
        if max_length is not None:
            max_length = int_option(n, "max_length", max_length, minimum=2)
        text_batch_size = int_option(n, "text_batch_size", text_batch_size)
        text_seed = int_option(n, "text_seed", text_seed, minimum=0)
        if not isinstance(text_model, str) or not text_model:
            raise DatasetError(f"mmimdb: data.text_model must be a model name or folder, got {text_model!r}")
        super().__init__(data_root)
        if (self.root / "mmimdb").is_dir() and not (self.root / SPLIT_FILE).is_file():
            self.root = self.root / "mmimdb"
        if form == "auto":
            form = (
                "raw"
                if (self.root / SPLIT_FILE).is_file()
                else "hdf5"
                if (self.root / HDF5_FILE).is_file()
                else "raw"
            )
        self.form = form
        self.featurizer = TextFeaturizer(
            text_model,
            pooling=text_pooling,
            max_length=max_length,
            batch_size=text_batch_size,
            seed=text_seed,
            local_files_only=local_files_only,
        )
        self.text_model, self.text_pooling, self.text_seed = text_model, text_pooling, int(text_seed)
        self.local_files_only = local_files_only
        if form == "raw":
            self.split_file = self.root / SPLIT_FILE
            if not self.split_file.is_file():
                raise self.files_error(
                    f"mmimdb: missing {self.split_file} (raw form: split.json + dataset/<id>.json/.jpeg; "
                    f"or the folder holding {HDF5_FILE})",
                    self.split_file,
                )
            self.dataset_dir = self.root / "dataset"
            if not self.dataset_dir.is_dir():
                raise self.missing(self.dataset_dir, "folder", "<id>.json and <id>.jpeg")
            self._split = self._read_split()
        else:
            self.hdf5_path = self.root / HDF5_FILE
            self.metadata_path = self.root / "metadata.npy"
            for p in (self.hdf5_path, self.metadata_path):
                if not p.is_file():
                    raise self.missing(p, detail=f"HDF5 form: {HDF5_FILE} + metadata.npy")
        self._h5 = None
        self._vocab: dict[int, str] | None = None
        self._text_dim: int | None = None

    # --- description --------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        try:
            model = describe_source(self.text_model)
        except DatasetError as exc:
            raise DatasetError(f"mmimdb: data.text_model={self.text_model!r}: {exc}", exc.path) from exc
        return {
            "form": self.form,
            "text": self.text,
            "text_model": model,
            "text_pooling": self.text_pooling if self.text == "features" else None,
            "max_length": self.featurizer.max_length,
            "text_seed": self.text_seed,
            "image_size": self.image_size,
            "resize": self.resize,
            "classes": list(GENRES),
        }

    def source_files(self) -> list[Path]:
        if self.form == "hdf5":
            return [self.hdf5_path, self.metadata_path]
        ids = [i for s in ("train", "dev", "test") for i in self._split[s]]
        return [self.split_file] + [self.dataset_dir / f"{i}.{ext}" for i in ids for ext in ("json", "jpeg")]

    def sample_source(self, sample_id: str, field: str) -> str:
        if self.form == "hdf5":
            return f"row {sample_id[1:]} of {self.hdf5_path}"
        return str(self.dataset_dir / f"{sample_id}.{'jpeg' if field == 'image' else 'json'}")

    @property
    def text_dim(self) -> int:
        if self._text_dim is None:
            self._text_dim = self.featurizer.hidden_size
        return self._text_dim

    def fields(self) -> dict[str, Field]:
        text = (
            Field((self.text_dim,), "float32")
            if self.text == "features"
            else Field((self.featurizer.max_length,), "int32")
        )
        s = self.image_size
        return {"text": text, "image": Field((s, s, 3), "uint8"), LABEL: Field((len(GENRES),), "float32")}

    def transforms(self, stats: dict[str, list[float]]):
        out = {"image": image_to_input(MMIMDB_MEAN, MMIMDB_STD)}
        if self.text == "tokens":
            out["text"] = ToLong()
        return out

    # --- raw form ---------------------------------------------------------------------------------
    def _read_split(self) -> dict[str, list[str]]:
        try:
            split = json.loads(self.split_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(
                f"mmimdb: corrupt split file {self.split_file}: {exc}", self.split_file
            ) from exc
        if not isinstance(split, dict) or not all(
            isinstance(split.get(k), list) for k in ("train", "dev", "test")
        ):
            raise DatasetError(
                f"mmimdb: {self.split_file} must map 'train', 'dev' and 'test' to lists of ids",
                self.split_file,
            )
        return {k: [str(i) for i in split[k]] for k in ("train", "dev", "test")}

    def _read_json(self, movie: str) -> dict[str, Any]:
        path = self.dataset_dir / f"{movie}.json"
        if not path.is_file():
            raise DatasetError(f"mmimdb: missing file {path}", path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"mmimdb: corrupt JSON {path}: {exc}", path) from exc
        if not isinstance(doc, dict):
            raise DatasetError(f"mmimdb: {path} does not hold a JSON object", path)
        return doc

    def _raw_sample(self, movie: str) -> tuple[str, np.ndarray, np.ndarray]:
        path = self.dataset_dir / f"{movie}.json"
        doc = self._read_json(movie)
        genres = doc.get("genres")
        if not isinstance(genres, list):
            raise DatasetError(f"mmimdb: {path} has no 'genres' list", path)
        if not all(isinstance(g, str) for g in genres):
            raise DatasetError(f"mmimdb: {path} has a genre that is not a name: {genres}", path)
        poster = read_image(self.dataset_dir / f"{movie}.jpeg")
        return longest_plot(doc, path), self._poster(poster), multi_hot(genres, GENRES)

    def _poster(self, rgb: np.ndarray) -> np.ndarray:
        return center_crop(resize_shorter_side(rgb, self.resize), (self.image_size, self.image_size))

    # --- HDF5 form --------------------------------------------------------------------------------
    def _open_h5(self):
        if self._h5 is None:
            h5py = require("h5py", "reading MM-IMDb's HDF5 form")
            try:
                self._h5 = h5py.File(self.hdf5_path, "r")
                for key in ("images", "sequences", "genres"):
                    if key not in self._h5:
                        raise DatasetError(f"mmimdb: {self.hdf5_path} has no {key!r} dataset", self.hdf5_path)
            except DatasetError:
                raise
            except Exception as exc:
                raise DatasetError(f"mmimdb: cannot read {self.hdf5_path}: {exc}", self.hdf5_path) from exc
            images = self._h5["images"]
            if images.ndim != 4 or images.shape[1] != 3:
                raise DatasetError(
                    f"mmimdb: {self.hdf5_path} 'images' has shape {images.shape}, expected (N, 3, H, W)",
                    self.hdf5_path,
                )
            names = self._h5["genres"].attrs.get("target_names")
            names = json.loads(names) if names is not None else list(GENRES)
            self._genre_names = [str(n) for n in names]
        return self._h5

    def _load_vocab(self) -> dict[int, str]:
        if self._vocab is None:
            try:
                meta = np.load(self.metadata_path, allow_pickle=True).item()
                self._vocab = {int(k): str(v) for k, v in meta["ix_to_word"].items()}
            except Exception as exc:
                raise DatasetError(
                    f"mmimdb: cannot read the vocabulary ('ix_to_word') from {self.metadata_path}: {exc}",
                    self.metadata_path,
                ) from exc
        return self._vocab

    def _hdf5_split(self, n: int) -> dict[str, tuple[int, int]]:
        h5 = self._open_h5()
        ranges: dict[str, tuple[int, int]] = {}
        split = h5.attrs.get("split")
        if split is not None and getattr(split, "dtype", None) is not None and split.dtype.names:
            for row in split:
                name = row["split"].decode() if isinstance(row["split"], bytes) else str(row["split"])
                ranges.setdefault(name, (int(row["start"]), int(row["stop"])))
        if not {"train", "dev", "test"} <= set(ranges):
            if n != sum(HDF5_COUNTS):
                raise DatasetError(
                    f"mmimdb: {self.hdf5_path} has no readable 'split' attribute and {n} rows "
                    f"(not the published {sum(HDF5_COUNTS)}), so the split is unknown",
                    self.hdf5_path,
                )
            a, b, _ = HDF5_COUNTS
            ranges = {"train": (0, a), "dev": (a, a + b), "test": (a + b, n)}
        return ranges

    def _hdf5_sample(self, row: int) -> tuple[str, np.ndarray, np.ndarray]:
        h5 = self._open_h5()
        vocab = self._load_vocab()
        words = [vocab.get(int(i), "_UNK_") for i in np.asarray(h5["sequences"][row]).reshape(-1)]
        text = " ".join(words)
        if not text.strip():
            raise DatasetError(f"mmimdb: row {row} of {self.hdf5_path} has an empty plot", self.hdf5_path)
        bgr = np.asarray(h5["images"][row], dtype=np.float64)  # (3, H, W), mean-subtracted BGR
        bgr = bgr + np.asarray(VGG_MEAN_BGR)[:, None, None]
        rgb = np.clip(np.rint(bgr[::-1].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
        genres = np.asarray(h5["genres"][row])
        if not np.isin(genres, (0, 1)).all():
            raise DatasetError(
                f"mmimdb: genres in {self.hdf5_path} are not 0/1 (row {row} is {genres.tolist()})",
                self.hdf5_path,
            )
        names = [g for g, on in zip(self._genre_names, genres, strict=False) if on]
        return text, self._poster(rgb), multi_hot(names, GENRES)

    # --- planning and decoding ----------------------------------------------------------------
    def plan(self) -> Plan:
        names = {"train": "train", "val": "dev", "test": "test"}
        if self.form == "raw":
            for s in ("train", "dev", "test"):
                for movie in self._split[s]:
                    for ext in ("json", "jpeg"):
                        p = self.dataset_dir / f"{movie}.{ext}"
                        if not p.is_file():
                            raise DatasetError(f"mmimdb: missing file {p} (listed in {self.split_file})", p)
            ids = {s: list(self._split[names[s]]) for s in names}
        else:
            h5 = self._open_h5()
            n = len(h5["genres"])
            ranges = self._hdf5_split(n)
            ids = {s: [f"h{r}" for r in range(*ranges[names[s]])] for s in names}
        return Plan(ids=ids, info={"classes": list(GENRES), "form": self.form, "text": self.text})

    def decode_batch(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        texts, images, labels = [], [], []
        for sample in ids:
            text, image, label = (
                self._hdf5_sample(int(sample[1:])) if self.form == "hdf5" else self._raw_sample(sample)
            )
            texts.append(text)
            images.append(image)
            labels.append(label)
        text_arr = (
            self.featurizer.embed(texts) if self.text == "features" else self.featurizer.tokenize(texts)
        )
        return {"text": text_arr, "image": np.stack(images), LABEL: np.stack(labels)}

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
        self._h5 = None
        self.featurizer.close()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_h5": None}

    def make_data(self, splits: dict[str, Dataset], info: dict[str, Any]) -> MultimodalData:
        if self.text == "features":
            text_dim = splits["train"].fields["text"].shape[0]  # from the cache: no model load on a hit
            text_enc = EncoderSpec("mlp", {"in_dim": text_dim, "hidden_dims": (256,), "dropout": 0.1})
        else:
            text_enc = EncoderSpec(
                "bert",
                {
                    "source": self.text_model,
                    "pooling": self.text_pooling,
                    "seed": self.text_seed,
                    "local_files_only": self.local_files_only,
                },
            )
        return MultimodalData(
            name=self.name,
            modalities=self.modalities,
            task=self.task,
            num_classes=len(self.classes),
            train=splits["train"],
            val=splits["val"],
            test=splits["test"],
            encoders={"text": text_enc, "image": EncoderSpec("resnet50", {"in_channels": 3})},
            default_metric=self.default_metric,
            info={"text_model": self.text_model, **info},
        )


mmimdb = register_dataset("mmimdb", MMImdb.describe())(
    dataset_factory(
        MMImdb,
        "MM-IMDb plot + poster, 23-genre multilabel; see :mod:`miles_tune.data.mmimdb`.",
    )
)
