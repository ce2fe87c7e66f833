"""Datasets: a registry of factories returning :class:`MultimodalData`.

``create_dataset("synthetic", form="image")`` builds one; ``list_datasets()``
names them all. Importing this package registers the built-in datasets.
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


from miles_tune.data import synthetic  # noqa: E402,F401  (registers "synthetic")

__all__ = [
    "DATASETS",
    "EncoderSpec",
    "MultimodalData",
    "TensorSplit",
    "create_dataset",
    "iterate_batches",
    "list_datasets",
    "register_dataset",
]
