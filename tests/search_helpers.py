"""Shared bits of the search tests: tiny trial settings and real services started by the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

TINY = [
    "--set", "epochs=3", "--set", "batch_size=32", "--set", "data.n_train=64",
    "--set", "data.n_val=32", "--set", "data.n_test=32", "--verbose", "0",
]  # fmt: skip


def search_args(tmp_path: Path, *extra: str, tracking: bool = True) -> list[str]:
    args = ["--storage", str(tmp_path / "ray"), "--results", str(tmp_path / "runs"), *TINY, *extra]
    if tracking and "--tracking-uri" not in extra:
        args += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    if not tracking:
        args.append("--no-tracking")
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1 in its own process group; stop() and start() again keep
    its port and its store, as a restarted tracking server would."""

    def __init__(self, tmp_path: Path, port: int | None = None, timeout: float = 120.0) -> None:
        self.tmp_path = tmp_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> str:
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.tmp_path / 'server.db'}",
            "--artifacts-destination", str(self.tmp_path / "server-artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        self.starts += 1
        self.log = self.tmp_path / f"mlflow-server-{self.starts}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + self.timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self.url
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("mlflow server did not become healthy")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None


@contextmanager
def mlflow_server(tmp_path: Path, timeout: float = 120.0):
    """A real ``mlflow server`` on 127.0.0.1 in its own process group, stopped with the group."""
    server = MlflowServer(tmp_path, timeout=timeout)
    try:
        yield server.start()
    finally:
        server.stop()


def child_runs(tracking_uri: str, experiment: str = "miles_tune"):
    from miles_tune.tracking import client, prepare_store

    prepare_store(tracking_uri)  # a sqlite store another process may be creating: wait for it
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return c, parents, children
