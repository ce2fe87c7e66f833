"""Where a file dataset's published files are when no ``data_root`` is given.

One rule, so the datasets (``data_root=None``), ``python -m miles_tune.data prepare``
without ``--data-root``, the search driver's probe and the cluster files (which sync data
into ``~/.cache/miles_tune/data/``) all look in the same place:
``$MILES_TUNE_DATA/<dataset>`` when that variable is set, else
``~/.cache/miles_tune/data/<dataset>``. The Arrow cache is written under that folder's
``.miles_cache``, as for any data root.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "MILES_TUNE_DATA"
DEFAULT_DATA_HOME = "~/.cache/miles_tune/data"


def data_home() -> Path:
    """The folder holding one sub-folder per dataset: ``$MILES_TUNE_DATA`` or ``~/.cache/miles_tune/data``.

    Absolute, because trials run in other working directories."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value or DEFAULT_DATA_HOME).expanduser().absolute()


def default_data_root(name: str) -> Path:
    """The data root of dataset ``name`` when none is given: ``data_home() / name``."""
    return data_home() / name


def default_root_hint(name: str) -> str:
    """How to fill or move the default data root of ``name``, for the messages that name it."""
    origin = f"{DATA_ENV}={os.environ[DATA_ENV].strip()}; " if os.environ.get(DATA_ENV, "").strip() else ""
    return (
        f"{origin}set data.data_root=PATH or {DATA_ENV}; put the published files there, "
        f"then run: python -m miles_tune.data prepare --dataset {name}"
    )
