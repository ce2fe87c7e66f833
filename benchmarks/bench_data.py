"""Data benchmark: one epoch read from the Arrow cache vs decoded from the published files.

    python benchmarks/bench_data.py [--clips 300] [--pairs 3] [--threads 1] [--quick]
                                    [--out benchmarks/results/data_cache.json]

The real CREMA-D is not on this machine, so the script first writes a CREMA-D-format
copy (``--clips`` clips, 16 kHz WAV of ~2.5 s, FLV at 480×360, 30 fps, 75 frames: the
published sizes) under ``--work`` (reused when it exists), then:

1. ``build``: time of ``prepare`` (decode every clip once into the cache) and the cache's
   size on disk next to the raw files' size.
2. ``epoch``: samples/s of one training epoch of ``iterate_batches`` (batch 64,
   shuffled, every tensor summed so nothing stays lazy) over the train split, from the
   memory-mapped cache (A) and from the raw files (B, :class:`DecodeSplit`: WAV read,
   spectrogram, FLV decode of the middle frame, resizes). The sides alternate ABBA...
   within one run (the machine is shared, so absolute numbers drift); medians and the
   per-pair ratios are reported. The cache is read warm (its pages are in the page
   cache after the build and the first epoch), which is the steady state of epochs >= 2.
3. ``peak_memory``: ``VmHWM`` of a child process that builds the dataset object and runs
   one epoch, per side (and a baseline child that only imports). Mapped cache pages that
   were touched count toward RSS (they are shared, reclaimable page cache): the final
   ``RssFile``/``RssAnon`` split is recorded to show it.

One intra-op thread by default, as in ``bench_train.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:  # run as a plain script from anywhere, without PYTHONPATH
        sys.path.insert(0, str(p))

import torch  # noqa: E402

from miles_tune.data import create_dataset, iterate_batches  # noqa: E402
from miles_tune.data.cache import disk_size  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "data_cache.json"
DEFAULT_WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "miles_bench_data"
BATCH = 64


def status_kib(*keys: str) -> dict[str, float]:
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name = line.split(":")[0]
                if name in keys:
                    out[name] = int(line.split()[1]) / 2**10  # MiB
    except OSError:  # not Linux
        import resource

        out["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    return out


def fixture(work: Path, clips: int, seconds: float, size: tuple[int, int], fps: int) -> Path:
    """A CREMA-D-format folder with ``clips`` clips (reused if complete)."""
    from fixtures_data import write_cremad

    root = work / f"cremad-{clips}x{seconds}s-{size[1]}x{size[0]}-{fps}fps"
    done = root / ".complete"
    if done.is_file():
        return root
    started = time.perf_counter()
    print(f"writing {clips} CREMA-D-format clips into {root} ...", file=sys.stderr)
    write_cremad(
        root, per_class=max(1, clips // 6), size=size, n_frames=int(fps * seconds), seconds=seconds - 0.1
    )
    done.write_text(f"{time.perf_counter() - started:.1f} s\n")
    return root


def dataset_args(root: Path, cache_dir: Path) -> dict[str, Any]:
    return {"data_root": str(root), "cache_dir": str(cache_dir), "progress": False}


def load(args: dict[str, Any], cache: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the known-broken clip of the fixture
        return create_dataset("cremad", **args, cache=cache)


def one_epoch(split, seed: int) -> tuple[float, int]:
    started = time.perf_counter()
    n, checksum = 0, 0.0
    for inputs, labels in iterate_batches(split, BATCH, shuffle=True, seed=seed):
        checksum += sum(float(x.sum()) for x in inputs.values()) + float(labels.sum())
        n += len(labels)
    return time.perf_counter() - started, n


def child_main(side: str, args: dict[str, Any]) -> None:
    if side != "baseline":
        data = load(args, cache=side == "cache")
        one_epoch(data.train, seed=0)
    print(json.dumps({"side": side, **status_kib("VmHWM", "VmRSS", "RssAnon", "RssFile")}))


def peak_memory(args: dict[str, Any], threads: int) -> dict[str, Any]:
    out = {}
    for side in ("baseline", "cache", "raw"):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            side,
            "--child-args",
            json.dumps(args),
            "--threads",
            str(threads),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child {side} failed: {proc.stderr[-2000:]}")
        out[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=300)
    p.add_argument("--seconds", type=float, default=2.5)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--width", type=int, default=480)
    p.add_argument("--pairs", type=int, default=3, help="ABBA pairs of (cache epoch, raw epoch)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (0: torch's default)")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--quick", action="store_true", help="60 clips, 1 pair (a smoke run of the script)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-args", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.child:
        child_main(a.child, json.loads(a.child_args))
        return 0
    if a.quick:
        a.clips, a.pairs = 60, 1

    root = fixture(a.work, a.clips, a.seconds, (a.height, a.width), a.fps)
    cache_dir = a.work / "cache"
    args = dataset_args(root, cache_dir)
    for old in cache_dir.glob("cremad-*"):  # time a fresh build
        import shutil

        shutil.rmtree(old)
    started = time.perf_counter()
    cached = load(args, cache=True)
    build_seconds = time.perf_counter() - started
    raw = load(args, cache=False)
    n_train = len(cached.train)

    one_epoch(cached.train, seed=-1)  # warm-up: page cache, allocator
    one_epoch(raw.train, seed=-1)
    cache_s, raw_s = [], []
    for pair in range(a.pairs):
        order = ("cache", "raw") if pair % 2 == 0 else ("raw", "cache")  # ABBA
        for side in order:
            seconds, n = one_epoch(cached.train if side == "cache" else raw.train, seed=pair)
            assert n == n_train
            (cache_s if side == "cache" else raw_s).append(seconds)
        print(f"pair {pair}: cache {cache_s[-1]:.2f} s, raw {raw_s[-1]:.2f} s", file=sys.stderr)

    raw_files = [root / "AudioWAV", root / "VideoFlash"]
    result = {
        "benchmark": "data_cache",
        "command": " ".join(
            ["python benchmarks/bench_data.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "fixture": {
            "clips": a.clips + 1,  # + the known-broken one, skipped
            "usable_clips": sum(len(cached.split(s)) for s in ("train", "val", "test")),
            "train_clips": n_train,
            "wav": f"16 kHz mono int16, ~{a.seconds} s",
            "flv": f"flv1 {a.width}x{a.height}, {a.fps} fps, {int(a.fps * a.seconds)} frames",
            "raw_bytes": sum(disk_size(d) for d in raw_files),
        },
        "preprocessing": "audio 257x299 spectrogram -> 1x224x224 float32; middle frame -> 224x224x3 uint8",
        "build": {"seconds": round(build_seconds, 2), "cache_bytes": disk_size(cached.info["cache_dir"])},
        "epoch": {
            "batch_size": BATCH,
            "cache_seconds": [round(s, 4) for s in cache_s],
            "raw_seconds": [round(s, 4) for s in raw_s],
            "cache_samples_per_second": round(n_train / statistics.median(cache_s), 1),
            "raw_samples_per_second": round(n_train / statistics.median(raw_s), 1),
            "ratio": round(statistics.median(raw_s) / statistics.median(cache_s), 1),
            "ratio_definition": "cache samples/s over raw-decode samples/s (median epochs)",
            "pair_ratios": [round(r / c, 1) for c, r in zip(cache_s, raw_s, strict=True)],
        },
        "peak_memory_mib": peak_memory(args, a.threads),
    }
    result["build"]["cache_mib_per_clip"] = round(
        result["build"]["cache_bytes"] / 2**20 / result["fixture"]["usable_clips"], 3
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
