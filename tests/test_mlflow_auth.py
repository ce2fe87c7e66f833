"""The cluster's MLflow server, for real: MLflow's basic-auth app, as cluster/*.yaml start it on the head.

Without credentials every request is refused (401); a search whose driver and trials have the
credentials in their environment (as ``ray start`` gives them on the cluster) logs its runs; the
credentials never reach a run's params or tags.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from search_helpers import child_runs, free_port, search_args

from miles_tune.search import plan_search, run_search

pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs Flask-WTF: pip install 'mlflow[auth]'")

SECRET_NAMES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")


def start_basic_auth_server(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """``mlflow server --app-name basic-auth`` on 127.0.0.1, in its own process group, with the head's ini."""
    ini = tmp_path / "mlflow-auth.ini"
    ini.write_text(
        f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = sqlite:///{tmp_path / 'auth.db'}\n"
    )
    server_env = dict(
        os.environ,
        **env,
        MLFLOW_AUTH_CONFIG_PATH=str(ini),
        MLFLOW_AUTH_ADMIN_USERNAME=env["MLFLOW_TRACKING_USERNAME"],
        MLFLOW_AUTH_ADMIN_PASSWORD=env["MLFLOW_TRACKING_PASSWORD"],
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    port = free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
        "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "server-artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with open(tmp_path / "mlflow-server.log", "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=server_env, start_new_session=True
        )
    return proc, f"http://127.0.0.1:{port}"


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # open without credentials
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("mlflow server did not become healthy")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass


def status_of(url: str, auth: tuple[str, str] | None = None) -> int:
    """HTTP status of an experiments search, with or without basic-auth credentials."""
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/experiments/search",
        data=json.dumps({"max_results": 1}).encode(),
        headers={"Content-Type": "application/json"},
    )
    if auth is not None:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_basic_auth_refuses_strangers_and_a_search_with_credentials_logs(tmp_path, monkeypatch) -> None:
    import ray

    credentials = {
        "MLFLOW_TRACKING_USERNAME": "miles",
        "MLFLOW_TRACKING_PASSWORD": secrets.token_urlsafe(24),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32),
    }
    proc, url = start_basic_auth_server(tmp_path, credentials)
    try:
        for name, value in credentials.items():  # before ray.init: the trial processes inherit them
            monkeypatch.setenv(name, value)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            wait_healthy(proc, url, tmp_path / "mlflow-server.log")
            assert status_of(url) == 401
            assert status_of(url, ("miles", "not-the-password")) == 401
            assert status_of(url, ("miles", credentials["MLFLOW_TRACKING_PASSWORD"])) == 200

            args = search_args(tmp_path, "--num-samples", "1", "--gpus-per-trial", "0", "--tracking-uri", url)
            plan = plan_search(args)
            results = run_search(plan)
        finally:
            ray.shutdown()
        assert results.num_errors == 0 and len(results) == 1

        client, parents, children = child_runs(url)  # with the credentials of the environment
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == 1 and children[0].info.status == "FINISHED"
        assert client.get_metric_history(children[0].info.run_id, "val/mm/acc")  # the trial logged

        forbidden = [credentials["MLFLOW_TRACKING_PASSWORD"], credentials["MLFLOW_FLASK_SERVER_SECRET_KEY"]]
        forbidden += list(SECRET_NAMES)
        for run in [*parents, *children]:
            items = [*run.data.params.items(), *run.data.tags.items()]
            leaks = [(k, v) for k, v in items for s in forbidden if s in k or s in v]
            assert not leaks, leaks
    finally:
        stop(proc)
