"""System metrics of a trial, sampled by MLflow's monitor into a real (sqlite) MLflow store.

Sampling lands in the run under MLflow's names; stop is bounded and idempotent; a dead tracking
server neither raises nor holds up the caller; an outage of the store pauses sampling, which
then resumes; a missing psutil is one warning; the CLI default follows the GPU.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import pytest
import torch
from search_helpers import free_port

from miles_tune import system_metrics as sm
from miles_tune import tracking
from miles_tune.tracking import client

CPU = "system/cpu_utilization_percentage"
MEMORY = "system/system_memory_usage_megabytes"
INTERVAL = 0.2


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, str]:
    """One sqlite store for the module (creating its schema takes seconds) and an experiment."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('sysm') / 'mlflow.db'}"
    return uri, client(uri).create_experiment("system-metrics")


@pytest.fixture
def run_id(store) -> str:
    uri, experiment_id = store
    return client(uri).create_run(experiment_id).info.run_id


@pytest.fixture
def thread_errors(monkeypatch) -> list[BaseException]:
    """Exceptions that escape any thread during the test (none may)."""
    errors: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    return errors


def work_until(condition, timeout: float = 10.0) -> None:
    """Matrix products (CPU work, as training does) until ``condition()`` holds or ``timeout``."""
    a = torch.randn(256, 256)
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        for _ in range(20):
            a = torch.tanh(a @ a)


def history(uri: str, run_id: str, key: str) -> list[int]:
    return [m.step for m in client(uri).get_metric_history(run_id, key)]


def test_import_is_light() -> None:
    code = (
        "import sys, miles_tune.system_metrics; print(sorted({'mlflow', 'psutil', 'torch'} & {*sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("flag", "has_gpu", "expected"),
    [(None, True, True), (None, False, False), (True, False, True), (True, True, True), (False, True, False)]
    + [(False, False, False)],
)
def test_resolve(flag, has_gpu, expected) -> None:
    assert sm.resolve(flag, has_gpu) is expected


def test_gpu_present_is_a_bool() -> None:
    assert sm.gpu_present() is torch.cuda.is_available()


def test_samples_land_in_the_run(store, run_id, thread_errors) -> None:
    uri, _ = store
    started = time.monotonic()
    sampler = sm.start(uri, run_id, interval_s=INTERVAL)
    assert sampler is not None and time.monotonic() - started < 1.0  # nothing waits for the store
    work_until(lambda: len(history(uri, run_id, CPU)) >= 2)
    assert sampler.running
    began = time.monotonic()
    sampler.stop()
    assert time.monotonic() - began < sm.STOP_TIMEOUT_S
    assert not sampler.running
    sampler.stop()  # idempotent
    sm.stop(sampler)
    sm.stop(None)

    for key in (CPU, MEMORY, "system/system_memory_usage_percentage", "system/disk_usage_percentage"):
        steps = history(uri, run_id, key)
        assert len(steps) >= 1, key
        assert steps == sorted(steps) and len(set(steps)) == len(steps), key
    assert all(0 <= m.value <= 100 for m in client(uri).get_metric_history(run_id, CPU))
    assert all(m.value > 0 for m in client(uri).get_metric_history(run_id, MEMORY))
    assert not thread_errors


def test_a_second_sampler_continues_the_steps(store, run_id) -> None:
    """A restored trial samples into its run again: its steps follow the earlier ones."""
    uri, _ = store
    for _ in range(2):
        n = len(history(uri, run_id, CPU))
        sampler = sm.start(uri, run_id, interval_s=INTERVAL)
        work_until(lambda n=n: len(history(uri, run_id, CPU)) > n)
        sampler.stop()
    steps = history(uri, run_id, CPU)
    assert steps == list(range(len(steps))) and len(steps) >= 2


def test_stop_before_the_sampler_is_built(store, run_id) -> None:
    uri, _ = store
    sampler = sm.start(uri, run_id, interval_s=INTERVAL)
    sampler.stop()  # at once: the builder thread may still be constructing MLflow's monitor
    sampler._builder.join(10)
    assert not sampler.running and sampler.monitor is None


def test_dead_tracking_server_costs_nothing(run_id, thread_errors) -> None:
    """Connection refused: start returns at once, training goes on, stop returns within its bound."""
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    sampler = sm.start(uri, run_id, interval_s=INTERVAL)
    assert time.monotonic() - started < 1.0
    work_until(lambda: False, timeout=1.0)
    began = time.monotonic()
    sampler.stop()
    sm.stop(sampler)
    assert time.monotonic() - began < sm.STOP_TIMEOUT_S + 1.0
    assert not thread_errors


def test_stop_is_bounded_when_the_store_hangs(store, run_id, monkeypatch) -> None:
    """A store that never answers (a black-holed server): stop waits ``timeout_s``, no longer."""
    from mlflow import MlflowClient

    uri, _ = store
    release = threading.Event()
    real_get_run = MlflowClient.get_run

    def hanging_get_run(self, run_id):
        release.wait(30)
        return real_get_run(self, run_id)

    sampler = sm.start(uri, run_id, interval_s=INTERVAL)
    work_until(lambda: sampler.running)
    monkeypatch.setattr(MlflowClient, "get_run", hanging_get_run)
    began = time.monotonic()
    sampler.stop(timeout_s=0.5)
    assert time.monotonic() - began < 2.0
    release.set()


def test_sampling_resumes_after_an_outage(store, run_id, monkeypatch, caplog) -> None:
    """MLflow's own loop ends at the first failed call to the store; ours comes back."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri, _ = store
    monkeypatch.setattr(tracking, "RETRY_DELAYS", (0.1,))
    down = threading.Event()
    refused: list[str] = []
    real_get_run = MlflowClient.get_run

    def flaky_get_run(self, run_id):
        if down.is_set():
            refused.append(run_id)
            raise MlflowException("the store is down")
        return real_get_run(self, run_id)

    monkeypatch.setattr(MlflowClient, "get_run", flaky_get_run)
    caplog.set_level(logging.WARNING)
    sampler = sm.start(uri, run_id, interval_s=INTERVAL)
    work_until(lambda: len(history(uri, run_id, CPU)) >= 1)
    down.set()
    work_until(lambda: len(refused) >= 3)  # MLflow's loop gave up, ours asked again (twice)
    assert len(refused) >= 3 and sampler.running
    before = len(history(uri, run_id, CPU))
    down.clear()
    work_until(lambda: len(history(uri, run_id, CPU)) >= before + 2)
    assert len(history(uri, run_id, CPU)) >= before + 2
    assert any("resumes" in r.message for r in caplog.records)

    client(uri).set_terminated(run_id)  # the run ends: sampling ends by itself
    work_until(lambda: not sampler.running)
    assert not sampler.running
    sampler.stop()
    steps = history(uri, run_id, CPU)
    assert steps == sorted(steps) and len(set(steps)) == len(steps)


def test_missing_psutil_is_one_warning(run_id, monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil raises ImportError
    caplog.set_level(logging.WARNING)
    assert sm.start("sqlite:///unused.db", run_id) is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "psutil" in warnings[0].getMessage()
    sm.stop(None)


def test_visible_gpus() -> None:
    assert sm.visible_gpus(None) is None
    assert sm.visible_gpus("") == []
    assert sm.visible_gpus("2,0") == [2, 0]
    assert sm.visible_gpus("GPU-abc, 1") == ["GPU-abc", 1]
    assert sm.visible_gpus("1,x,2") == [1]  # CUDA stops at the first invalid entry


def test_gpu_sampler_is_narrowed_to_the_visible_gpus(monkeypatch) -> None:
    class GPUMonitor:  # MLflow's, as far as the narrowing sees it
        def __init__(self) -> None:
            self.gpu_handles = ["h0", "h1", "h2", "h3"]
            self.num_gpus = 4

    class Monitor:
        monitors = [object(), GPUMonitor()]

    monitor = Monitor()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1,9")
    sm._narrow_gpus(monitor)
    assert monitor.monitors[1].gpu_handles == ["h3", "h1"] and monitor.monitors[1].num_gpus == 2
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    fresh = Monitor()
    fresh.monitors = [GPUMonitor()]
    sm._narrow_gpus(fresh)
    assert fresh.monitors[0].num_gpus == 4


def test_no_run_id_is_one_warning(caplog) -> None:
    """Before the trial's run exists (store down at its start) there is nothing to sample into."""
    caplog.set_level(logging.WARNING)
    assert sm.start("sqlite:///unused.db", "") is None
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
