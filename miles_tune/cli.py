"""Command-line helpers shared by ``python -m miles_tune.train`` (and later the search CLI)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from miles_tune.config import TrainConfig

# top-level flags that are really method hyper-parameters
METHOD_FLAGS = ("tau", "mu", "variant", "aux_losses", "modality")


def parse_value(text: str) -> Any:
    """``--set`` values are YAML scalars or lists: 0.5, true, [64, 64], fast."""
    return yaml.safe_load(text)


def apply_overrides(config: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` pairs; dotted keys reach into dict settings (``data.p_fast=0.9``)."""
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, text = pair.split("=", 1)
        parts = key.strip().split(".")
        target = config
        for part in parts[:-1]:
            if part not in target or target[part] is None:
                target[part] = {}
            if not isinstance(target[part], dict):
                raise ValueError(f"--set {key}: {part!r} is not a dict setting")
            target = target[part]
        target[parts[-1]] = parse_value(text)
    return config


def build_train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m miles_tune.train",
        description="Train one joint-fusion model with a balancing method (MILES by default).",
    )
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--method", default="miles")
    p.add_argument("--fusion", default="concat", choices=["concat", "sum"])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--tau", type=float, help="MILES threshold τ (>= 0)")
    p.add_argument("--mu", type=float, help="MILES reduction factor μ in (0, 1]")
    p.add_argument("--variant", choices=["reset", "literal"], help="MILES reading of Algorithm 1")
    p.add_argument("--metric", help="metric M for u and model selection (default: the dataset's)")
    p.add_argument("--u-source", choices=["val", "train"], default="val")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, help="write history.parquet, summary.json, checkpoint.pt here")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any TrainConfig setting, e.g. data.p_fast=0.9, method_args.variant=literal",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = {
        "dataset": args.dataset,
        "method": args.method,
        "fusion": args.fusion,
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "metric": args.metric,
        "u_source": args.u_source,
        "seed": args.seed,
        "device": args.device,
        "method_args": {k: getattr(args, k) for k in METHOD_FLAGS if getattr(args, k, None) is not None},
    }
    values = apply_overrides(values, args.set)
    return TrainConfig.from_dict(values)


def _progress(total: int, initial: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, unit="epoch", disable=quiet, file=sys.stderr, dynamic_ncols=True
    )


def train_main(argv: list[str] | None = None) -> int:
    from miles_tune.train import Trainer, write_history

    args = build_train_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        trainer = Trainer(config)
        if args.resume:
            if args.out is None:
                raise ValueError("--resume needs --out")
            trainer.load_checkpoint(args.out / "checkpoint.pt")
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    bar = _progress(config.epochs, trainer.epoch, args.quiet)
    sel = trainer.selection_key
    for record in trainer.run():
        flat = record.flat()
        bar.update(1)
        bar.set_postfix(
            {
                sel: f"{flat[sel]:.3f}",
                "delta": f"{record.delta:.3f}",
                **{f"u/{m}": f"{v:+.2f}" for m, v in record.u.items()},
            },
            refresh=False,
        )
        if args.out is not None:
            trainer.save_checkpoint(args.out / "checkpoint.pt")
            write_history(trainer.history, args.out / "history.parquet")
    bar.close()
    summary = trainer.summary()
    if args.out is not None:
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(format_summary(summary))
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    best = summary["best"]
    metric = summary["metric"]
    heads = ["mm", *summary["modalities"]]
    lines = [
        f"{summary['config']['method']} on {summary['dataset']} ({summary['config']['fusion']} fusion): "
        f"{summary['epochs_run']} epochs in {summary['seconds']:.1f} s"
        + (" (stopped early)" if summary["stopped_early"] else ""),
        f"best epoch {summary['best_epoch']} by {summary['selection']}",
        f"  {'head':<10} {'val ' + metric:>12} {'test ' + metric:>12}",
    ]
    for h in heads:
        v, t = best.get(f"val/{h}/{metric}"), best.get(f"test/{h}/{metric}")
        if v is not None:
            lines.append(f"  {h:<10} {v:>12.4f} {t:>12.4f}")
    return "\n".join(lines)
