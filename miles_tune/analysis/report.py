"""Every artefact the runs support, written into one folder with an ``index.md``.

:data:`ARTEFACTS` is the registry: a name, the line ``index.md`` shows for it, and a
function that writes it (returning the files) or raises :class:`Skipped` saying why the
runs do not support it (``no grid over mu``). ``python analysis/report.py`` writes them
all; ``python analysis/<name>.py`` one (see :mod:`miles_tune.analysis.cli`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Skipped(Exception):
    """The runs do not support an artefact; the message says what is missing."""


@dataclass
class Inputs:
    """What every artefact reads: the trials frame and where their epochs can be found."""

    trials: Any  # pandas.DataFrame (miles_tune.analysis.trials)
    tracking_uri: str | None = None
    exports: list[Path] = field(default_factory=list)
    spaces: dict[str, dict[str, Any]] = field(default_factory=dict)  # search -> {name: Param}
    run_id: str | None = None  # dynamics: this run instead of the best MILES run
    source: str = ""  # where the trials come from, in words (index.md)


@dataclass(frozen=True)
class Artefact:
    name: str
    shows: str  # one line for index.md
    write: Callable[[Inputs, Path], list[Path]]


def _table(name: str, compute: Callable[[Any], Any], needs: str) -> Callable[[Inputs, Path], list[Path]]:
    def write(inputs: Inputs, out: Path) -> list[Path]:
        from miles_tune.analysis.render import write_table

        table = compute(inputs.trials) if len(inputs.trials) else None
        if table is None or table.empty:
            raise Skipped(needs)
        return write_table(table, out, name)

    return write


def _tables():  # noqa: ANN202
    from miles_tune.analysis import tables

    return tables


def write_gap(inputs: Inputs, out: Path) -> list[Path]:
    tables = _tables()
    if not tables.unimodal_references(inputs.trials):
        raise Skipped("no unimodal searches (python -m miles_tune.search --method unimodal)")
    return _table("unimodal_gap", tables.unimodal_gap_table, "no searches of a joint method")(inputs, out)


def write_dynamics(inputs: Inputs, out: Path) -> list[Path]:
    """The best MILES model's run (first dataset and fusion; its lowest seed), or ``run_id``."""
    from miles_tune.analysis.dynamics import write_dynamics as draw
    from miles_tune.analysis.select import select
    from miles_tune.analysis.trials import load_history

    trials = inputs.trials
    if inputs.run_id:
        found = trials[trials["run_id"] == inputs.run_id] if len(trials) else trials
        if len(found) == 0:
            raise Skipped(f"no trial with run id {inputs.run_id} among the runs read")
        trial = found.iloc[0].to_dict()
        chosen = f"run {inputs.run_id}"
    else:
        miles = [s for s in select(trials) if s.key["method"] == "miles"] if len(trials) else []
        if not miles:
            raise Skipped("no MILES search (python -m miles_tune.search --method miles)")
        sel = miles[0]
        trial = sel.trials.sort_values("seed").iloc[0].to_dict()
        chosen = "the best MILES model of " + " · ".join(str(v) for v in sel.key.values())
    records = load_history(trial, tracking_uri=inputs.tracking_uri, exports=inputs.exports)
    config_tau = trial.get("config.method_args.tau")
    tau = float(config_tau) if trial.get("method") == "miles" and config_tau is not None else None
    lr = trial.get("config.lr")
    title = f"{trial.get('trial_name', '')} ({trial.get('search', '')}): {chosen}"
    png, csv = draw(
        records,
        out / "dynamics.png",
        metric=trial.get("metric") or "acc",
        tau=tau,
        base_lr=float(lr) if lr is not None else None,
        title=title,
    )
    return [png, csv]


def write_pbt_schedule(inputs: Inputs, out: Path) -> list[Path]:
    """The best PBT member's learned schedule next to the best MILES model's (first dataset
    and fusion that has a ``*-pbt`` row)."""
    from miles_tune.analysis.dynamics import write_schedule
    from miles_tune.analysis.select import select
    from miles_tune.analysis.trials import load_history

    selected = select(inputs.trials) if len(inputs.trials) else []
    pbt = [s for s in selected if str(s.key["method"]).endswith("-pbt")]
    if not pbt:
        raise Skipped("no PBT search (python -m miles_tune.search --scheduler pbt)")
    sel = pbt[0]
    where = {k: v for k, v in sel.key.items() if k != "method"}
    same = [s for s in selected if all(s.key[k] == v for k, v in where.items())]
    chosen_runs = [(f"{sel.key['method']} (best member)", sel)]
    chosen_runs += [("miles (best model)", s) for s in same if s.key["method"] == "miles"][:1]
    runs = {}
    for label, chosen in chosen_runs:
        trial = chosen.trials.sort_values("seed").iloc[0].to_dict()
        runs[label] = load_history(trial, tracking_uri=inputs.tracking_uri, exports=inputs.exports)
    title = "each encoder's rate ÷ the fusion rate: " + " · ".join(str(v) for v in where.values())
    png, csv = write_schedule(runs, out / "pbt_schedule.png", title=title)
    return [png, csv]


def write_diagnostics(inputs: Inputs, out: Path) -> list[Path]:
    from miles_tune.analysis.diagnostics import write_diagnostics as draw

    trials = inputs.trials
    if len(trials) == 0:
        raise Skipped("no runs")
    paths = []
    for search, runs in trials.groupby("search", sort=True):
        if runs["stage"].iloc[0] not in ("search", "unimodal"):
            continue
        params = inputs.spaces.get(search, {})
        columns = ["trial_order", "epochs_run", "value", *[c for c in runs if c.startswith("param/")], "seed"]
        frame = runs[columns].dropna(axis=1, how="all")  # other searches' parameters
        metric = runs["selection"].iloc[0] or "value"
        title = f"{search}: {runs['method'].iloc[0]} on {runs['dataset'].iloc[0]}"
        paths.append(draw(frame, params, metric, out / f"diagnostics_{search}.png", title=title))
    if not paths:
        raise Skipped("no searches (only grids or seed re-runs)")
    return paths


def artefacts() -> list[Artefact]:
    t = _tables()
    return [
        Artefact(
            "main",
            "per dataset and fusion, each method's selected model: multimodal and encoder "
            "test metrics, Δ, budget",
            _table("main", t.main_table, "no searches of a joint method (stage search)"),
        ),
        Artefact(
            "unimodal",
            "the best unimodal model per modality (the references)",
            _table(
                "unimodal",
                t.unimodal_table,
                "no unimodal searches (python -m miles_tune.search --method unimodal)",
            ),
        ),
        Artefact(
            "sensitivity_tau",
            "MILES over a grid of τ, the other hyper-parameters fixed",
            _table(
                "sensitivity_tau",
                lambda tr: t.sensitivity_table(tr, "tau"),
                "no grid over tau (--grid tau=...)",
            ),
        ),
        Artefact(
            "sensitivity_mu",
            "MILES over a grid of μ, the other hyper-parameters fixed",
            _table(
                "sensitivity_mu", lambda tr: t.sensitivity_table(tr, "mu"), "no grid over mu (--grid mu=...)"
            ),
        ),
        Artefact(
            "u_source",
            "u computed on the training set against the validation set: metrics and best epoch",
            _table(
                "u_source",
                t.u_source_table,
                "neither MILES searched with u from each split (a study's miles and miles-utrain) "
                "nor a grid over u_source (--grid u_source=train,val)",
            ),
        ),
        Artefact(
            "unimodal_gap",
            "each encoder's gap to its best unimodal model, and mean ± std over encoders",
            write_gap,
        ),
        Artefact(
            "missing_modality",
            "test metric without each modality: its features zeroed or set to their training "
            "mean, or the other head",
            _table(
                "missing_modality",
                t.missing_modality_table,
                "no joint searches with missing-modality metrics (runs before they were recorded)",
            ),
        ),
        Artefact(
            "dynamics",
            "per epoch: u, δ with τ, every learning rate and each head's validation metric (Fig. 2)",
            write_dynamics,
        ),
        Artefact(
            "pbt_schedule",
            "the learned schedule of the best PBT member (--scheduler pbt) next to MILES's rule",
            write_pbt_schedule,
        ),
        Artefact(
            "diagnostics",
            "per search: best-so-far against trials and trial-epochs, parallel coordinates, importance",
            write_diagnostics,
        ),
    ]


def artefact(name: str) -> Artefact:
    found = {a.name: a for a in artefacts()}
    if name not in found:
        from miles_tune.analysis.trials import AnalysisError

        raise AnalysisError(f"no artefact {name!r}; known: {sorted(found)}")
    return found[name]


def write_report(inputs: Inputs, out: Path, names: list[str] | None = None) -> dict[str, list[Path] | str]:
    """Write the artefacts (all, or ``names``) and ``index.md``; returns name -> files, or the
    reason it was skipped."""
    out.mkdir(parents=True, exist_ok=True)
    done: dict[str, list[Path] | str] = {}
    chosen = [artefact(n) for n in names] if names else artefacts()
    for a in chosen:
        try:
            done[a.name] = a.write(inputs, out)
        except Skipped as why:
            done[a.name] = str(why)
    write_index(out, chosen, done, inputs)
    return done


def write_index(out: Path, chosen: list[Artefact], done: dict[str, list[Path] | str], inputs: Inputs) -> Path:
    trials = inputs.trials
    searches = trials["search"].nunique() if len(trials) else 0
    lines = [
        "# Analysis",
        "",
        f"{len(trials)} trials of {searches} searches"
        + (f", from {inputs.source}" if inputs.source else "")
        + ".",
        "",
        "| artefact | what it shows | files |",
        "|---|---|---|",
    ]
    skipped = []
    for a in chosen:
        result = done[a.name]
        if isinstance(result, str):
            skipped.append(f"- **{a.name}**: skipped, {result}")
            continue
        links = ", ".join(f"[{p.name}]({p.name})" for p in result)
        lines.append(f"| {a.name} | {a.shows} | {links} |")
    if skipped:
        lines += ["", "Skipped:", "", *skipped]
    path = out / "index.md"
    path.write_text("\n".join(lines) + "\n")
    return path
