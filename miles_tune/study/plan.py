"""What a study runs: its budget, its rows (arms), and every search, named deterministically.

Pure planning: nothing here starts Ray or touches MLflow. :func:`plan_study` parses the
command line, resolves the budget, builds the list of :class:`SearchSpec` in stage order,
and validates every search that samples configurations with the search's own planner
(``miles_tune.search.plan_search``), so that a bad setting is refused before anything runs.

An *arm* is one row of the results tables: a registered method, or a method under a named
setting (``--variant``), e.g. ``vanilla-noaux``. Every arm of the method stage gets the same
searcher, number of trials, epochs and early-stopping rule, and exactly one known point
first (the space's first: the method's published default), the rest sampled.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miles_tune.errors import ConfigError

#: the paper's sensitivity grids (Tables IV and V)
TAU_GRID = (0.0, 0.1, 0.2, 0.3, 0.5)
MU_GRID = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
#: OGM's official optimiser (GeWu-Lab/OGM-GE_CVPR2022, main.py defaults): SGD with momentum
#: 0.9 and weight decay 1e-4, the rate × 0.1 at epoch 70 of 100
OGM_OFFICIAL = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "lr_gamma": 0.1}
OGM_STEP_FRACTION = 0.7
#: G-Blend's held-out fraction of the training set (MultiBench's v_rate)
GBLEND_HOLDOUT = 0.08
STAGES = ("unimodal", "methods", "seeds", "sensitivity", "u_source", "report")
#: settings the study gives every search itself
OWN_SETTINGS = {
    "epochs": "the study sets every trial's epochs; pass --epochs",
    "seed": "the study sets the training seeds (--seed for the searches, 1..K for the re-runs)",
}


@dataclass(frozen=True)
class Budget:
    """Trials per search, seeds per re-run and per grid point, epochs (None: the space's),
    and the fusions studied unless ``--fusions`` says."""

    trials: int
    seeds: int
    grid_seeds: int
    epochs: int | None
    fusions: tuple[str, ...]
    about: str


BOTH = ("concat", "sum")
BUDGETS = {
    "tiny": Budget(2, 2, 1, 3, ("concat",), "every stage, one fusion, 2 trials per search; for tests"),
    # 8 trials: what fits an hour on 2 cores while a trial costs ~8 s, 5 of them start-up and
    # tracking (the search-throughput issue); raise it once trials cost their training only
    "small": Budget(
        8, 3, 1, None, BOTH, "a meaningful study of one dataset on a 2-core machine, under an hour"
    ),
    "paper": Budget(
        80, 3, 2, None, BOTH, "the paper's protocol: 80 random trials per method and fusion, full epochs"
    ),
}


@dataclass(frozen=True)
class Arm:
    """One row of the tables: a method, or a method under a named setting (``variant``)."""

    method: str
    variant: str = ""
    settings: tuple[tuple[str, Any], ...] = ()  # --set NAME=VALUE, in order
    why: str = ""

    @property
    def label(self) -> str:
        return f"{self.method}-{self.variant}" if self.variant else self.method


@dataclass
class SearchSpec:
    """One search of the study; its command line is built when it runs (:func:`search_argv`)."""

    name: str
    stage: str  # a study stage (STAGES)
    arm: Arm
    fusion: str
    trials: int
    kind: str = "search"  # search (sampled), unimodal, seeds (--from-best), grid (--from-best)
    modality: str = ""  # unimodal searches
    from_best: str = ""  # the search whose best_config.yaml this one re-runs
    grid: tuple[str, tuple[float, ...]] | None = None
    seeds: tuple[int, ...] = ()

    @property
    def needs(self) -> list[str]:
        return [self.from_best] if self.from_best else []


@dataclass
class StudyPlan:
    args: argparse.Namespace
    name: str
    out: Path
    budget: Budget
    budget_name: str
    epochs: int
    modalities: tuple[str, ...]
    arms: list[Arm]
    searches: list[SearchSpec]
    tracking_uri: str
    storage: str
    settings: dict[str, Any] = field(default_factory=dict)  # what must match on a re-run
    #: (cpus, gpus) per trial once the cluster has checked them: every search then asks for
    #: exactly these (and a dropped GPU request is reported once, not once per search)
    resources: tuple[float, float] | None = None

    @property
    def results(self) -> Path:
        return self.out / "runs"

    @property
    def report_dir(self) -> Path:
        return Path(self.args.report_out).resolve() if self.args.report_out else self.out / "report"

    def search(self, name: str) -> SearchSpec:
        return next(s for s in self.searches if s.name == name)

    def trial_epochs(self, spec: SearchSpec) -> int:
        return spec.trials * self.epochs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m miles_tune.study",
        description="The paper's protocol in one command: unimodal references, every method and "
        "fusion searched with the same budget, the best configurations re-run with seeds, MILES's "
        "tau and mu grids, u from the training set, then every table and figure.",
    )
    p.add_argument("--dataset", required=True, help="a search space in search_spaces/")
    p.add_argument(
        "--out", required=True, help="the study's folder: manifest, MLflow store, Tune storage, report"
    )
    p.add_argument("--budget", default="small", choices=list(BUDGETS))
    p.add_argument("--trials", type=int, help="trials per search (overrides the budget)")
    p.add_argument(
        "--seeds", type=int, help="seeds per re-run of a best configuration (overrides the budget)"
    )
    p.add_argument(
        "--epochs", type=int, help="epochs of every trial (default: the budget's, else the space's)"
    )
    p.add_argument(
        "--methods",
        nargs="+",
        help="methods or rows (vanilla-noaux) to compare; a method brings its controls (default: all)",
    )
    p.add_argument("--fusions", nargs="+", choices=list(BOTH), help="default: the budget's (tiny: concat)")
    p.add_argument("--searcher", default="random", choices=["random", "optuna"])
    p.add_argument("--scheduler", default="none", choices=["none", "asha"])
    p.add_argument("--grace-period", type=int, default=2, help="ASHA: epochs before a trial can be stopped")
    p.add_argument(
        "--name", help="the study's name: its MLflow experiment and search prefix (default: --out's name)"
    )
    p.add_argument("--address", help="an existing Ray cluster ('auto' on a cluster node)")
    p.add_argument("--storage", help="Tune storage: a path or s3://... (default: OUT/ray_results)")
    p.add_argument("--tracking-uri", help="MLflow (default: sqlite:///OUT/mlflow.db)")
    p.add_argument("--report-out", help="where the report goes (default: OUT/report)")
    p.add_argument("--cpus-per-trial", type=float, help="default: the space's")
    p.add_argument("--gpus-per-trial", type=float, help="default: the space's")
    p.add_argument("--max-concurrent", type=int, default=0, help="0 = as many as resources allow")
    p.add_argument(
        "--seed", type=int, default=0, help="every search's searcher seed and its trials' training seed"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a fixed setting for every search, e.g. data.n_train=500 (as in miles_tune.search)",
    )
    p.add_argument("--plan", action="store_true", help="print the plan and stop (nothing runs)")
    p.add_argument("--verbose", type=int, default=0, help="Tune verbosity 0-3 of each search")
    return p


def positive(flag: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{flag} must be a positive integer, got {value}")


def make_arms(methods: list[str], epochs: int) -> list[Arm]:
    """Every method's row, and the controls a reviewer asks for, in a fixed order."""
    step = max(1, round(OGM_STEP_FRACTION * epochs))
    sgd = tuple(OGM_OFFICIAL.items()) + (("lr_step_size", step),)
    arms: list[Arm] = []
    for m in methods:
        if m == "vanilla":
            arms.append(Arm("vanilla", settings=(("aux_losses", True),), why="Eq. 3's loss, as MILES"))
            arms.append(Arm("vanilla", "noaux", (("aux_losses", False),), "L_mm only (heads are probes)"))
        elif m == "gblend":
            arms.append(
                Arm(
                    "gblend",
                    "train-holdout",
                    (("holdout", GBLEND_HOLDOUT),),
                    f"weights estimated on {GBLEND_HOLDOUT:.0%} of train, not on the validation split",
                )
            )
        elif m in ("ogm", "ogm-ge"):
            arms.append(Arm(m, why="the loop's Adam"))
            arms.append(Arm(m, "sgd", sgd, f"official: SGD 0.9, wd 1e-4, lr x0.1 at epoch {step}"))
        else:
            arms.append(Arm(m))
    return arms


def select_arms(all_arms: list[Arm], wanted: list[str] | None) -> list[Arm]:
    if not wanted:
        return all_arms
    known = {a.label for a in all_arms} | {a.method for a in all_arms}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ConfigError(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    return [a for a in all_arms if a.label in wanted or a.method in wanted]


def plan_study(argv: list[str] | None = None) -> StudyPlan:
    """Parse and validate everything before Ray starts; raises ConfigError naming the flag."""
    from miles_tune.balance import list_methods
    from miles_tune.search import check_name, plan_search
    from miles_tune.spaces import load_search_space
    from miles_tune.tracking import normalise_tracking_uri

    args = build_parser().parse_args(argv)
    for flag, value in (("--trials", args.trials), ("--seeds", args.seeds), ("--epochs", args.epochs)):
        positive(flag, value)
    for pair in args.set:  # what the study sets itself, per search, is not a --set
        key = pair.partition("=")[0].strip()
        if key in OWN_SETTINGS:
            raise ConfigError(f"--set {key}: {OWN_SETTINGS[key]}")
    out = Path(args.out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    name = check_name(args.name or out.name, "--name" if args.name else "--out (its folder name)")
    budget = BUDGETS[args.budget]
    args.fusions = list(dict.fromkeys(args.fusions or budget.fusions))
    space = load_search_space(args.dataset)
    epochs = args.epochs or budget.epochs or int(space.train.get("epochs", 30))
    trials = args.trials or budget.trials
    seeds = args.seeds or budget.seeds
    grid_seeds = min(budget.grid_seeds, seeds)
    first_rows = ("vanilla", "miles")  # the reference and the method under study lead the tables
    registered = [m for m in (*first_rows, *list_methods()) if m != "unimodal" and m in space.methods]
    registered = list(dict.fromkeys(registered))
    arms = select_arms(make_arms(registered, epochs), args.methods)
    if not arms:
        raise ConfigError("--methods: nothing left to compare")
    storage = args.storage or str(out / "ray_results")
    tracking_uri = normalise_tracking_uri(args.tracking_uri or f"sqlite:///{out / 'mlflow.db'}")

    # the dataset's modalities, and its settings checked once, through the search's planner
    first = plan_search(
        search_argv_common(args, name, storage, tracking_uri, epochs) + ["--method", "vanilla"]
    )
    from miles_tune.data import probe_dataset

    modalities = tuple(probe_dataset(first.base["dataset"], **first.base["data"]).modalities)

    specs = make_searches(name, arms, modalities, args.fusions, trials, seeds, grid_seeds)
    plan = StudyPlan(
        args=args, name=name, out=out, budget=budget, budget_name=args.budget, epochs=epochs,
        modalities=modalities, arms=arms, searches=specs, tracking_uri=tracking_uri, storage=storage,
    )  # fmt: skip
    plan.settings = {
        "dataset": args.dataset,
        "budget": args.budget,
        "trials": trials,
        "seeds": seeds,
        "grid_seeds": grid_seeds,
        "epochs": epochs,
        "arms": [a.label for a in arms],
        "fusions": list(args.fusions),
        "searcher": args.searcher,
        "scheduler": args.scheduler,
        "grace_period": args.grace_period,
        "seed": args.seed,
        "set": list(args.set),
        "storage": storage,
        "tracking_uri": tracking_uri,
    }
    for spec in specs:  # every sampled search, as it will run (unimodal rates: see search_argv)
        if spec.kind in ("search", "unimodal"):
            plan_search(search_argv(plan, spec, validating=True))
    return plan


def make_searches(
    name: str,
    arms: list[Arm],
    modalities: tuple[str, ...],
    fusions: list[str],
    trials: int,
    seeds: int,
    grid_seeds: int,
) -> list[SearchSpec]:
    """Every search of the study, in stage order, each named ``<study>-<kind>-<row>-<fusion>``."""
    seed_list = tuple(range(1, seeds + 1))  # not the selecting search's seed (0): no winner's curse
    specs = [
        SearchSpec(unimodal_search(name, m), "unimodal", Arm("unimodal"), "concat", trials, "unimodal", m)
        for m in modalities
    ]
    for arm in arms:
        for fusion in fusions:
            specs.append(SearchSpec(f"{name}-search-{arm.label}-{fusion}", "methods", arm, fusion, trials))
    for arm in arms:
        for fusion in fusions:
            specs.append(seeds_of(name, arm, fusion, seed_list))
    miles = next((a for a in arms if a.label == "miles"), None)
    if miles is None:  # the grids and Table VI are about MILES
        return specs
    for param, values in (("tau", TAU_GRID), ("mu", MU_GRID)):
        for fusion in fusions:
            specs.append(
                SearchSpec(
                    f"{name}-grid-{param}-{fusion}", "sensitivity", miles, fusion,
                    len(values) * grid_seeds, "grid", from_best=f"{name}-search-miles-{fusion}",
                    grid=(param, values), seeds=seed_list[:grid_seeds],
                )
            )  # fmt: skip
    utrain = Arm("miles", "utrain", (("u_source", "train"),), "u from the training set (Table VI)")
    for fusion in fusions:
        specs.append(SearchSpec(f"{name}-search-miles-utrain-{fusion}", "u_source", utrain, fusion, trials))
        specs.append(seeds_of(name, utrain, fusion, seed_list, stage="u_source"))
    return specs


def seeds_of(name: str, arm: Arm, fusion: str, seeds: tuple[int, ...], stage: str = "seeds") -> SearchSpec:
    """The re-run of a row's best configuration with ``seeds``."""
    source = f"{name}-search-{arm.label}-{fusion}"
    return SearchSpec(
        f"{name}-seeds-{arm.label}-{fusion}",
        stage,
        arm,
        fusion,
        len(seeds),
        "seeds",
        from_best=source,
        seeds=seeds,
    )


def search_argv_common(
    args: argparse.Namespace, name: str, storage: str, tracking_uri: str, epochs: int
) -> list[str]:
    argv = [
        "--dataset", args.dataset, "--experiment", name, "--storage", storage,
        "--tracking-uri", tracking_uri, "--seed", str(args.seed), "--verbose", str(args.verbose),
        "--max-concurrent", str(args.max_concurrent), "--set", f"epochs={epochs}",
    ]  # fmt: skip
    for flag, value in (("--cpus-per-trial", args.cpus_per_trial), ("--gpus-per-trial", args.gpus_per_trial)):
        if value is not None:
            argv += [flag, str(value)]
    for pair in args.set:
        argv += ["--set", pair]
    return argv


def unimodal_search(study: str, modality: str) -> str:
    """The name of a study's unimodal search of one modality."""
    return f"{study}-unimodal-{modality}"


def search_argv(plan: StudyPlan, spec: SearchSpec, validating: bool = False) -> list[str]:
    """The ``miles_tune.search`` command line of one search of the study. ``validating``: the
    searches it depends on have not run yet (plan time), so a method that builds on the
    unimodal searches is checked with its ``until_unimodal`` settings."""
    from miles_tune.balance import METHODS

    args = plan.args
    argv = search_argv_common(args, plan.name, plan.storage, plan.tracking_uri, plan.epochs)
    if plan.resources is not None:
        argv += ["--cpus-per-trial", str(plan.resources[0]), "--gpus-per-trial", str(plan.resources[1])]
    argv += ["--name", spec.name, "--results", str(plan.results), "--method", spec.arm.method]
    argv += ["--fusion", spec.fusion]
    if spec.arm.variant:
        argv += ["--variant", spec.arm.variant]
    for key, value in spec.arm.settings:
        argv += ["--set", f"{key}={json.dumps(value)}"]
    method = METHODS.get(spec.arm.method)
    if method.from_unimodal is not None and spec.kind != "unimodal":  # MSLR's rates, UMT's teachers
        if validating:
            argv += [
                arg for k, v in method.until_unimodal.items() for arg in ("--set", f"{k}={json.dumps(v)}")
            ]
        else:
            found = {
                m: str(plan.results / unimodal_search(plan.name, m) / "best_config.yaml")
                for m in plan.modalities
            }
            argv += ["--set", f"{method.from_unimodal}={json.dumps(found)}"]
    if spec.kind == "unimodal":
        argv += ["--set", f"method_args.modality={spec.modality}"]
    if spec.kind in ("search", "unimodal"):
        argv += ["--num-samples", str(spec.trials), "--searcher", args.searcher, "--points", "1"]
        argv += ["--scheduler", args.scheduler, "--grace-period", str(args.grace_period)]
    else:
        argv += ["--from-best", str(plan.results / spec.from_best / "best_config.yaml")]
        argv += ["--seeds", ",".join(str(s) for s in spec.seeds)]
        if spec.grid is not None:
            param, values = spec.grid
            argv += ["--grid", f"{param}=" + ",".join(f"{v:g}" for v in values)]
    return argv


def plan_lines(plan: StudyPlan) -> list[str]:
    """The plan, as printed at the start: stages, searches, trials and trial-epochs."""
    lines = [
        f"study {plan.name}: {plan.settings['dataset']}, budget {plan.budget_name} ({plan.budget.about})",
        f"  {plan.settings['trials']} trials per search ({plan.args.searcher}, scheduler "
        f"{plan.args.scheduler}), {plan.epochs} epochs, best configurations re-run with "
        f"{plan.settings['seeds']} seeds; folder {plan.out}",
        f"  rows: {', '.join(a.label for a in plan.arms)} x {', '.join(plan.args.fusions)}",
        *(f"    {a.label}: {a.why}" for a in plan.arms if a.variant),
    ]
    total_trials = total_epochs = 0
    for stage in STAGES[:-1]:
        specs = [s for s in plan.searches if s.stage == stage]
        if not specs:
            continue
        trials = sum(s.trials for s in specs)
        epochs = sum(plan.trial_epochs(s) for s in specs)
        total_trials, total_epochs = total_trials + trials, total_epochs + epochs
        lines.append(f"  {stage:<12} {len(specs):>3} searches {trials:>5} trials {epochs:>7} trial-epochs")
    lines.append(
        f"  {'total':<12} {len(plan.searches):>3} searches {total_trials:>5} trials {total_epochs:>7} "
        "trial-epochs (at most: ASHA and MSES stop some early)"
    )
    return lines


def estimate_lines(
    plan: StudyPlan, epoch_seconds: float, where: str, share: float, slots: float
) -> list[str]:
    """Device-hours (trial-epochs × a measured epoch × the device share a trial holds) and
    wall-clock at ``slots`` trials at once. Method overheads (G-Blend's side trainings) excluded."""
    remaining = sum(plan.trial_epochs(s) for s in plan.searches)
    seconds = remaining * epoch_seconds
    hours = seconds * share / 3600
    wall = seconds / max(slots, 1.0) / 3600
    return [
        f"  estimate: one epoch took {epoch_seconds:.2f} s ({where}); {remaining} trial-epochs = "
        f"{hours:.2f} device-hours, about {_hours(wall)} at {slots:g} trials at once "
        "(plus per-trial start-up, and G-Blend's side trainings)",
    ]


def _hours(h: float) -> str:
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


__all__ = [
    "BUDGETS",
    "MU_GRID",
    "TAU_GRID",
    "Arm",
    "Budget",
    "SearchSpec",
    "StudyPlan",
    "estimate_lines",
    "make_arms",
    "plan_lines",
    "plan_study",
    "search_argv",
]
