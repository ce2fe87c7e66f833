"""Errors and warnings of the file-based datasets, and the optional-dependency check.

Every problem with a user's files is a :class:`DatasetError` whose message names the
offending path, so a bad download is found without a debugger. Known-broken samples of
a dataset (CREMA-D lists a few) are not errors: they are skipped with a
:class:`BrokenSampleWarning` and counted in ``MultimodalData.info["skipped"]``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

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
