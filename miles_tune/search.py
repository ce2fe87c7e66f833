"""``python -m miles_tune.search``: a hyper-parameter search on Ray Tune, tracked in MLflow.

    python -m miles_tune.search                                   # small search on built-in data
    python -m miles_tune.search --dataset mmimdb --num-samples 80 --address auto
    python -m miles_tune.search --resume                          # finish the latest interrupted one
    python -m miles_tune.search --seeds 0,1,2 --num-samples 8     # 8 configurations x 3 training seeds
    python -m miles_tune.search --grid tau=0.1,0.3 --set lr=1e-3 --set mu=0.5   # exactly these values
    python -m miles_tune.search --from-best runs/<search>/best_config.yaml --seeds 0,1,2

``--grid`` runs the named values (their cross product) once each, every other searched
parameter fixed by ``--set`` or ``--from-best``; ``--seeds`` runs every configuration once per
training seed (the trial's param ``seed``; Optuna sees the mean over the seeds); ``--from-best``
fixes every searched parameter to a finished search's best trial (``--set`` and ``--grid`` win).
The parent run's tag ``stage`` says which: grid, unimodal, seeds or search.

Flow: parse and validate everything (arguments, the dataset's search space, every
bound, the dataset's files) before Ray starts; take the search's name lock; check the
MLflow store answers; connect to Ray and check every trial fits a node; create the MLflow
experiment and the search's parent run on the driver; run the Tuner (Optuna TPE or random
search, optional ASHA, fractional GPUs, retries for infrastructure faults only); bring
every trial's MLflow run up to date; write ``best_config.yaml``, ``trials.parquet`` (every
trial's per-epoch records) and ``search_space.yaml`` (the space as used), attach them to the
parent run with the best trial's metrics and run id; print the best trial and the links to
the search in the MLflow UI.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import math
import os
import re
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from miles_tune.cli import apply_overrides, check_config, parse_value
from miles_tune.config import SEED_LIMIT, TrainConfig
from miles_tune.errors import ConfigError
from miles_tune.spaces import SearchSpace, load_search_space, trial_config
from miles_tune.storage import KEEP_CHECKPOINTS, drop_superseded
from miles_tune.value_types import show

log = logging.getLogger("miles_tune.search")
SEARCHERS = ("optuna", "random")
SCHEDULERS = ("none", "asha", "pbt")
#: settings a --grid cannot vary: they name the search itself (its tags, its data, its heads)
NOT_GRIDDED = ("dataset", "data", "method", "method_args", "fusion", "encoders", "device")
#: a search's name becomes a folder and an MLflow tag: no separators, no quotes, no spaces
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]+")
LOCK_FILE = ".miles_tune.lock"


@dataclass
class SearchPlan:
    """Everything a search needs, validated, before Ray is touched."""

    args: argparse.Namespace
    space: SearchSpace
    base: dict[str, Any]  # fixed TrainConfig part of every trial
    name: str  # the Tune experiment (and MLflow parent run) name
    storage: str
    metric: str  # what the searcher maximises: best-so-far validation metric
    num_samples: int
    gpus_per_trial: float
    cpus_per_trial: float
    tracking_uri: str | None
    results_dir: Path
    mlflow_links: dict[str, str] | None = None  # where the MLflow UI shows it, once it has a run
    searcher: str = "optuna"  # optuna, random, or grid (--grid, or nothing left to search)
    grid: dict[str, list[Any]] = field(default_factory=dict)  # --grid: name -> values, in order
    seeds: list[int] | None = None  # --seeds: every configuration runs once per training seed
    stage: str = "search"  # grid, unimodal, seeds or search: what the analysis files it under
    variant: str = ""  # --variant: the setting's name; the analysis row is <method>-<variant>
    from_trial: str | None = None  # --from-best: the best trial of the file
    modalities: tuple[str, ...] = ()  # the dataset's
    #: --scheduler pbt: the rounds' interval (epochs) and what PBT mutates, name -> (low, high)
    pbt_interval: int | None = None
    pbt_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def configurations(self) -> int:
        """How many distinct configurations run (before the seeds)."""
        return math.prod(len(v) for v in self.grid.values()) if self.grid else self.num_samples

    @property
    def trials(self) -> int:
        """How many trials the whole search runs: every configuration once per seed."""
        return self.configurations * len(self.seeds or [None])

    @property
    def tune_num_samples(self) -> int:
        """Tune's num_samples: a grid (and BasicVariantGenerator's seed grid) multiplies it by
        itself; the Repeater takes every trial, the repeats included."""
        if self.searcher == "optuna" and self.seeds:
            return self.num_samples * len(self.seeds)
        return self.num_samples


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m miles_tune.search",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", default="synthetic", help="a search space in search_spaces/ (or --space)")
    p.add_argument("--space", help="path to a search-space YAML (default: search_spaces/<dataset>.yaml)")
    p.add_argument("--method", default="miles")
    p.add_argument(
        "--variant",
        metavar="NAME",
        help="a name for this setting of the method (e.g. noaux with --set aux_losses=false): its "
        "searches form their own row, <method>-<variant>, in the analysis tables",
    )
    p.add_argument("--fusion", default="concat", choices=["concat", "sum"])
    p.add_argument(
        "--searcher", choices=SEARCHERS, help="default: optuna (TPE), or random with --scheduler pbt"
    )
    p.add_argument("--num-samples", type=int, help="trials (default: the space's num_samples)")
    p.add_argument(
        "--points",
        type=int,
        help="evaluate at most this many of the space's known points first (default: all of them); "
        "the study gives every method 1, its published default",
    )
    p.add_argument("--scheduler", default="none", choices=SCHEDULERS)
    p.add_argument("--grace-period", type=int, default=2, help="ASHA: epochs before a trial can be stopped")
    p.add_argument(
        "--perturbation-interval",
        type=int,
        help="PBT: epochs between rounds of exploit and explore (default: a fifth of the epochs)",
    )
    p.add_argument(
        "--lr-mult-range",
        metavar="LOW,HIGH",
        help="PBT: the range of each encoder's learning-rate multiplier lr_mult.<modality> "
        "(default: 0.01,10)",
    )
    p.add_argument("--gpus-per-trial", type=float, help="fractions allowed (default: the space's)")
    p.add_argument("--cpus-per-trial", type=float, help="default: the space's")
    p.add_argument("--max-concurrent", type=int, default=0, help="0 = as many as resources allow")
    p.add_argument("--max-failures", type=int, default=2, help="retries per trial, from its last checkpoint")
    p.add_argument("--address", help="an existing Ray cluster ('auto' on a cluster node)")
    p.add_argument("--storage", default="ray_results", help="local path, s3://bucket/prefix or gs://...")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--experiment", default="miles_tune", help="MLflow experiment name")
    p.add_argument(
        "--system-metrics",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log CPU, memory and GPU use on each trial's run (default: on for trials with a GPU)",
    )
    p.add_argument(
        "--name",
        help="this search's name: letters, digits, . _ - (default: <dataset>-<method>-<fusion>-<time>-<id>)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="searcher seed, and every trial's training seed unless --seeds"
    )
    p.add_argument(
        "--seeds",
        metavar="S1,S2,...",
        help="run every configuration once per training seed (the trial's param seed); "
        "Optuna sees each configuration's mean over the seeds",
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="run exactly these values of a searched parameter, training setting or method argument "
        "(repeatable: the cross product), each once, with Tune's grid search; every other searched "
        "parameter must be fixed (--set or --from-best); --searcher is then not used",
    )
    p.add_argument(
        "--from-best",
        metavar="PATH",
        help="fix every searched parameter to the best trial of a best_config.yaml (--set and --grid win)",
    )
    p.add_argument("--resume", action="store_true", help="restore the search --name (default: the latest)")
    p.add_argument(
        "--keep-checkpoints",
        default="best",
        choices=KEEP_CHECKPOINTS,
        help="what stays in the storage folder once a trial ends: the best trial's best-epoch weights "
        "(best), every trial's last checkpoint (all) or no weights (none); a running trial keeps one",
    )
    p.add_argument("--results", default="runs", help="folder of the result files (best_config.yaml, ...)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a fixed training setting or method argument, e.g. epochs=5, data.n_train=500, mu=0.5",
    )
    p.add_argument("--verbose", type=int, default=1, help="Tune verbosity 0-3")
    return p


def is_remote(storage: str) -> bool:
    return "://" in storage


def storage_join(storage: str, name: str) -> str:
    """``storage``/``name``, keeping a URI's query (``s3://b/p?endpoint_override=...``) at the end."""
    base, _, query = storage.partition("?")
    return f"{base.rstrip('/')}/{name}" + (f"?{query}" if query else "")


def check_name(name: str, flag: str = "--name") -> str:
    if not NAME_PATTERN.fullmatch(name) or set(name) == {"."}:
        raise ConfigError(
            f"{flag} {name!r}: use only letters, digits, '.', '_' and '-' (and not '.' or '..')"
        )
    return name


def default_name(prefix: str) -> str:
    """Unique even for searches started in the same second (a seed loop): time plus a random id."""
    return f"{prefix}-{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def latest_search(storage: str, prefix: str) -> str | None:
    root = Path(storage)
    if not root.is_dir():
        return None
    found = sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix)),
        key=lambda p: p.stat().st_mtime,
    )
    return found[-1].name if found else None


def train_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


def method_args_by_name(overrides: dict[str, Any], method: str, searched: dict[str, Any]) -> dict[str, Any]:
    """``--set mu=0.5`` means ``method_args.mu``: a method argument is set by its bare name, as
    ``--grid`` and the search space name it (an explicit ``method_args.mu`` still wins)."""
    from miles_tune.balance import METHODS

    fields, accepted = train_fields(), METHODS.accepted_kwargs(method)
    moved = {k: v for k, v in overrides.items() if k not in fields and (k in searched or k in accepted)}
    if not moved:
        return overrides
    out = {k: v for k, v in overrides.items() if k not in moved}
    out["method_args"] = {**moved, **out.get("method_args", {})}
    return out


def parse_grid(pairs: list[str], method: str, searched: dict[str, Any]) -> dict[str, list[Any]]:
    """``--grid NAME=V1,V2``: name -> values, each value parsed as a ``--set`` value is."""
    from miles_tune.balance import METHODS

    fields, accepted = train_fields(), METHODS.accepted_kwargs(method)
    grid: dict[str, list[Any]] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise ConfigError(f"--grid expects NAME=V1,V2,... (e.g. tau=0.1,0.3), got {pair!r}")
        if "." in name:
            raise ConfigError(
                f"--grid {name}: dotted keys are not supported; grid a searched parameter, a training "
                "setting or a method argument by its name (tau, lr, u_source)"
            )
        if name in NOT_GRIDDED:
            raise ConfigError(f"--grid {name}: one value per search; run one search per value")
        if name not in searched and name not in fields and accepted and name not in accepted:
            raise ConfigError(
                f"--grid {name}: neither a searched parameter ({', '.join(searched) or 'none'}), "
                f"a training setting nor an argument of {method!r}"
            )
        if name in grid:
            raise ConfigError(f"--grid {name}: given twice; list every value in one --grid {name}=...")
        values: list[Any] = []
        for piece in (t.strip() for t in text.split(",")):
            if not piece:
                raise ConfigError(f"--grid {name}: an empty value in {text!r}")
            try:
                value = parse_value(piece, name)
            except ConfigError as exc:  # its message names --set
                raise ConfigError(str(exc).replace("--set", "--grid", 1)) from None
            if isinstance(value, (list, dict)):
                raise ConfigError(f"--grid {name}: {piece!r} is not a single value")
            if value in values:
                raise ConfigError(f"--grid {name}: {piece!r} is given twice")
            values.append(value)
        grid[name] = values
    return grid


def parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2``: distinct training seeds in TrainConfig's range, at least one."""
    seeds: list[int] = []
    for piece in (t.strip() for t in text.split(",")):
        try:
            seed = int(piece)
        except ValueError:
            raise ConfigError(f"--seeds {text!r}: expected integers such as 0,1,2, got {piece!r}") from None
        if not 0 <= seed < SEED_LIMIT:
            raise ConfigError(f"--seeds: {seed} is outside [0, 2**32)")
        if seed in seeds:
            raise ConfigError(f"--seeds: {seed} is given twice")
        seeds.append(seed)
    return seeds


def read_best(
    path_text: str, method: str, dataset: str, searched: dict[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """A ``best_config.yaml``'s value of every searched parameter, as overrides (TrainConfig
    fields at the top, the rest under ``method_args``), and the trial it came from."""
    flag = f"--from-best {path_text}"
    try:
        raw = yaml.safe_load(Path(path_text).expanduser().read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{flag}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{flag}: not valid YAML ({' '.join(str(exc).split())})") from None
    config = raw.get("config") if isinstance(raw, dict) else None
    if not isinstance(config, dict):
        raise ConfigError(f"{flag}: no 'config' mapping (expected a best_config.yaml as a search writes it)")
    if config.get("method") != method:
        raise ConfigError(
            f"{flag}: its config is for method {show(config.get('method'))}, not --method {method}"
        )
    if config.get("dataset") != dataset:
        raise ConfigError(f"{flag}: its config is for dataset {show(config.get('dataset'))}, not {dataset!r}")
    method_args = config.get("method_args") or {}
    if not isinstance(method_args, dict):
        raise ConfigError(f"{flag}: its method_args is not a mapping, got {show(method_args)}")
    fields = train_fields()
    values: dict[str, Any] = {}
    for name in searched:
        source, where = (config, name) if name in fields else (method_args, f"method_args.{name}")
        if name not in source:
            raise ConfigError(f"{flag}: its config has no {where}, which this space searches")
        if name in fields:
            values[name] = source[name]
        else:
            values.setdefault("method_args", {})[name] = source[name]
    trial = raw.get("best_trial")
    return values, None if trial is None else str(trial)


def check_trial(base: dict[str, Any], params: dict[str, Any]) -> TrainConfig:
    """A trial's full config, checked as the trial would: every setting, named as typed
    (``method_args.tau``, ``data.n_train``), and the method built from its arguments."""
    from miles_tune.balance import create_method

    cfg = trial_config(base, params)
    check_config(cfg)
    create_method(cfg.method, **cfg.method_args)
    return cfg


def plan_search(argv: list[str] | None = None) -> SearchPlan:
    """Parse and validate, before Ray starts; raises ConfigError naming the flag, key or file."""
    from miles_tune.tracking import normalise_tracking_uri

    args = build_parser().parse_args(argv)
    if args.searcher is None:  # PBT takes Tune's random search only
        args.searcher = "random" if args.scheduler == "pbt" else "optuna"
    space = load_search_space(args.space or args.dataset)
    if args.space is None and space.dataset != args.dataset:
        raise ConfigError(f"{space.path} is for dataset {space.dataset!r}, not {args.dataset!r}")
    ms = space.method(args.method)  # refuses a method the space does not cover
    overrides = apply_overrides({}, args.set)
    for key in ("data", "method_args", "encoders"):
        if key in overrides and not isinstance(overrides[key], dict):
            raise ConfigError(
                f"--set {key}=...: {key} holds named entries; set one with --set {key}.NAME=VALUE"
            )
    overrides = method_args_by_name(overrides, args.method, ms.params)
    grid = parse_grid(args.grid, args.method, ms.params)
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    if seeds is not None and "seed" in overrides:
        raise ConfigError("--seeds sets every trial's training seed: drop --set seed=...")
    if seeds is not None and "seed" in grid:
        raise ConfigError("--grid seed and --seeds both vary the training seed: pass one of them")
    if seeds is not None and args.scheduler != "none":
        raise ConfigError(
            f"--seeds compares configurations over whole runs: --scheduler {args.scheduler} would stop "
            "some seeds early; run it without a scheduler"
        )
    from_trial = None
    if args.from_best is not None:  # below every --set: an explicit --set wins
        best, from_trial = read_best(args.from_best, args.method, space.dataset, ms.params)
        overrides = {
            **best,
            **overrides,
            "method_args": {**best.get("method_args", {}), **overrides.get("method_args", {})},
        }
    for name in grid:  # a grid value wins over --set and --from-best
        overrides.pop(name, None)
        overrides.get("method_args", {}).pop(name, None)
    # a searched parameter set here (or gridded) is fixed: it leaves the space (and the points)
    fixed_now = {k for k in ms.params if k in overrides or k in overrides.get("method_args", {}) or k in grid}
    space.fix(args.method, fixed_now)
    params = ms.params
    if grid and params:
        raise ConfigError(
            f"--grid {','.join(grid)}: every other searched parameter must be fixed (--set or --from-best); "
            f"still searched: {', '.join(sorted(params))}"
        )
    base = space.base_config(args.method, args.fusion, args.seed, overrides)
    for key in ("data_root", "cache_dir"):  # trials run in other working directories
        value = base["data"].get(key)
        if value and "://" not in str(value):
            base["data"][key] = str(Path(value).expanduser().resolve())
    # one full trial config at the space's first point (or its lower bounds) must be valid, at
    # every grid point
    probe = ms.points[0] if ms.points else {k: p.candidates()[0] for k, p in params.items()}
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    selections: dict[str, dict[str, Any]] = {}  # the metric each grid point selects epochs by
    for combo in combos or [{}]:
        try:
            cfg = check_trial(base, {**probe, **combo})
        except ConfigError as exc:
            if not combo:
                raise
            shown = ", ".join(f"{k}={show(v)}" for k, v in combo.items())
            raise ConfigError(f"--grid {shown}: {exc}") from None
        head = "mm" if cfg.method != "unimodal" else cfg.method_args["modality"]
        selections.setdefault(f"best/val/{head}/{cfg.metric}", combo)
    if len(selections) > 1:
        raise ConfigError(
            f"--grid {','.join(grid)}: every grid point must select epochs by one metric, "
            f"got {', '.join(selections)}; run one search per value"
        )
    # the dataset's options and files (stat and small headers only), and the metric for its task
    from miles_tune.data import probe_dataset
    from miles_tune.metrics import check_metric

    found = probe_dataset(cfg.dataset, **cfg.data)
    check_metric(cfg.metric or found.default_metric, found.task)
    from miles_tune.balance import check_lr_mult, check_task, create_method

    create_method(cfg.method, **cfg.method_args).check(found.modalities, cfg.fusion)
    check_task(cfg.method, found.task)
    check_lr_mult(cfg.method, cfg.lr_mult, found.modalities)

    pbt_interval, pbt_ranges = None, {}
    if args.scheduler == "pbt":
        pbt_interval, pbt_ranges = plan_pbt(args, cfg, found.modalities, params, grid)
    elif args.perturbation_interval is not None or args.lr_mult_range is not None:
        raise ConfigError("--perturbation-interval and --lr-mult-range set PBT: pass --scheduler pbt")

    searcher = "grid" if grid or not (params or pbt_ranges) else args.searcher
    if searcher == "grid":  # every trial is given: one sample of the grid (or of the one config)
        if args.num_samples not in (None, 1):
            why = "--grid runs each grid point once" if grid else "every searched parameter is fixed"
            raise ConfigError(f"--num-samples {args.num_samples}: {why}; to repeat runs, pass --seeds")
        num_samples = 1
    else:
        num_samples = args.num_samples if args.num_samples is not None else space.num_samples
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {num_samples}")
    if grid:
        stage = "grid"
    elif args.method == "unimodal":
        stage = "unimodal"
    elif not params and (seeds is not None or args.from_best is not None):
        stage = "seeds"  # a re-run of one configuration: never extra search budget
    else:
        stage = "search"
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else space.resources["gpus_per_trial"]
    cpus = args.cpus_per_trial if args.cpus_per_trial is not None else space.resources["cpus_per_trial"]
    for flag, value in (("--gpus-per-trial", gpus), ("--cpus-per-trial", cpus)):
        if not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, got {value}")
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise ConfigError(f"--gpus-per-trial must be a fraction below 1 or a whole number, got {gpus}")
    if cpus <= 0:
        raise ConfigError(f"--cpus-per-trial must be > 0, got {cpus}")
    if args.points is not None and args.points < 0:
        raise ConfigError(f"--points must be >= 0, got {args.points}")
    variant = check_name(args.variant, "--variant") if args.variant is not None else ""
    if args.scheduler == "pbt" and not variant:  # a learned schedule is its own row in the tables
        variant = "pbt"
    if variant and args.method == "unimodal":
        raise ConfigError("--variant: the unimodal references have no variants; drop --variant")
    from miles_tune.balance import METHODS

    if variant and f"{args.method}-{variant}" in METHODS.names():
        raise ConfigError(f"--variant {variant}: {args.method}-{variant} is a method's name; pick another")
    if args.max_concurrent < 0 or args.max_failures < 0 or args.grace_period < 1:
        raise ConfigError("--max-concurrent and --max-failures must be >= 0, --grace-period >= 1")
    storage = args.storage if is_remote(args.storage) else str(Path(args.storage).resolve())
    prefix = f"{space.dataset}-{args.method}{'-' + variant if variant else ''}-{args.fusion}"
    name = args.name
    if args.resume and name is None:
        if is_remote(storage):
            raise ConfigError("--resume with remote --storage needs --name")
        name = latest_search(storage, prefix)
        if name is None:
            raise ConfigError(f"--resume: no search named {prefix}-* under {storage}")
    name = check_name(name) if name is not None else default_name(prefix)
    return SearchPlan(
        args=args,
        space=space,
        base=base,
        name=name,
        storage=storage,
        metric=next(iter(selections)),
        num_samples=num_samples,
        gpus_per_trial=float(gpus),
        cpus_per_trial=float(cpus),
        tracking_uri=None if args.no_tracking else normalise_tracking_uri(args.tracking_uri),
        results_dir=Path(args.results).resolve() / name,
        searcher=searcher,
        grid=grid,
        seeds=seeds,
        stage=stage,
        from_trial=from_trial,
        variant=variant,
        modalities=tuple(found.modalities),
        pbt_interval=pbt_interval,
        pbt_ranges=pbt_ranges,
    )


def plan_pbt(
    args: argparse.Namespace,
    cfg: TrainConfig,
    modalities: tuple[str, ...],
    params: dict[str, Any],
    grid: dict[str, list[Any]],
) -> tuple[int, dict[str, tuple[float, float]]]:
    """``--scheduler pbt``: the interval and the ranges PBT mutates (``lr`` when searched, and
    ``lr_mult.<modality>`` unless fixed), or a one-line refusal of what cannot work with it."""
    from miles_tune.balance import METHODS
    from miles_tune.pbt import LR_MULT_RANGE, default_interval

    why = None
    if args.searcher == "optuna":
        why = "Optuna cannot drive PBT (Tune refuses a searcher with it); pass --searcher random"
    elif grid:
        why = "--grid runs fixed points, which PBT would change; drop --grid"
    elif args.method == "unimodal":
        why = "a unimodal run has one encoder, so no multiplier to learn; search its lr without PBT"
    elif METHODS.get(args.method).own_encoder_lrs:
        why = f"{args.method} sets each encoder's learning rate itself; PBT mutates lr_mult, which it ignores"
    elif args.max_concurrent:
        why = (
            "--max-concurrent would shrink the population (Tune creates no member while that many "
            "are alive, paused ones included); limit what runs at once with --cpus-per-trial or "
            "--gpus-per-trial"
        )
    if why:
        raise ConfigError(f"--scheduler pbt: {why}")
    interval = args.perturbation_interval or default_interval(cfg.epochs)
    if interval < 1 or interval >= cfg.epochs:
        raise ConfigError(
            f"--perturbation-interval {interval}: must be at least 1 and below the {cfg.epochs} epochs, "
            "or PBT never acts"
        )
    low, high = LR_MULT_RANGE
    if args.lr_mult_range is not None:
        try:
            low, high = (float(x) for x in args.lr_mult_range.split(","))
        except ValueError:
            shown = args.lr_mult_range
            raise ConfigError(f"--lr-mult-range {shown!r}: expected LOW,HIGH such as 0.01,10") from None
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
            raise ConfigError(f"--lr-mult-range {args.lr_mult_range}: need 0 < LOW < HIGH, finite")
    ranges: dict[str, tuple[float, float]] = {}
    lr = params.get("lr")
    if lr is not None:
        if lr.distribution not in ("loguniform", "uniform"):
            raise ConfigError(f"--scheduler pbt: lr is searched as {lr.describe()}; PBT needs a range")
        ranges["lr"] = (float(lr.args[0]), float(lr.args[1]))
    for m in modalities:  # --set lr_mult.<m>=...: that encoder's multiplier stays fixed
        if m not in cfg.lr_mult:
            ranges[f"lr_mult.{m}"] = (low, high)
    if not ranges:
        raise ConfigError("--scheduler pbt: nothing left to mutate (lr and every lr_mult are fixed)")
    if args.num_samples is not None and args.num_samples < 2:
        raise ConfigError("--scheduler pbt: --num-samples is the population; it needs at least 2 members")
    return interval, ranges


def make_searcher(plan: SearchPlan):  # noqa: ANN201
    """Optuna TPE (in a Repeater with --seeds), or Tune's variant generator for random search and
    grids; with --seeds, the seed is a grid dimension of the latter, each random sample held
    constant over it."""
    # known good points first (at most --points), but never more trials than asked for
    points = plan.space.method(plan.args.method).points[: plan.num_samples]
    if plan.args.points is not None:
        points = points[: plan.args.points]
    # a known point under PBT starts every encoder at the global rate (lr_mult 1), as plain training
    points = [{**dict(p), **{k: 1.0 for k in plan.pbt_ranges if k.startswith("lr_mult.")}} for p in points]
    if plan.searcher in ("random", "grid"):
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(
            points_to_evaluate=[dict(p) for p in points],
            random_state=plan.args.seed,
            max_concurrent=plan.args.max_concurrent,
            constant_grid_search=True,
        )
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    if is_remote(plan.storage):
        db = plan.results_dir / "optuna.db"
    else:
        db = Path(plan.storage) / plan.name / "optuna.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    searcher = OptunaSearch(
        points_to_evaluate=[dict(p) for p in points] or None,
        sampler=optuna.samplers.TPESampler(seed=plan.args.seed),
        study_name=plan.name,
        storage=optuna.storages.RDBStorage(f"sqlite:///{db}"),
    )
    if not plan.seeds:
        return searcher
    from ray.tune.search import Repeater

    # Optuna sees one trial per configuration, scored by the mean over its seeds; each repeat's
    # index (``__trial_index__``) picks its seed (trainable.sampled_params)
    return Repeater(searcher, repeat=len(plan.seeds), set_index=True)


def make_scheduler(plan: SearchPlan) -> tuple[Any, list]:
    """The trial scheduler (None, ASHA or PBT) and the callbacks it needs (PBT's state)."""
    epochs = int(plan.base.get("epochs", 30))
    if plan.args.scheduler == "none":
        return None, []
    if plan.args.scheduler == "pbt":
        from miles_tune.pbt import make_pbt

        scheduler, keep_state = make_pbt(
            seed=plan.args.seed, epochs=epochs, interval=int(plan.pbt_interval or 1), ranges=plan.pbt_ranges
        )
        return scheduler, [keep_state]
    from ray.tune.schedulers import ASHAScheduler

    asha = ASHAScheduler(
        time_attr="training_iteration",
        max_t=epochs,
        grace_period=min(plan.args.grace_period, epochs),
        reduction_factor=2,
    )
    return asha, []


def make_callbacks(plan: SearchPlan) -> list:
    """No retry of deterministic failures; every trial's MLflow run closed and complete."""
    from ray import tune

    from miles_tune.trainable import FAILED_KEY

    class NoRetryOfDeterministicFailures(tune.Callback):
        """A trial reports ``FAILED_KEY`` just before it raises an error a retry would only repeat
        (a bad setting or file, a diverging loss): its next failure is made its last one, so
        Tune marks it ERROR once instead of running it ``--max-failures`` more times. Infrastructure
        faults (a lost node, a killed worker) report nothing and keep their retries."""

        def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
            if FAILED_KEY in result:
                trial.max_failures = trial.num_failures

    callbacks: list = [NoRetryOfDeterministicFailures(), *result_loggers()]
    if plan.tracking_uri is not None:
        callbacks.append(make_run_closer(plan.base, plan.name))
    # under PBT another member may restore from a finished trial's checkpoint: see finish_pbt_storage
    if plan.pbt_interval is None:
        callbacks.append(make_superseded_dropper())
        if plan.args.keep_checkpoints != "all":
            callbacks.append(make_checkpoint_pruner(plan))
    return callbacks


def result_loggers() -> list:
    """Tune's CSV and JSON result files (``trials.parquet`` is built from them), and no
    TensorBoard files: Tune adds its TensorBoard logger unless one is given, and it cost the
    driver CPU on every result of every trial (MLflow is this tool's record of the metrics)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    class NoTensorBoard(TBXLoggerCallback):
        def __init__(self) -> None:  # the parent opens tensorboardX writers
            pass

        def log_trial_start(self, trial) -> None:  # noqa: ANN001
            pass

        def log_trial_result(self, iteration, trial, result) -> None:  # noqa: ANN001
            pass

        def log_trial_end(self, trial, failed: bool = False) -> None:  # noqa: ANN001
            pass

    class KeepOwnFile:
        """A trial Tune restarts in this driver (each PBT round pauses every member) keeps the
        result file the driver has been appending to: Ray's loggers copy the storage's copy
        over it, which is only as new as the last experiment snapshot, so rows were lost.
        A resumed search (a new driver, no local file) still starts from the storage's copy."""

        def _restore_from_remote(self, file_name: str, trial) -> None:  # noqa: ANN001
            local = Path(trial.local_path, file_name)
            if local.is_file() and local.stat().st_size > 0:
                return
            super()._restore_from_remote(file_name, trial)  # type: ignore[misc]

    class CSVResults(KeepOwnFile, CSVLoggerCallback):
        pass

    class JsonResults(KeepOwnFile, JsonLoggerCallback):
        pass

    return [CSVResults(), JsonResults(), NoTensorBoard()]


def make_checkpoint_pruner(plan: SearchPlan):  # noqa: ANN201 -> tune.Callback
    """``--keep-checkpoints best|none`` (:mod:`miles_tune.storage`), applied as each trial ends."""
    from types import SimpleNamespace

    from ray import tune

    from miles_tune.storage import remove_files
    from miles_tune.trainable import BEST_MODEL_FILE, TRAINER_FILE

    keep_best = plan.args.keep_checkpoints == "best"

    class PruneCheckpoints(tune.Callback):
        """Drops a finished trial's trainer state at once and, with ``best``, the best-epoch weights
        of every finished trial but the best so far (by :func:`best_result`, the rule that writes
        ``best_config.yaml``). Holds plain data only (Tune pickles it with the experiment)."""

        def __init__(self) -> None:
            self.pruned: set[str] = set()  # trials whose best_model.pt is gone

        def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
            if trial.checkpoint is None:
                return
            if not keep_best:
                remove_files(trial.checkpoint, (TRAINER_FILE, BEST_MODEL_FILE))
                return
            remove_files(trial.checkpoint, (TRAINER_FILE,))
            ended = [t for t in trials if t is trial or (t.status == "TERMINATED" and t.checkpoint)]
            views = [SimpleNamespace(metrics=t.last_result, config=t.config, trial=t) for t in ended]
            best = best_result(views, plan)
            for view in views:
                t = view.trial
                if (best is None or view is not best) and t.trial_id not in self.pruned:
                    remove_files(t.checkpoint, (BEST_MODEL_FILE,))
                    self.pruned.add(t.trial_id)

    return PruneCheckpoints()


def make_superseded_dropper():  # noqa: ANN201 -> tune.Callback
    """Each trial's older checkpoints, dropped once the experiment state on storage names a newer
    one (:mod:`miles_tune.storage`), so that Tune need not keep ``num_to_keep=1`` itself."""
    from ray import tune

    from miles_tune.storage import SNAPSHOT_KEY, drop_superseded, landed_snapshot

    class DropSupersededCheckpoints(tune.Callback):
        """Numbers Tune's experiment snapshots (its state is saved with each) and notes each trial's
        newest checkpoint at each. When the storage shows a snapshot newer than the one it showed
        last time, the upload that carried that earlier one has ended (Tune uploads one snapshot
        at a time, in order), so the state there names at least that snapshot's checkpoints:
        the older ones can go. Holds plain data only (Tune pickles it with the experiment)."""

        def __init__(self) -> None:
            self.snapshot = 0  # the last snapshot numbered
            self.landed = 0  # the newest snapshot seen on storage
            self.latest: dict[str, Any] = {}  # trial id -> its newest checkpoint
            self.marks: dict[int, dict[str, Any]] = {}  # snapshot -> trial id -> newest checkpoint then
            self.where: tuple[Any, str] | None = None  # the experiment folder: (file system, path)
            self.done: dict[str, str] = {}  # trial id -> the checkpoint whose older ones are gone

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):  # noqa: ANN001
            self.latest[trial.trial_id] = checkpoint
            if self.where is None:
                self.where = (trial.storage.storage_filesystem, trial.storage.experiment_fs_path)

        def get_state(self) -> dict[str, int]:  # Tune calls it while it writes each snapshot
            self.snapshot += 1
            self.marks[self.snapshot] = dict(self.latest)
            if self.where is not None:
                self.drop()
            return {SNAPSHOT_KEY: self.snapshot}

        def set_state(self, state: dict[str, int]) -> None:
            self.snapshot = self.landed = int(state.get(SNAPSHOT_KEY, 0))

        def drop(self) -> None:
            on_storage = landed_snapshot(*self.where)
            if on_storage <= self.landed:
                return
            for trial_id, checkpoint in self.marks.get(self.landed, {}).items():
                if self.done.get(trial_id) != checkpoint.path:  # an ended trial's folder: listed once
                    drop_superseded(checkpoint)
                    self.done[trial_id] = checkpoint.path
            self.landed = on_storage
            self.marks = {n: m for n, m in self.marks.items() if n >= on_storage}

    return DropSupersededCheckpoints()


def make_run_closer(base: dict[str, Any], search_name: str):  # noqa: ANN201 -> tune.Callback
    from ray import tune

    from miles_tune.trainable import CLOSED_BY_TAG, CLOSES_RUN_KEY, FAILED_KEY

    class CloseTrialRuns(tune.Callback):
        """Bring each ended trial's MLflow run up to date from its checkpoint and close it.

        A trial closes its own run when it finishes (in a background thread of its worker), but
        not when ASHA stops it, when Tune gives up on it, or when MLflow was down at its end: the
        driver does it then, and once more for every trial not complete at the end of the search
        (also of a ``--resume``d one). Holds plain data
        only: Tune pickles it with the experiment and restores it on ``--resume``.
        """

        def __init__(self) -> None:
            self.synced: set[str] = set()

        def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
            if (trial.last_result or {}).get(CLOSES_RUN_KEY):
                return  # the trial is closing its run itself; checked again when the search ends
            self.close(trial, "FINISHED")

        def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
            self.close(trial, "FAILED")

        def on_experiment_end(self, trials, **info):  # noqa: ANN001
            from miles_tune import tracking

            ended = {t.trial_id: t for t in trials if t.status in ("TERMINATED", "ERROR")}
            todo = [t for tid, t in ended.items() if tid not in self.synced]
            if todo:
                try:
                    fixed = todo[0].config["miles_tune"]["tracking"]
                    self.synced |= tracking.synced_trials(
                        fixed["uri"], fixed["experiment_id"], fixed["parent_run_id"]
                    )
                except Exception as exc:  # tracking never stops the search
                    log.warning("MLflow: cannot list the trial runs (%s)", tracking.first_line(exc))
            for t in todo:
                if t.trial_id not in self.synced:
                    self.close(t, "FAILED" if t.status == "ERROR" else "FINISHED")
            missing = [tid for tid in ended if tid not in self.synced]
            if missing:
                log.warning(
                    "MLflow: %d trial run(s) are not up to date (%s); `--resume --name %s` completes them",
                    len(missing),
                    ", ".join(missing[:5]),
                    search_name,
                )

        def close(self, trial, status: str) -> None:  # noqa: ANN001
            from miles_tune.tracking import TrialRun
            from miles_tune.trainable import (
                donor_of,
                end_tags,
                read_trial_checkpoint,
                run_spec,
                sampled_params,
            )

            last = trial.last_result or {}
            if FAILED_KEY in last:
                status = "FAILED"
            try:
                train_config = trial_config(base, sampled_params(trial.config)).to_dict()
                tags = {k: str(last[k]) for k in ("host", "node_id", "gpu_ids", "device") if k in last}
                spec = run_spec(trial.config, trial.trial_id, str(trial), train_config, tags)
                saved = read_trial_checkpoint(trial.checkpoint) if trial.checkpoint is not None else {}
                history, summary = saved.get("history", []), saved.get("summary")
                donor = donor_of(saved, trial.trial_id)
                run_id = None if donor else saved.get("mlflow_run_id")
                if run_id is None and not donor and donor_of(last, trial.trial_id) is None:
                    run_id = last.get("mlflow_run_id")  # (under PBT the last result may be a donor's)
                run = TrialRun(spec, run_id=run_id)
                if donor:  # PBT's exploit, then the search stopped: the run is the new lineage's
                    run.continue_lineage(donor, len(history))
                error = last.get(FAILED_KEY) or (trial_error(trial) if status == "FAILED" else None)
                scheduler = spec.tags.get("scheduler")  # a trial that did not end itself was stopped
                done = run.sync(
                    history,
                    status=status,
                    summary=summary,
                    error=error,
                    tags={
                        **end_tags(summary, history, scheduler if status == "FINISHED" else None),
                        CLOSED_BY_TAG: "search",
                    },
                    force=True,
                )
            except Exception as exc:  # tracking never stops the search
                log.warning("MLflow: cannot close the run of trial %s (%s)", trial.trial_id, exc)
                return
            if done:
                self.synced.add(trial.trial_id)

    return CloseTrialRuns()


def trial_error(trial) -> str | None:  # noqa: ANN001
    """The last line of the error Tune recorded for a trial (its exception), if any."""
    path = getattr(trial, "error_file", None)
    try:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()] if path else []
    except OSError:
        return None
    return lines[-1][:5000] if lines else None


def quiet_ray_defaults() -> None:
    """Silence Ray warnings that are noise for this workload (a checkpoint every epoch)."""
    import os

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")


def import_in_background(*modules: str):  # noqa: ANN201 -> threading.Thread
    """Import ``modules`` in a daemon thread (started); a failure is left for the real import."""
    import contextlib
    import importlib
    import threading

    def load() -> None:
        for name in modules:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    thread = threading.Thread(target=load, name="miles_tune-preload", daemon=True)
    thread.start()
    return thread


def keep_mlflow_out_of_tune() -> None:
    """For a search without MLflow: Tune's usage stats count the callbacks by class, for which
    they import Ray's MLflow integration, and that module imports MLflow at its top (1-2 s of
    the driver's CPU, 3.6 s under py-spy in a search on 2 busy cores). Load that module once
    with MLflow hidden: it then holds ``mlflow = None``, Ray's own "not installed", which only
    Ray's ``setup_mlflow`` and ``MLflowLoggerCallback`` read (miles_tune uses neither). MLflow
    itself stays importable."""
    if "mlflow" in sys.modules or "ray.air.integrations.mlflow" in sys.modules:
        return
    sys.modules["mlflow"] = None  # type: ignore[assignment]  (Python's "import fails" marker)
    try:
        import ray.air.integrations.mlflow  # noqa: F401
    except ImportError:
        pass
    finally:
        del sys.modules["mlflow"]


def connect_ray(plan: SearchPlan) -> None:
    import ray

    quiet_ray_defaults()

    if not ray.is_initialized():
        # Tune imports MLflow in every search (its usage stats count the callbacks' classes):
        # with tracking, import it while this process waits for Ray's own processes to start
        if plan.tracking_uri is None:
            keep_mlflow_out_of_tune()
        preload = ("mlflow",) if plan.tracking_uri is not None else ()
        loading = import_in_background(*preload, "pandas", "pyarrow.parquet")  # and the export's
        options: dict[str, Any] = {}
        if plan.args.address is None:  # a local Ray, ours: its workers import torch at their start
            hook = "preload" if plan.tracking_uri is None else "preload_with_tracking"
            options["runtime_env"] = {"worker_process_setup_hook": f"miles_tune.trainable.{hook}"}
        ray.init(address=plan.args.address, log_to_driver=plan.args.verbose > 1, **options)
        loading.join()
    # refuses what no node can hold, drops GPUs no node can have, waits for an autoscaled node
    from miles_tune.resources import check_trial_resources

    plan.cpus_per_trial, plan.gpus_per_trial = check_trial_resources(plan.cpus_per_trial, plan.gpus_per_trial)


def run_search(plan: SearchPlan, extra_callbacks: list | None = None):  # noqa: ANN201 -> ResultGrid
    """Lock the name, check tracking, connect, run (or restore) the Tuner; returns Tune's ResultGrid.

    Everything that can refuse the search does so before any MLflow run is written: the
    name lock, what there is to restore, the tracking store, the resources.
    """
    from ray import tune

    from miles_tune import tracking
    from miles_tune.locks import NameLock
    from miles_tune.trainable import trial_trainable

    args = plan.args
    experiment_path = storage_join(plan.storage, plan.name)
    with NameLock(lock_path(plan), f"the search name {plan.name!r}"):
        can_restore = tune.Tuner.can_restore(experiment_path)
        if args.resume and not can_restore:
            raise ConfigError(f"--resume: nothing to restore at {experiment_path}")
        if not args.resume and can_restore:
            raise ConfigError(
                f"a search named {plan.name!r} exists at {experiment_path}; pass --resume or another --name"
            )
        if not args.resume and (plan.results_dir / "trials.parquet").exists():
            raise ConfigError(f"{plan.results_dir} holds the results of another search; pick another --name")
        if plan.tracking_uri is not None:
            tracking.prepare_store(plan.tracking_uri)
        connect_ray(plan)

        fixed: dict[str, Any] = {"base": plan.base, "metric": plan.metric}
        if plan.seeds:  # the Repeater's trial index -> the trial's seed (trainable.sampled_params)
            fixed["seeds"] = list(plan.seeds)
        if args.system_metrics is not None:
            fixed["system_metrics"] = args.system_metrics
        parent_run_id = None
        space_used = write_space_used(plan)
        if plan.tracking_uri is not None:
            experiment_id = tracking.ensure_experiment(plan.tracking_uri, args.experiment)
            tags = search_tags(plan)
            existing = tracking.find_parent_run(plan.tracking_uri, experiment_id, plan.name)
            if existing is not None and not args.resume:
                raise ConfigError(
                    f"MLflow experiment {args.experiment!r} already has a search named {plan.name!r} "
                    f"(run {existing}); pick another --name, or --resume it"
                )
            parent_run_id = tracking.start_parent_run(
                plan.tracking_uri,
                experiment_id,
                plan.name,
                {**tracking.source_tags(), **tags},
                parent_params(plan),
                artifacts=[space_used],
            )
            plan.mlflow_links = tracking.ui_links(
                plan.tracking_uri, experiment_id, parent_run_id, plan.metric
            )
            fixed["tracking"] = {
                "uri": plan.tracking_uri,
                "experiment_id": experiment_id,
                "parent_run_id": parent_run_id,
                "tags": tags,
                # PBT's exploit may retire a trial's run after any epoch: each is logged at once
                "sync_every_s": 0.0 if args.scheduler == "pbt" else tracking.SYNC_EVERY_S,
            }

        trainable = tune.with_resources(
            trial_trainable(), {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial}
        )
        status = "FAILED"
        results = None
        try:
            if args.resume:
                tuner = tune.Tuner.restore(experiment_path, trainable=trainable, resume_errored=True)
            else:
                tuner = make_tuner(plan, trainable, fixed, extra_callbacks)
            with tune_settings(plan):
                results = tuner.fit()
            status = "FINISHED" if results.num_errors == 0 else "FAILED"
            if interrupted(results, plan):
                status = "KILLED"  # --resume sets it RUNNING again
            elif plan.pbt_interval is not None:
                finish_pbt_storage(results, plan)
            else:  # what the last snapshots had not let go yet
                for result in results:
                    if result.checkpoint is not None:
                        drop_superseded(result.checkpoint)
        finally:
            summary = export_results(results, plan) if results is not None else {}
            if parent_run_id is not None:
                finish_parent(plan, parent_run_id, summary, status)
    return results


@contextlib.contextmanager
def tune_settings(plan: SearchPlan):  # noqa: ANN201
    """Tune's settings read from the environment, for the length of ``fit()`` (a value the user
    set wins): snapshots of the experiment state every :data:`~miles_tune.storage.SNAPSHOT_PERIOD_S`
    (DropSupersededCheckpoints waits for them), and a trial's list of checkpoints without the
    metrics of each (every snapshot holds that list, and no one reads those metrics)."""
    from miles_tune.storage import SNAPSHOT_PERIOD_S

    if plan.pbt_interval is not None:  # PBT keeps interval + 3 checkpoints, by Tune (miles_tune.pbt)
        yield
        return
    wanted = {
        "TUNE_GLOBAL_CHECKPOINT_S": str(SNAPSHOT_PERIOD_S),
        "TUNE_ONLY_STORE_CHECKPOINT_SCORE_ATTRIBUTE": "1",
    }
    added = [k for k in wanted if k not in os.environ]
    os.environ.update({k: wanted[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def finish_pbt_storage(results, plan: SearchPlan) -> None:  # noqa: ANN001
    """A finished PBT search's ``--keep-checkpoints``, applied once no member can restore from
    another any more: the older checkpoints go, then what the pruner does per trial otherwise
    (a trial that errored keeps its last checkpoint whole, for ``--resume``)."""
    from miles_tune.pbt import sweep_older_checkpoints
    from miles_tune.storage import remove_files
    from miles_tune.trainable import BEST_MODEL_FILE, TRAINER_FILE

    ended = [r for r in results if r.checkpoint is not None]
    sweep_older_checkpoints([r.checkpoint for r in ended])
    keep = plan.args.keep_checkpoints
    if keep == "all":
        return
    best = best_result(results, plan) if keep == "best" else None
    for result in ended:
        if result.error is None:
            weights = (TRAINER_FILE,) if result is best else (TRAINER_FILE, BEST_MODEL_FILE)
            remove_files(result.checkpoint, weights)


def search_tags(plan: SearchPlan) -> dict[str, str]:
    """The parent run's tags, which every trial's run copies: what was searched and how, and
    ``stage`` (grid, unimodal, seeds or search), which the analysis files the search under."""
    args = plan.args
    tags = {
        "dataset": plan.space.dataset,
        "method": args.method,
        "fusion": args.fusion,
        "seed": str(args.seed),
        "searcher": plan.searcher,
        "scheduler": args.scheduler,
        "stage": plan.stage,
    }
    if plan.variant:
        tags["variant"] = plan.variant
    if plan.grid:
        tags["grid"] = ",".join(plan.grid)
    if plan.seeds:
        tags["seeds"] = ",".join(str(s) for s in plan.seeds)
    if plan.from_trial is not None:
        tags["from_trial"] = plan.from_trial
    return tags


def parent_params(plan: SearchPlan) -> dict[str, str]:
    """The parent run's params, named as its children's: each searched parameter with its
    distribution (``tau`` = ``uniform(0.0, 0.5)``, a grid's ``grid(0.1, 0.3)``), the fixed config
    under ``config.``, and the resources each trial was given (after the cluster's check)."""
    from miles_tune.tracking import flatten

    params = plan.space.method(plan.args.method).params
    grid = dict(plan.grid)
    if plan.seeds:
        grid["seed"] = plan.seeds
    out = {
        **{k: p.describe() for k, p in params.items()},
        **{k: f"grid({', '.join(str(v) for v in values)})" for k, values in grid.items()},
        "num_samples": str(plan.num_samples),
        "space": str(plan.space.path),
        "gpus_per_trial": str(plan.gpus_per_trial),
        "cpus_per_trial": str(plan.cpus_per_trial),
        **flatten(plan.base, "config."),
    }
    if plan.args.from_best is not None:
        out["from_best"] = str(Path(plan.args.from_best).expanduser().resolve())
    if plan.pbt_interval is not None:  # what PBT mutates, and how often
        out["pbt.perturbation_interval"] = str(plan.pbt_interval)
        for name, (low, high) in plan.pbt_ranges.items():
            start = out.get(name) or f"loguniform({low}, {high})"
            out[name] = f"{start}, mutated by PBT within [{low}, {high}]"
    return out


def write_space_used(plan: SearchPlan) -> Path:
    """``search_space.yaml`` in the results folder: the space as this search used it."""
    plan.results_dir.mkdir(parents=True, exist_ok=True)
    path = plan.results_dir / "search_space.yaml"
    resources = {"gpus_per_trial": plan.gpus_per_trial, "cpus_per_trial": plan.cpus_per_trial}
    used = plan.space.as_used(plan.args.method, plan.base, plan.num_samples, resources)
    path.write_text(yaml.safe_dump(used, sort_keys=False))
    return path


def finish_parent(plan: SearchPlan, run_id: str, summary: dict[str, Any], status: str) -> None:
    """The best trial's metrics and child run on the parent, with the search's three files."""
    from miles_tune import tracking

    metrics = dict(summary.get("best_metrics", {}))
    if summary.get("best_epoch") is not None:
        metrics["best_epoch"] = summary["best_epoch"]
    files = [plan.results_dir / f for f in ("best_config.yaml", "trials.parquet", "search_space.yaml")]
    try:
        tracking.finish_parent_run(
            plan.tracking_uri,
            run_id,
            metrics,
            status,
            tags={"best_run_id": summary.get("best_run_id"), "best_trial": summary.get("best_trial")},
            artifacts=files,
        )
    except Exception as exc:  # tracking never stops the search
        log.warning("MLflow: cannot close the search's run (%s)", tracking.first_line(exc))


def lock_path(plan: SearchPlan) -> Path:
    """Beside the search's Tune state on a file system (local or NFS); object stores (S3, GCS) have
    no atomic lock, so there it is kept beside the search's results on the driver's machine."""
    if is_remote(plan.storage):
        return plan.results_dir / LOCK_FILE
    return Path(plan.storage) / plan.name / LOCK_FILE


def make_tuner(plan: SearchPlan, trainable, fixed: dict[str, Any], extra_callbacks: list | None):  # noqa: ANN001, ANN201
    from ray import tune

    from miles_tune.trainable import trial_name

    args = plan.args
    param_space = {k: p.to_tune() for k, p in plan.space.method(args.method).params.items()}
    param_space.update({k: tune.grid_search(v) for k, v in plan.grid.items()})
    # PBT's multipliers start log-uniform over their range, drawn by the seeded searcher
    for name, (low, high) in plan.pbt_ranges.items():
        if name.startswith("lr_mult."):
            param_space[name] = tune.loguniform(low, high)
    if plan.seeds and plan.searcher != "optuna":  # the Repeater gives Optuna's trials their seeds
        param_space["seed"] = tune.grid_search(plan.seeds)
    param_space["miles_tune"] = fixed
    scheduler, scheduler_callbacks = make_scheduler(plan)
    keep = None  # while a trial runs: DropSupersededCheckpoints; then --keep-checkpoints
    if plan.pbt_interval is not None:
        from miles_tune.pbt import checkpoints_to_keep

        keep = checkpoints_to_keep(plan.pbt_interval)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=plan.metric,
            mode="max",
            search_alg=make_searcher(plan),
            scheduler=scheduler,
            num_samples=plan.tune_num_samples,
            max_concurrent_trials=args.max_concurrent or None,
            # one worker process per concurrent trial, for the whole search: imports, CUDA context
            # and dataset paid once (miles_tune.trainable: what each trial keeps its own)
            reuse_actors=True,
            trial_name_creator=lambda t: trial_name(args.method, t.experiment_tag),
            trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=plan.name,
            storage_path=plan.storage,
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
            callbacks=make_callbacks(plan) + scheduler_callbacks + list(extra_callbacks or []),
            verbose=args.verbose,
        ),
    )


def interrupted(results, plan: SearchPlan) -> bool:  # noqa: ANN001
    """True when fit() returned early (Ctrl-C): fewer trials than asked, some not terminated, or
    some that never reported. On a stop signal Tune marks *every* trial TERMINATED, those it had
    created but not started included (random search creates them all at once), so the statuses
    alone do not tell; the state Tune saved at the signal does, for trials that were running."""
    trials = getattr(getattr(results, "_experiment_analysis", None), "trials", None)
    if trials is None:
        return len(results) < plan.trials
    if len(trials) < plan.trials or any(t.status not in ("TERMINATED", "ERROR") for t in trials):
        return True
    return any(not t.last_result for t in trials if t.status == "TERMINATED") or saved_unfinished(plan)


def saved_unfinished(plan: SearchPlan) -> bool:
    """Whether the experiment state Tune saved last holds a trial that had not finished."""
    from ray.tune import ExperimentAnalysis

    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its warning about trials without results is the point here
    try:
        saved = ExperimentAnalysis(storage_join(plan.storage, plan.name)).trials
    except Exception:  # no state to read: nothing says it was cut short
        return False
    finally:
        quiet.setLevel(level)
    return any(t.status not in ("TERMINATED", "ERROR") for t in saved)


def export_results(results, plan: SearchPlan) -> dict[str, Any]:  # noqa: ANN001
    """best_config.yaml (the best trial's full TrainConfig + metrics) and trials.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from miles_tune.trainable import TRIAL_INDEX, sampled_params

    plan.results_dir.mkdir(parents=True, exist_ok=True)
    # the same in every row: an untracked search's export says what it was on its own
    constant = {
        "search": plan.name,
        "dataset": plan.space.dataset,
        "method": plan.args.method,
        "variant": plan.variant,
        "fusion": plan.args.fusion,
        "stage": plan.stage,
        "grid": ",".join(plan.grid),
        "from_trial": plan.from_trial or "",
        "gpus_per_trial": plan.gpus_per_trial,
        "cpus_per_trial": plan.cpus_per_trial,
    }
    rows: list[dict[str, Any]] = []
    for result in results:
        if result.metrics_dataframe is None:
            continue
        trial_id = (result.metrics or {}).get("trial_id")
        params = sampled_params(result.config or {})
        # one row per epoch: an epoch whose checkpoint a lost node never confirmed is reported
        # again by the retry, and the retry's row is the one that counts
        by_epoch: dict[Any, dict[str, Any]] = {}
        for i, row in enumerate(result.metrics_dataframe.to_dict("records")):
            epoch = row.get("epoch")
            key = ("epoch", epoch) if isinstance(epoch, (int, float)) and epoch == epoch else ("row", i)
            by_epoch[key] = {
                "trial_id": trial_id,
                **constant,
                **{f"config/{k}": v for k, v in params.items()},
                **{k: v for k, v in row.items() if k != f"config/{TRIAL_INDEX}"},  # it is config/seed
            }
        rows.extend(by_epoch.values())
    columns = list(dict.fromkeys(k for r in rows for k in r))
    table = pa.table({k: [r.get(k) for r in rows] for k in columns}) if rows else pa.table({})
    pq.write_table(table, plan.results_dir / "trials.parquet")
    summary = summarise(results, plan)
    if "best_config" in summary:
        (plan.results_dir / "best_config.yaml").write_text(
            yaml.safe_dump(
                {
                    "config": summary["best_config"],
                    **{k: summary[k] for k in ("best_trial", "best_metrics")},
                    **({"best_model": summary["best_model"]} if summary.get("best_model") else {}),
                },
                sort_keys=False,
            )
        )
    return summary


def best_model_path(result) -> str | None:  # noqa: ANN001
    """The best trial's best-epoch weights (``best_model.pt``, kept by ``--keep-checkpoints
    best|all``) as a local path, or None (not kept, or on remote storage): what UMT's teachers
    and other readers of ``best_config.yaml`` load."""
    from miles_tune.trainable import BEST_MODEL_FILE

    checkpoint = getattr(result, "checkpoint", None)
    try:
        local = checkpoint is not None and checkpoint.filesystem.type_name == "local"
    except Exception:  # not a Tune checkpoint
        local = False
    path = Path(checkpoint.path) / BEST_MODEL_FILE if local else None
    return str(path) if path is not None and path.is_file() else None


def summarise(results, plan: SearchPlan) -> dict[str, Any]:  # noqa: ANN001
    """The search in a few figures: trials, errors, and the best trial (config, epoch, metrics, run)."""
    from miles_tune.trainable import sampled_params, trial_name

    summary: dict[str, Any] = {
        "search": plan.name,
        "metric": plan.metric,
        "trials": len(results),
        "errors": results.num_errors,
    }
    best = best_result(results, plan)
    if best is not None and best.config is not None:
        summary.update(
            {
                "best_config": trial_config(plan.base, sampled_params(best.config)).to_dict(),
                "best_trial": best.metrics.get("trial_id"),
                "best_name": trial_name(plan.args.method, str(best.metrics.get("experiment_tag", ""))),
                "best_run_id": best.metrics.get("mlflow_run_id"),
                "best_params": sampled_params(best.config),
                "best_epoch": best.metrics.get("best_epoch"),
                "best_model": best_model_path(best),
                "best_metrics": {
                    k: v
                    for k, v in best.metrics.items()
                    if k.startswith("best/") and isinstance(v, (int, float))
                },
            }
        )
    return summary


def best_result(results, plan: SearchPlan):  # noqa: ANN001, ANN201 -> ray.tune.Result | None
    """The best trial by the rule that selects epochs (records.rank_key): the higher searched
    metric, then the lower loss of the same head at the selected epoch, then the earlier trial.
    (Tune's get_best_result keeps whichever tied trial it meets first, an order that is not the
    trials'.) Trials without the metric are skipped.

    With ``--seeds`` the configurations are ranked, by their mean over seeds (what the searcher
    saw, and what the analysis selects by), and the best trial of the best one is returned: its
    ``best_config.yaml`` is then the configuration that ``--from-best ... --seeds`` should re-run."""
    import json
    import statistics

    from miles_tune.records import rank_key, tie_break_key
    from miles_tune.trainable import sampled_params

    loss_key = "best/" + tie_break_key(plan.metric.removeprefix("best/"))
    configurations: dict[str, list[tuple[float, float, tuple[float, int], Any]]] = {}
    for order, result in enumerate(results):
        metrics = result.metrics or {}
        value = metrics.get(plan.metric)
        if not isinstance(value, (int, float)):
            continue
        loss = metrics.get(loss_key)
        number, _, _ = str(metrics.get("experiment_tag", "")).partition("_")
        position = (int(number) if number.isdigit() else math.inf, order)
        params = {k: v for k, v in sampled_params(result.config or {}).items() if k != "seed"}
        key = json.dumps(params, sort_keys=True, default=str)
        loss = loss if isinstance(loss, (int, float)) else math.nan
        configurations.setdefault(key, []).append((value, loss, position, result))
    if not configurations:
        return None

    def mean_rank(trials: list) -> tuple:  # noqa: ANN001
        value = statistics.fmean(t[0] for t in trials)
        loss = statistics.fmean(t[1] for t in trials)
        return rank_key(value, loss), min(t[2] for t in trials)

    best = min(configurations.values(), key=mean_rank)
    return min(best, key=lambda t: (rank_key(t[0], t[1]), t[2]))[3]


def shown_metrics(metrics: dict[str, float], selection: str) -> dict[str, float]:
    """What the search prints of its best trial: the selection metric, and that metric on test
    for the fused head and each unimodal head (best_config.yaml and MLflow hold every figure)."""
    from miles_tune.records import MM, is_missing_modality_head, without_head

    name = selection.rsplit("/", 1)[-1]
    out = {selection: metrics[selection]} if selection in metrics else {}
    for key, value in metrics.items():
        parts = key.split("/")  # best/test/<head>/<metric>
        if len(parts) == 4 and parts[1] == "test" and parts[3] == name:
            head = parts[2]
            if head == MM or not (head.startswith(without_head("")) or is_missing_modality_head(head)):
                out[key] = value
    return out


def format_best(summary: dict[str, Any], plan: SearchPlan) -> str:
    from miles_tune.tracking import default_tracking_uri

    lines = [f"search {summary['search']}: {summary['trials']} trials, {summary['errors']} errored"]
    if "best_trial" in summary:
        lines.append(
            f"best trial {summary['best_name']} ({summary['best_trial']}, epoch {summary['best_epoch']}): "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in summary["best_params"].items()
            )
        )
        for k, v in sorted(shown_metrics(summary["best_metrics"], plan.metric).items()):
            lines.append(f"  {k:<24} {v:.4f}")
        lines.append(f"wrote best_config.yaml, trials.parquet and search_space.yaml in {plan.results_dir}")
    if plan.mlflow_links:
        uri = plan.tracking_uri or ""
        if not uri.startswith(("http://", "https://")):
            start = (
                "make mlflow-ui" if uri == default_tracking_uri() else f"mlflow ui --backend-store-uri {uri}"
            )
            lines.append(f"MLflow: {start}, then open")
        lines.append(f"  runs:   {plan.mlflow_links['runs']}")
        lines.append(f"  trials: {plan.mlflow_links['trials']}  (this search, best first)")
    return "\n".join(lines)


def format_storage(plan: SearchPlan) -> str:
    """What the search holds in its storage folder now (after ``--keep-checkpoints``)."""
    from miles_tune.storage import format_bytes, storage_bytes

    path = storage_join(plan.storage, plan.name)
    used = storage_bytes(path)
    shown = "cannot be listed" if used is None else format_bytes(used)
    return f"storage: {shown} in {path} (--keep-checkpoints {plan.args.keep_checkpoints})"


def main(argv: list[str] | None = None) -> int:
    try:
        plan = plan_search(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import ray

    ours = not ray.is_initialized()  # a Ray we start here is stopped here
    try:
        results = run_search(plan)  # writes the results files
        summary = summarise(results, plan)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if ours and ray.is_initialized():
            ray.shutdown()
    print(format_best(summary, plan))
    print(format_storage(plan))
    if interrupted(results, plan):
        print(f"interrupted: finish it with --resume --name {plan.name} (same arguments)", file=sys.stderr)
        return 130
    return 0 if summary.get("best_trial") else 1


if __name__ == "__main__":
    raise SystemExit(main())
