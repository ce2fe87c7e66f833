"""What a dataset is and whether its files are there, known without building it.

The search driver must refuse a bad data root, a missing file or a metric that does not
fit the task *before* it starts Ray, where the failure would only surface inside every
trial. Building a dataset to find out costs minutes (decoding, a text model), so each
registered dataset also declares a :class:`DatasetInfo` (its task, modalities, default
metric) and a cheap probe: :func:`miles_tune.data.probe_dataset` validates the options,
and for a file dataset stats the files its loader and cache key need (reading at most
small headers: S-MNIST's ``.npy`` headers, LUMA's CSV header line), without decoding,
writing a cache or loading a model. It returns a :class:`DatasetProbe` or raises
:class:`~miles_tune.data.errors.DatasetError` with a one-line message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from miles_tune.data.base import Task


@dataclass(frozen=True)
class DatasetProbe:
    """The result of a probe: what the dataset is with these options, and where its data is.

    ``data_root``, ``cache_dir`` and ``cache_ready`` are None/False for in-memory datasets;
    ``cache_dir`` is the cache folder these settings read (built or not), ``cache_ready``
    whether it is complete (the first trial will not have to build it), ``n_files`` how
    many source files were stat'ed."""

    name: str
    task: Task
    modalities: tuple[str, ...]
    num_classes: int
    default_metric: str
    data_root: Path | None = None
    n_files: int = 0
    cache_dir: Path | None = None
    cache_ready: bool = False


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset's task, modalities and default metric at its default options
    (``mfeat``'s ``views`` and LUMA's ``classes`` change the modalities and the class count:
    :func:`~miles_tune.data.probe_dataset` gives them for given options), and its probe."""

    task: Task
    modalities: tuple[str, ...]
    default_metric: str
    num_classes: int
    file_based: bool  # reads published files under a data_root (see miles_tune.data.paths)
    probe: Callable[..., DatasetProbe] = field(repr=False, compare=False)
