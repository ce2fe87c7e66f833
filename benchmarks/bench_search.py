"""What Ray Tune costs and what ASHA saves, on the built-in synthetic data (CPU).

1. Throughput (the search-throughput issue's measure): 16 identical small MILES trials
   (vector synthetic, 20 epochs, ``n_train`` 20000, random search) through
   ``python -m miles_tune.search`` two at a time on 2 CPUs (``--cpus-per-trial 1
   --max-concurrent 2``, no MLflow), against the same 16 configurations trained back to back in
   one process with one thread. Both are timed as whole processes, start-up included.
   Ratio = search / in-process (target <= 0.65; two cores allow ~0.5 plus Ray's start). Also:
   the per-trial overhead on a reused worker (last report of one trial to the first epoch of
   the next, from the trials' own ``reported_at``; target <= 0.5 s), the set-up of a trial
   (first on a worker and later ones), the same search with MLflow on against off, run next
   to each other (target <= 1.10), what a fresh worker pays once (imports, dataset, Ray's start), and the CPU
   seconds of every timed process by kind (the driver, the trial workers, Ray's own).
2. Tracking: MLflow on against off alone, the same search in adjacent pairs (alternating
   which goes first), for more pairs than the throughput rounds give.
3. ASHA: the same random-search configurations with and without ASHA; trial-epochs spent
   and the best validation metric found, plus the trial-epochs the full search needed to
   first reach ASHA's best.

    python benchmarks/bench_search.py [--sections throughput tracking asha]
        [--out benchmarks/results/search.json]
"""

from __future__ import annotations

import argparse
import itertools
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


# -- throughput: the whole-process comparison -----------------------------------------
THROUGHPUT_TRIALS = 16
THROUGHPUT_SETTINGS = ["--set", "epochs=20", "--set", "data.n_train=20000", "--set", "data.form=vector"]


#: CPU seconds of each timed process and everything it started, by kind (see :class:`SessionCPU`)
CPU_SECONDS: list[dict[str, float | str]] = []


class SessionCPU:
    """The CPU seconds (user + system) of every process in one session, by kind: the process
    itself (``driver``), Ray's trial workers (``trials``: named ``ray::...Trainable...`` at
    any reading) and the rest (``ray``: GCS, raylet, dashboard, agents, log monitor, idle workers). Read from
    ``/proc`` every 0.2 s, keeping each process's last reading, so a process that lives less
    than that, or the CPU of one's last 0.2 s, can be missed. Linux only (else empty)."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid, self.last, self.trial_pids = pid, {}, set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()

    def poll(self) -> None:
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        while True:
            for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
                if not entry.isdigit():
                    continue
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    fields = stat[stat.rfind(")") + 2 :].split()
                    if int(fields[3]) != self.pid:  # its session: the timed process started it
                        continue
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                    self.last[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
                    if cmd.startswith("ray::") and "Trainable" in cmd:  # a worker renames itself
                        self.trial_pids.add(int(entry))  # (ray::IDLE once its trials are done)
                except (OSError, IndexError, ValueError):
                    continue
            if self.stop.wait(0.2):
                return

    def finish(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join()
        kinds = {"driver": 0.0, "trials": 0.0, "ray": 0.0}
        for pid, seconds in self.last.items():
            kinds["driver" if pid == self.pid else "trials" if pid in self.trial_pids else "ray"] += seconds
        return {**kinds, "total": sum(kinds.values())}


def timed_process(argv: list[str], log: Path) -> float:
    """Wall seconds of a whole Python process (start-up, imports and Ray's start included); its
    CPU seconds, with those of the processes it started, go to :data:`CPU_SECONDS`."""
    import subprocess

    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, *argv], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        cpu = SessionCPU(proc.pid)
        code = proc.wait()
    seconds = time.perf_counter() - started
    CPU_SECONDS.append({"process": log.stem, "wall": seconds, **cpu.finish()})
    if code != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed (exit {code}); see {log}")
    return seconds


def search_process(tmp: Path, name: str, trials: int, *extra: str) -> tuple[float, Path]:
    """``python -m miles_tune.search``, two trials at a time on 2 CPUs, as a user runs it."""
    results = tmp / "runs"
    argv = ["-m", "miles_tune.search", "--dataset", "synthetic", "--method", "miles",
            "--searcher", "random", "--seed", "0", "--num-samples", str(trials), *THROUGHPUT_SETTINGS,
            "--cpus-per-trial", "1", "--max-concurrent", "2", "--storage", str(tmp / "ray"),
            "--results", str(results), "--name", name, "--verbose", "0", *extra]  # fmt: skip
    started = time.time()
    seconds = timed_process(argv, tmp / f"{name}.log")
    (results / name / "process_times.json").write_text(json.dumps({"started": started, "ended": time.time()}))
    return seconds, results / name


def trial_configs(results_dir: Path) -> list[dict]:
    """Every trial's full TrainConfig, from the search's own files (best_config.yaml gives the
    fixed part, trials.parquet each trial's sampled parameters)."""
    import pandas as pd
    import yaml

    base = yaml.safe_load((results_dir / "best_config.yaml").read_text())["config"]
    df = pd.read_parquet(results_dir / "trials.parquet").drop_duplicates("trial_id")
    configs = []
    for _, row in df.sort_values("trial_id").iterrows():
        params = {  # the sampled ones: config/lr, config/tau, ... (not config/miles_tune/...)
            k.removeprefix("config/"): row[k]
            for k in df.columns
            if k.startswith("config/") and "/" not in k.removeprefix("config/")
        }
        cfg = dict(base)
        cfg["method_args"] = dict(base["method_args"])
        for k, v in params.items():
            (cfg if k in cfg else cfg["method_args"])[k] = v.item() if hasattr(v, "item") else v
        configs.append(cfg)
    return configs


def run_configs(path: Path) -> int:
    """The in-process side: the configurations back to back, one thread (as one trial has)."""
    import torch

    from miles_tune.config import TrainConfig
    from miles_tune.train import Trainer

    torch.set_num_threads(1)
    for values in json.loads(path.read_text()):
        for _ in Trainer(TrainConfig.from_dict(values)).run():
            pass
    return 0


def time_between_trials(results_dir: Path) -> dict[str, float]:
    """From the trials' own reports (``reported_at``, ``setup_s``, ``epoch_seconds``, ``pid``):
    per worker process, the dead time from one trial's last report to the next trial's first
    epoch start, and the trials' set-up seconds (first trial on a worker, later ones)."""
    import pandas as pd

    df = pd.read_parquet(results_dir / "trials.parquet")
    trials = []
    for trial_id, rows in df.groupby("trial_id"):
        rows = rows.sort_values("epoch")
        first = rows.iloc[0]
        trials.append({
            "trial": trial_id, "pid": int(first["pid"]), "setup_s": float(first["setup_s"]),
            "first_epoch_start": float(first["reported_at"]) - float(first["epoch_seconds"]),
            "last_report": float(rows.iloc[-1]["reported_at"]),
        })  # fmt: skip
    process = json.loads((results_dir / "process_times.json").read_text())
    gaps, first_setup, later_setup = [], [], []
    by_pid: dict[int, list[dict]] = {}
    for t in sorted(trials, key=lambda t: t["first_epoch_start"]):
        by_pid.setdefault(t["pid"], []).append(t)
    for runs in by_pid.values():
        first_setup.append(runs[0]["setup_s"])
        for a, b in itertools.pairwise(runs):
            gaps.append(b["first_epoch_start"] - a["last_report"])
            later_setup.append(b["setup_s"])
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    first_start = min(t["first_epoch_start"] - t["setup_s"] for t in trials)
    return {
        "process_start_to_first_trial_s": first_start - process["started"],
        "last_report_to_exit_s": process["ended"] - max(t["last_report"] for t in trials),
        "workers": len(by_pid),
        "per_trial_overhead_s": mean(gaps),
        "per_trial_overhead_max_s": max(gaps, default=float("nan")),
        "setup_first_trial_on_worker_s": mean(first_setup),
        "setup_later_trials_s": mean(later_setup),
    }


def start_up_costs() -> dict[str, float]:
    """What a fresh worker pays once: Ray's start, the imports, building the dataset."""
    import subprocess

    probe = (
        "import time, json\n"
        "t0 = time.perf_counter()\n"
        "import torch, ray.tune, miles_tune.trainable, miles_tune.train, miles_tune.tracking, mlflow\n"
        "t1 = time.perf_counter()\n"
        "from miles_tune.data import create_dataset\n"
        "create_dataset('synthetic', form='vector', n_train=20000)\n"
        "t2 = time.perf_counter()\n"
        "import ray\n"
        "ray.init(address='local', num_cpus=2, include_dashboard=False)\n"
        "t3 = time.perf_counter(); ray.shutdown()\n"
        "print(json.dumps({'imports_s': t1 - t0, 'dataset_s': t2 - t1, 'ray_start_s': t3 - t2}))\n"
    )
    out = subprocess.check_output([sys.executable, "-c", probe], cwd=ROOT, stderr=subprocess.DEVNULL)
    return json.loads(out.decode().strip().splitlines()[-1])


def plain_parallel(configs: Path, tmp: Path, i: int) -> float:
    """The machine's own limit: the same trials split over two plain processes (no Ray) started
    together, timed from the first start to the last exit: the least two cores allow here."""
    import subprocess

    data = json.loads(configs.read_text())
    halves = [tmp / f"half-{i}-{h}.json" for h in (0, 1)]
    for h, path in enumerate(halves):
        path.write_text(json.dumps(data[h::2]))
    started = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--run-configs", str(path)],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for path in halves
    ]  # fmt: skip
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a plain process failed (exit codes {codes})")
    return time.perf_counter() - started


def create_store(uri: str) -> float:
    """Create the sqlite MLflow store as a search does (``tracking.prepare_store``), in a fresh
    process: the seconds a user's first search pays once, on top of what the rounds measure."""
    import subprocess

    code = "import sys; from miles_tune import tracking; tracking.prepare_store(sys.argv[1])"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, uri], check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - started


def throughput(tmp: Path, trials: int, pairs: int) -> dict:
    """The issue's measure: ``trials`` identical small trials through a search two at a time
    against the same trials back to back in one process, both timed as whole processes. Each
    of ``pairs`` rounds also runs the trials in two plain processes at once (the machine's
    limit) and the search with MLflow on (sqlite). The order of a round reverses every other
    round, because the machine's load drifts: the two searches of an MLflow ratio run next to
    each other, in turn first, so that a slow stretch does not fall on one side. The MLflow
    store is created before the first round (what a new store costs its first search, once,
    is reported apart as ``new_store_s``): every round measures the same thing. Ratios are
    medians of the per-round ratios."""
    import statistics

    sides: dict[str, list[float]] = {"search": [], "search_mlflow": [], "serial": [], "plain_parallel": []}
    runs, runs_mlflow = [], []
    configs = tmp / "configs.json"
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    new_store_s = create_store(store)
    order = list(sides)
    for i in range(pairs):
        for side in order if i % 2 == 0 else order[::-1]:
            if side == "search":
                seconds, results_dir = search_process(tmp, f"two-at-once-{i}", trials, "--no-tracking")
                runs.append(results_dir)
                if not configs.exists():  # the same seeded configurations every time
                    configs.write_text(json.dumps(trial_configs(results_dir)))
            elif side == "search_mlflow":
                seconds, results_dir = search_process(tmp, f"mlflow-{i}", trials, "--tracking-uri", store)
                runs_mlflow.append(results_dir)
            elif side == "serial":  # round 0 ran the search first: its configurations are known
                argv = [str(Path(__file__).resolve()), "--run-configs", str(configs)]
                seconds = timed_process(argv, tmp / f"serial-{i}.log")
            else:
                seconds = plain_parallel(configs, tmp, i)
            sides[side].append(seconds)

    def median_ratio(a: str, b: str) -> tuple[list[float], float]:
        ratios = [x / y for x, y in zip(sides[a], sides[b], strict=True)]
        return ratios, statistics.median(ratios)

    ratios, ratio = median_ratio("search", "serial")
    plain_ratios, plain_ratio = median_ratio("plain_parallel", "serial")
    mlflow_ratios, mlflow_ratio = median_ratio("search_mlflow", "search")
    return {
        "trials": trials,
        "settings": " ".join(THROUGHPUT_SETTINGS),
        "search_two_at_once_s": sides["search"],
        "in_process_back_to_back_s": sides["serial"],
        "plain_two_processes_s": sides["plain_parallel"],
        "search_two_at_once_mlflow_s": sides["search_mlflow"],
        "ratios_search_vs_in_process": ratios,
        "ratio_search_vs_in_process": ratio,
        "ratios_plain_two_processes_vs_in_process": plain_ratios,
        "ratio_plain_two_processes_vs_in_process": plain_ratio,
        "ratios_mlflow_on_vs_off": mlflow_ratios,
        "ratio_mlflow_on_vs_off": mlflow_ratio,
        "between_trials": [time_between_trials(r) for r in runs],
        "between_trials_mlflow": [time_between_trials(r) for r in runs_mlflow],
        "new_store_s": new_store_s,
        "cpu_seconds": list(CPU_SECONDS),  # every timed process: driver, trial workers, Ray's own
        "start_up": start_up_costs(),
        "targets": {
            "ratio_search_vs_in_process": 0.65,
            "per_trial_overhead_s": 0.5,
            "ratio_mlflow_on_vs_off": 1.10,
        },  # fmt: skip
    }


def tracking(tmp: Path, trials: int, pairs: int) -> dict:
    """MLflow on against off alone, in more pairs than the throughput rounds give: the same
    search (as :func:`throughput`'s) with ``--tracking-uri`` a sqlite store and with
    ``--no-tracking``, next to each other, in turn first (on, off, off, on, ...). On a shared
    VM one pair's ratio moves by ±10 % with the machine, about MLflow's whole cost here."""
    import statistics

    store = f"sqlite:///{tmp / 'tracking.db'}"
    new_store_s = create_store(store)
    seconds: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[dict]] = {"on": [], "off": []}
    for i in range(pairs):
        for side in ("on", "off") if i % 2 == 0 else ("off", "on"):
            extra = ("--tracking-uri", store) if side == "on" else ("--no-tracking",)
            s, _ = search_process(tmp, f"tracking-{side}-{i}", trials, *extra)
            seconds[side].append(s)
            cpu[side].append(CPU_SECONDS[-1])
    ratios = [a / b for a, b in zip(seconds["on"], seconds["off"], strict=True)]
    return {
        "trials": trials,
        "settings": " ".join(THROUGHPUT_SETTINGS),
        "mlflow_on_s": seconds["on"],
        "mlflow_off_s": seconds["off"],
        "ratios_mlflow_on_vs_off": ratios,
        "ratio_mlflow_on_vs_off": statistics.median(ratios),
        "ratio_mlflow_on_vs_off_mean": statistics.mean(ratios),
        "cpu_seconds_on": cpu["on"],
        "cpu_seconds_off": cpu["off"],
        "new_store_s": new_store_s,
        "target": 1.10,
    }


def trial_epochs(results) -> list[tuple[int, float]]:  # noqa: ANN001
    """(epochs run, best val metric) per trial, in trial order."""
    rows = []
    for r in sorted(results, key=lambda r: r.path):
        df = r.metrics_dataframe
        rows.append((int(df["training_iteration"].max()), float(df[METRIC].max())))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="+", default=["throughput", "asha"],
                   choices=["throughput", "tracking", "asha"])  # fmt: skip
    p.add_argument("--trials", type=int, default=THROUGHPUT_TRIALS)
    p.add_argument("--pairs", type=int, default=2, help="search/in-process pairs, alternating order")
    p.add_argument("--tracking-pairs", type=int, default=4, help="MLflow on/off pairs, alternating order")
    p.add_argument("--asha-trials", type=int, default=16)
    p.add_argument("--asha-epochs", type=int, default=20)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "search.json")
    p.add_argument("--run-configs", type=Path, help=argparse.SUPPRESS)  # the in-process side
    args = p.parse_args(argv)
    if args.run_configs:
        return run_configs(args.run_configs)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    out: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    out.pop("overhead", None)  # the previous measure (in-process timing inside the driver)
    out["command"] = "python benchmarks/bench_search.py " + " ".join(argv or sys.argv[1:])
    out["machine"] = {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                      "load_average_start": os.getloadavg()}  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "throughput" in args.sections:
            out["throughput"] = throughput(tmp, args.trials, args.pairs)
        if "tracking" in args.sections:
            out["tracking"] = tracking(tmp, args.trials, args.tracking_pairs)
        if "asha" in args.sections:
            out["asha"] = asha(tmp, args.asha_trials, args.asha_epochs)
    for section in args.sections:  # a later run of other sections keeps this one's command
        out[section]["command"] = out["command"]
    out["machine"]["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    if "throughput" in out:
        t, u = out["throughput"], out["throughput"]["start_up"]
        print(f"| {t['trials']} trials ({t['settings']}) | seconds per round | ratio (median) | target |")
        print("|---|---|---|---|")
        rows = [
            ("in one process, back to back", "in_process_back_to_back_s", None, ""),
            ("search, two at once (2 cores)", "search_two_at_once_s",
             "ratio_search_vs_in_process", "<= 0.65"),
            ("two plain processes at once (the machine's limit)", "plain_two_processes_s",
             "ratio_plain_two_processes_vs_in_process", ""),
            ("search, two at once, MLflow on (ratio: vs off)", "search_two_at_once_mlflow_s",
             "ratio_mlflow_on_vs_off", "<= 1.10"),
        ]  # fmt: skip
        for label, key, ratio, target in rows:
            seconds = ", ".join(f"{x:.1f}" for x in t[key])
            shown = "1.00"
            if ratio:
                each = ", ".join(f"{r:.3f}" for r in t[ratio.replace("ratio_", "ratios_")])
                shown = f"**{t[ratio]:.3f}** ({each})"
            print(f"| {label} | {seconds} | {shown} | {target} |")
        for kind in ("between_trials", "between_trials_mlflow"):
            for b in t[kind]:
                print(f"\n{kind}: per-trial overhead on a reused worker {b['per_trial_overhead_s']:.3f} s "
                      f"(max {b['per_trial_overhead_max_s']:.3f}; target <= 0.5), {b['workers']} workers; "
                      f"set-up {b['setup_first_trial_on_worker_s']:.2f} s for a worker's first trial, "
                      f"{b['setup_later_trials_s']:.3f} s later; first trial started "
                      f"{b['process_start_to_first_trial_s']:.1f} s after the process, the process ended "
                      f"{b['last_report_to_exit_s']:.1f} s after the last report")  # fmt: skip
        print("\n| process | wall s | CPU s: driver | trial workers | Ray's own | total |")
        print("|---|---|---|---|---|---|")
        for c in t.get("cpu_seconds", []):
            cells = [c["wall"], c["driver"], c["trials"], c["ray"], c["total"]]
            print(f"| {c['process']} | " + " | ".join(f"{x:.1f}" for x in cells) + " |")
        print(f"once per fresh worker: imports {u['imports_s']:.2f} s, dataset {u['dataset_s']:.2f} s; "
              f"Ray's start {u['ray_start_s']:.2f} s; a new MLflow store "
              f"{t.get('new_store_s', float('nan')):.2f} s, once (before the rounds)")  # fmt: skip
    if "tracking" in args.sections:
        t = out["tracking"]
        print("\n| pair | MLflow on s | off s | on / off | CPU s on (driver, trials, Ray) | off |")
        print("|---|---|---|---|---|---|")
        for i, (on, off, r, con, coff) in enumerate(
            zip(
                t["mlflow_on_s"],
                t["mlflow_off_s"],
                t["ratios_mlflow_on_vs_off"],
                t["cpu_seconds_on"],
                t["cpu_seconds_off"],
                strict=True,
            )
        ):
            kinds = [f"{c['driver']:.1f}, {c['trials']:.1f}, {c['ray']:.1f}" for c in (con, coff)]
            print(f"| {i} | {on:.1f} | {off:.1f} | {r:.3f} | {kinds[0]} | {kinds[1]} |")
        print(f"MLflow on / off: median **{t['ratio_mlflow_on_vs_off']:.3f}**, mean "
              f"{t['ratio_mlflow_on_vs_off_mean']:.3f} (target <= 1.10); "
              f"a new store {t['new_store_s']:.2f} s, once")  # fmt: skip
    if "asha" in out and "asha" in args.sections:
        a = out["asha"]
        print(f"\nASHA over {a['trials']} trials (max {a['max_epochs']} epochs): "
              f"{a['asha_trial_epochs']} trial-epochs "
              f"(best val {a['asha_best_val']:.4f}) vs {a['full_trial_epochs']} without "
              f"(best val {a['full_best_val']:.4f}); the full search first reached ASHA's best after "
              f"{a['full_trial_epochs_to_reach_asha_best']} trial-epochs")  # fmt: skip
    return 0


def asha(tmp: Path, trials: int, epochs: int) -> dict:
    asha_common = ["--num-samples", str(trials), "--set", f"epochs={epochs}",
                   "--cpus-per-trial", "1", "--seed", "1", "--set", "data.regime=inverted"]  # fmt: skip
    full_s, full, _ = search(tmp, "full", *asha_common)
    asha_s, asha_results, _ = search(tmp, "asha", *asha_common, "--scheduler", "asha", "--grace-period", "2")
    f_rows, a_rows = trial_epochs(full), trial_epochs(asha_results)
    asha_best = max(b for _, b in a_rows)
    spent, reached_at = 0, None
    for e, best in f_rows:
        spent += e
        if best >= asha_best and reached_at is None:
            reached_at = spent
    return {
        "trials": trials, "max_epochs": epochs,
        "full_trial_epochs": sum(e for e, _ in f_rows), "asha_trial_epochs": sum(e for e, _ in a_rows),
        "full_best_val": max(b for _, b in f_rows), "asha_best_val": asha_best,
        "full_trial_epochs_to_reach_asha_best": reached_at,
        "epochs_ratio_asha_vs_full": sum(e for e, _ in a_rows) / sum(e for e, _ in f_rows),
        "full_wall_s": full_s, "asha_wall_s": asha_s,
    }  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
