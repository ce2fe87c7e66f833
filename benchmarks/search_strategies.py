"""How much compute Optuna TPE with ASHA needs to match the paper's protocol, on one space.

The paper's protocol is random search: ``--trials`` (80) trials at the space's full epochs.
For each searcher seed, this runs that search, then Optuna TPE with ASHA (grace period 2,
reduction factor 2) with the same number of trials on the same space, both through
``miles_tune.search`` on a local Ray (2 trials at a time, no MLflow, no known points: every
configuration sampled). Both use the seed as the searcher's seed and every trial's
training seed.

Figure per seed: the trial-epochs TPE+ASHA spent until one of its trials first reached
the best validation metric the random search found (any epoch of any trial), divided by
the random search's trial-epochs (trials × epochs). Trial-epochs are counted trial by trial
in the order the trials started (all epochs of every earlier trial, then the epochs of the
reaching trial up to the one that reached), which does not depend on how the two trials
running at a time overlapped. A seed whose TPE+ASHA never reaches the target counts its whole
spend, and is reported as not reached.

    python benchmarks/search_strategies.py --seeds 0 1 2 --out benchmarks/results/search_strategies.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from miles_tune.search import plan_search, run_search  # noqa: E402


def run(tmp: Path, name: str, argv: list[str]) -> list[dict]:
    """One search; its rows of trials.parquet (one per trial and epoch)."""
    import pyarrow.parquet as pq
    import ray

    where = ["--name", name, "--storage", str(tmp / "ray"), "--results", str(tmp / "runs")]
    plan = plan_search(
        [*argv, *where, "--no-tracking", "--verbose", "0", "--max-concurrent", "2", "--points", "0"]
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_search(plan)
    finally:
        ray.shutdown()
    return pq.read_table(tmp / "runs" / name / "trials.parquet").to_pylist()


def curves(rows: list[dict], metric: str) -> list[list[float]]:
    """Each trial's validation metric per epoch, trials in the order they started (the first
    epoch's end less its duration; Optuna's trial ids carry no index)."""
    by_trial: dict[str, dict[int, float]] = {}
    start: dict[str, float] = {}
    for r in rows:
        by_trial.setdefault(r["trial_id"], {})[int(r["epoch"])] = float(r[metric])
        if int(r["epoch"]) == 0:
            start[r["trial_id"]] = float(r["timestamp"]) - float(r["time_this_iter_s"])
    order = sorted(by_trial, key=lambda t: (start.get(t, float("inf")), t))
    return [[by_trial[t][e] for e in sorted(by_trial[t])] for t in order]


def epochs_to_reach(trials: list[list[float]], target: float) -> tuple[int, bool]:
    spent = 0
    for curve in trials:
        for value in curve:
            spent += 1
            if value >= target:
                return spent, True
    return spent, False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--trials", type=int, default=80)
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--method", default="miles")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    common = ["--dataset", args.dataset, "--method", args.method, "--num-samples", str(args.trials)]
    for pair in args.set:
        common += ["--set", pair]
    metric = "val/mm/acc"
    results = []
    started = time.perf_counter()
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            s = ["--seed", str(seed)]
            random_rows = run(tmp, f"random-{seed}", [*common, *s, "--searcher", "random"])
            asha = ["--searcher", "optuna", "--scheduler", "asha", "--grace-period", "2"]
            tpe_rows = run(tmp, f"tpe-asha-{seed}", [*common, *s, *asha])
        rand, tpe = curves(random_rows, metric), curves(tpe_rows, metric)
        target = max(max(c) for c in rand)
        protocol = sum(len(c) for c in rand)
        spent, reached = epochs_to_reach(tpe, target)
        row = {
            "seed": seed,
            "target_val": target,
            "random_trial_epochs": protocol,
            "tpe_asha_trial_epochs_to_target": spent,
            "reached": reached,
            "ratio": spent / protocol,
            "tpe_asha_total_trial_epochs": sum(len(c) for c in tpe),
            "tpe_asha_best_val": max(max(c) for c in tpe),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    ratios = [r["ratio"] for r in results]
    summary = {
        "ratio_median": statistics.median(ratios),
        "ratio_mean": statistics.fmean(ratios),
        "ratio_max": max(ratios),
        "reached": sum(r["reached"] for r in results),
        "seeds": len(results),
        "target": 0.25,
        "minutes": (time.perf_counter() - started) / 60,
    }
    print(
        f"TPE+ASHA / random (80 trials, full epochs) trial-epochs to the random search's best val: "
        f"median {summary['ratio_median']:.3f}, mean {summary['ratio_mean']:.3f}, "
        f"max {summary['ratio_max']:.3f} "
        f"(reached in {summary['reached']}/{summary['seeds']} seeds; target <= 0.25)"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out = {"args": {**vars(args), "out": str(args.out)}, "machine": platform.platform(), "rows": results,
               "summary": summary}  # fmt: skip
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
