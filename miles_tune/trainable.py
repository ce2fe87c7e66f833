"""The Ray Tune function trainable: one trial = one :class:`~miles_tune.train.Trainer` run.

Every epoch it logs the record to the trial's MLflow run, saves a checkpoint (trainer
state, MLflow run id and the history) and reports the record to Tune. A retried or
restored trial resumes from ``tune.get_checkpoint()`` and ends with exactly the metrics
of an uninterrupted one. It trains on CUDA when Ray assigned it a GPU and CUDA is there,
on CPU otherwise.

The trial's config holds the sampled parameters at the top level (``lr``, ``tau``, ...)
and, under ``miles_tune``, the fixed base config and the tracking settings.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

RESERVED = "miles_tune"
TRAINER_FILE = "trainer.pt"
TRIAL_FILE = "trial.json"
HISTORY_FILE = "history.parquet"


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
    """Where this trial runs (node and GPU ids): reported to Tune and tagged in MLflow."""
    import ray

    try:
        ctx = ray.get_runtime_context()
        return {"node_id": ctx.get_node_id(), "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids())}
    except Exception:
        return {"node_id": "", "gpu_ids": ""}


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
    return {k: v for k, v in config.items() if k != RESERVED}


def progress_metrics(trainer, record) -> dict[str, Any]:  # noqa: ANN001
    """What Tune sees each epoch: the flat record plus the best-so-far selection metric."""
    out: dict[str, Any] = dict(record.flat())
    best = trainer.best_record()
    out[f"best/{trainer.selection_key}"] = trainer.best_value
    out["best_epoch"] = trainer.best_epoch
    for key, value in best.flat().items():
        if key.startswith("test/"):
            out[f"best/{key}"] = value
    return out


def train_trial(config: dict[str, Any]) -> None:
    from ray import tune

    from miles_tune.spaces import trial_config
    from miles_tune.tracking import TrialRun
    from miles_tune.train import Trainer, write_history

    fixed = config[RESERVED]
    set_threads_from_resources()
    cfg = trial_config(fixed["base"], sampled_params(config))
    cfg.device = pick_device()
    trainer = Trainer(cfg)

    run_id = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load_checkpoint(Path(d) / TRAINER_FILE)
            run_id = json.loads((Path(d) / TRIAL_FILE).read_text()).get("mlflow_run_id")

    where = placement()
    tracking = fixed.get("tracking")
    run = None
    if tracking:
        ctx = tune.get_context()
        run = TrialRun(
            tracking["uri"],
            tracking["experiment_id"],
            tracking["parent_run_id"],
            trial_id=ctx.get_trial_id(),
            trial_name=ctx.get_trial_name(),
            params=cfg.to_dict(),
            tags={
                **tracking.get("tags", {}),
                "trial_name": ctx.get_trial_name(),
                "device": cfg.device,
                **where,
            },
            run_id=run_id,
        )
        run.log_records(trainer.history)  # epochs a crash kept out of MLflow
    try:
        for record in trainer.run():
            if run is not None:
                run.log_records(trainer.history)
            metrics = {**progress_metrics(trainer, record), **where}
            with tempfile.TemporaryDirectory() as d:
                trainer.save_checkpoint(Path(d) / TRAINER_FILE)
                write_history(trainer.history, Path(d) / HISTORY_FILE)
                (Path(d) / TRIAL_FILE).write_text(json.dumps({"mlflow_run_id": run.run_id if run else None}))
                if run is not None:
                    metrics["mlflow_run_id"] = run.run_id
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
            crash_once_for_tests(record.epoch)
    except Exception as exc:
        if run is not None:
            run.fail(exc)
        raise
    if run is not None:
        run.finish(trainer.history, trainer.summary())
