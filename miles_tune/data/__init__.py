"""Datasets: a registry of factories returning :class:`MultimodalData`.

``create_dataset("synthetic", form="image")`` builds one; ``list_datasets()``
names them all. Importing this package registers the built-in datasets: ``synthetic``
and ``mfeat`` (in memory), and the paper's four in their published layouts,
``cremad``, ``smnist``, ``luma`` and ``mmimdb``, which decode once into a memory-mapped
Arrow cache (:mod:`miles_tune.data.cache`;
``python -m miles_tune.data prepare --dataset NAME [--data-root PATH]``).

**Where the files are.** ``data_root=PATH``, or by default ``$MILES_TUNE_DATA/<name>``,
else ``~/.cache/miles_tune/data/<name>`` (:func:`default_data_root`); the cache goes
under the data root's ``.miles_cache``.

**Before building.** :func:`dataset_info` gives a dataset's task, modalities and default
metric from its registration; :func:`probe_dataset` checks the options and, for the file
datasets, that the files are there (stat and small headers only, no decoding): the search
driver calls it before starting Ray, so a bad setting fails once, in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from miles_tune.data.base import EncoderSpec, MultimodalData, TensorSplit, iterate_batches
from miles_tune.data.errors import DatasetError
from miles_tune.data.paths import DATA_ENV, data_home, default_data_root
from miles_tune.data.probe import DatasetInfo, DatasetProbe
from miles_tune.registry import Registry

DATASETS: Registry[MultimodalData] = Registry("dataset")
DATASET_INFO: dict[str, DatasetInfo] = {}


def register_dataset(
    name: str, info: DatasetInfo | None = None
) -> Callable[[Callable[..., MultimodalData]], Callable[..., MultimodalData]]:
    """Decorator registering a factory; ``info`` (task, modalities, probe) lets the search check
    the dataset without building it. A dataset registered without it is built by the probe."""
    register = DATASETS.register(name)

    def deco(factory: Callable[..., MultimodalData]) -> Callable[..., MultimodalData]:
        register(factory)
        if info is not None:
            DATASET_INFO[name] = info
        return factory

    return deco


def create_dataset(name: str, **kwargs: Any) -> MultimodalData:
    return DATASETS.create(name, **kwargs)


_HELD: dict[str, MultimodalData] = {}  # at most one dataset per process: see held_dataset


def held_dataset(name: str, **kwargs: Any) -> MultimodalData:
    """:func:`create_dataset`, built once per process for the same name and options.

    A Ray worker that Tune reuses for the search's next trial trains it on the tensors it
    already holds (or the memory-mapped cache it already opened) instead of building them
    again. Only the latest dataset is held, so a worker never holds two. The splits are
    shared, read-only: the loop never writes into them (``split_holdout`` copies)."""
    import json

    key = json.dumps([name, kwargs], sort_keys=True, default=repr)
    if key not in _HELD:
        _HELD.clear()  # release the previous one before building the next
        _HELD[key] = create_dataset(name, **kwargs)
    return _HELD[key]


def list_datasets() -> list[str]:
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo | None:
    """Task, modalities and default metric of ``name`` at its default options, without building
    it; None for a dataset registered without them. Refuses an unknown name (ConfigError)."""
    DATASETS.get(name)
    return DATASET_INFO.get(name)


def probe_dataset(name: str, **kwargs: Any) -> DatasetProbe:
    """Check ``name`` with these ``create_dataset`` options cheaply, before any trial starts.

    Validates every option (an unknown or bad one is a ConfigError naming ``data.<option>``)
    and, for a file dataset, that its data root exists and holds the files the loader needs:
    each source file is stat'ed (the cache key's fingerprint), and unless a complete cache
    for these settings exists, small headers are read (S-MNIST's ``.npy`` shapes against
    ``data.n_train``/``n_val``/``n_test``; LUMA's CSV columns). Nothing is decoded, no
    cache written, no model loaded. Raises :class:`DatasetError` for the files (one line,
    naming the path and the setting to change); returns a :class:`DatasetProbe`.
    """
    DATASETS.check_kwargs(name, kwargs, prefix="data.")  # the name, each option's name and type
    info = DATASET_INFO.get(name)
    if info is not None:
        return info.probe(**kwargs)
    # registered without info: the only way to know its task is to build it
    data = create_dataset(name, **kwargs)
    return DatasetProbe(
        name=name,
        task=data.task,
        modalities=tuple(data.modalities),
        num_classes=data.num_classes,
        default_metric=data.default_metric,
    )


from miles_tune.data import (  # noqa: E402,F401  (importing a module registers its dataset)
    cremad,
    luma,
    mfeat,
    mmimdb,
    smnist,
    synthetic,
)

__all__ = [
    "DATASETS",
    "DATASET_INFO",
    "DATA_ENV",
    "DatasetError",
    "DatasetInfo",
    "DatasetProbe",
    "EncoderSpec",
    "MultimodalData",
    "TensorSplit",
    "create_dataset",
    "data_home",
    "dataset_info",
    "default_data_root",
    "held_dataset",
    "iterate_batches",
    "list_datasets",
    "probe_dataset",
    "register_dataset",
]
