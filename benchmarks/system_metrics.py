"""What MLflow's system-metrics sampler (:mod:`miles_tune.system_metrics`) costs a training run.

    python benchmarks/system_metrics.py [--quick] [--rounds N] [--epochs N] [--threads N]
                                        [--out benchmarks/results/system_metrics.json]

The same small model (synthetic vector data, MILES, one intra-op thread as a one-CPU trial
has) is trained from scratch in sessions (2 untimed warm-up epochs, then ``--epochs`` timed
ones), each session under one condition: no sampler (twice: ``off`` and ``off again``, the A/A
pair that shows the noise floor), or a sampler logging into a real sqlite MLflow run every 10 s
(the default), 1 s and 0.1 s (a stress contrast: the cost must show there, or the benchmark
could not see it anywhere). The timing starts at a random phase of the sampler's cycle, so a
session shorter than the interval gets its fair share of samples. Sessions run in rounds, one
per condition in a random (seeded) order, so load drift and any carry-over from the session
before fall on every condition alike.

Reported per condition, against ``off`` measured in the same run:

- ``ratio_median_epoch``: median epoch seconds over ``off``'s. Robust to load bursts, but blind
  to a cost that hits one epoch in ten (a sample every 10 s lands in few epochs).
- ``ratio_mean_epoch``: total training seconds over ``off``'s: what a trial pays.
- ``pair_ratios``: each round's session-mean ratio (their median is the paired estimator), a 95%
  bootstrap interval over rounds, and ``best_of_ratio`` (each side's fastest session).

Also measured directly, and hardly moved by other load: the CPU time of MLflow's sampling
thread during the timed epochs (``sampler_cpu_share``, of one core), the CPU time of one
sampling cycle (psutil, MLflow's ``get_run`` status check, ``log_batch``; a lower bound on the
cost is 1 + cycle / interval), and how many samples each session really logged. From the stress
condition, the training seconds lost per sample, scaled to each interval
(``extrapolated_ratio_from_stress``): the default's cost is far below what a timing resolves.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from anywhere, without PYTHONPATH
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from miles_tune import system_metrics  # noqa: E402
from miles_tune.config import TrainConfig  # noqa: E402
from miles_tune.data import create_dataset  # noqa: E402
from miles_tune.tracking import client  # noqa: E402
from miles_tune.train import Trainer  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "system_metrics.json"
DATA = {"n_train": 6000}  # ~0.2 s per epoch on one thread
CPU_KEY = "system/cpu_utilization_percentage"
BOOTSTRAP = 2000
OFF, OFF_AGAIN = "off", "off again"
WARMUP = 2  # untimed epochs at the start of every session (a fresh model's first epochs are slower)


def conditions() -> dict[str, float | None]:
    """Name -> sampling interval (None: no sampler)."""
    return {
        OFF: None,
        OFF_AGAIN: None,
        f"every {system_metrics.DEFAULT_INTERVAL_S:g} s (default)": system_metrics.DEFAULT_INTERVAL_S,
        "every 1 s": 1.0,
        "every 0.1 s (stress)": 0.1,
    }


def make_trainer(data) -> Trainer:  # noqa: ANN001
    cfg = TrainConfig(method="miles", method_args={"tau": 0.2, "mu": 0.5}, data=dict(DATA), epochs=10_000)
    cfg.device = "cpu"
    return Trainer(cfg, data=data)


def thread_cpu_seconds(thread: threading.Thread | None) -> float | None:
    """CPU seconds a live thread has used (Linux; None elsewhere or when it has ended)."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (AttributeError, OSError, TypeError):
        return None


def session(
    data,  # noqa: ANN001
    epochs: int,
    interval: float | None,
    uri: str,
    experiment_id: str,
    rng: random.Random,
) -> dict[str, Any]:
    """Train a fresh model: :data:`WARMUP` untimed epochs, then ``epochs`` timed ones, with a
    sampler every ``interval`` s if given.

    The sampler starts before the warm-up, which goes on (untimed epochs) until a random phase
    of the sampler's cycle (uniform over one interval): a session shorter than the interval then
    sees, on average, its share of a cycle, as any slice of a long trial would. The sampler's
    start-up (once per trial) falls outside the timing.
    """
    trainer = make_trainer(data)
    sampler = None
    if interval is not None:
        run_id = client(uri).create_run(experiment_id).info.run_id
        sampler = system_metrics.start(uri, run_id, interval)
        lifetime = time.perf_counter()
        deadline = time.monotonic() + 10
        while not sampler.running and time.monotonic() < deadline:
            time.sleep(0.01)
        phase_end = time.perf_counter() + rng.uniform(0, interval)
    for _ in range(WARMUP):
        trainer.run_epoch()
    while sampler is not None and time.perf_counter() < phase_end:
        trainer.run_epoch()
    thread = getattr(sampler.monitor, "_process", None) if sampler else None  # MLflow's sampling thread
    sampler_cpu = thread_cpu_seconds(thread)
    gc.collect()
    started, cpu = time.perf_counter(), time.process_time()
    epoch_seconds = [trainer.run_epoch().epoch_seconds for _ in range(epochs)]
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    out: dict[str, Any] = {"epoch_seconds": epoch_seconds, "wall_seconds": wall, "cpu_seconds": cpu}
    if sampler is not None:
        after = thread_cpu_seconds(thread)
        if sampler_cpu is not None and after is not None:
            out["sampler_thread_cpu_seconds"] = after - sampler_cpu
        began = time.perf_counter()
        sampler.stop()
        out["stop_seconds"] = time.perf_counter() - began
        out["sampler_lifetime_seconds"] = began - lifetime
        client(uri).set_terminated(run_id)
        out["samples_logged"] = len(client(uri).get_metric_history(run_id, CPU_KEY))
    return out


def cycle_cost(uri: str, experiment_id: str) -> dict[str, float]:
    """CPU milliseconds (this thread) of each part of one MLflow sampling cycle, uncontended."""
    from mlflow import MlflowClient
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    run_id = client(uri).create_run(experiment_id).info.run_id
    monitor = SystemMetricsMonitor(run_id, sampling_interval=1.0, tracking_uri=uri)

    def cpu_ms(fn, n: int) -> float:  # noqa: ANN001
        fn()
        started = time.thread_time()
        for _ in range(n):
            fn()
        return (time.thread_time() - started) / n * 1e3

    def publish() -> None:
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()

    collect = cpu_ms(monitor.collect_metrics, 200)
    get_run = cpu_ms(lambda: MlflowClient(uri).get_run(run_id), 100)
    publish_ms = cpu_ms(publish, 50) - collect
    client(uri).set_terminated(run_id)
    return {
        "collect_psutil_ms": collect,
        "get_run_status_check_ms": get_run,
        "log_batch_ms": publish_ms,
        "cycle_ms": collect + get_run + publish_ms,
    }


def bootstrap(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """95% percentile interval of sum(a)/sum(b) over rounds resampled with replacement (fixed seed)."""
    rng = random.Random(0)
    ratios = []
    for _ in range(BOOTSTRAP):
        pick = [pairs[rng.randrange(len(pairs))] for _ in pairs]
        ratios.append(sum(a for a, _ in pick) / sum(b for _, b in pick))
    ratios.sort()
    return ratios[int(0.025 * BOOTSTRAP)], ratios[int(0.975 * BOOTSTRAP) - 1]


def summarise(sessions: dict[str, list[dict[str, Any]]], cycle: dict[str, float]) -> list[dict[str, Any]]:
    base = sessions[OFF]
    base_epochs = [s for run in base for s in run["epoch_seconds"]]
    base_median, base_mean = statistics.median(base_epochs), statistics.fmean(base_epochs)
    rows = []
    for name, interval in conditions().items():
        runs = sessions[name]
        epochs = [s for run in runs for s in run["epoch_seconds"]]
        means = [
            (statistics.fmean(r["epoch_seconds"]), statistics.fmean(b["epoch_seconds"]))
            for r, b in zip(runs, base, strict=True)
        ]
        pair_ratios = [a / b for a, b in means]
        row: dict[str, Any] = {
            "condition": name,
            "interval_s": interval,
            "median_epoch_s": statistics.median(epochs),
            "mean_epoch_s": statistics.fmean(epochs),
            "ratio_median_epoch": statistics.median(epochs) / base_median,
            "ratio_mean_epoch": statistics.fmean(epochs) / base_mean,
            "ratio_mean_epoch_ci95": bootstrap(means),
            # every thread of this process, the sampler's too (steal time on a busy VM counts too)
            "ratio_process_cpu": sum(r["cpu_seconds"] for r in runs) / sum(b["cpu_seconds"] for b in base),
            "pair_ratios": pair_ratios,
            "median_pair_ratio": statistics.median(pair_ratios),  # paired: each round ran back to back
            # each side's fastest session, the one least touched by other load
            "best_of_ratio": min(a for a, _ in means) / min(b for _, b in means),
            "predicted_ratio_from_cycle_cost": 1 + cycle["cycle_ms"] / (interval * 1e3) if interval else 1.0,
        }
        if interval is not None:
            samples = [r["samples_logged"] for r in runs]
            walls = [r["wall_seconds"] for r in runs]
            row["samples_logged_per_session"] = samples
            row["samples_per_second_achieved"] = sum(samples) / sum(
                r["sampler_lifetime_seconds"] for r in runs
            )
            row["samples_per_second_nominal"] = 1 / interval
            row["stop_seconds_max"] = max(r["stop_seconds"] for r in runs)
            thread_cpu = [r.get("sampler_thread_cpu_seconds") for r in runs]
            if None not in thread_cpu:  # the sampler's own CPU, as a share of one core over the sessions
                row["sampler_cpu_share"] = sum(thread_cpu) / sum(walls)
        rows.append(row)
    # Dose-response: the stress condition's excess time per sample it logged, scaled to each
    # interval. Far more precise than timing the default directly, whose cost is below the noise.
    stress = rows[-1]
    ratio = stress["ratio_mean_epoch"]
    per_sample = (ratio - 1) / (stress["samples_per_second_achieved"] * ratio)  # seconds of training
    for row in rows:
        row["stress_seconds_per_sample"] = per_sample
        row["extrapolated_ratio_from_stress"] = (
            1 + per_sample / row["interval_s"] if row["interval_s"] else 1.0
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| condition | median epoch | ratio of medians | ratio of means (95% CI) | round ratios min–med–max "
        "| best-of | sampler CPU, % of a core | samples/s (nominal) | extrapolated from stress |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["ratio_mean_epoch_ci95"]
        sampled = r["interval_s"] is not None
        rate = (
            f"{r['samples_per_second_achieved']:.2f} ({r['samples_per_second_nominal']:g})"
            if sampled
            else "–"
        )
        share = f"{100 * r['sampler_cpu_share']:.2f}" if "sampler_cpu_share" in r else "–"
        extrapolated = f"{r['extrapolated_ratio_from_stress']:.4f}" if r is not rows[-1] else "(the source)"
        lines.append(
            f"| {r['condition']} | {r['median_epoch_s'] * 1e3:.1f} ms | {r['ratio_median_epoch']:.3f} "
            f"| **{r['ratio_mean_epoch']:.3f}** ({lo:.3f}–{hi:.3f}) "
            f"| {min(r['pair_ratios']):.2f}–{r['median_pair_ratio']:.3f}–{max(r['pair_ratios']):.2f} "
            f"| {r['best_of_ratio']:.3f} | {share} | {rate} "
            f"| {extrapolated} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 rounds of 6-epoch sessions (~1 min)")
    p.add_argument("--rounds", type=int, default=10, help="sessions per condition (default 10)")
    p.add_argument("--epochs", type=int, default=10, help="timed epochs per session (default 10, ~2 s)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads; 0 keeps torch's default")
    p.add_argument("--tracking-uri", help="an MLflow store to sample into (default: a new sqlite file)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.epochs = 2, 6
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        uri = args.tracking_uri or f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        experiment_id = client(uri).create_experiment(f"system-metrics-bench-{time.time():.0f}")
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # after MLflow set it up
        data = create_dataset("synthetic", **DATA)
        rng = random.Random(0)
        session(data, 3, None, uri, experiment_id, rng)  # warm-up: allocator, caches, lazy imports
        session(data, 3, 0.1, uri, experiment_id, rng)
        cycle = cycle_cost(uri, experiment_id)
        names = list(conditions())
        sessions: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        orders = []
        for r in range(args.rounds):
            order = random.Random(r).sample(names, len(names))  # fresh order: no fixed predecessor
            orders.append(order)
            for name in order:
                sessions[name].append(session(data, args.epochs, conditions()[name], uri, experiment_id, rng))
            done = {n: statistics.fmean(sessions[n][-1]["epoch_seconds"]) * 1e3 for n in names}
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {ms:.0f} ms" for n, ms in done.items()))
    rows = summarise(sessions, cycle)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        },
        "settings": {
            "rounds": args.rounds,
            "epochs_per_session": args.epochs,
            "data": {"dataset": "synthetic", **DATA},
            "method": "miles",
            "store": "sqlite (temporary)" if not args.tracking_uri else "given",
            "default_interval_s": system_metrics.DEFAULT_INTERVAL_S,
            "order": "rounds of one session per condition, a seeded random order each round; fresh model "
            "per session",
            "orders": orders,
        },
        "cycle_cpu_ms": cycle,
        "conditions": rows,
        "raw_sessions": sessions,
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(rows))
    print(f"one sampling cycle: {cycle['cycle_ms']:.2f} ms CPU ({cycle})")
    print(f"{result['seconds']:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
