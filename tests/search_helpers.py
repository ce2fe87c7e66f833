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


@contextmanager
def mlflow_server(tmp_path: Path, timeout: float = 120.0):
    """A real ``mlflow server`` on 127.0.0.1 in its own process group, stopped with the group."""
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "server-artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = open(tmp_path / "mlflow-server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited: {(tmp_path / 'mlflow-server.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("mlflow server did not become healthy")
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def child_runs(tracking_uri: str, experiment: str = "miles_tune"):
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=tracking_uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return c, parents, children
