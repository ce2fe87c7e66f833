"""Training-loop benchmarks: what MILES and our loop cost over the least a loop can do.

    python benchmarks/bench_train.py [--quick] [--threads N] [--out benchmarks/results/train_loop.json]

Three measurements, for the synthetic dataset's vector form (MLP encoders) and image
form (ResNet-6 encoders):

1. ``miles_vs_vanilla``: full epochs (``Trainer.run_epoch``: train, evaluate every head
   on train/val/test, method hook) with MILES vs plain joint training, same model and
   data. Ratio = median MILES seconds / median vanilla seconds; target <= 1.03.
2. ``loop_vs_bare``: ``Trainer.train_one_epoch`` vs a hand-written PyTorch epoch over
   the same batches, the same model and the same optimizer kind (forward, Eq. 3 loss,
   zero_grad, backward, step; nothing else). Ratio = our samples/s / bare samples/s;
   target >= 0.95. Both start from identical weights and see identical batches, so
   their weights must still be identical at the end: checked, as proof of equal work.
3. ``peak_memory``: peak RSS of each variant (bare, ours, vanilla and MILES epochs), each
   in its own child process (this script re-run with ``--child``): ``VmHWM`` on Linux,
   ``ru_maxrss`` elsewhere (see :func:`peak_rss_mib`); on CUDA ``max_memory_allocated``.
   Reported in MiB and as a ratio to the bare loop; no target.

Why ratios: the machine is shared, so absolute seconds drift with other people's load.
Within one run, A and B samples alternate (order swapped every pair, ABBA..., so an
order effect falls on both sides equally); medians and the spread of the per-pair
ratios are reported. Warm-up epochs are discarded. One intra-op thread by default: with
torch's default (one per core) on a small shared machine, a busy neighbour stalls every
OpenMP barrier and single pairs swing by 0.2x-3x (``--threads 0`` restores the default).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from anywhere, without PYTHONPATH
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from miles_tune.config import TrainConfig  # noqa: E402
from miles_tune.data import MultimodalData, create_dataset, iterate_batches  # noqa: E402
from miles_tune.models import JointFusionModel  # noqa: E402
from miles_tune.train import Trainer, resolve_device  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "train_loop.json"
MILES_ARGS = {"tau": 0.2, "mu": 0.5}
TARGET_MILES_VS_VANILLA = 1.03  # at most
TARGET_LOOP_VS_BARE = 0.95  # at least
MEMORY_VARIANTS = ("bare", "ours", "vanilla", "miles")
MEMORY_EPOCHS = 2  # epochs a memory child runs: the first reaches the peak, a second would show growth


@dataclass(frozen=True)
class FormSettings:
    """How one data form is benchmarked; sizes keep the default run to a few minutes."""

    form: str
    data: dict[str, Any]
    warmup: int  # epochs per side, discarded
    pairs: int  # interleaved (A, B) samples
    reps: int  # epochs per sample (sample = mean epoch time)
    memory_repeats: int  # children per memory variant (median taken)


# One epoch per sample and many pairs: the neighbours' load comes in bursts shorter than a
# second, so fine-grained alternation tracks it better than fewer, longer samples (15
# pairs of 5-epoch vector samples gave per-pair ratios from 0.62 to 1.23).
FULL = {
    "vector": FormSettings("vector", {}, warmup=2, pairs=101, reps=1, memory_repeats=3),
    "image": FormSettings(
        "image", {"form": "image", "n_train": 1000, "n_val": 500, "n_test": 500}, 1, 25, 1, memory_repeats=3
    ),
}
QUICK = {
    "vector": FormSettings("vector", {}, warmup=1, pairs=31, reps=1, memory_repeats=1),
    "image": FormSettings(
        "image", {"form": "image", "n_train": 256, "n_val": 256, "n_test": 256}, 1, 5, 1, memory_repeats=1
    ),
}
BOOTSTRAP = 2000  # resamples of the pairs for the ratio's 95% interval


@dataclass
class Comparison:
    """One A-vs-B timing: raw seconds per sample, medians, ratio, spread and a 95% interval.

    ``throughput``: the ratio is B's seconds over A's (A's speed relative to B; higher is
    better, target is a minimum); otherwise A's seconds over B's (lower is better,
    target is a maximum).
    """

    name: str
    form: str
    a: str
    b: str
    a_seconds: list[float]
    b_seconds: list[float]
    throughput: bool
    target: float
    ratio_definition: str = field(init=False)
    a_median: float = field(init=False)
    b_median: float = field(init=False)
    ratio: float = field(init=False)
    pair_ratios: list[float] = field(init=False)
    median_pair_ratio: float = field(init=False)  # paired estimator: each pair ran back to back
    best_of_ratio: float = field(init=False)  # fastest sample of each side: least touched by load
    ci95: tuple[float, float] = field(init=False)
    met: bool = field(init=False)
    verdict: str = field(init=False)

    def __post_init__(self) -> None:
        self.a_median = statistics.median(self.a_seconds)
        self.b_median = statistics.median(self.b_seconds)
        self.ratio = self._ratio(self.a_seconds, self.b_seconds)
        if self.throughput:
            self.ratio_definition = f"median({self.b}) / median({self.a}): A's samples/s over B's"
            self.pair_ratios = [b / a for a, b in zip(self.a_seconds, self.b_seconds, strict=True)]
        else:
            self.ratio_definition = f"median({self.a}) / median({self.b})"
            self.pair_ratios = [a / b for a, b in zip(self.a_seconds, self.b_seconds, strict=True)]
        self.median_pair_ratio = statistics.median(self.pair_ratios)
        fastest_a, fastest_b = min(self.a_seconds), min(self.b_seconds)
        self.best_of_ratio = fastest_b / fastest_a if self.throughput else fastest_a / fastest_b
        self.ci95 = self._bootstrap()
        self.met = self._meets(self.ratio)
        lo_met, hi_met = self._meets(self.ci95[0]), self._meets(self.ci95[1])
        self.verdict = "met" if lo_met and hi_met else "missed" if not (lo_met or hi_met) else "within noise"

    def _ratio(self, a: list[float], b: list[float]) -> float:
        ma, mb = statistics.median(a), statistics.median(b)
        return mb / ma if self.throughput else ma / mb

    def _meets(self, ratio: float) -> bool:
        return ratio >= self.target if self.throughput else ratio <= self.target

    def _bootstrap(self) -> tuple[float, float]:
        """Percentile interval of the ratio over pairs resampled with replacement (fixed seed)."""
        rng = random.Random(0)
        n = len(self.a_seconds)
        ratios = []
        for _ in range(BOOTSTRAP):
            idx = [rng.randrange(n) for _ in range(n)]
            ratios.append(self._ratio([self.a_seconds[i] for i in idx], [self.b_seconds[i] for i in idx]))
        ratios.sort()
        return ratios[int(0.025 * BOOTSTRAP)], ratios[int(0.975 * BOOTSTRAP) - 1]

    @property
    def target_text(self) -> str:
        return f"{'>=' if self.throughput else '<='} {self.target}"

    def spread(self) -> tuple[float, float]:
        return min(self.pair_ratios), max(self.pair_ratios)


# -- helpers ----------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    """CUDA runs asynchronously: wait for it before reading the clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    a: Callable[[], float], b: Callable[[], float], pairs: int
) -> tuple[list[float], list[float]]:
    """Alternate A and B samples, swapping who goes first each pair, so load drift hits both.

    Before each sample, a garbage collection (untimed) so neither side pays for the
    other's garbage. Everything alive now is frozen first: with torch imported a full
    collection walks ~1e6 objects (0.1 s), which would double the benchmark's duration.
    """
    gc.collect()
    gc.freeze()
    a_s, b_s = [], []
    for i in range(pairs):
        order = ((a, a_s), (b, b_s)) if i % 2 == 0 else ((b, b_s), (a, a_s))
        for fn, out in order:
            gc.collect()
            out.append(fn())
    gc.unfreeze()
    return a_s, b_s


def timed(fn: Callable[[], object], reps: int, device: torch.device) -> float:
    """Mean seconds of ``reps`` calls of ``fn``."""
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - started) / reps


def epoch_seed(trainer: Trainer, epoch: int) -> int:
    """The shuffle seed ``Trainer.train_one_epoch`` uses (mirrored; the weight check proves it)."""
    return trainer.config.seed * 1_000_003 + epoch


def training_split(trainer: Trainer) -> Dataset:
    """What the Trainer trains on: ``train_split`` (the train set less any method hold-out) if it has one."""
    return getattr(trainer, "train_split", trainer.data.train)


def bare_epoch(
    model: JointFusionModel,
    optimizer: torch.optim.Optimizer,
    split: Dataset,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> None:
    """The least a joint-fusion epoch can do: forward, Eq. 3 loss, zero_grad, backward, step."""
    model.train()
    for inputs, labels in iterate_batches(split, batch_size, shuffle=True, seed=seed, device=device):
        out = model(inputs)
        loss = F.cross_entropy(out.logits, labels)
        for logits in out.unimodal.values():
            loss = loss + F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def make_config(method: str, settings: FormSettings, device: str) -> TrainConfig:
    args = MILES_ARGS if method == "miles" else {}
    return TrainConfig(method=method, method_args=dict(args), data=dict(settings.data), device=device)


def max_weight_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """Largest absolute difference over parameters and buffers (BN running stats included)."""
    sa, sb = a.state_dict(), b.state_dict()
    diffs = [(sa[k].double() - sb[k].double()).abs().max().item() for k in sa if sa[k].numel()]
    return max(diffs, default=0.0)


# -- benchmarks -------------------------------------------------------------------------
def bench_miles_vs_vanilla(settings: FormSettings, data: MultimodalData, device: str) -> Comparison:
    """Full epochs, MILES (A) vs vanilla (B); ratio = median A / median B seconds."""
    miles = Trainer(make_config("miles", settings, device), data=data)
    vanilla = Trainer(make_config("vanilla", settings, device), data=data)
    dev = miles.device
    for _ in range(settings.warmup):
        miles.run_epoch()
        vanilla.run_epoch()
    a, b = interleaved(
        lambda: timed(miles.run_epoch, settings.reps, dev),
        lambda: timed(vanilla.run_epoch, settings.reps, dev),
        settings.pairs,
    )
    return Comparison(
        "miles_vs_vanilla",
        settings.form,
        "miles run_epoch s",
        "vanilla run_epoch s",
        a,
        b,
        throughput=False,
        target=TARGET_MILES_VS_VANILLA,
    )


def bench_loop_vs_bare(
    settings: FormSettings, data: MultimodalData, device: str
) -> tuple[Comparison, dict[str, Any]]:
    """``train_one_epoch`` (A) vs :func:`bare_epoch` (B); ratio = our samples/s / bare samples/s.

    Both models come from identically seeded Trainers, so they start equal; the bare
    side replays the Trainer's batch order, so they must stay equal.
    """
    ours = Trainer(make_config("miles", settings, device), data=data)
    other = Trainer(make_config("miles", settings, device), data=data)
    dev, bs, split = ours.device, ours.config.batch_size, training_split(other)
    initial_diff = max_weight_difference(ours.model, other.model)
    epochs = {"ours": 0, "bare": 0}
    internal: list[float] = []  # the seconds train_one_epoch reports itself

    def run_ours() -> None:
        _, seconds = ours.train_one_epoch(epochs["ours"])
        internal.append(seconds)
        epochs["ours"] += 1

    def run_bare() -> None:
        seed = epoch_seed(other, epochs["bare"])
        bare_epoch(other.model, other.optimizer, split, bs, seed, dev)
        epochs["bare"] += 1

    for _ in range(settings.warmup):
        run_ours()
        run_bare()
    internal.clear()
    a, b = interleaved(
        lambda: timed(run_ours, settings.reps, dev),
        lambda: timed(run_bare, settings.reps, dev),
        settings.pairs,
    )
    n = len(split)
    final_diff = max_weight_difference(ours.model, other.model)
    comparison = Comparison(
        "loop_vs_bare",
        settings.form,
        "train_one_epoch s",
        "bare epoch s",
        a,
        b,
        throughput=True,  # same samples on both sides: samples/s ratio = inverse seconds ratio
        target=TARGET_LOOP_VS_BARE,
    )
    internal_median = statistics.median(internal)
    extra = {
        "train_samples": n,
        "batch_size": bs,
        "ours_samples_per_s": n / comparison.a_median,
        "bare_samples_per_s": n / comparison.b_median,
        # the loop's own timer skips model.train(), the hooks and the final averaging
        "ours_internal_seconds": internal,
        "ratio_with_internal_timer": comparison.b_median / internal_median,
        "initial_max_weight_diff": initial_diff,
        "final_max_weight_diff": final_diff,
        "identical_updates": initial_diff == 0.0 and final_diff == 0.0,
    }
    return comparison, extra


# -- peak memory (child processes) ------------------------------------------------------
def rss_mib_now() -> float | None:
    """Current resident set size (Linux only; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return None


def ru_maxrss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def peak_rss_mib() -> tuple[float, str]:
    """This process image's peak RSS, and where it was read.

    On Linux ``ru_maxrss`` is useless here: at ``exec`` the kernel keeps the larger of
    the child's own peak and the RSS of the process that spawned it (the big parent,
    which ``subprocess`` vforks), so every child reported the parent's peak. ``VmHWM``
    is the peak of this image alone; ``ru_maxrss`` remains the fallback elsewhere.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10, "VmHWM"  # kB
    except OSError:
        pass
    return ru_maxrss_mib(), "ru_maxrss"


def child_main(variant: str, form: str, quick: bool, device: str) -> None:
    """Run one variant alone for a few epochs and print its peak memory as one JSON line."""
    settings = (QUICK if quick else FULL)[form]
    method = "vanilla" if variant == "vanilla" else "miles"
    trainer = Trainer(make_config(method, settings, device))
    dev = trainer.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    before = rss_mib_now()
    for epoch in range(MEMORY_EPOCHS):
        if variant == "bare":
            seed = epoch_seed(trainer, epoch)
            split = training_split(trainer)
            bare_epoch(trainer.model, trainer.optimizer, split, trainer.config.batch_size, seed, dev)
        elif variant == "ours":
            trainer.train_one_epoch(epoch)
        else:
            trainer.run_epoch()
    sync(dev)
    peak, source = peak_rss_mib()
    result: dict[str, Any] = {
        "variant": variant,
        "form": form,
        "rss_before_loop_mib": before,
        "peak_rss_mib": peak,
        "rss_source": source,
        "ru_maxrss_mib": ru_maxrss_mib(),  # for reference; see peak_rss_mib
        "cuda_peak_mib": None,
    }
    if dev.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    print(json.dumps(result))


def measure_memory(
    forms: list[str], settings: dict[str, FormSettings], device: str, threads: int, quick: bool
) -> list[dict[str, Any]]:
    """Median peak per (form, variant) over ``memory_repeats`` children, two children at a time.

    Peaks vary from run to run (usually by a few MiB; the image form's bare loop once
    peaked at 520-575 MiB instead of its usual ~352 MiB, cause not found), hence the
    repeats and the raw values in the JSON. Running two children at once does not
    change either one's own peak.
    """
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)

    def run(job: tuple[str, str, int]) -> dict[str, Any]:
        form, variant, _ = job
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--child-form", form]
        cmd += ["--device", device, "--threads", str(threads)] + (["--quick"] if quick else [])
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"memory child {variant}/{form} failed:\n{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    jobs = [(f, v, r) for f in forms for r in range(settings[f].memory_repeats) for v in MEMORY_VARIANTS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(run, jobs))
    cuda = runs[0]["cuda_peak_mib"] is not None
    key = "cuda_peak_mib" if cuda else "peak_rss_mib"
    rows = []
    for form in forms:
        for variant in MEMORY_VARIANTS:
            mine = [r for r in runs if r["form"] == form and r["variant"] == variant]
            rows.append(
                {
                    "form": form,
                    "variant": variant,
                    "metric": "torch.cuda.max_memory_allocated" if cuda else mine[0]["rss_source"],
                    "peak_mib": statistics.median(r[key] for r in mine),
                    "peak_mib_runs": [r[key] for r in mine],
                    "rss_before_loop_mib": statistics.median(r["rss_before_loop_mib"] or 0.0 for r in mine),
                    "children": mine,
                }
            )
        bare = next(r for r in rows if r["form"] == form and r["variant"] == "bare")
        for r in rows:
            if r["form"] == form:
                r["ratio_vs_bare"] = r["peak_mib"] / bare["peak_mib"]
                r["extra_vs_bare_mib"] = r["peak_mib"] - bare["peak_mib"]
    return rows


# -- report -----------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def markdown(comparisons: list[Comparison], memory: list[dict[str, Any]]) -> str:
    lines = [
        "| benchmark | form | A: median | B: median | pairs | ratio | 95% CI | pair ratios min–med–max "
        "| best-of | target | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        lo, hi = c.spread()
        point = "point estimate meets target" if c.met else "point estimate misses target"
        verdict = c.verdict if c.verdict != "within noise" else f"within noise ({point})"
        lines.append(
            f"| {c.name} | {c.form} | {c.a}: {c.a_median * 1e3:.1f} ms | {c.b}: {c.b_median * 1e3:.1f} ms "
            f"| {len(c.pair_ratios)} | **{c.ratio:.3f}** | {c.ci95[0]:.3f}–{c.ci95[1]:.3f} "
            f"| {lo:.2f}–{c.median_pair_ratio:.3f}–{hi:.2f} | {c.best_of_ratio:.3f} | {c.target_text} "
            f"| {verdict} |"
        )
    if memory:
        lines += ["", "| peak memory | form | variant | MiB | vs bare | extra MiB |"]
        lines += ["|---|---|---|---|---|---|"]
        for r in memory:
            mib = r["peak_mib"]
            lines.append(
                f"| {r['metric']} | {r['form']} | {r['variant']} | {mib:.1f} | {r['ratio_vs_bare']:.3f} "
                f"| {r['extra_vs_bare_mib']:+.1f} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few pairs (< 60 s)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--forms", nargs="+", choices=("vector", "image"), default=["vector", "image"])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads; 0 keeps torch's default (default: 1, see benchmarks/README.md)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    p.add_argument("--child", choices=MEMORY_VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--child-form", choices=("vector", "image"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.child:
        child_main(args.child, args.child_form, args.quick, args.device)
        return 0

    started = time.perf_counter()
    table = QUICK if args.quick else FULL
    device = resolve_device(args.device)
    info = machine_info(device)
    comparisons: list[Comparison] = []
    loop_extra: dict[str, Any] = {}
    for form in args.forms:
        settings = table[form]
        data = create_dataset("synthetic", **settings.data)  # shared: every trainer sees the same tensors
        comparisons.append(bench_miles_vs_vanilla(settings, data, args.device))
        comparison, extra = bench_loop_vs_bare(settings, data, args.device)
        comparisons.append(comparison)
        loop_extra[form] = extra
    memory = (
        [] if args.no_memory else measure_memory(args.forms, table, args.device, args.threads, args.quick)
    )
    info["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "settings": {
            "mode": "quick" if args.quick else "full",
            "threads": torch.get_num_threads(),
            "threads_requested": args.threads or "torch default",
            "forms": {f: asdict(table[f]) for f in args.forms},
            "miles_args": MILES_ARGS,
            "memory_epochs": MEMORY_EPOCHS,
            "order": "interleaved pairs, first side alternating (ABBA...); gc.collect() before each sample",
        },
        "comparisons": [
            asdict(c) | {"pair_ratio_min": c.spread()[0], "pair_ratio_max": c.spread()[1]}
            for c in comparisons
        ],
        "loop_vs_bare_details": loop_extra,
        "peak_memory": memory,
        "all_targets_met": all(c.met for c in comparisons),  # on the point estimates
        "verdicts": {f"{c.name}/{c.form}": c.verdict for c in comparisons},  # on the 95% intervals
        "total_seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(comparisons, memory))
    for form, extra in loop_extra.items():
        ours, bare = extra["ours_samples_per_s"], extra["bare_samples_per_s"]
        print(
            f"\n{form}: ours {ours:.0f} samples/s, bare {bare:.0f} samples/s; "
            f"identical weights after the run: {extra['identical_updates']}"
        )
    print(f"\nwrote {args.out} in {result['total_seconds']:.1f} s (threads={torch.get_num_threads()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
