"""File locks: one writer for a shared file, one search per name.

Both use ``flock`` on a lock file. The kernel drops the lock when its holder dies, however
it dies (Ctrl-C, ``kill -9``, a lost machine on NFS), so a lock is never left stale and
nothing has to clean up after a crash. On NFS, Linux maps ``flock`` to POSIX byte-range
locks, which the server arbitrates between machines. Object stores (S3, GCS) have no such
lock: callers keep the lock file on a local or shared file system instead.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from miles_tune.errors import ConfigError


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created if needed), waiting for it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock; callers' atomic renames still protect
        yield
        return
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class NameLock:
    """Hold ``lock_path`` for as long as a search runs, or refuse, naming who holds it.

    The holder writes who it is (host, pid, user, start time, command) into the file, so a
    second search started under the same name is told which search has it.
    """

    def __init__(self, lock_path: str | os.PathLike[str], what: str) -> None:
        self.path = Path(lock_path)
        self.what = what
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115  (held open until release)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = describe_holder(handle.read())
            handle.close()
            raise ConfigError(
                f"{self.what} is in use by another search ({holder}); wait for it, or pick another --name"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder_info()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the flock
            self._handle = None

    def __enter__(self) -> NameLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder_info() -> dict[str, Any]:
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers)
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "user": user,
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv)[:300],
    }


def describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        who = f"pid {info['pid']} on {info['host']}, user {info['user']}"
        return f"{who}, since {info['since']}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"
