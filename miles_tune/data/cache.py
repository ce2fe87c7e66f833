"""Decode a published dataset once into Arrow files, then read every epoch memory-mapped.

A file dataset (:class:`FileDataset`) says what it stores per sample (:class:`Field`
shapes and dtypes), how to plan its splits (sample ids per split, seeded) and how to
decode a batch of samples from the user's files into that stored form. This module
turns that into two interchangeable torch datasets:

- :class:`ArrowSplit`: the cache. ``prepare`` writes ``train/val/test.arrow`` (Arrow
  IPC files, one fixed-size-list column per field, record batches of ``chunk_rows``
  samples) plus ``split.json`` (the sample ids of each split, in row order) and
  ``meta.json`` (what the cache was built from; written last, so a directory with a
  ``meta.json`` is complete). Reading memory-maps the files: a batch is a gather from
  zero-copy NumPy views over the mapped buffers, so the page cache, not the Python
  heap, holds the data, and every trial of a search shares it.
- :class:`DecodeSplit`: the raw path. Decodes the user's files at every access; kept
  so the benchmark can compare, and for one-off checks without writing a cache.

Both apply the dataset's read-time transforms (:mod:`miles_tune.data.transforms`) to
the same stored arrays, so they give identical tensors.

**Cache key.** ``<cache_root>/<name>-<key>/`` where ``key`` hashes the dataset name,
:data:`CODE_VERSION` and the dataset's own version, its preprocessing and split
settings, and a fingerprint of its source files (relative path, size and mtime of
each; renaming, replacing or touching a file rebuilds, copying the data elsewhere
also does since copies get new mtimes). Changing any setting builds a new directory
beside the old one; old ones are never deleted automatically (another trial may be
reading them), ``python -m miles_tune.data list-cache`` shows them.

**Data root.** ``data_root=None`` means :func:`~miles_tune.data.paths.default_data_root`
(``$MILES_TUNE_DATA/<name>`` or ``~/.cache/miles_tune/data/<name>``); a missing folder or
file is one line saying where it looked and which setting (``data.data_root``, the
variable) changes it. :meth:`FileDataset.probe` checks the same files without decoding.

**Strict data.** The writer refuses a batch holding NaN or infinite values, or floats
that are not whole numbers bound for an integer column (a label), naming the sample and
its file (:meth:`FileDataset.sample_source`, :func:`check_values`): such values would
pass here and fail only at training step 0, or be truncated. Labels are also checked
where each dataset parses them, where the file's own row is known.

**Concurrency.** Building takes an exclusive ``flock`` on ``.<name>-<key>.lock`` in
the cache root, writes into a temporary directory and renames it into place, so trials
that start together build the cache once and the others wait, then read it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import math
import os
import shutil
import time
import uuid
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from miles_tune.data.base import MultimodalData, Task
from miles_tune.data.errors import BrokenSampleWarning, DatasetError
from miles_tune.data.paths import default_data_root, default_root_hint
from miles_tune.data.probe import DatasetInfo, DatasetProbe
from miles_tune.data.transforms import Transform
from miles_tune.locks import exclusive

# Bump when the stored layout written by this module changes (each dataset also has its own version).
CODE_VERSION = 1
SPLITS = ("train", "val", "test")
LABEL = "label"
CACHE_DIRNAME = ".miles_cache"


@dataclass(frozen=True)
class Field:
    """One stored column: the per-sample shape and the NumPy dtype name."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Field:
        return cls(tuple(int(s) for s in d["shape"]), str(d["dtype"]))


@dataclass
class Plan:
    """The sample ids of each split (in row order) and the samples left out, with reasons."""

    ids: dict[str, list[str]]
    skipped: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class FileDataset(ABC):
    """A dataset in its published layout: what to store, how to split, how to decode.

    Subclasses set ``name`` and ``version`` (bump it when the stored arrays change for
    the same settings), what the data is (``task``, ``modalities``, ``classes``,
    ``default_metric``: known without building it, for :meth:`describe`) and implement the
    abstract methods. Their ``__init__`` checks the options and that the files the loader
    needs exist (stat only), so constructing one is the cheap part of :meth:`probe`.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    decode_threads: ClassVar[int | None] = 1  # intra-op threads while decoding (None: torch's)
    task: ClassVar[Task] = "multiclass"
    modalities: ClassVar[tuple[str, ...]]
    default_metric: ClassVar[str] = "acc"
    classes: Sequence[str]  # class names, in label order (an instance may override, e.g. LUMA)

    def __init__(self, data_root: str | os.PathLike[str] | None) -> None:
        self.root_is_default = data_root is None
        self.root = default_data_root(self.name) if data_root is None else Path(data_root).expanduser()
        self.given_root = self.root  # a subclass may descend into a sub-folder; messages name this one
        if not self.root.is_dir():
            if self.root_is_default:
                raise DatasetError(f"{self.name}: no data at {self.root} ({default_root_hint(self.name)})")
            raise DatasetError(
                f"{self.name}: data.data_root={self.root} is not a folder (set it to the folder of the "
                f"published files, or leave it unset for {default_data_root(self.name)})",
                self.root,
            )

    # --- messages about the user's files -------------------------------------------------------
    def root_hint(self) -> str:
        """Where the files were looked for and how to change it (the tail of a missing-file message)."""
        if self.root_is_default:
            return default_root_hint(self.name)
        return f"data.data_root={self.given_root}"

    def files_error(self, message: str, path: str | os.PathLike[str] | None = None) -> DatasetError:
        """A DatasetError about missing or misplaced files, ending with :meth:`root_hint`."""
        return DatasetError(f"{message} ({self.root_hint()})", path)

    def missing(self, path: Path, what: str = "file", detail: str = "") -> DatasetError:
        tail = f": {detail}" if detail else ""
        return self.files_error(f"{self.name}: missing {what} {path}{tail}", path)

    def sample_source(self, sample_id: str, field: str) -> str:
        """Where stored ``field`` of ``sample_id`` comes from (a file, or a row of one), for messages."""
        return f"under {self.root}"

    # --- the cheap check --------------------------------------------------------------------------
    @classmethod
    def describe(cls) -> DatasetInfo:
        """The registry's metadata of this dataset at its default options, and its probe."""
        return DatasetInfo(
            task=cls.task,
            modalities=tuple(cls.modalities),
            default_metric=cls.default_metric,
            num_classes=len(cls.classes),
            file_based=True,
            probe=functools.partial(probe_files, cls),
        )

    def check_headers(self) -> None:  # noqa: B027  (optional hook)
        """Read small headers of the source files and refuse what the loader would (shapes,
        columns, sizes against the options); no decoding. Nothing by default."""

    def probe(self, cache_dir: str | os.PathLike[str] | None = None) -> DatasetProbe:
        """Stat every source file (the cache key) and, unless a complete cache for these settings
        exists, :meth:`check_headers`; raise DatasetError naming the missing file and the setting."""
        key, desc = cache_key(self)
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root(self)
        final = root / f"{self.name}-{key}"
        ready = (final / "meta.json").is_file()
        if not ready:
            self.check_headers()
        return DatasetProbe(
            name=self.name,
            task=self.task,
            modalities=tuple(self.modalities),
            num_classes=len(self.classes),
            default_metric=self.default_metric,
            data_root=self.root,
            n_files=int(desc["files"]["count"]),
            cache_dir=final,
            cache_ready=ready,
        )

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Every option that changes the stored arrays or the split (JSON-able); part of the key."""

    @abstractmethod
    def source_files(self) -> Iterable[Path]:
        """The files (or folders) whose path, size and mtime fingerprint the source data."""

    @abstractmethod
    def fields(self) -> dict[str, Field]:
        """Stored columns: one per modality plus ``"label"``."""

    @abstractmethod
    def plan(self) -> Plan:
        """List the samples and split them (seeded); may decode known-broken samples to test them."""

    @abstractmethod
    def decode_batch(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored arrays of the samples ``ids``: field -> (len(ids), *shape), the field's dtype."""

    @abstractmethod
    def make_data(self, splits: dict[str, Dataset], info: dict[str, Any]) -> MultimodalData:
        """Wrap the three splits (modalities, task, default encoders)."""

    def transforms(self, stats: dict[str, list[float]]) -> dict[str, Transform]:
        """Read-time transforms per field (stored form -> model input); none by default."""
        return {}

    def stats_fields(self) -> tuple[str, ...]:
        """Fields whose training-split mean and std (scalars) ``transforms`` needs."""
        return ()

    def close(self) -> None:  # noqa: B027  (optional hook)
        """Release open handles (files, models); decoding reopens them on demand."""


# --- key and fingerprint ----------------------------------------------------------------------


def fingerprint(
    paths: Iterable[Path], root: Path, missing: Callable[[Path], DatasetError] | None = None
) -> dict[str, Any]:
    """Hash of (relative path, size, mtime_ns) of each path; cheap (stat only, no reading).
    ``missing(path)`` makes the error for an absent file."""
    h = hashlib.sha256()
    count = 0
    for p in sorted(Path(p) for p in paths):
        try:
            st = p.stat()
        except FileNotFoundError as exc:
            raise (missing(p) if missing else DatasetError(f"missing file {p}", p)) from exc
        rel = os.path.relpath(p, root)
        h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        count += 1
    return {"count": count, "sha256": h.hexdigest()}


def cache_key(source: FileDataset) -> tuple[str, dict[str, Any]]:
    """The cache key of ``source`` and the description it hashes (stored in meta.json)."""
    desc = {
        "dataset": source.name,
        "code_version": CODE_VERSION,
        "dataset_version": source.version,
        "settings": source.settings(),  # the settings determine the fields (shapes, dtypes)
        "files": fingerprint(source.source_files(), source.root, source.missing),
    }
    blob = json.dumps(desc, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16], desc


def default_cache_root(source: FileDataset) -> Path:
    return source.root / CACHE_DIRNAME


@contextlib.contextmanager
def decode_threads(source: FileDataset) -> Iterator[None]:
    """Intra-op threads while ``source`` decodes: ``source.decode_threads`` (1 by default; None
    keeps torch's setting). Per-sample ops (a 48,000-sample spectrogram, one frame's resize)
    are far too small to split, and on a shared machine OpenMP barriers made them ~40x slower
    with two threads than with one (measured on a 2-core host). A text model's batched forward
    pass is the exception (MM-IMDb sets None)."""
    want, n = source.decode_threads, torch.get_num_threads()
    if want is None or want == n:
        yield
        return
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# --- writing ------------------------------------------------------------------------------------


def _schema(fields: dict[str, Field]):
    import pyarrow as pa

    cols = [pa.field("id", pa.string())]
    for name, f in fields.items():
        value = pa.from_numpy_dtype(np.dtype(f.dtype))
        cols.append(pa.field(name, pa.list_(value, f.size) if f.shape else value))
    meta = {"miles_tune.fields": json.dumps({k: f.to_json() for k, f in fields.items()})}
    return pa.schema(cols, metadata=meta)


def _record_batch(schema, fields: dict[str, Field], ids: Sequence[str], arrays: dict[str, np.ndarray]):
    import pyarrow as pa

    cols = [pa.array(list(ids), pa.string())]
    for name, f in fields.items():
        if name not in arrays:
            raise RuntimeError(f"decode_batch returned no {name!r}")
        arr = np.ascontiguousarray(arrays[name], dtype=np.dtype(f.dtype))
        if arr.shape != (len(ids), *f.shape):
            raise RuntimeError(
                f"decode_batch gave {name!r} of shape {arr.shape}, expected {(len(ids), *f.shape)}"
            )
        flat = pa.array(arr.reshape(-1))
        cols.append(pa.FixedSizeListArray.from_arrays(flat, f.size) if f.shape else flat)
    return pa.record_batch(cols, schema=schema)


class _RunningStats:
    def __init__(self) -> None:
        self.n, self.s, self.ss = 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64, copy=False)
        self.n += x.size
        self.s += float(x.sum())
        self.ss += float((x * x).sum())

    def result(self) -> list[float]:
        if self.n == 0:
            return [0.0, 1.0]
        mean = self.s / self.n
        std = math.sqrt(max(self.ss / self.n - mean * mean, 0.0))
        return [mean, std if std > 1e-12 else 1.0]


def _chunks(ids: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def prepare(
    source: FileDataset,
    cache_root: str | os.PathLike[str] | None = None,
    *,
    progress: bool = True,
    chunk_rows: int = 64,
) -> Path:
    """Build the cache of ``source`` unless a complete one with the same key exists; return its folder."""
    import pyarrow as pa

    root = Path(cache_root).expanduser() if cache_root is not None else default_cache_root(source)
    key, desc = cache_key(source)
    final = root / f"{source.name}-{key}"
    if (final / "meta.json").is_file():
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"cannot create the cache folder {root} ({exc}); set data.cache_dir=<a writable folder>", root
        ) from exc
    with exclusive(root / f".{source.name}-{key}.lock"):
        if (final / "meta.json").is_file():  # built by another process while we waited
            return final
        started = time.perf_counter()
        plan = source.plan()
        check_plan(source, plan)
        fields = source.fields()
        stats_fields = source.stats_fields()
        running = {f: _RunningStats() for f in stats_fields}
        tmp = root / f".tmp-{source.name}-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            from tqdm import tqdm

            total = sum(len(plan.ids[s]) for s in SPLITS)
            schema = _schema(fields)
            with (
                decode_threads(source),
                tqdm(
                    total=total, desc=f"{source.name}: decoding", unit="sample", disable=not progress
                ) as bar,
            ):
                for split in SPLITS:
                    with (
                        pa.OSFile(str(tmp / f"{split}.arrow"), "wb") as sink,
                        pa.ipc.new_file(sink, schema) as writer,
                    ):
                        for ids in _chunks(plan.ids[split], chunk_rows):
                            arrays = source.decode_batch(ids)
                            check_values(source, ids, arrays, fields)
                            if split == "train":
                                for f in stats_fields:
                                    running[f].add(arrays[f])
                            writer.write_batch(_record_batch(schema, fields, ids, arrays))
                            bar.update(len(ids))
            (tmp / "split.json").write_text(json.dumps({s: plan.ids[s] for s in SPLITS}))
            meta = {
                "key": key,
                "description": desc,
                "sizes": {s: len(plan.ids[s]) for s in SPLITS},
                "skipped": plan.skipped,
                "stats": {f: running[f].result() for f in stats_fields},
                "plan_info": plan.info,
                "build_seconds": round(time.perf_counter() - started, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
            try:
                os.rename(tmp, final)
            except OSError:  # a stale incomplete folder of the same key: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_meta(cache_path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(cache_path) / "meta.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read cache metadata {path}: {exc}", path) from exc


def disk_size(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of the files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def check_values(
    source: FileDataset, ids: Sequence[str], arrays: dict[str, np.ndarray], fields: dict[str, Field]
) -> None:
    """Refuse NaN or infinite values in a decoded batch, and floats that are not whole numbers
    where the stored column is an integer (the cast would truncate 3.7 to 3 silently), naming
    the first bad sample and its file. The one check every decoded batch goes through."""
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.kind not in "fc" or arr.size == 0:
            continue
        flat = arr.reshape(len(ids), -1)
        bad = ~np.isfinite(flat).all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "NaN" if np.isnan(flat[i]).any() else "infinite values"
            problem = f"{what} in the {name} of sample {ids[i]}"
        elif name in fields and np.dtype(fields[name].dtype).kind in "iu":
            bad = (flat != np.round(flat)).any(axis=1)
            if not bad.any():
                continue
            i = int(np.flatnonzero(bad)[0])
            value = flat[i][flat[i] != np.round(flat[i])][0]
            problem = f"the {name} of sample {ids[i]} is not a whole number ({value:g})"
        else:
            continue
        raise DatasetError(
            f"{source.name}: {problem} ({source.sample_source(ids[i], name)}); fix or remove that sample"
        )


# --- reading ------------------------------------------------------------------------------------


class _BatchSplit(Dataset):
    """Shared by both paths: stored arrays -> tensors -> transforms; batches by index."""

    modalities: tuple[str, ...]
    transforms: dict[str, Transform]

    def _stored(self, index: np.ndarray) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def get_batch(self, index: torch.Tensor | np.ndarray | Sequence[int]):
        """``(inputs, labels)`` for the rows ``index``, with a leading batch dimension."""
        idx = np.asarray(index.numpy() if isinstance(index, torch.Tensor) else index, dtype=np.int64).reshape(
            -1
        )
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"index out of range for a split of {len(self)} samples")
        idx = np.where(idx < 0, idx + len(self), idx)
        arrays = self._stored(idx)
        inputs = {}
        for m in self.modalities:
            x = torch.from_numpy(arrays[m])
            t = self.transforms.get(m)
            inputs[m] = t(x) if t is not None else x
        labels = torch.from_numpy(arrays[LABEL])
        t = self.transforms.get(LABEL)
        return inputs, (t(labels) if t is not None else labels)

    def __getitem__(self, i: int):
        inputs, labels = self.get_batch([int(i)])
        return {m: x[0] for m, x in inputs.items()}, labels[0]


class ArrowSplit(_BatchSplit):
    """One split of the cache, memory-mapped; items are ``(dict[modality, Tensor], label)``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        modalities: Sequence[str],
        transforms: dict[str, Transform] | None = None,
    ) -> None:
        self.path = Path(path)
        self.modalities = tuple(modalities)
        self.transforms = dict(transforms or {})
        self._open()

    def _open(self) -> None:
        import pyarrow as pa

        if not self.path.is_file():
            raise DatasetError(f"missing cache file {self.path}", self.path)
        try:
            self._mmap = pa.memory_map(str(self.path), "r")
            reader = pa.ipc.open_file(self._mmap)
            schema_meta = reader.schema.metadata or {}
            self.fields = {
                k: Field.from_json(v)
                for k, v in json.loads(schema_meta[b"miles_tune.fields"].decode()).items()
            }
            batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        except (pa.ArrowInvalid, KeyError, OSError) as exc:
            raise DatasetError(
                f"corrupt cache file {self.path}: {exc}; delete its folder to rebuild", self.path
            ) from exc
        self._starts = np.cumsum([0] + [b.num_rows for b in batches])
        self._views: dict[str, list[np.ndarray]] = {}
        for name, f in self.fields.items():
            views = []
            for b in batches:
                col = b.column(name)
                flat = col.flatten() if f.shape else col
                arr = flat.to_numpy(zero_copy_only=True)  # a view over the mapped file
                views.append(arr.reshape(b.num_rows, *f.shape))
            self._views[name] = views
        self._ids = [b.column("id") for b in batches]

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "modalities": self.modalities, "transforms": self.transforms}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def ids(self) -> list[str]:
        return [s for col in self._ids for s in col.to_pylist()]

    def _stored(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        chunk = np.searchsorted(self._starts, idx, side="right") - 1
        out = {}
        for name, f in self.fields.items():
            views = self._views[name]
            res = np.empty((len(idx), *f.shape), dtype=np.dtype(f.dtype))
            for c in np.unique(chunk):
                sel = chunk == c
                res[sel] = views[c][idx[sel] - self._starts[c]]
            out[name] = res
        return out


class DecodeSplit(_BatchSplit):
    """One split decoded from the user's files at every access (no cache)."""

    def __init__(
        self,
        source: FileDataset,
        ids: Sequence[str],
        modalities: Sequence[str],
        transforms: dict[str, Transform],
    ) -> None:
        self.source = source
        self.ids = list(ids)
        self.modalities = tuple(modalities)
        self.transforms = dict(transforms)
        self.fields = source.fields()

    def __len__(self) -> int:
        return len(self.ids)

    def _stored(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        ids = [self.ids[i] for i in idx]
        with decode_threads(self.source):
            arrays = self.source.decode_batch(ids)
        check_values(self.source, ids, arrays, self.fields)
        return {k: np.ascontiguousarray(arrays[k], dtype=np.dtype(f.dtype)) for k, f in self.fields.items()}


def _train_stats(source: FileDataset, ids: Sequence[str], chunk_rows: int = 64) -> dict[str, list[float]]:
    fields = source.stats_fields()
    if not fields:
        return {}
    running = {f: _RunningStats() for f in fields}
    for chunk in _chunks(ids, chunk_rows):
        with decode_threads(source):
            arrays = source.decode_batch(chunk)
        for f in fields:
            running[f].add(arrays[f])
    return {f: running[f].result() for f in fields}


def check_plan(source: FileDataset, plan: Plan) -> None:
    """Refuse empty splits (the loop cannot evaluate them) and warn about skipped samples."""
    sizes = {s: len(plan.ids.get(s, [])) for s in SPLITS}
    empty = [s for s in SPLITS if sizes[s] == 0]
    if empty:
        raise DatasetError(
            f"{source.name}: split(s) {', '.join(empty)} would be empty (sizes {sizes}, "
            f"data in {source.root}); use more data or change the split options"
        )
    warn_skipped(source.name, plan.skipped)


def warn_skipped(name: str, skipped: dict[str, str]) -> None:
    for sample_id, reason in skipped.items():
        warnings.warn(
            f"{name}: skipped known-broken sample {sample_id}: {reason}", BrokenSampleWarning, stacklevel=3
        )


def load(
    source: FileDataset,
    modalities: Sequence[str],
    *,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> MultimodalData:
    """Build the :class:`MultimodalData` of a file dataset, from its cache (default) or raw."""
    if cache:
        path = prepare(source, cache_dir, progress=progress)
        source.close()  # the decoders are not needed for reading
        meta = read_meta(path)
        transforms = source.transforms(meta["stats"])
        splits: dict[str, Dataset] = {
            s: ArrowSplit(path / f"{s}.arrow", modalities, transforms) for s in SPLITS
        }
        info = {
            "read_from": "cache",
            "data_root": str(source.root),
            "cache_dir": str(path),
            "cache_key": meta["key"],
            "split_file": str(path / "split.json"),
            "sizes": meta["sizes"],
            "skipped": meta["skipped"],
            "n_skipped": len(meta["skipped"]),
            "stats": meta["stats"],
            "settings": meta["description"]["settings"],
            **meta.get("plan_info", {}),
        }
    else:
        plan = source.plan()
        check_plan(source, plan)
        stats = _train_stats(source, plan.ids["train"])
        transforms = source.transforms(stats)
        splits = {s: DecodeSplit(source, plan.ids[s], modalities, transforms) for s in SPLITS}
        info = {
            "read_from": "raw",
            "data_root": str(source.root),
            "sizes": {s: len(plan.ids[s]) for s in SPLITS},
            "skipped": plan.skipped,
            "n_skipped": len(plan.skipped),
            "stats": stats,
            "settings": source.settings(),
            **plan.info,
        }
    return source.make_data(splits, info)


def probe_files(
    source_cls: type[FileDataset],
    data_root: str | os.PathLike[str] | None = None,
    *,
    cache: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **options: Any,
) -> DatasetProbe:
    """The probe of a file dataset, with its factory's arguments: construct the source (option
    and file checks) and :meth:`FileDataset.probe` it."""
    return source_cls(data_root, **options).probe(cache_dir)


def dataset_factory(source_cls: type[FileDataset], doc: str) -> Callable[..., MultimodalData]:
    """The registry factory of a file dataset: ``data_root``, the class's options, then
    ``cache``, ``cache_dir`` and ``progress``. Register it with ``source_cls.describe()``.

    Its signature is derived from ``source_cls.__init__``, so each option is written once
    (in the class) and the registry still refuses a misspelt one.
    """
    modalities = source_cls.modalities
    kw = inspect.Parameter.KEYWORD_ONLY
    options = [
        p.replace(kind=kw)
        for name, p in inspect.signature(source_cls.__init__).parameters.items()
        if name not in ("self", "data_root")
    ]
    parameters = [
        inspect.Parameter("data_root", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
        *options,
        inspect.Parameter("cache", kw, default=True),  # False: decode the files at every access
        inspect.Parameter("cache_dir", kw, default=None),
        inspect.Parameter("progress", kw, default=True),
    ]

    def factory(
        data_root: str | None = None,
        *,
        cache: bool = True,
        cache_dir: str | None = None,
        progress: bool = True,
        **options: Any,
    ) -> MultimodalData:
        source = source_cls(data_root, **options)
        return load(source, modalities, cache=cache, cache_dir=cache_dir, progress=progress)

    factory.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    factory.__name__ = factory.__qualname__ = source_cls.name
    factory.__doc__ = doc
    return factory
