"""Errors and warnings of the file-based datasets, and the optional-dependency check.

Every problem with a user's files is a :class:`DatasetError` whose message names the
offending path, so a bad download is found without a debugger; a bad option value is one
too, naming the option as the user sets it (``data.<option>``), checked by the small
helpers below before anything is read. Known-broken samples of
a dataset (CREMA-D lists a few) are not errors: they are skipped with a
:class:`BrokenSampleWarning` and counted in ``MultimodalData.info["skipped"]``.
"""

from __future__ import annotations

import importlib
import math
import numbers
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from miles_tune.errors import ConfigError

INSTALL_HINT = 'pip install "miles_tune[data]"'


class DatasetError(ConfigError):
    """A dataset's files are missing, unreadable or malformed; the message names the file."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        if path is not None and str(path) not in message:
            message = f"{message} ({path})"
        super().__init__(message)


class BrokenSample(Exception):  # noqa: N818  (a signal between decode and the planner, not an error)
    """Raised by a decoder when a *known-broken* sample cannot be decoded (then skipped)."""

    def __init__(self, sample_id: str, reason: str, path: str | os.PathLike[str] | None = None) -> None:
        self.sample_id = sample_id
        self.reason = reason
        self.path = None if path is None else str(path)
        super().__init__(f"{sample_id}: {reason}")


class BrokenSampleWarning(UserWarning):
    """A known-broken sample was skipped."""


def require(module: str, purpose: str, install: str = INSTALL_HINT) -> ModuleType:
    """Import an optional dependency or fail with the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{purpose} needs the {module!r} package: {install}") from exc


def int_option(dataset: str, option: str, value: Any, minimum: int | None = 1) -> int:
    """``value`` as an int, or a DatasetError naming ``data.<option>`` (3.0 is accepted, 3.5 and "3" not)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if isinstance(value, float) and value.is_integer():
        ok = True
    if not ok:
        raise DatasetError(f"{dataset}: data.{option} must be a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise DatasetError(f"{dataset}: data.{option} must be >= {minimum}, got {int(value)}")
    return int(value)


def float_option(
    dataset: str, option: str, value: Any, low: float | None = None, high: float | None = None
) -> float:
    """``value`` as a finite float within [low, high], or a DatasetError naming ``data.<option>``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise DatasetError(f"{dataset}: data.{option} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (
            f"in [{low}, {high}]"
            if low is not None and high is not None
            else (f">= {low}" if low is not None else f"<= {high}")
        )
        raise DatasetError(f"{dataset}: data.{option} must be {bounds}, got {value}")
    return float(value)


def choice_option(dataset: str, option: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else a DatasetError listing them."""
    if value not in allowed:
        raise DatasetError(
            f"{dataset}: data.{option} must be one of {', '.join(map(repr, allowed))}, got {value!r}"
        )
    return str(value)
