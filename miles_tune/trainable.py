"""The Ray Tune function trainable: one trial = one :class:`~miles_tune.train.Trainer` run.

Every epoch it logs the record to the trial's MLflow run (a failure to log never stops
training: see :mod:`miles_tune.tracking`), saves a checkpoint (trainer state, MLflow run
id, history and summary) and reports the record to Tune. A retried or restored trial
resumes from ``tune.get_checkpoint()`` and ends with exactly the metrics of an
uninterrupted one. A trial that fails for a reason a retry would repeat (a bad setting or
file, a diverging loss) reports :data:`FAILED_KEY` first, so the driver does not retry it.
It trains on CUDA when Ray assigned it a GPU and CUDA is there, on CPU otherwise.

**Reused workers.** The search lets Tune reuse a worker process for its next trial
(``reuse_actors``): the imports, the CUDA context and the dataset (:func:`held_dataset`) are
paid once per worker. Everything a trial's numbers depend on is its own: seeds and RNG
states (set by the :class:`Trainer`), torch's thread count, the model, optimizer and method
objects, the MLflow run; CUDA's cached memory is released when a trial ends. Each report
carries ``setup_s`` (seconds from the trial's start to its first epoch) and ``reported_at``
(wall-clock time), from which ``benchmarks/bench_search.py`` measures the time between trials.

The trial's config holds the sampled parameters at the top level (``lr``, ``tau``, ...)
and, under ``miles_tune``, the fixed base config and the tracking settings (and ``--seeds``,
which a repeat's ``__trial_index__`` picks from: see :func:`sampled_params`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

RESERVED = "miles_tune"
TRAINER_FILE = "trainer.pt"
TRIAL_FILE = "trial.json"
#: the records so far as JSON (cheap to write every epoch; Parquet took 55 ms at epoch 20)
HISTORY_FILE = "history.json"
OLD_HISTORY_FILE = "history.parquet"  # what checkpoints written before held
SUMMARY_FILE = "summary.json"
#: the model weights of the trial's best epoch so far (what ``--keep-checkpoints best`` keeps)
BEST_MODEL_FILE = "best_model.pt"
#: reported (with the searched metric as NaN) just before a trial raises an error that a retry
#: would only repeat: a bad setting or file (ConfigError), a diverging loss (NonFiniteLossError)
FAILED_KEY = "miles_tune/failed"
#: reported with a trial's last epoch when the trial closes its own MLflow run (in the background,
#: see :func:`close_in_background`): the driver then leaves the run to it until the search ends
CLOSES_RUN_KEY = "miles_tune/closes_run"
#: ray.tune.search.repeater.TRIAL_INDEX (not imported: Ray stays out of ``import miles_tune``)
TRIAL_INDEX = "__trial_index__"
#: who completed a trial's run: ``trial`` (as it should) or ``search`` (the driver, from the trial's
#: checkpoint: the trial was stopped by the scheduler, failed, or MLflow was down at its end)
CLOSED_BY_TAG = "closed_by"
#: the longest a stopping worker waits for its runs to close (Tune itself waits 5 s for it)
CLOSE_WAIT_S = 4.0
_closing: list = []  # this worker's threads closing finished trials' runs (close_in_background)


def pick_device() -> str:
    import ray
    import torch

    try:
        gpu_ids = ray.get_gpu_ids()
    except Exception:  # not inside a Ray worker
        gpu_ids = []
    return "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"


def set_threads_from_resources() -> int:
    """One intra-op thread per assigned CPU: trials sharing a node do not oversubscribe it, and
    a trial computes the same numbers wherever (and however often) it runs."""
    import ray
    import torch

    try:
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except Exception:
        cpus = 1
    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    return threads


def placement() -> dict[str, str]:
    """Where this trial runs (host, node and GPU ids): reported to Tune and tagged in MLflow."""
    import socket

    import ray

    where = {"host": socket.gethostname(), "node_id": "", "gpu_ids": ""}
    try:
        ctx = ray.get_runtime_context()
        where.update(node_id=ctx.get_node_id(), gpu_ids=",".join(str(g) for g in ray.get_gpu_ids()))
    except Exception:
        pass
    return where


def crash_once_for_tests(epoch: int) -> None:
    """Fault injection for the resume tests: ``MILES_TUNE_CRASH_ONCE=<epoch>:<marker file>``.

    Kills the worker process (as a lost node would) right after epoch ``<epoch>`` was
    checkpointed, the first time only. Unset in normal use.
    """
    spec = os.environ.get("MILES_TUNE_CRASH_ONCE")
    if not spec:
        return
    at, marker = spec.split(":", 1)
    if epoch == int(at) and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os._exit(1)


def sampled_params(config: dict[str, Any]) -> dict[str, Any]:
    """What this trial runs with, beyond the fixed base: the sampled (or gridded) parameters and,
    with ``--seeds``, its training ``seed``. Tune's Repeater gives a repeat only its index
    (:data:`TRIAL_INDEX`): it is mapped to the seed here, the one place the driver, the trial
    and its MLflow run all read, so each names the seed alike (param, run name, trials.parquet)."""
    params = {k: v for k, v in config.items() if k not in (RESERVED, TRIAL_INDEX)}
    if TRIAL_INDEX in config:
        seeds = (config.get(RESERVED) or {}).get("seeds") or []
        index = config[TRIAL_INDEX]
        params["seed"] = seeds[index] if 0 <= index < len(seeds) else index
    return params


def progress_metrics(trainer, record) -> dict[str, Any]:  # noqa: ANN001
    """What Tune sees each epoch: the flat record plus the best-so-far selection metric."""
    from miles_tune.records import best_metrics

    out: dict[str, Any] = dict(record.flat())
    best = trainer.best_record()
    if best is None:  # no epoch selected yet (a NaN metric): the searcher sees the worst value
        out[f"best/{trainer.selection_key}"] = -math.inf
    else:
        out.update(best_metrics(best, trainer.selection_key))
    return out


def trial_name(method: str, experiment_tag: str) -> str:
    """A trial's Tune name, ``miles-003``: the method and the trial's number in its search (Tune's
    experiment tag starts with the searcher's trial counter, which a resumed search continues)."""
    number, _, _ = experiment_tag.partition("_")
    return f"{method}-{int(number):03d}" if number.isdigit() else method


def run_spec(
    config: dict[str, Any], trial_id: str, tune_name: str, train_config: dict[str, Any], tags: dict[str, str]
):  # noqa: ANN201
    """The MLflow child run of a trial, from its Tune config (the trial and the driver build it alike)."""
    from miles_tune.tracking import RunSpec, run_name, source_tags

    fixed = config[RESERVED]
    tracking = fixed["tracking"]
    searched = sampled_params(config)
    metric = fixed.get("metric") or ""
    return RunSpec(
        tracking_uri=tracking["uri"],
        experiment_id=tracking["experiment_id"],
        parent_run_id=tracking["parent_run_id"],
        trial_id=trial_id,
        run_name=run_name(tune_name, searched),
        config=train_config,
        searched=searched,
        selection=metric.removeprefix("best/") or None,
        tags={**source_tags(), **tracking.get("tags", {}), "trial_name": tune_name, **tags},
        sync_every_s=float(tracking.get("sync_every_s", 0.0)),
    )


def end_tags(summary: dict[str, Any] | None, records: list, scheduler: str | None) -> dict[str, Any]:
    """``epochs_run``, and ``stopped_by`` for a trial that ended before its last epoch: the method
    (it stopped itself, MSES) or the search's scheduler (ASHA). Its status stays FINISHED."""
    tags: dict[str, Any] = {"epochs_run": len(records)}
    config = (summary or {}).get("config") or {}
    if summary and summary.get("stopped_early"):
        tags["stopped_by"] = config.get("method", "method")
    elif scheduler and scheduler != "none" and len(records) < int(config.get("epochs", 0)):
        tags["stopped_by"] = scheduler
    return tags


def read_trial_checkpoint(checkpoint) -> dict[str, Any]:  # noqa: ANN001
    """What a trial checkpoint tells the driver: ``history`` (records), ``summary``,
    ``mlflow_run_id`` and ``trial_id`` (whose it is: under PBT, another member's until the
    trial that took it over has trained an epoch)."""
    from miles_tune.records import EpochRecord
    from miles_tune.train import read_history

    with checkpoint.as_directory() as d:
        d = Path(d)
        trial = json.loads((d / TRIAL_FILE).read_text()) if (d / TRIAL_FILE).exists() else {}
        if (d / HISTORY_FILE).exists():
            history = [EpochRecord.from_flat(r) for r in json.loads((d / HISTORY_FILE).read_text())]
        else:
            history = read_history(d / OLD_HISTORY_FILE) if (d / OLD_HISTORY_FILE).exists() else []
        return {
            "history": history,
            "summary": json.loads((d / SUMMARY_FILE).read_text()) if (d / SUMMARY_FILE).exists() else None,
            "mlflow_run_id": trial.get("mlflow_run_id"),
            "trial_id": trial.get("trial_id"),
        }


def donor_of(saved: dict[str, Any], trial_id: str) -> str | None:
    """The member whose checkpoint (or result) ``saved`` is, when not trial ``trial_id``'s own:
    under PBT a trial restarts from another's checkpoint after an exploit. None for its own
    (and for checkpoints written before they named their trial)."""
    owner = saved.get("trial_id")
    return str(owner) if owner is not None and owner != trial_id else None


def model_bytes(model) -> bytes:  # noqa: ANN001
    """The model's weights as a torch file in memory (what :data:`BEST_MODEL_FILE` holds)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def release_device_memory(device: str) -> None:
    """Give CUDA's cached blocks back once a trial ends: the next trial on this reused worker
    (or another process sharing the GPU) starts from what it allocates itself."""
    if device.startswith("cuda"):
        import gc

        import torch

        gc.collect()  # the trial's tensors may sit in reference cycles (closures over the trainer)
        torch.cuda.empty_cache()


def close_in_background(run, history: list, summary: dict[str, Any], tags: dict[str, Any]) -> None:  # noqa: ANN001
    """Close a finished trial's MLflow run (artifacts: history, summary, figure; final tags and
    status) in a thread of this worker, so that the worker starts its next trial meanwhile:
    the uploads (and the figure) leave the training path. Every epoch is already logged. When
    Tune stops the worker, it waits for these threads (:func:`finish_closes`). If MLflow is
    down, the driver completes the run from the trial's checkpoint when the search ends
    (``CloseTrialRuns.on_experiment_end``)."""
    import threading

    kwargs = {"status": "FINISHED", "summary": summary, "tags": tags, "force": True}
    name = f"mlflow-close-{run.spec.trial_id}"
    thread = threading.Thread(target=run.sync, args=(history,), kwargs=kwargs, name=name, daemon=True)
    _closing[:] = [t for t in _closing if t.is_alive()]
    _closing.append(thread)
    thread.start()


def finish_closes(timeout: float = CLOSE_WAIT_S) -> bool:
    """Wait, at most ``timeout`` seconds in all, for this worker's runs still closing; True
    when none is left. A close that outlives it is finished by the driver."""
    deadline = time.monotonic() + timeout
    for thread in list(_closing):
        thread.join(max(0.0, deadline - time.monotonic()))
    _closing[:] = [t for t in _closing if t.is_alive()]
    return not _closing


def trial_trainable():  # noqa: ANN201 -> type[ray.tune.Trainable]
    """:func:`train_trial` as Tune's trainable class (named ``train_trial`` still), whose worker
    finishes closing its trials' MLflow runs when Tune stops it at the end of a search. Tune
    waits 5 s for a stopping worker before it calls ``on_experiment_end``; without this wait
    the worker was killed mid-close and the driver redid the last runs' closes, serially."""
    from ray.tune.trainable.function_trainable import wrap_function

    class TrialTrainable(wrap_function(train_trial)):
        def cleanup(self) -> None:
            try:
                super().cleanup()
            finally:
                finish_closes()

    return TrialTrainable


def train_trial(config: dict[str, Any]) -> None:
    started = time.perf_counter()
    from ray import tune

    from miles_tune import system_metrics
    from miles_tune.data import held_dataset
    from miles_tune.errors import ConfigError
    from miles_tune.spaces import trial_config
    from miles_tune.tracking import TrialRun
    from miles_tune.train import NonFiniteLossError, Trainer

    fixed = config[RESERVED]
    ctx = tune.get_context()
    run = None
    trainer = None
    sampler = None  # MLflow's system metrics of this trial, once its run exists
    best_weights: bytes | None = None  # the best epoch's weights so far
    try:
        set_threads_from_resources()
        cfg = trial_config(fixed["base"], sampled_params(config))
        cfg.device = pick_device()
        trainer = Trainer(cfg, data=held_dataset(cfg.dataset, **cfg.data))
        run_id = donor = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                saved = json.loads((Path(d) / TRIAL_FILE).read_text())
                # another member's checkpoint: PBT's exploit (its rates are this trial's, rescaled)
                donor = donor_of(saved, ctx.get_trial_id())
                trainer.load_checkpoint(Path(d) / TRAINER_FILE, retune=donor is not None)
                run_id = None if donor else saved.get("mlflow_run_id")
                if (Path(d) / BEST_MODEL_FILE).exists():
                    best_weights = (Path(d) / BEST_MODEL_FILE).read_bytes()
        where = {"device": cfg.device, **placement()}
        if fixed.get("tracking"):
            spec = run_spec(config, ctx.get_trial_id(), ctx.get_trial_name(), cfg.to_dict(), where)
            run = TrialRun(spec, run_id=run_id)
            if donor:  # the run records this lineage from its first epoch: the member's earlier one retires
                run.continue_lineage(donor, trainer.epoch)
            run.sync(trainer.history)  # epochs a crash kept out of MLflow (after an exploit: the donor's)
        wants_samples = run is not None and system_metrics.resolve(
            fixed.get("system_metrics"), cfg.device == "cuda"
        )

        def sample() -> None:  # as soon as the run exists (MLflow may be down when the trial starts)
            nonlocal sampler, wants_samples
            if wants_samples and run.run_id:
                sampler, wants_samples = system_metrics.start(run.spec.tracking_uri, run.run_id), False

        sample()
        setup_s = time.perf_counter() - started
        for record in trainer.run():
            if trainer.best_epoch == record.epoch:
                best_weights = model_bytes(trainer.model)
            if run is not None:
                run.sync(trainer.history)
                sample()
            metrics = {**progress_metrics(trainer, record), **where, "setup_s": setup_s}
            if run is not None and (trainer.epoch >= cfg.epochs or trainer.stopped_early):
                metrics[CLOSES_RUN_KEY] = True
            with tempfile.TemporaryDirectory() as d:
                trainer.save_checkpoint(Path(d) / TRAINER_FILE)
                if best_weights is not None:
                    (Path(d) / BEST_MODEL_FILE).write_bytes(best_weights)
                (Path(d) / HISTORY_FILE).write_text(json.dumps([r.flat() for r in trainer.history]))
                (Path(d) / SUMMARY_FILE).write_text(json.dumps(trainer.summary(), default=str))
                (Path(d) / TRIAL_FILE).write_text(
                    json.dumps({"mlflow_run_id": run.run_id if run else None, "trial_id": ctx.get_trial_id()})
                )
                if run is not None and run.run_id is not None:
                    metrics["mlflow_run_id"] = run.run_id
                metrics["reported_at"] = time.time()
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
            crash_once_for_tests(record.epoch)
    except (ConfigError, NonFiniteLossError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        system_metrics.stop(sampler)
        if run is not None:
            history = trainer.history if trainer else []
            summary = trainer.summary() if trainer and history else None
            tags = {**end_tags(summary, history, None), CLOSED_BY_TAG: "trial"}
            run.sync(history, status="FAILED", summary=summary, error=reason, tags=tags, force=True)
        # tell the driver before raising: it must not retry what fails the same way every time.
        # (Other errors may be retried by Tune, so their run stays open; the driver closes it if not.)
        if fixed.get("metric"):  # absent in searches started before this key existed
            tune.report({fixed["metric"]: math.nan, FAILED_KEY: reason})
        raise
    finally:
        system_metrics.stop(sampler)  # idempotent; bounded even when MLflow is down
    if run is not None:
        summary = trainer.summary()
        tags = {**end_tags(summary, trainer.history, None), CLOSED_BY_TAG: "trial"}
        close_in_background(run, list(trainer.history), summary, tags)
    device = cfg.device
    del trainer, best_weights
    release_device_memory(device)


def preload() -> None:
    """Ray's ``worker_process_setup_hook`` for a local cluster the search starts: a worker
    imports torch and the training loop as soon as Ray starts it, while the driver is still
    setting the search up, instead of when its first trial begins."""
    import miles_tune.data  # noqa: F401
    import miles_tune.spaces  # noqa: F401
    import miles_tune.tracking  # noqa: F401
    import miles_tune.train  # noqa: F401


def preload_with_tracking() -> None:
    """:func:`preload`, and what a trial's MLflow run needs: MLflow's client and its SQL store
    (its first run costs a worker about 2 s otherwise) and matplotlib (the run's figure)."""
    import importlib

    preload()
    for name in ("mlflow", "mlflow.store.tracking.sqlalchemy_store", "matplotlib.figure", "miles_tune.plots"):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: S112  (a failure is left for the trial's own import to report)
            continue
