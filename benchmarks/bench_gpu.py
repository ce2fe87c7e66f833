"""Fractional GPUs: how many trials share one GPU well, at the S-MNIST and LUMA model sizes.

    python benchmarks/bench_gpu.py                          # on a GPU node: the full run
    python benchmarks/bench_gpu.py --device cpu --quick     # the CPU smoke run (< ~90 s on 2 cores)

Synthetic inputs of the real datasets' shapes (random tensors, seeded), the real encoders
and the real loop (``Trainer.train_one_epoch``, ``method="vanilla"``: L_mm + Σ_m L_m):

- ``smnist``: ``image`` and ``audio``, 1×28×28 each, ResNet-10 (``small_input``), 10 classes;
- ``luma``: ``audio`` 1×96×96 and ``image`` 3×96×96, ResNet-6 (``small_input``), 22 classes.

Three measurements per model size:

1. **Trials per GPU** (k = 1, 2, 4, 8, i.e. ``--gpus-per-trial`` 1, 0.5, 0.25, 0.125). Ray's
   fractional GPUs only set ``CUDA_VISIBLE_DEVICES``; they do not enforce a share. So k
   trials per GPU are exactly k processes training on one device, and that is what runs
   here: k children (this script with ``--child``) start at once, each builds its data and
   Trainer, runs warm-up epochs, reports ready, and waits at a file barrier; the parent
   creates the ``go`` file once all k are ready, so the timed epochs overlap. Each child
   reports samples/s over its timed epochs only (``torch.cuda.synchronize`` before each
   clock read on CUDA) and its peak memory (``torch.cuda.max_memory_allocated`` and
   ``max_memory_reserved`` on CUDA; ``VmHWM`` on CPU). The parent reports the aggregate
   (sum over children), its ratio to k = 1, and memory per trial.
2. **Our loop against a bare loop**, in this process: ``train_one_epoch`` against a
   hand-written epoch (forward, ``loss_fn(logits) + Σ_m loss_fn(unimodal[m])``,
   ``zero_grad(set_to_none=True)``, ``backward``, Adam ``step``) over the same model type,
   the same initial weights and the same batches.
3. **AMP and channels_last**: our loop with ``amp="bf16"``, with ``channels_last=True`` and
   with both, each against ``amp="off"``, ``channels_last=False``.

Measurements 2 and 3 share one rotation: every round runs one epoch of each variant, the
order rotated each round and reversed every other round (A B B A for two variants), with
an untimed ``gc.collect()`` before each epoch; the ratio of a comparison is the median of
its per-round samples/s ratios. The children run first, while this process holds no CUDA
context, so they measure the device alone.

JSON (``--out``): machine info, the command, the settings, every child's raw numbers, the
rotation's per-round samples/s. It is rewritten after every measurement, so a run cut short
keeps what it finished. A Markdown table and a suggested ``gpus_per_trial`` per model are
printed at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from anywhere, without PYTHONPATH
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from miles_tune.config import TrainConfig  # noqa: E402
from miles_tune.data import MultimodalData, TensorSplit, iterate_batches  # noqa: E402
from miles_tune.data.base import EncoderSpec, input_bytes  # noqa: E402
from miles_tune.train import Trainer, resolve_device  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_TRIALS_PER_GPU = (1, 2, 4, 8)
#: the suggestion: the largest k whose aggregate is at least this share of the best aggregate ...
NEAR_BEST = 0.9
#: ... and whose k trials fit in this share of the device's memory
MEMORY_SHARE = 0.9
#: per-process CUDA context + allocator slack assumed when no k = 1 child measured it (MiB)
DEFAULT_CONTEXT_MIB = 512.0
EVAL_SAMPLES = 8  # val/test: never evaluated here, but a split cannot be empty
SEED = 0


# -- model sizes ------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSize:
    name: str
    shapes: dict[str, tuple[int, ...]]  # modality -> one sample's shape (C, H, W)
    encoders: dict[str, EncoderSpec]
    num_classes: int
    # TrainConfig.data_on_device of the real dataset's runs: "auto" (None) keeps the splits on a
    # GPU when they take <= 6 GiB as model input. S-MNIST's 12,000 samples take 75 MB and LUMA's
    # 33,000 pairs 4.9 GB (147 kB each): both on the device.
    data_on_device: str = "auto"


MODELS: dict[str, ModelSize] = {
    "smnist": ModelSize(
        "smnist",
        {"image": (1, 28, 28), "audio": (1, 28, 28)},
        {
            "image": EncoderSpec("resnet10", {"in_channels": 1, "small_input": True}),
            "audio": EncoderSpec("resnet10", {"in_channels": 1, "small_input": True}),
        },
        10,
    ),
    "luma": ModelSize(
        "luma",
        {"audio": (1, 96, 96), "image": (3, 96, 96)},
        {
            "audio": EncoderSpec("resnet6", {"in_channels": 1, "small_input": True}),
            "image": EncoderSpec("resnet6", {"in_channels": 3, "small_input": True}),
        },
        22,
    ),
}


@dataclass(frozen=True)
class Sizes:
    """Per model: batch size and training samples per epoch (steps per epoch = ceil(n / batch))."""

    batch_size: int
    n_train: int


@dataclass(frozen=True)
class Mode:
    warmup_epochs: int  # untimed, per child and per rotation variant
    epochs: int  # timed epochs per child
    rounds: int  # rotation rounds (one epoch of each variant per round)
    sizes: dict[str, Sizes]


# CUDA: 64 steps of 128 per epoch. CPU: one thread per process, so tiny epochs (a LUMA sample
# costs ~7 GFLOP to train, ~0.1-0.2 s on one core here).
MODES: dict[tuple[str, bool], Mode] = {
    ("cuda", False): Mode(1, 2, 5, {"smnist": Sizes(128, 8192), "luma": Sizes(128, 8192)}),
    ("cuda", True): Mode(1, 1, 3, {"smnist": Sizes(128, 2048), "luma": Sizes(128, 2048)}),
    ("cpu", False): Mode(1, 2, 5, {"smnist": Sizes(32, 256), "luma": Sizes(8, 64)}),
    ("cpu", True): Mode(1, 1, 2, {"smnist": Sizes(8, 16), "luma": Sizes(4, 8)}),
}

# rotation variants: name -> (loop, amp, channels_last)
VARIANTS: dict[str, tuple[str, str, bool]] = {
    "ours": ("ours", "off", False),
    "bare": ("bare", "off", False),
    "ours_bf16": ("ours", "bf16", False),
    "ours_channels_last": ("ours", "off", True),
    "ours_bf16_channels_last": ("ours", "bf16", True),
}
FIELDS = ("loop", "amp", "channels_last")
# (name, A, B): ratio = A samples/s / B samples/s
COMPARISONS = (
    ("ours_vs_bare", "ours", "bare"),
    ("bf16_vs_off", "ours_bf16", "ours"),
    ("channels_last_vs_not", "ours_channels_last", "ours"),
    ("bf16_channels_last_vs_off", "ours_bf16_channels_last", "ours"),
)


# -- data, trainer, helpers -------------------------------------------------------------
def make_data(size: ModelSize, n_train: int, seed: int = SEED) -> MultimodalData:
    """Random inputs of the model size's shapes and uniform labels, from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> TensorSplit:
        inputs = {m: torch.randn((n, *shape), generator=gen) for m, shape in size.shapes.items()}
        return TensorSplit(inputs, torch.randint(0, size.num_classes, (n,), generator=gen))

    return MultimodalData(
        name=f"synthetic-{size.name}",
        modalities=tuple(size.shapes),
        task="multiclass",
        num_classes=size.num_classes,
        train=split(n_train),
        val=split(EVAL_SAMPLES),
        test=split(EVAL_SAMPLES),
        encoders=dict(size.encoders),
    )


def data_on_device_setting(choice: str) -> bool | None:
    return {"auto": None, "on": True, "off": False}[choice]


def data_on_device_choice(args: argparse.Namespace, model: str) -> str:
    """``--data-on-device``, else the model size's own (what its real dataset's runs do)."""
    return args.data_on_device or MODELS[model].data_on_device


def make_trainer(
    data: MultimodalData,
    device: str,
    batch_size: int,
    *,
    amp: str = "off",
    channels_last: bool = False,
    data_on_device: bool | None = None,
) -> Trainer:
    config = TrainConfig(
        dataset="synthetic",
        method="vanilla",
        device=device,
        batch_size=batch_size,
        amp=amp,
        channels_last=channels_last,
        data_on_device=data_on_device,
        epochs=1,
        seed=SEED,
    )
    return Trainer(config, data=data)


def sync(device: torch.device) -> None:
    """CUDA runs asynchronously: wait for it before reading the clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def vm_mib(field: str) -> float | None:
    """``VmHWM`` (peak) or ``VmRSS`` of this process from /proc/self/status, MiB (Linux only)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    return None


def log(message: str, started: float) -> None:
    print(f"[bench_gpu {time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


# -- 1. trials per GPU: the child ---------------------------------------------------------
def wait_for(path: Path, timeout: float) -> None:
    """Poll for ``path``; give up after ``timeout`` seconds or when the parent has gone."""
    deadline, parent = time.monotonic() + timeout, os.getppid()
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path.name} after {timeout:.0f} s")
        if os.getppid() != parent:
            raise RuntimeError("the parent benchmark exited")
        time.sleep(0.002)


def child_main(args: argparse.Namespace) -> None:
    """One trial: warm up, report ready, wait for ``go``, train ``--epochs`` timed epochs, print JSON."""
    torch.set_num_threads(args.child_threads)
    size = MODELS[args.child]
    barrier = Path(args.barrier)
    built = time.perf_counter()
    data = make_data(size, args.n_train)
    trainer = make_trainer(
        data,
        args.device,
        args.batch_size,
        amp=args.trial_amp,
        channels_last=args.trial_channels_last,
        data_on_device=data_on_device_setting(data_on_device_choice(args, args.child)),
    )
    dev = trainer.device
    n = len(trainer.train_split)
    for epoch in range(args.warmup_epochs):
        trainer.train_one_epoch(epoch)
    sync(dev)
    setup_seconds = time.perf_counter() - built
    (barrier / f"ready-{args.child_index}").write_text("")
    wait_for(barrier / "go", args.child_timeout)

    sync(dev)
    wall_start, started = time.time(), time.perf_counter()
    epoch_seconds = []
    for epoch in range(args.warmup_epochs, args.warmup_epochs + args.epochs):
        epoch_seconds.append(trainer.train_one_epoch(epoch)[1])
    sync(dev)
    seconds, wall_end = time.perf_counter() - started, time.time()

    result: dict[str, Any] = {
        "index": args.child_index,
        "pid": os.getpid(),
        "model": size.name,
        "device": str(dev),
        "samples": n * args.epochs,
        "steps": math.ceil(n / args.batch_size) * args.epochs,
        "seconds": seconds,
        "samples_per_s": n * args.epochs / seconds,
        "epoch_seconds_internal": epoch_seconds,  # train_one_epoch's own timer (no final sync)
        "wall_start": wall_start,
        "wall_end": wall_end,
        "setup_seconds": setup_seconds,  # data, Trainer, warm-up (after imports)
        "threads": torch.get_num_threads(),
        "data_on_device": trainer.train_split.labels.device.type != "cpu",
        "train_input_mib": input_bytes(trainer.train_split) / 2**20,
        "vm_hwm_mib": vm_mib("VmHWM"),
    }
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info(dev)
        props = torch.cuda.get_device_properties(dev)
        result |= {
            "peak_mib": torch.cuda.max_memory_allocated(dev) / 2**20,
            "peak_source": "torch.cuda.max_memory_allocated",
            "reserved_peak_mib": torch.cuda.max_memory_reserved(dev) / 2**20,
            # every process on the device, read right after this child's timed epochs
            "device_used_mib": (total - free) / 2**20,
            "device_total_mib": props.total_memory / 2**20,
            "device_name": props.name,
        }
    else:
        result |= {"peak_mib": result["vm_hwm_mib"], "peak_source": "VmHWM"}
    print(json.dumps(result), flush=True)


# -- 1. trials per GPU: the parent --------------------------------------------------------
def child_command(args: argparse.Namespace, model: str, sizes: Sizes, index: int, barrier: Path) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", model, "--child-index", str(index)]
    cmd += ["--barrier", str(barrier), "--device", args.device_name]
    cmd += ["--child-threads", str(args.child_threads)]
    cmd += ["--batch-size", str(sizes.batch_size), "--n-train", str(sizes.n_train)]
    cmd += ["--warmup-epochs", str(args.mode.warmup_epochs), "--epochs", str(args.mode.epochs)]
    cmd += ["--trial-amp", args.trial_amp, "--data-on-device", data_on_device_choice(args, model)]
    cmd += ["--child-timeout", str(args.child_timeout)]
    return cmd + (["--trial-channels-last"] if args.trial_channels_last else [])


def run_trials(args: argparse.Namespace, model: str, k: int, sizes: Sizes) -> dict[str, Any]:
    """k children at once on one device; their timed epochs start together (file barrier)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    # as a Ray trial with one CPU: OMP_NUM_THREADS=1 (the child also calls set_num_threads)
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS=str(args.child_threads))
    record: dict[str, Any] = {"model": model, "trials_per_gpu": k, "gpus_per_trial": 1 / k, "ok": False}
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        barrier = Path(tmp)
        procs, outs, errs = [], [], []
        launched = time.perf_counter()
        for i in range(k):
            out, err = open(barrier / f"out-{i}", "w+"), open(barrier / f"err-{i}", "w+")  # noqa: SIM115
            outs.append(out)
            errs.append(err)
            cmd = child_command(args, model, sizes, i, barrier)
            procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=err, cwd=ROOT))
        try:
            deadline = time.monotonic() + args.child_timeout
            while not all((barrier / f"ready-{i}").exists() for i in range(k)):
                failed = [(i, p.returncode) for i, p in enumerate(procs) if p.poll() is not None]
                if failed:
                    raise RuntimeError(f"child {failed[0][0]} exited (rc {failed[0][1]}) before ready")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"children not ready after {args.child_timeout} s")
                time.sleep(0.01)
            record["seconds_to_ready"] = time.perf_counter() - launched
            (barrier / "go").write_text("")
            for p in procs:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            bad = [i for i, p in enumerate(procs) if p.returncode != 0]
            if bad:
                raise RuntimeError(f"child {bad[0]} failed (rc {procs[bad[0]].returncode})")
            children = []
            for out in outs:
                out.seek(0)
                children.append(json.loads(out.read().strip().splitlines()[-1]))
        except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            tails = []
            for i, err in enumerate(errs):
                err.seek(0)
                tails.append(f"--- child {i} stderr (tail) ---\n" + err.read()[-2000:])
            record["error"] = f"{type(exc).__name__}: {exc}"
            record["stderr_tails"] = tails
            return record
        finally:
            for f in outs + errs:
                f.close()
    record |= summarize_trials(children)
    record["ok"] = True
    return record


def summarize_trials(children: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [c["samples_per_s"] for c in children]
    start, end = max(c["wall_start"] for c in children), min(c["wall_end"] for c in children)
    first, last = min(c["wall_start"] for c in children), max(c["wall_end"] for c in children)
    span = last - first
    summary: dict[str, Any] = {
        "aggregate_samples_per_s": sum(rates),
        # total samples over the span from the first start to the last end: lower when they drift apart
        "wall_aggregate_samples_per_s": sum(c["samples"] for c in children) / span if span > 0 else None,
        "per_trial_samples_per_s": rates,
        "start_skew_s": start - first,
        "overlap": max(0.0, end - start) / span if span > 0 else 1.0,  # share of the span all k ran
        "memory_per_trial_mib": max(c["peak_mib"] for c in children),
        "memory_source": children[0]["peak_source"],
        "children": sorted(children, key=lambda c: c["index"]),
    }
    if "reserved_peak_mib" in children[0]:
        summary["reserved_per_trial_mib"] = max(c["reserved_peak_mib"] for c in children)
        summary["device_used_max_mib"] = max(c["device_used_mib"] for c in children)
        summary["device_total_mib"] = children[0]["device_total_mib"]
        summary["device_name"] = children[0]["device_name"]
    return summary


def add_scaling(records: list[dict[str, Any]]) -> None:
    """aggregate(k) / aggregate(1), and on CUDA the per-trial footprint used by the suggestion."""
    ok = [r for r in records if r["ok"]]
    one = next((r for r in ok if r["trials_per_gpu"] == 1), None)
    context = None
    if one is not None and "reserved_per_trial_mib" in one:
        # what a process holds beyond its allocator's reservations: CUDA context, cuBLAS/cuDNN workspaces
        context = max(0.0, one["children"][0]["device_used_mib"] - one["children"][0]["reserved_peak_mib"])
    for r in ok:
        r["vs_one_trial"] = r["aggregate_samples_per_s"] / one["aggregate_samples_per_s"] if one else None
        if "reserved_per_trial_mib" in r:
            r["context_mib"] = context if context is not None else DEFAULT_CONTEXT_MIB
            r["context_source"] = "k=1 child: device used - reserved" if context is not None else "assumed"
            r["footprint_per_trial_mib"] = r["reserved_per_trial_mib"] + r["context_mib"]


def suggest(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The largest k (smallest share) within NEAR_BEST of the best aggregate whose k trials fit."""
    ok = [r for r in records if r["ok"]]
    if not ok:
        return {"gpus_per_trial": None, "reason": "no k ran to the end (see the errors)"}
    if "footprint_per_trial_mib" not in ok[0]:
        return {"gpus_per_trial": None, "reason": "needs a GPU run (these numbers are from a CPU)"}
    best = max(r["aggregate_samples_per_s"] for r in ok)
    budget = MEMORY_SHARE * ok[0]["device_total_mib"]
    fits = [
        r
        for r in ok
        if r["aggregate_samples_per_s"] >= NEAR_BEST * best
        and r["footprint_per_trial_mib"] * r["trials_per_gpu"] <= budget
    ]
    if not fits:
        return {"gpus_per_trial": None, "reason": "no measured k is both near the best and fits in memory"}
    pick = max(fits, key=lambda r: r["trials_per_gpu"])
    k = pick["trials_per_gpu"]
    return {
        "gpus_per_trial": 1 / k,
        "trials_per_gpu": k,
        "aggregate_samples_per_s": pick["aggregate_samples_per_s"],
        "best_aggregate_samples_per_s": best,
        "memory_needed_mib": pick["footprint_per_trial_mib"] * k,
        "memory_budget_mib": budget,
        "reason": (
            f"largest k with aggregate >= {NEAR_BEST} x best ({best:.0f} samples/s) and "
            f"k x (peak reserved + context) <= {MEMORY_SHARE} x device memory"
        ),
    }


# -- 2 and 3. the rotation (one process) --------------------------------------------------
def bare_epoch(trainer: Trainer, epoch: int) -> None:
    """The least a joint-fusion epoch can do, over the batches ``train_one_epoch`` would draw."""
    model, optimizer, loss_fn = trainer.model, trainer.optimizer, trainer.loss_fn
    model.train()
    seed = trainer.config.seed * 1_000_003 + epoch  # the Trainer's shuffle seed
    batches = iterate_batches(
        trainer.train_split,
        trainer.config.batch_size,
        shuffle=True,
        seed=seed,
        device=trainer.device,
        memory_format=trainer.memory_format,
    )
    for inputs, labels in batches:
        out = model(inputs)
        loss = loss_fn(out.logits, labels)
        for m in model.modalities:
            loss = loss + loss_fn(out.unimodal[m], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def max_weight_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    diffs = [(sa[k].double() - sb[k].double()).abs().max().item() for k in sa if sa[k].numel()]
    return max(diffs, default=0.0)


def rotation_order(names: list[str], r: int) -> list[str]:
    """Round r's order: rotated by r // 2, reversed on odd rounds (A B, B A, ... for two)."""
    shift = (r // 2) % len(names)
    order = names[shift:] + names[:shift]
    return order[::-1] if r % 2 else order


def bench_rotation(args: argparse.Namespace, model: str, sizes: Sizes, started: float) -> dict[str, Any]:
    size = MODELS[model]
    device = resolve_device(args.device_name)
    data = make_data(size, sizes.n_train)
    setting = data_on_device_setting(data_on_device_choice(args, model))
    if device.type == "cuda" and setting is not False:  # one copy on the device, shared by all trainers
        data.train, data.val, data.test = (s.to(device) for s in (data.train, data.val, data.test))
        setting = True
    names = [v for v in VARIANTS if v in args.variants]
    trainers = {}
    for name in names:
        _, amp, channels_last = VARIANTS[name]
        trainers[name] = make_trainer(
            data,
            args.device_name,
            sizes.batch_size,
            amp=amp,
            channels_last=channels_last,
            data_on_device=setting,
        )
    epochs = dict.fromkeys(names, 0)
    n = len(trainers[names[0]].train_split)

    def run(name: str) -> float:
        trainer, epoch = trainers[name], epochs[name]
        sync(device)
        t0 = time.perf_counter()
        if VARIANTS[name][0] == "bare":
            bare_epoch(trainer, epoch)
        else:
            trainer.train_one_epoch(epoch)
        sync(device)
        epochs[name] += 1
        return time.perf_counter() - t0

    for _ in range(args.mode.warmup_epochs):
        for name in names:
            run(name)
    log(f"{model}: rotation warm-up done, {args.mode.rounds} rounds of {len(names)} variants", started)
    gc.collect()
    gc.freeze()  # a full collection walks everything torch allocated at import: freeze that first
    seconds: dict[str, list[float]] = {name: [] for name in names}
    orders = []
    try:
        for r in range(args.mode.rounds):
            order = rotation_order(names, r)
            orders.append(order)
            for name in order:
                gc.collect()
                seconds[name].append(run(name))
    finally:
        gc.unfreeze()
    rates = {name: [n / s for s in seconds[name]] for name in names}
    comparisons = []
    for cname, a, b in COMPARISONS:
        if a not in rates or b not in rates:
            continue
        per_round = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
        comparisons.append(
            {
                "name": cname,
                "a": a,
                "b": b,
                "a_samples_per_s": statistics.median(rates[a]),
                "b_samples_per_s": statistics.median(rates[b]),
                "ratio": statistics.median(per_round),  # the headline: median of per-round ratios
                "ratio_of_medians": statistics.median(rates[a]) / statistics.median(rates[b]),
                "round_ratios": per_round,
            }
        )
    result: dict[str, Any] = {
        "model": model,
        "batch_size": sizes.batch_size,
        "n_train": n,
        "variants": {name: dict(zip(FIELDS, VARIANTS[name], strict=True)) for name in names},
        "samples_per_s": rates,
        "seconds": seconds,
        "orders": orders,
        "comparisons": comparisons,
    }
    if "ours" in trainers and "bare" in trainers:
        # same seed, same batches, same order of operations: identical on CPU; on CUDA
        # non-deterministic kernels (atomics in convolution backward) may leave small differences
        diff = max_weight_difference(trainers["ours"].model, trainers["bare"].model)
        result["ours_vs_bare_max_weight_diff"] = diff
        result["ours_vs_bare_identical_weights"] = diff == 0.0
    if device.type == "cuda":
        result["peak_mib_all_variants"] = torch.cuda.max_memory_allocated(device) / 2**20
    trainers.clear()  # the caller collects and empties the CUDA cache
    return result


# -- report -----------------------------------------------------------------------------
def machine_info(device: torch.device, cuda_ready: bool) -> dict[str, Any]:
    """Host and torch facts; CUDA facts only when ``cuda_ready`` (the children have finished)."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": str(device),
        "parent_threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    if device.type == "cuda" and cuda_ready:
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": torch.cuda.get_device_name(device),
            "gpu_memory_mib": props.total_memory / 2**20,
            "gpu_capability": f"{props.major}.{props.minor}",
            "gpu_count": torch.cuda.device_count(),
            "cudnn": torch.backends.cudnn.version(),
        }
    return info


def fmt(x: float | None, spec: str = ".0f") -> str:
    return "–" if x is None else format(x, spec)


def markdown(trials: dict[str, list[dict[str, Any]]], rotations: dict[str, dict[str, Any]]) -> str:
    lines = []
    if trials:
        cuda = any("footprint_per_trial_mib" in r for rs in trials.values() for r in rs)
        mem = "peak alloc MiB/trial | footprint MiB/trial" if cuda else "VmHWM MiB/trial"
        lines += [
            f"| model | trials/GPU | gpus_per_trial | per-trial samples/s (min–max) | aggregate samples/s "
            f"| vs 1 trial | wall aggregate | overlap | {mem} |",
            "|---|---|---|---|---|---|---|---|---|" + ("---|" if cuda else ""),
        ]
        for model, records in trials.items():
            for r in records:
                k = r["trials_per_gpu"]
                if not r["ok"]:
                    lines.append(f"| {model} | {k} | {1 / k:g} | failed: {r['error']} |")
                    continue
                rates = r["per_trial_samples_per_s"]
                memory = f"{r['memory_per_trial_mib']:.0f}"
                if cuda:
                    memory += f" | {fmt(r.get('footprint_per_trial_mib'))}"
                lines.append(
                    f"| {model} | {k} | {1 / k:g} | {min(rates):.0f}–{max(rates):.0f} "
                    f"| **{r['aggregate_samples_per_s']:.0f}** | {fmt(r['vs_one_trial'], '.2f')} "
                    f"| {fmt(r['wall_aggregate_samples_per_s'])} | {r['overlap']:.2f} | {memory} |"
                )
    if rotations:
        lines += [
            "",
            "| model | comparison | A samples/s | B samples/s | ratio A/B (median of rounds) "
            "| round ratios min–max | rounds |",
            "|---|---|---|---|---|---|---|",
        ]
        for model, rot in rotations.items():
            if "error" in rot:
                lines.append(f"| {model} | failed: {rot['error']} |")
                continue
            for c in rot["comparisons"]:
                rr = c["round_ratios"]
                lines.append(
                    f"| {model} | {c['a']} / {c['b']} | {c['a_samples_per_s']:.1f} "
                    f"| {c['b_samples_per_s']:.1f} | **{c['ratio']:.3f}** "
                    f"| {min(rr):.3f}–{max(rr):.3f} | {len(rr)} |"
                )
    return "\n".join(lines)


def default_out(device: torch.device, quick: bool) -> Path:
    """GPU results in gpu.json; CPU runs never overwrite them."""
    stem = "gpu" if device.type == "cuda" else "gpu_cpu"
    return RESULTS / (stem + ("_quick" if quick else "") + ".json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda[:i]")
    p.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    p.add_argument("--trials-per-gpu", nargs="+", type=int, default=list(DEFAULT_TRIALS_PER_GPU))
    p.add_argument("--batch-size", type=int, help="default: per model and device (CUDA 128)")
    p.add_argument("--n-train", type=int, help="training samples per epoch; default per model and device")
    p.add_argument("--epochs", type=int, help="timed epochs per trial child (default 2; quick 1)")
    p.add_argument("--warmup-epochs", type=int, help="untimed epochs first (default 1)")
    p.add_argument("--rounds", type=int, help="rotation rounds (default 5; quick: CUDA 3, CPU 2)")
    p.add_argument("--quick", action="store_true", help="small sizes, few epochs and rounds")
    p.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/gpu[_cpu][_quick].json)")
    p.add_argument("--threads", type=int, default=1, help="this process's torch threads (0: torch default)")
    p.add_argument("--child-threads", type=int, default=1, help="torch threads per trial child")
    p.add_argument("--trial-amp", choices=("off", "bf16"), default="off", help="amp of the trial children")
    p.add_argument("--trial-channels-last", action="store_true", help="channels_last in the trial children")
    p.add_argument(
        "--data-on-device",
        choices=("auto", "on", "off"),
        help="TrainConfig.data_on_device for every model (default: smnist auto, luma off, as the real data)",
    )
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    p.add_argument("--skip-trials", action="store_true", help="skip measurement 1 (trials per GPU)")
    p.add_argument("--skip-rotation", action="store_true", help="skip measurements 2 and 3")
    p.add_argument("--child-timeout", type=float, default=600.0, help="seconds per set of k children")
    p.add_argument("--child", choices=tuple(MODELS), help=argparse.SUPPRESS)
    p.add_argument("--child-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--barrier", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def resolve_mode(args: argparse.Namespace, device: torch.device) -> tuple[Mode, dict[str, Sizes]]:
    base = MODES[("cuda" if device.type == "cuda" else "cpu", args.quick)]
    mode = Mode(
        base.warmup_epochs if args.warmup_epochs is None else args.warmup_epochs,
        base.epochs if args.epochs is None else args.epochs,
        base.rounds if args.rounds is None else args.rounds,
        base.sizes,
    )
    sizes = {
        m: Sizes(args.batch_size or base.sizes[m].batch_size, args.n_train or base.sizes[m].n_train)
        for m in args.models
    }
    return mode, sizes


def write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    device = resolve_device(args.device)  # no CUDA context yet: the children measure the device alone
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device")
    args.device_name = str(device)
    args.mode, sizes = resolve_mode(args, device)
    out = args.out or default_out(device, args.quick)
    ks = sorted(set(args.trials_per_gpu))
    if min(ks) < 1:
        raise SystemExit("--trials-per-gpu: every value must be >= 1")

    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(device, cuda_ready=False),
        "load_average_start": load_average(),
        "settings": {
            "mode": "quick" if args.quick else "full",
            "device": str(device),
            "models": {m: asdict(MODELS[m]) | asdict(sizes[m]) for m in args.models},
            "trials_per_gpu": ks,
            "warmup_epochs": args.mode.warmup_epochs,
            "timed_epochs_per_trial": args.mode.epochs,
            "rotation_rounds": args.mode.rounds,
            "rotation_variants": args.variants,
            "child_threads": args.child_threads,
            "trial_amp": args.trial_amp,
            "trial_channels_last": args.trial_channels_last,
            "data_on_device": {m: data_on_device_choice(args, m) for m in args.models},
            "method": "vanilla",
            "suggestion_rule": f"largest k with aggregate >= {NEAR_BEST} x best and "
            f"k x footprint <= {MEMORY_SHARE} x device memory",
        },
        "trials": {},
        "rotation": {},
        "suggestions": {},
    }
    trials: dict[str, list[dict[str, Any]]] = result["trials"]
    rotations: dict[str, dict[str, Any]] = result["rotation"]

    log(f"device {device}, {'quick' if args.quick else 'full'} mode, writing {out}", started)
    if not args.skip_trials:
        for model in args.models:
            trials[model] = []
            for k in ks:
                log(f"{model}: {k} trial(s) at once ({sizes[model]})", started)
                record = run_trials(args, model, k, sizes[model])
                trials[model].append(record)
                add_scaling(trials[model])
                write(out, result)
                if not record["ok"]:
                    log(f"{model}: k={k} failed: {record['error']}; skipping larger k", started)
                    for tail in record["stderr_tails"]:
                        print(tail, file=sys.stderr)
                    break
                log(f"{model}: k={k} aggregate {record['aggregate_samples_per_s']:.0f} samples/s", started)
            result["suggestions"][model] = suggest(trials[model])

    result["machine"] = machine_info(device, cuda_ready=True)  # the parent may touch CUDA now
    if not args.skip_rotation:
        for model in args.models:
            log(f"{model}: rotation of {args.variants}", started)
            try:
                rotations[model] = bench_rotation(args, model, sizes[model], started)
            except Exception as exc:  # keep the other model's numbers, and what the children gave
                rotations[model] = {"model": model, "error": f"{type(exc).__name__}: {exc}"}
                log(f"{model}: rotation failed: {rotations[model]['error']}", started)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            write(out, result)

    result["load_average_end"] = load_average()
    result["total_seconds"] = time.perf_counter() - started
    write(out, result)
    print(markdown(trials, rotations))
    for model, rot in rotations.items():
        if "ours_vs_bare_identical_weights" in rot:
            print(
                f"\n{model}: ours and bare weights identical after the rotation: "
                f"{rot['ours_vs_bare_identical_weights']} "
                f"(max difference {rot['ours_vs_bare_max_weight_diff']:.3g})"
            )
    if trials:
        print()
        for model, s in result["suggestions"].items():
            if s["gpus_per_trial"] is None:
                print(f"suggested gpus_per_trial for {model}: none; {s['reason']}")
            else:
                print(
                    f"suggested gpus_per_trial for {model}: {s['gpus_per_trial']:g} "
                    f"({s['trials_per_gpu']} trials per GPU; {s['reason']})"
                )
    print(f"\nwrote {out} in {result['total_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
