"""What one trial's MLflow run costs its worker, part by part, against that trial's training.

    python benchmarks/tracking_costs.py [--trials 4] [--out benchmarks/results/tracking_costs.json]

One throughput trial of ``bench_search.py`` (vector synthetic, MILES, 20 epochs, ``n_train``
20000, one intra-op thread as a one-CPU trial has) is trained in this process, timed by its
thread's CPU clock. Then, for ``--trials`` runs in a real sqlite store, what a trial's worker does
with MLflow (:class:`miles_tune.tracking.TrialRun`), each part timed the same way:

- ``connect``: find the trial's run (none), create it with its tags, log its ~200 params;
- ``epochs``: the 20 per-epoch syncs, as a search makes them: epochs wait until they hold
  ``tracking.SYNC_EVERY_S`` of training, then go in one ``log_batch`` (~80 metrics per epoch);
  ``epochs_each`` is the same with every epoch logged at once (``sync_every_s=0``, as under PBT);
- ``close``: the end of the run, done in a background thread of the worker: ``history.parquet``,
  ``summary.json``, the utilisation figure (``figure`` is its rendering alone), final tags and
  status.

Each part is reported in CPU seconds per trial and as a share of the trial's training CPU (the
ratio the search pays on a CPU-bound machine, before contention and waiting). The first run pays
imports (matplotlib, MLflow's lazy ones) that a worker's setup hook pays at its start; the
median over runs is the steady cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = {
    "dataset": "synthetic",
    "method": "miles",
    "epochs": 20,
    "data": {"n_train": 20000, "form": "vector"},
}


def train_one() -> tuple[list, dict, dict, float]:
    """The trial's records, summary and config, and its training CPU seconds (this thread)."""
    import torch

    from miles_tune.config import TrainConfig
    from miles_tune.data import held_dataset
    from miles_tune.train import Trainer

    torch.set_num_threads(1)
    cfg = TrainConfig(**SETTINGS)
    trainer = Trainer(cfg, data=held_dataset(cfg.dataset, **cfg.data))
    started = time.thread_time()
    for _ in trainer.run():
        pass
    return list(trainer.history), trainer.summary(), cfg.to_dict(), time.thread_time() - started


def one_run(uri: str, experiment_id: str, parent: str, i: int, trial: tuple, png: Path) -> dict:
    from miles_tune import tracking
    from miles_tune.plots import utilisation_figure

    records, summary, config = trial
    costs: dict[str, float] = {}
    for part, every in (("epochs_each", 0.0), ("epochs", tracking.SYNC_EVERY_S)):
        spec = tracking.RunSpec(
            uri, experiment_id, parent, f"trial-{i}-{part}", f"run-{i}", config=config,
            searched={"lr": config["lr"]}, selection="val/mm/acc", tags=tracking.source_tags(),
            sync_every_s=every,
        )  # fmt: skip
        run = tracking.TrialRun(spec)
        started = time.thread_time()
        assert run.sync([])
        costs["connect"] = time.thread_time() - started
        started, calls = time.thread_time(), 0
        for n in range(1, len(records) + 1):
            before = run.logged_through
            assert run.sync(records[:n])
            calls += run.logged_through != before
        costs[part] = time.thread_time() - started
        costs[f"{part}_calls"] = calls
    started = time.thread_time()
    assert run.sync(records, status="FINISHED", summary=summary, tags={"closed_by": "trial"}, force=True)
    costs["close"] = time.thread_time() - started
    started = time.thread_time()
    utilisation_figure(tracking.figure_trace(records, summary, spec)).savefig(png)
    costs["figure"] = time.thread_time() - started
    return costs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tracking_costs.json")
    args = p.parse_args(argv)

    from miles_tune import tracking

    records, summary, config, train_cpu = train_one()
    with tempfile.TemporaryDirectory() as d:
        uri = f"sqlite:///{Path(d) / 'mlflow.db'}"
        tracking.prepare_store(uri)
        experiment_id = tracking.ensure_experiment(uri, "tracking-costs")
        parent = tracking.start_parent_run(uri, experiment_id, "costs", {}, {})
        trial, png = (records, summary, config), Path(d) / "utilisation.png"
        runs = [one_run(uri, experiment_id, parent, i, trial, png) for i in range(args.trials)]
    parts = ("connect", "epochs_each", "epochs", "close", "figure")
    median = {k: statistics.median(r[k] for r in runs) for k in parts}
    calls = {k: statistics.median(r[f"{k}_calls"] for r in runs) for k in ("epochs_each", "epochs")}
    total = median["connect"] + median["epochs"] + median["close"]  # (the figure is part of close)
    out = {
        "command": "python benchmarks/tracking_costs.py " + " ".join(argv or sys.argv[1:]),
        "settings": SETTINGS,
        "epochs": len(records),
        "metrics_per_epoch": len(records[-1].flat()),
        "train_cpu_s": train_cpu,
        "runs_cpu_s": runs,
        "median_cpu_s": median,
        "sync_every_s": tracking.SYNC_EVERY_S,
        "epoch_seconds_mean": statistics.mean(r.epoch_seconds for r in records),
        "epoch_syncs_that_logged": calls,
        "per_epoch_sync_cpu_s": median["epochs"] / len(records),
        "per_epoch_sync_cpu_s_each": median["epochs_each"] / len(records),
        "share_of_training": {k: v / train_cpu for k, v in median.items()},
        "total_share_of_training": total / train_cpu,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"training: {train_cpu:.2f} s CPU ({len(records)} epochs, one thread)")
    print("| part | CPU s per trial (median; each run) | share of training |")
    print("|---|---|---|")
    for k in parts:
        each = ", ".join(f"{r[k]:.3f}" for r in runs)
        print(f"| {k} | {median[k]:.3f} ({each}) | {median[k] / train_cpu:.1%} |")
    print(f"| total (connect + epochs + close) | {total:.3f} | **{total / train_cpu:.1%}** |")
    each_ms, ms = out["per_epoch_sync_cpu_s_each"] * 1000, out["per_epoch_sync_cpu_s"] * 1000
    print(
        f"per epoch ({out['metrics_per_epoch']} metrics, {out['epoch_seconds_mean']:.2f} s of training): "
        f"{ms:.1f} ms CPU when epochs wait for {tracking.SYNC_EVERY_S:g} s of training "
        f"({calls['epochs']:.0f} log_batch calls), {each_ms:.1f} ms when each is logged at once "
        f"({calls['epochs_each']:.0f} calls)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
