"""Datasets: a registry of factories returning :class:`MultimodalData`.

``create_dataset("synthetic", form="image")`` builds one; ``list_datasets()``
names them all. Importing this package registers the built-in datasets: ``synthetic``
and ``mfeat`` (in memory), and the paper's four in their published layouts,
``cremad``, ``smnist``, ``luma`` and ``mmimdb`` (``data_root=...``), which decode once
into a memory-mapped Arrow cache (:mod:`miles_tune.data.cache`;
``python -m miles_tune.data prepare --dataset NAME --data-root PATH``).
"""

from __future__ import annotations

from typing import Any

from miles_tune.data.base import EncoderSpec, MultimodalData, TensorSplit, iterate_batches
from miles_tune.registry import Registry

DATASETS: Registry[MultimodalData] = Registry("dataset")
register_dataset = DATASETS.register


def create_dataset(name: str, **kwargs: Any) -> MultimodalData:
    return DATASETS.create(name, **kwargs)


def list_datasets() -> list[str]:
    return DATASETS.names()


from miles_tune.data import (  # noqa: E402,F401  (importing a module registers its dataset)
    cremad,
    luma,
    mfeat,
    mmimdb,
    smnist,
    synthetic,
)
from miles_tune.data.errors import DatasetError  # noqa: E402

__all__ = [
    "DATASETS",
    "DatasetError",
    "EncoderSpec",
    "MultimodalData",
    "TensorSplit",
    "create_dataset",
    "iterate_batches",
    "list_datasets",
    "register_dataset",
]
