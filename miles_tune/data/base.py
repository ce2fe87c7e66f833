"""What every dataset hands the training loop: named modality tensors, labels, splits.

A dataset is a :class:`MultimodalData`: the modality names, the task type, the
three splits and a default encoder per modality. Splits are any torch ``Dataset``
whose items are ``(dict[modality, Tensor], label)``; small data lives in memory
as :class:`TensorSplit`, which the loop batches by direct indexing (no
DataLoader overhead, which dominates for tiny MLPs). A split with a
``get_batch(index) -> (inputs, labels)`` method (the file datasets' memory-mapped
Arrow cache and raw-decode splits) is batched the same way: one call per batch
instead of one ``__getitem__`` per sample plus collation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset

Task = Literal["multiclass", "multilabel"]
Batch = tuple[dict[str, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EncoderSpec:
    """An encoder by registry name plus its keyword arguments."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


class TensorSplit(Dataset):
    """One in-memory split: a tensor per modality (first dim = samples) and the labels."""

    def __init__(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        n = len(labels)
        for m, x in inputs.items():
            if len(x) != n:
                raise ValueError(f"modality {m!r} has {len(x)} samples but there are {n} labels")
        self.inputs = inputs
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Batch:
        return {m: x[i] for m, x in self.inputs.items()}, self.labels[i]

    def subset(self, index: torch.Tensor) -> TensorSplit:
        index = index.to(self.labels.device)
        return TensorSplit({m: x[index] for m, x in self.inputs.items()}, self.labels[index])

    def to(self, device: torch.device | str) -> TensorSplit:
        """The same split on ``device`` (itself when it is already there)."""
        device = torch.device(device)
        if self.labels.device == device:
            return self
        return TensorSplit({m: x.to(device) for m, x in self.inputs.items()}, self.labels.to(device))


@dataclass
class MultimodalData:
    name: str
    modalities: tuple[str, ...]
    task: Task
    num_classes: int
    train: Dataset
    val: Dataset
    test: Dataset
    encoders: dict[str, EncoderSpec]
    default_metric: str = "acc"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.modalities) < 2:
            raise ValueError(f"dataset {self.name!r} needs at least two modalities, got {self.modalities}")
        missing = set(self.modalities) - set(self.encoders)
        if missing:
            raise ValueError(f"dataset {self.name!r} has no default encoder for {sorted(missing)}")

    def split(self, name: str) -> Dataset:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}")
        return getattr(self, name)


class _BatchesOf(Dataset):
    """Adapter: item ``index`` (a tensor of row indices) is ``split.get_batch(index)``."""

    def __init__(self, split: Dataset) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: torch.Tensor) -> Batch:
        return self.split.get_batch(index)


def iterate_batches(
    split: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    num_workers: int = 0,
    device: torch.device | str = "cpu",
    memory_format: torch.memory_format | None = None,
) -> Iterator[Batch]:
    """Yield ``(inputs, labels)`` batches on ``device``.

    The order depends only on ``seed`` (a fresh generator per call), so an epoch's
    batches are the same whether the run was resumed or not. A :class:`TensorSplit` already
    on the device is indexed there (no copy). Host batches go to a GPU from pinned memory,
    without blocking (the DataLoader's workers pin them when ``num_workers`` > 0).
    ``memory_format`` (``torch.channels_last``) applies to 4-D inputs.
    """
    generator = None
    if shuffle:
        generator = torch.Generator()
        generator.manual_seed(0 if seed is None else seed)
    device = torch.device(device)

    def moved(inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> Batch:
        return {m: to_device(x, device, memory_format) for m, x in inputs.items()}, to_device(labels, device)

    if isinstance(split, TensorSplit):
        n = len(split)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(split.labels.device)  # indexing where the data is
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield moved({m: x[idx] for m, x in split.inputs.items()}, split.labels[idx])
        return
    if callable(getattr(split, "get_batch", None)):
        # One get_batch call per batch, same order as TensorSplit; workers (if any) prefetch whole batches.
        n = len(split)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        index_batches = [order[start : start + batch_size] for start in range(0, n, batch_size)]
        if num_workers == 0:
            for idx in index_batches:
                yield moved(*split.get_batch(idx))
            return
        loader = DataLoader(
            _BatchesOf(split),
            sampler=index_batches,
            batch_size=None,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
    else:
        loader = DataLoader(
            split,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
    for inputs, labels in loader:
        yield moved(inputs, labels)


def to_device(
    x: torch.Tensor, device: torch.device, memory_format: torch.memory_format | None = None
) -> torch.Tensor:
    """``x`` on ``device``: a host tensor bound for a GPU is pinned first so the copy does not
    block; ``memory_format`` applies to 4-D tensors only."""
    if device.type == "cuda" and x.device.type == "cpu" and not x.is_pinned():
        x = x.pin_memory()
    x = x.to(device, non_blocking=device.type == "cuda")
    if memory_format is not None and x.dim() == 4:
        x = x.contiguous(memory_format=memory_format)
    return x


def on_device(split: Dataset, device: torch.device | str) -> TensorSplit:
    """``split`` as a :class:`TensorSplit` held on ``device``: the whole split read once (a
    ``get_batch`` split in its model-input form, transforms applied) and copied once."""
    if isinstance(split, TensorSplit):
        return split.to(device)
    n = len(split)
    if callable(getattr(split, "get_batch", None)):
        inputs, labels = split.get_batch(torch.arange(n))
    else:
        inputs, labels = next(iter(DataLoader(split, batch_size=n)))
    return TensorSplit(inputs, labels).to(device)


def input_bytes(split: Dataset) -> int:
    """Bytes ``split`` takes in its model-input form (estimated from its first sample)."""
    if isinstance(split, TensorSplit):
        return sum(x.nbytes for x in split.inputs.values()) + split.labels.nbytes
    if len(split) == 0:
        return 0
    if callable(getattr(split, "get_batch", None)):
        inputs, labels = split.get_batch(torch.arange(1))
    else:
        inputs, labels = split[0]
        labels = torch.as_tensor(labels)
    one = sum(x.nbytes for x in inputs.values()) + labels.nbytes
    return one * len(split)
