"""System metrics of a trial (CPU, memory, disk, network, GPU) in its MLflow run, sampled by
MLflow's own :class:`~mlflow.system_metrics.system_metrics_monitor.SystemMetricsMonitor`.

Trials log to runs made with ``MlflowClient.create_run``, which never starts MLflow's monitor
(only ``mlflow.start_run`` does, when system metrics are enabled), so :func:`start` starts one
for a given run and tracking URI. What MLflow 3.x does, and what this module adds to keep the
rule of :mod:`miles_tune.tracking` (*tracking never stops training*):

- MLflow samples on a daemon thread: every interval, psutil (CPU %, memory, disk, network)
  and pynvml (GPU utilisation, memory, power), then ``get_run`` (it stops when the run is no
  longer RUNNING) and a ``log_batch``, each through a new ``MlflowClient(tracking_uri)``.
  Nothing it does raises into the trial, but its loop **ends for good** at the first failed
  call to the store; here it resumes once the store answers again (after 10 s, then longer,
  up to 5 min), continuing its step count, until the run ends or :meth:`Sampler.stop`.
- MLflow's ``finish()`` joins that thread with no timeout and then flushes to the store: against
  a dead server, one stop would wait for every HTTP retry. :meth:`Sampler.stop` waits at most
  ``timeout_s`` and leaves the rest to a daemon thread.
- With ``resume_logging`` (used here: a restored trial continues its steps) the monitor's
  constructor asks the store for the run: it is built on a thread too, so :func:`start`
  returns at once, whatever the store does.
- pynvml sees every GPU of the node, not the trial's ``CUDA_VISIBLE_DEVICES``: the GPU
  sampler is narrowed to the visible ones, so ``system/gpu_0_*`` is the trial's ``cuda:0``.

Metric names (MLflow 3.17): ``system/cpu_utilization_percentage``,
``system/system_memory_usage_megabytes``, ``system/system_memory_usage_percentage``,
``system/disk_usage_percentage``, ``system/disk_usage_megabytes``,
``system/disk_available_megabytes``, ``system/network_receive_megabytes``,
``system/network_transmit_megabytes`` and, per GPU *i*, ``system/gpu_{i}_utilization_percentage``,
``..._memory_usage_percentage``, ``..._memory_usage_megabytes``, ``..._power_usage_watts``,
``..._power_usage_percentage``; the step is the sample's index.

Nothing heavy is imported until :func:`start` (``import miles_tune`` stays fast).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Iterator

log = logging.getLogger("miles_tune.system_metrics")

#: Seconds between samples (MLflow's default too). A sample costs ~13 ms of CPU, nearly all in
#: MLflow's ``get_run`` status check and ``log_batch`` (psutil: 0.2 ms), and ~18 ms of a one-thread
#: trial's time (benchmarks/system_metrics.py): +0.2 % at 10 s, far inside that benchmark's
#: noise, and fine enough for trials of minutes or more. 1 s would cost ~2 %.
DEFAULT_INTERVAL_S = 10.0
#: The longest :meth:`Sampler.stop` waits for MLflow's thread and its last flush.
STOP_TIMEOUT_S = 5.0


def gpu_present() -> bool:
    """Whether this process sees a CUDA GPU (what ``--system-metrics``'s default follows)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def resolve(flag: bool | None, has_gpu: bool) -> bool:
    """``--system-metrics/--no-system-metrics``: as given, else (None) on exactly with a GPU,
    where utilisation is the thing worth watching; CPU trials need not pay for it."""
    return has_gpu if flag is None else bool(flag)


def _delays() -> Iterator[float]:
    """Waits before asking a store that failed again: the trials' own (:mod:`miles_tune.tracking`)."""
    from miles_tune.tracking import RETRY_DELAYS

    yield from RETRY_DELAYS
    while True:
        yield RETRY_DELAYS[-1]


def visible_gpus(cuda_visible_devices: str | None) -> list[int | str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES`` (indices, or ``GPU-``/``MIG-`` UUIDs) up to the
    first invalid one, as CUDA reads it; None when unset (every GPU is visible). Indices are taken
    as NVML's, which are CUDA's on a node of one GPU model or with CUDA_DEVICE_ORDER=PCI_BUS_ID."""
    if cuda_visible_devices is None:
        return None
    out: list[int | str] = []
    for item in cuda_visible_devices.split(","):
        item = item.strip()
        if item.isdigit():
            out.append(int(item))
        elif item.startswith(("GPU-", "MIG-")):
            out.append(item)
        else:
            break
    return out


def _narrow_gpus(monitor) -> None:  # noqa: ANN001
    """Keep only the trial's GPUs in MLflow's GPU sampler (``gpu_handles``, in CUDA's order)."""
    wanted = visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if wanted is None:
        return
    for m in monitor.monitors:
        if type(m).__name__ != "GPUMonitor" or not hasattr(m, "gpu_handles"):
            continue
        try:
            handles = []
            for w in wanted:
                if isinstance(w, str):
                    import pynvml

                    handles.append(pynvml.nvmlDeviceGetHandleByUUID(w))
                elif w < len(m.gpu_handles):
                    handles.append(m.gpu_handles[w])
                else:  # CUDA ignores the rest after an invalid entry
                    break
            m.gpu_handles, m.num_gpus = handles, len(handles)
        except Exception as exc:  # keep MLflow's view: every GPU of the node
            log.debug("could not narrow the GPU sampler to CUDA_VISIBLE_DEVICES: %s", exc)


@functools.lru_cache(maxsize=1)
def _monitor_class():  # -> type[SystemMetricsMonitor]
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    class ResumingMonitor(SystemMetricsMonitor):
        """MLflow's monitor whose sampling survives an outage of the store."""

        def __init__(self, run_id: str, tracking_uri: str, stopping: threading.Event, **kwargs) -> None:
            super().__init__(run_id, tracking_uri=tracking_uri, **kwargs)
            self.miles_run = (tracking_uri, run_id)
            self.stopping = stopping  # set by Sampler.stop before finish()

        def monitor(self) -> None:
            delays = _delays()
            while not self.stopping.is_set():
                began = time.monotonic()
                try:
                    super().monitor()
                except Exception as exc:  # a sampler broke (psutil, pynvml): warn, not a traceback
                    log.warning("system metrics: sampling failed for run %s (%s)", self.miles_run[1], exc)
                if time.monotonic() - began > max(60.0, 3 * self.sampling_interval):
                    delays = _delays()  # it had worked for a while: a new outage starts with short waits
                # MLflow's loop returns when the run is no longer RUNNING or the store failed
                unreachable = False
                while True:
                    if self.stopping.wait(next(delays)):
                        return
                    status = self._status()
                    if status is None:
                        unreachable = True
                        continue
                    if status != "RUNNING":
                        return  # the run ended
                    if unreachable:
                        log.warning("system metrics: the store is back, run %s resumes", self.miles_run[1])
                    break

        def _status(self) -> str | None:
            from mlflow import MlflowClient

            uri, run_id = self.miles_run
            try:
                return MlflowClient(uri).get_run(run_id).info.status
            except Exception:
                return None

    return ResumingMonitor


class Sampler:
    """A trial's system-metrics sampler (made by :func:`start`). :meth:`stop` never raises."""

    def __init__(self, tracking_uri: str, run_id: str, interval_s: float) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.interval_s = interval_s
        self.monitor = None  # MLflow's SystemMetricsMonitor, once built
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._builder = threading.Thread(target=self._build, name="miles_tune.system_metrics", daemon=True)

    def _build(self) -> None:
        try:
            monitor = _monitor_class()(
                self.run_id,
                self.tracking_uri,
                self._stopping,
                sampling_interval=self.interval_s,
                samples_before_logging=1,
                resume_logging=True,  # a restored trial continues its steps (asks the store; 0 if it fails)
            )
            _narrow_gpus(monitor)
        except Exception as exc:
            log.warning("system metrics for run %s did not start (%s); training goes on", self.run_id, exc)
            return
        with self._lock:
            if self._stopping.is_set():
                return
            monitor.start()
            self.monitor = monitor
        gpu_sampler = any(type(m).__name__ in ("GPUMonitor", "ROCMMonitor") for m in monitor.monitors)
        if not gpu_sampler and gpu_present():
            log.warning(
                "system metrics: a GPU is here but NVML is not (install nvidia-ml-py): "
                "run %s gets CPU, memory, disk and network only",
                self.run_id,
            )

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """End sampling and flush, waiting at most ``timeout_s``; safe to call twice."""
        try:
            with self._lock:
                if self._stopping.is_set():
                    return
                self._stopping.set()
                monitor = self.monitor
            if monitor is None:  # not built yet (or failed): the builder sees the flag
                return
            ender = threading.Thread(target=monitor.finish, name="miles_tune.system_metrics.end", daemon=True)
            ender.start()
            ender.join(timeout_s)
            if ender.is_alive():
                log.warning(
                    "system metrics for run %s: the store did not answer within %g s; "
                    "the last samples are left to a background thread",
                    self.run_id,
                    timeout_s,
                )
        except Exception as exc:
            log.warning("system metrics for run %s did not stop cleanly (%s)", self.run_id, exc)

    @property
    def running(self) -> bool:
        """Whether MLflow's sampling thread is alive (sampling, or waiting for the store to answer)."""
        process = getattr(self.monitor, "_process", None)
        return bool(process is not None and process.is_alive())


def start(tracking_uri: str, run_id: str, interval_s: float = DEFAULT_INTERVAL_S) -> Sampler | None:
    """Sample this machine into ``run_id`` every ``interval_s`` seconds, on background threads.

    Returns at once (nothing here waits for the store), or None with one warning when psutil or
    MLflow's monitor cannot be imported. ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` and
    ``MLFLOW_SYSTEM_METRICS_NODE_ID``, when set, override the interval and prefix the names.
    """
    if not run_id:  # MLflow would sample into the fluent API's active run, or nowhere
        log.warning("system metrics need the trial's MLflow run id; none given")
        return None
    try:
        import psutil  # noqa: F401
    except ImportError:
        log.warning("system metrics need psutil (pip install psutil): none for run %s", run_id)
        return None
    try:
        from miles_tune.tracking import BOUNDED_HTTP

        for key, value in BOUNDED_HTTP.items():  # as tracking.client(): one call cannot block minutes
            os.environ.setdefault(key, value)
        _monitor_class()
    except Exception as exc:
        log.warning("system metrics are unavailable (%s): none for run %s", exc, run_id)
        return None
    sampler = Sampler(tracking_uri, run_id, interval_s)
    sampler._builder.start()
    return sampler


def stop(sampler: Sampler | None, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """:meth:`Sampler.stop` that also takes None (what :func:`start` returns when it cannot)."""
    if sampler is not None:
        sampler.stop(timeout_s)
