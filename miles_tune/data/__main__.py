"""Dataset command line.

    python -m miles_tune.data prepare --dataset cremad [--data-root ~/data/CREMA-D] [--set seed=1 ...]
    python -m miles_tune.data list
    python -m miles_tune.data list-cache [--data-root ~/data/CREMA-D]

``prepare`` decodes the published files once into the Arrow cache (with a progress bar)
and prints a summary: where the data and the cache are, its key, the split sizes, the
samples skipped and the size on disk. Training with the same dataset options then reads
that cache. Without ``--data-root`` it reads the default location,
``$MILES_TUNE_DATA/<dataset>`` or ``~/.cache/miles_tune/data/<dataset>``, and writes
the cache under its ``.miles_cache``. ``--set key=value`` (or ``--set data.key=value``,
as the messages name it) passes any other dataset option (YAML values: ``--set
classes=[man,boy]``); the options of a dataset are listed by ``list``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from miles_tune.data import DATASET_INFO, DATASETS, create_dataset, list_datasets
from miles_tune.data.cache import CACHE_DIRNAME, disk_size, read_meta
from miles_tune.data.paths import default_data_root
from miles_tune.errors import ConfigError


def _options(values: list[str]) -> dict[str, Any]:
    out = {}
    for pair in values:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, text = pair.split("=", 1)
        key = key.strip().removeprefix("data.")
        try:
            out[key] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"--set {key}: cannot parse {text!r} as YAML ({exc})".replace("\n", " ")
            ) from exc
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m miles_tune.data", description="Prepare and inspect datasets.")
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="decode a dataset once into its Arrow cache")
    prep.add_argument("--dataset", required=True, choices=list_datasets())
    prep.add_argument(
        "--data-root",
        type=Path,
        help="folder of the dataset's published files (default: $MILES_TUNE_DATA/<dataset>, "
        "else ~/.cache/miles_tune/data/<dataset>)",
    )
    prep.add_argument("--cache-dir", type=Path, help=f"cache root (default: <data-root>/{CACHE_DIRNAME})")
    prep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any dataset option")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_parser("list", help="registered datasets and their options")
    lc = sub.add_parser(
        "list-cache", help="caches under a cache root (default: every file dataset's default data root)"
    )
    lc.add_argument("--data-root", type=Path)
    lc.add_argument("--cache-dir", type=Path)
    return p


def prepare_main(args: argparse.Namespace) -> int:
    options = _options(args.set)
    accepted = DATASETS.accepted_kwargs(args.dataset)
    if "data_root" in accepted and args.data_root is not None:
        options["data_root"] = str(args.data_root)  # else the dataset's default location
    if args.cache_dir is not None:
        options["cache_dir"] = str(args.cache_dir)
    if "progress" in accepted:
        options["progress"] = not args.quiet
    started = time.perf_counter()
    data = create_dataset(args.dataset, **options)
    info = dict(data.info)
    summary = {
        "dataset": data.name,
        "data_root": info.get("data_root"),
        "modalities": list(data.modalities),
        "num_classes": data.num_classes,
        "sizes": {s: len(data.split(s)) for s in ("train", "val", "test")},
        "seconds": round(time.perf_counter() - started, 2),
    }
    if "cache_dir" in info:
        summary.update(
            cache_dir=info["cache_dir"],
            cache_key=info["cache_key"],
            split_file=info["split_file"],
            cache_bytes=disk_size(info["cache_dir"]),
        )
    if "skipped" in info:
        summary.update(n_skipped=info["n_skipped"], skipped=info["skipped"])
    x, _ = data.train[0]
    summary["input_shapes"] = {m: list(x[m].shape) for m in data.modalities}
    print(json.dumps(summary, indent=2))
    return 0


def list_main() -> int:
    for name in list_datasets():
        params = DATASETS.accepted_kwargs(name)
        opts = ", ".join(f"{k}={p.default!r}" for k, p in params.items())
        print(f"{name}: {opts}")
    return 0


def list_cache_main(args: argparse.Namespace) -> int:
    if args.cache_dir or args.data_root:
        roots = [args.cache_dir or args.data_root / CACHE_DIRNAME]
    else:
        roots = [default_data_root(n) / CACHE_DIRNAME for n in list_datasets() if _file_based(n)]
    for root in roots:
        for path in sorted(Path(root).glob("*-*")):
            if (path / "meta.json").is_file():
                meta = read_meta(path)
                print(f"{path}\t{meta['sizes']}\t{disk_size(path) / 2**20:.1f} MiB\t{meta['created']}")
    return 0


def _file_based(name: str) -> bool:
    info = DATASET_INFO.get(name)
    return info is not None and info.file_based


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "prepare":
            return prepare_main(args)
        if args.command == "list":
            return list_main()
        return list_cache_main(args)
    except (ValueError, ImportError) as exc:  # DatasetError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
