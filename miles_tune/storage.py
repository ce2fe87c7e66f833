"""What a search keeps in its storage folder (local, NFS, S3 or GCS): ``--keep-checkpoints``.

A checkpoint holds the trainer state a retry resumes from (``trainer.pt``: weights, optimizer,
method, RNG states), the best epoch's weights so far (``best_model.pt``) and the small files the
driver reads (history, summary, run id). While a trial runs, its latest checkpoint stays, and an
older one goes as soon as the experiment state on storage (what ``--resume`` reads) names a
newer one: a few seconds later (:data:`SNAPSHOT_PERIOD_S`; ``search.make_superseded_dropper``).
Tune's own way, ``num_to_keep=1``, rewrote and uploaded the whole experiment state after every
checkpoint of every trial, the driver's largest cost, which grew with the number of trials.
Once a trial has finished, only what ``--keep-checkpoints`` asks for stays:

- ``best`` (default): the best trial's ``best_model.pt`` (its best epoch's weights, by the
  rule that picks ``best_config.yaml``); every other ``.pt`` goes;
- ``all``: every finished trial's last checkpoint, as Tune left it;
- ``none``: no weights at all.

Under ``--scheduler pbt`` a running trial keeps ``interval + 3`` checkpoints (another member
may restore from its round's checkpoint a few epochs later), and the search drops the older
ones' weights when it ends (:mod:`miles_tune.pbt`).

The small files always stay (a ``--resume`` brings MLflow up to date from them), and so does
everything of a trial that errored: a ``--resume`` retries it from its ``trainer.pt``.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("miles_tune.storage")


KEEP_CHECKPOINTS = ("best", "all", "none")

#: how often Tune writes and uploads the experiment state (``TUNE_GLOBAL_CHECKPOINT_S``; a value
#: the user sets wins): a superseded checkpoint lives about two periods
SNAPSHOT_PERIOD_S = 2.0

#: where the search's checkpoint dropper numbers Tune's experiment snapshots: its callback state,
#: which Tune saves and uploads with each snapshot
SNAPSHOT_KEY = "miles_tune.snapshot"


def remove_files(checkpoint: Any, names: tuple[str, ...]) -> None:  # checkpoint: ray.tune.Checkpoint
    """Delete ``names`` from a Tune checkpoint on its own file system. A file already gone is
    fine; any other failure is logged, never raised (storage housekeeping never stops a search)."""
    import pyarrow.fs as pafs

    for name in names:
        path = f"{checkpoint.path.rstrip('/')}/{name}"
        try:
            if checkpoint.filesystem.get_file_info(path).type != pafs.FileType.NotFound:
                checkpoint.filesystem.delete_file(path)
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot delete %s (%s)", path, str(exc).splitlines()[0] if str(exc) else exc)


def older_checkpoints(checkpoint: Any) -> list[Any]:
    """The other ``checkpoint_*`` folders beside a trial's checkpoint, on its file system, as
    objects :func:`remove_files` takes; [] when the folder cannot be listed."""
    from types import SimpleNamespace

    import pyarrow.fs as pafs

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    parent = path.rsplit("/", 1)[0]
    try:
        infos = fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
    except Exception as exc:  # noqa: BLE001
        log.warning("cannot list %s (%s)", parent, str(exc).splitlines()[0] if str(exc) else exc)
        return []
    return [
        SimpleNamespace(path=i.path, filesystem=fs)
        for i in infos
        if i.type == pafs.FileType.Directory
        and i.base_name.startswith("checkpoint_")
        and i.path.rstrip("/") != path
    ]


def drop_superseded(checkpoint: Any) -> None:
    """Delete, whole, the ``checkpoint_*`` folders a trial wrote before ``checkpoint`` (Tune names
    them ``checkpoint_000012``, so names sort as they were written); newer ones stay. Failures
    are logged, never raised."""
    own = checkpoint.path.rstrip("/").rsplit("/", 1)[-1]
    for old in older_checkpoints(checkpoint):
        if old.path.rstrip("/").rsplit("/", 1)[-1] < own:
            try:
                old.filesystem.delete_dir(old.path)
            except Exception as exc:  # noqa: BLE001
                log.warning("cannot delete %s (%s)", old.path, str(exc).splitlines()[0] if str(exc) else exc)


def landed_snapshot(filesystem: Any, experiment_path: str) -> int:
    """The highest snapshot number in the callback states Tune has uploaded to the experiment's
    folder on storage (``callback-states-<session>.pkl``, one per session); 0 when none is readable."""
    import pickle

    import pyarrow.fs as pafs

    try:
        infos = filesystem.get_file_info(pafs.FileSelector(experiment_path, allow_not_found=True))
    except Exception:  # noqa: BLE001
        return 0
    highest = 0
    for info in infos:
        if not (info.base_name.startswith("callback-states-") and info.base_name.endswith(".pkl")):
            continue
        try:
            with filesystem.open_input_stream(info.path) as f:
                states = pickle.loads(f.read())  # Tune's own file, as trusted as its restore
        except Exception:  # noqa: BLE001
            continue  # being written, or from another Ray version: the next snapshot will tell
        for state in (states or {}).values():
            if isinstance(state, dict) and isinstance(state.get(SNAPSHOT_KEY), int):
                highest = max(highest, state[SNAPSHOT_KEY])
    return highest


def storage_bytes(uri: str) -> int | None:
    """Bytes under ``uri`` (a local path or s3://, gs://); None when it cannot be listed."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri) if "://" in uri else (pafs.LocalFileSystem(), uri)
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except Exception:  # noqa: BLE001
        return None
    return sum(i.size or 0 for i in infos if i.type == pafs.FileType.File)


def format_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover
