"""Command-line helpers shared by ``python -m miles_tune.train`` (and later the search CLI)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from miles_tune.config import TrainConfig
from miles_tune.errors import ConfigError

# top-level flags that are really method hyper-parameters
METHOD_FLAGS = ("tau", "mu", "variant", "aux_losses", "modality")
# what a run writes into --out (all replaced by --overwrite, all kept by --resume)
OUTPUTS = ("checkpoint.pt", "history.parquet", "summary.json")


class _SetLoader(yaml.SafeLoader):
    """YAML as in a config file, except that ``1e-3`` is a number (YAML 1.2) rather than the
    string PyYAML's YAML 1.1 makes of it: ``--set lr=1e-3`` must mean what it says."""


_SetLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_value(text: str, key: str = "") -> Any:
    """``--set`` values are YAML scalars or lists: 0.5, 1e-3, true, [64, 64], fast."""
    try:
        return yaml.load(text, Loader=_SetLoader)  # a SafeLoader: plain data only
    except yaml.YAMLError as exc:
        problem = " ".join((getattr(exc, "problem", None) or str(exc) or type(exc).__name__).split())
        raise ConfigError(f"--set {key}: {text!r} is not a YAML value ({problem})") from None


def apply_overrides(config: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` pairs; dotted keys reach into dict settings (``data.p_fast=0.9``)."""
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, text = pair.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not all(re.fullmatch(r"[\w-]+", part) for part in parts):
            raise ConfigError(f"--set {key!r}: expected a setting name such as lr or data.n_train")
        target = config
        for part in parts[:-1]:
            if part not in target or target[part] is None:
                target[part] = {}
            if not isinstance(target[part], dict):
                raise ConfigError(f"--set {key}: {part!r} is not a dict setting")
            target = target[part]
        target[parts[-1]] = parse_value(text, key)
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
    p.add_argument("--modality", metavar="NAME", help="unimodal: the modality trained alone")
    p.add_argument(
        "--aux-losses",
        action=argparse.BooleanOptionalAction,
        help="vanilla, MSLR, OGM: whether unimodal losses train the encoders (Eq. 3)",
    )
    p.add_argument("--metric", help="metric M for u and model selection (default: the dataset's)")
    p.add_argument("--u-source", choices=["val", "train"], default="val")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, help="write history.parquet, summary.json, checkpoint.pt here")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run's files in OUT instead of refusing"
    )
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


def check_config(config: TrainConfig) -> None:
    """Everything checkable before data is built: every setting, then the method's and the
    dataset's names and keyword arguments (and an encoder's, where the override names it),
    each error naming the setting as typed (``method_args.tau``, ``data.n_train``)."""
    from miles_tune.balance import METHODS, check_step_decay
    from miles_tune.data import DATASETS
    from miles_tune.models import ENCODERS

    config.validate()
    METHODS.check_kwargs(config.method, config.method_args, prefix="method_args.", complete=True)
    check_step_decay(config.method, config.lr_step_size)
    DATASETS.check_kwargs(config.dataset, config.data, prefix="data.", complete=True)
    for modality, override in config.encoders.items():
        if "name" in override:
            kwargs = {k: v for k, v in override.items() if k != "name"}
            ENCODERS.check_kwargs(override["name"], kwargs, prefix=f"encoders.{modality}.")


def check_out(args: argparse.Namespace) -> None:
    """Refuse to start a run that would silently replace, or fail to find, an earlier one."""
    if args.resume and args.out is None:
        raise ConfigError("--resume needs --out DIR (the run to continue)")
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it; pass one")
    if args.out is None:
        return
    out = args.out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a directory")
    if args.resume and not (out / "checkpoint.pt").is_file():
        raise ConfigError(f"--resume: no checkpoint at {out / 'checkpoint.pt'}")
    if out.is_dir() and any(out.iterdir()) and not (args.resume or args.overwrite):
        raise ConfigError(
            f"--out {out} is not empty (an earlier run?); pass --resume to continue it "
            "or --overwrite to replace it"
        )


def train_main(argv: list[str] | None = None) -> int:
    from miles_tune.train import NonFiniteLossError, Trainer, write_history

    args = build_train_parser().parse_args(argv)
    try:
        check_out(args)
        config = config_from_args(args)
        check_config(config)
        trainer = Trainer(config)
        if args.resume:
            trainer.load_checkpoint(args.out / "checkpoint.pt")
    except (ValueError, FileNotFoundError) as exc:  # ConfigError and the data's own checks
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is not None and args.overwrite:
        for name in OUTPUTS:  # a stale summary must not outlive the run it described
            (args.out / name).unlink(missing_ok=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    bar = _progress(config.epochs, trainer.epoch, args.quiet)
    sel = trainer.selection_key
    try:
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
    except NonFiniteLossError as exc:  # an outcome of the settings (lr too high?), not a bug
        bar.close()
        kept = f"; epochs 0-{trainer.epoch - 1} are in {args.out}" if args.out and trainer.epoch else ""
        print(f"error: {exc}{kept}", file=sys.stderr)
        return 1
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
