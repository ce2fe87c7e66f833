"""What Ray Tune costs and what ASHA saves, on the built-in synthetic data (CPU).

1. Orchestration overhead: N small trials through ``miles_tune.search`` (Ray Tune, one
   trial at a time, no MLflow) against the same N configurations trained back to back in
   this process without Ray. Ratio = search wall seconds / in-process seconds. Also the
   same search with MLflow tracking (sqlite), and with trials running concurrently.
2. ASHA: the same random-search configurations with and without ASHA; trial-epochs spent
   and the best validation metric found, plus the trial-epochs the full search needed to
   first reach ASHA's best.

    python benchmarks/bench_search.py [--trials 8] [--asha-trials 16] [--out benchmarks/results/search.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from miles_tune.search import plan_search, run_search  # noqa: E402
from miles_tune.spaces import trial_config  # noqa: E402
from miles_tune.train import Trainer  # noqa: E402

METRIC = "best/val/mm/acc"


def search(tmp: Path, tag: str, *extra: str) -> tuple[float, object, object]:
    import ray

    args = ["--searcher", "random", "--storage", str(tmp / "ray"), "--results", str(tmp / "runs"),
            "--name", tag, "--verbose", "0", *extra]  # fmt: skip
    if "--tracking-uri" not in extra:
        args.append("--no-tracking")
    plan = plan_search(args)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        results = run_search(plan)
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
    return seconds, results, plan


def in_process(results, plan) -> float:  # noqa: ANN001
    """The same trial configurations, one after another, in this process (1 thread, as a trial)."""
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    for r in results:
        params = {k: v for k, v in r.config.items() if k != "miles_tune"}
        for _ in Trainer(trial_config(plan.base, params)).run():
            pass
    return time.perf_counter() - started


def trial_epochs(results) -> list[tuple[int, float]]:  # noqa: ANN001
    """(epochs run, best val metric) per trial, in trial order."""
    rows = []
    for r in sorted(results, key=lambda r: r.path):
        df = r.metrics_dataframe
        rows.append((int(df["training_iteration"].max()), float(df[METRIC].max())))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--asha-trials", type=int, default=16)
    p.add_argument("--asha-epochs", type=int, default=20)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "search.json")
    args = p.parse_args(argv)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    out: dict = {
        "command": "python benchmarks/bench_search.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
    }
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # the regime its published figures were measured on (synthetic's default before the study)
        common = ["--num-samples", str(args.trials), "--set", f"epochs={args.epochs}",
                  "--cpus-per-trial", "1", "--set", "data.regime=inverted"]  # fmt: skip
        ray_s, results, plan = search(tmp, "serial", *common, "--max-concurrent", "1")
        local_s = in_process(results, plan)
        mlflow_s, _, _ = search(tmp, "serial-mlflow", *common, "--max-concurrent", "1",
                                "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}")  # fmt: skip
        par_s, _, _ = search(tmp, "parallel", *common)
        out["overhead"] = {
            "trials": args.trials, "epochs": args.epochs,
            "in_process_s": local_s, "ray_serial_s": ray_s, "ray_serial_mlflow_s": mlflow_s,
            "ray_two_at_once_s": par_s,
            "ratio_ray_serial_vs_in_process": ray_s / local_s,
            "ratio_ray_mlflow_serial_vs_in_process": mlflow_s / local_s,
            "ratio_ray_two_at_once_vs_in_process": par_s / local_s,
            "per_trial_overhead_s": (ray_s - local_s) / args.trials,
        }  # fmt: skip

        asha_common = ["--num-samples", str(args.asha_trials), "--set", f"epochs={args.asha_epochs}",
                       "--cpus-per-trial", "1", "--seed", "1", "--set", "data.regime=inverted"]  # fmt: skip
        full_s, full, _ = search(tmp, "full", *asha_common)
        asha_s, asha, _ = search(tmp, "asha", *asha_common, "--scheduler", "asha", "--grace-period", "2")
        f_rows, a_rows = trial_epochs(full), trial_epochs(asha)
        asha_best = max(b for _, b in a_rows)
        spent, reached_at = 0, None
        for epochs, best in f_rows:
            spent += epochs
            if best >= asha_best and reached_at is None:
                reached_at = spent
        out["asha"] = {
            "trials": args.asha_trials, "max_epochs": args.asha_epochs,
            "full_trial_epochs": sum(e for e, _ in f_rows), "asha_trial_epochs": sum(e for e, _ in a_rows),
            "full_best_val": max(b for _, b in f_rows), "asha_best_val": asha_best,
            "full_trial_epochs_to_reach_asha_best": reached_at,
            "epochs_ratio_asha_vs_full": sum(e for e, _ in a_rows) / sum(e for e, _ in f_rows),
            "full_wall_s": full_s, "asha_wall_s": asha_s,
        }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    o, a = out["overhead"], out["asha"]
    print(f"| {args.trials} trials × {args.epochs} epochs | seconds | ratio vs in-process |\n|---|---|---|")
    print(f"| in process, back to back | {o['in_process_s']:.1f} | 1.00 |")
    print(f"| Ray Tune, one at a time | {o['ray_serial_s']:.1f} | "
          f"{o['ratio_ray_serial_vs_in_process']:.2f} |")  # fmt: skip
    print(f"| Ray Tune + MLflow, one at a time | {o['ray_serial_mlflow_s']:.1f} | "
          f"{o['ratio_ray_mlflow_serial_vs_in_process']:.2f} |")  # fmt: skip
    print(f"| Ray Tune, two at once (2 cores) | {o['ray_two_at_once_s']:.1f} | "
          f"{o['ratio_ray_two_at_once_vs_in_process']:.2f} |")  # fmt: skip
    print(f"\nASHA over {a['trials']} trials (max {a['max_epochs']} epochs): "
          f"{a['asha_trial_epochs']} trial-epochs "
          f"(best val {a['asha_best_val']:.4f}) vs {a['full_trial_epochs']} without "
          f"(best val {a['full_best_val']:.4f}); the full search first reached ASHA's best after "
          f"{a['full_trial_epochs_to_reach_asha_best']} trial-epochs")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
