"""What a search keeps in its storage folder (local, NFS, S3 or GCS): ``--keep-checkpoints``.

While a trial runs, Tune keeps its latest checkpoint only (``num_to_keep=1``): the trainer
state a retry resumes from (``trainer.pt``: weights, optimizer, method, RNG states), the best
epoch's weights so far (``best_model.pt``) and the small files the driver reads (history,
summary, run id). Once a trial has finished, only what ``--keep-checkpoints`` asks for stays:

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
