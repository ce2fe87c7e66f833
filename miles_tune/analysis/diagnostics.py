"""Per-search diagnostics: how fast one search found its best, what it sampled, what mattered.

Input is one search's trials as a DataFrame, one row per trial: ``trial_order`` (the order
trials started), ``epochs_run``, ``value`` (the trial's selection metric, NaN when it failed)
and ``param/<name>`` per searched parameter; plus the searched distributions
(:class:`~miles_tune.spaces.Param`). Data first, drawing second (as Optuna's plots):

- :func:`best_so_far`: the best value after each trial, against trials and trial-epochs;
- :func:`normalised_params`: each sampled value at its place on its axis, in [0, 1];
- :func:`param_importance`: fANOVA importances from an in-memory Optuna study;
- :func:`diagnostics_data` gathers them, :func:`diagnostics_figure` draws them in four
  panels and :func:`write_diagnostics` writes the PNG.

The metric is maximised, as every search here maximises its selection metric.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miles_tune.records import short_value
from miles_tune.spaces import Param

if TYPE_CHECKING:
    import pandas as pd

# fANOVA's forest is random: a fixed seed makes the same trials give the same importances.
IMPORTANCE_SEED = 0
# Fewer finished trials than this say nothing about importance (a forest fitted to two
# points splits on whichever parameter it tries first).
MIN_IMPORTANCE_TRIALS = 3
DPI = 150
PARAM_PREFIX = "param/"
FAILED_COLOUR = "#b2182b"
BEST_COLOUR = "#000000"
VALUE_COLOUR = "#0072B2"
_PRIMITIVE = (type(None), bool, int, float, str)


def _ordered(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials in start order (stable: equal orders keep their rows' order)."""
    return trials.sort_values("trial_order", kind="mergesort").reset_index(drop=True)


def _values(trials: pd.DataFrame) -> pd.Series:
    """The trials' values as floats; no ``value`` column (every trial failed, and a caller
    dropped empty columns) is all NaN."""
    import pandas as pd

    if "value" not in trials:
        return pd.Series(math.nan, index=trials.index, dtype=float)
    return pd.to_numeric(trials["value"], errors="coerce").astype(float)


def best_so_far(trials: pd.DataFrame) -> pd.DataFrame:
    """The best value after each trial, in start order.

    Columns: ``trial_order``, ``trials`` (how many had started, 1-based),
    ``cumulative_trial_epochs`` (epochs run by this trial and all started before it: the
    search's cost so far, whatever ran in parallel), ``value`` and ``best_so_far`` (NaN until
    a trial finishes; a failed trial keeps the best before it).
    """
    import pandas as pd

    t = _ordered(trials)
    value = _values(t)
    epochs = pd.to_numeric(t.get("epochs_run", 0), errors="coerce")
    epochs = pd.Series(epochs, index=t.index).fillna(0).astype("int64")  # unknown: none
    return pd.DataFrame(
        {
            "trial_order": t["trial_order"],
            "trials": range(1, len(t) + 1),
            "cumulative_trial_epochs": epochs.cumsum(),
            "value": value,
            "best_so_far": value.cummax().ffill(),  # cummax leaves NaN where the value is NaN
        }
    )


# --- one parameter: its values, its distribution, its axis ------------------------------


def _choices(param: Param) -> tuple[Any, ...]:
    """The choices as Optuna stores them (it takes None, bool, int, float and str only)."""
    return tuple(a if isinstance(a, _PRIMITIVE) else str(a) for a in param.args)


def _same_choice(arg: Any, value: Any) -> bool:
    """Whether a stored value is this choice: equal as text (values read back from MLflow
    are text), or as numbers (ints in a frame with NaN come back as floats)."""
    if str(arg) == str(value):
        return True
    if isinstance(arg, (int, float)) and not isinstance(arg, bool) and not isinstance(value, bool):
        try:
            return float(value) == float(arg)
        except (TypeError, ValueError):
            return False
    return False


def _choice_index(value: Any, param: Param) -> int | None:
    return next((i for i, arg in enumerate(param.args) if _same_choice(arg, value)), None)


def _sampled(value: Any, param: Param) -> Any:
    """A stored value as the distribution holds it (a choice, a float or an int within the
    bounds), or None when it is missing or unusable."""
    if param.distribution == "choice":
        i = _choice_index(value, param)
        return None if i is None else _choices(param)[i]
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(v):
        return None
    lo, hi = (float(a) for a in param.args)
    v = min(max(v, lo), hi)  # round-off in storage must not push a value out of its space
    return int(round(v)) if param.distribution == "randint" else v


def _position(value: Any, param: Param) -> float:
    """Where a value sits on its parallel-coordinates axis, in [0, 1] (NaN when missing):
    linear for uniform and randint, logarithmic for loguniform, choices evenly spaced."""
    if param.distribution == "choice":
        i, n = _choice_index(value, param), len(param.args)
        return math.nan if i is None else 0.5 if n == 1 else i / (n - 1)
    v = _sampled(value, param)
    if v is None:
        return math.nan
    lo, hi = (float(a) for a in param.args)
    if param.distribution == "loguniform":
        return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (v - lo) / (hi - lo)


def _axis_ticks(param: Param) -> list[tuple[float, str]]:
    """(position, label) of an axis's ticks: the bounds, the middle or the powers of ten
    between log bounds, every choice."""
    if param.distribution == "choice":
        return [(_position(a, param), short_value(a)) for a in param.args]
    lo, hi = param.args
    if param.distribution == "loguniform":
        inner = [10.0**k for k in range(math.ceil(math.log10(lo)), math.floor(math.log10(hi)) + 1)]
        inner = [v for v in inner if lo < v < hi]
        if len(inner) > 4:  # keep every other decade
            inner = inner[::2]
        if not inner:
            inner = [math.sqrt(lo * hi)]
    elif param.distribution == "randint":
        inner = [(lo + hi) // 2] if hi - lo >= 2 else []
    else:
        inner = [(lo + hi) / 2]
    ticks = [lo, *inner, hi]
    return [
        (_position(v, param), short_value(float(v) if param.distribution != "randint" else v)) for v in ticks
    ]


def axis_label(param: Param) -> str:
    """The name under a parallel-coordinates axis, saying how the axis is scaled."""
    scale = {"loguniform": "log", "randint": "int", "choice": "choice"}.get(param.distribution)
    return f"{param.name}\n({scale})" if scale else param.name


def normalised_params(trials: pd.DataFrame, params: dict[str, Param]) -> pd.DataFrame:
    """One row per trial in start order: each searched parameter's place on its axis in
    [0, 1] (NaN when the trial lacks it), then ``value``."""
    import pandas as pd

    t = _ordered(trials)
    columns: dict[str, Any] = {}
    for name, param in params.items():
        col = t.get(PARAM_PREFIX + name)
        columns[name] = [math.nan] * len(t) if col is None else [_position(v, param) for v in col]
    columns["value"] = _values(t)
    return pd.DataFrame(columns, index=range(len(t)))


# --- importance -----------------------------------------------------------------------


def _distribution(param: Param) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if param.distribution == "choice":
        return CategoricalDistribution(_choices(param))
    lo, hi = param.args
    if param.distribution == "randint":  # both bounds inclusive, as the space file means them
        return IntDistribution(int(lo), int(hi))
    return FloatDistribution(float(lo), float(hi), log=param.distribution == "loguniform")


def _finished(trials: pd.DataFrame, params: dict[str, Param]) -> list[tuple[dict[str, Any], float]]:
    """(params, value) of every trial with a finite value and every searched parameter."""
    t = _ordered(trials)
    values = _values(t)
    out = []
    for i in range(len(t)):
        if not math.isfinite(values.iloc[i]):
            continue
        sampled = {
            name: _sampled(t[PARAM_PREFIX + name].iloc[i], p) if PARAM_PREFIX + name in t else None
            for name, p in params.items()
        }
        if all(v is not None for v in sampled.values()):
            out.append((sampled, float(values.iloc[i])))
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def importance_with_reason(trials: pd.DataFrame, params: dict[str, Param]) -> tuple[dict[str, float], str]:
    """:func:`param_importance` and, when it is empty, why (for the figure's n/a panel)."""
    if len(params) < 2:
        return {}, f"{_count(len(params), 'searched parameter')}; importance compares 2 or more"
    finished = _finished(trials, params)
    if len(finished) < MIN_IMPORTANCE_TRIALS:
        counted = _count(len(finished), "finished trial")
        return {}, f"{counted} with every parameter known; needs {MIN_IMPORTANCE_TRIALS}"
    if len({v for _, v in finished}) < 2:
        return {}, "every finished trial has the same value"

    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    distributions = {name: _distribution(p) for name, p in params.items()}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "a new study created" line
    try:
        study = optuna.create_study(direction="maximize")
        for sampled, value in finished:
            study.add_trial(
                optuna.trial.create_trial(params=sampled, distributions=distributions, value=value)
            )
        raw = FanovaImportanceEvaluator(seed=IMPORTANCE_SEED).evaluate(study, params=list(params))
    finally:
        optuna.logging.set_verbosity(verbosity)
    total = sum(raw.values())
    if not total > 0:
        return {}, "no parameter explains the differences between trials"
    ranked = sorted(params, key=lambda name: -raw.get(name, 0.0))  # ties keep the space's order
    return {name: float(raw.get(name, 0.0)) / float(total) for name in ranked}, ""


def param_importance(trials: pd.DataFrame, params: dict[str, Param]) -> dict[str, float]:
    """fANOVA importance of each searched parameter (summing to 1, most important first),
    from the finished trials (finite value, every parameter known).

    Deterministic (seeded forest). Empty with fewer than 2 searched parameters (one
    parameter's share is 1 by definition: no information), fewer than
    :data:`MIN_IMPORTANCE_TRIALS` finished trials, or nothing to explain (all values equal,
    or differences only between identical settings, e.g. seeds).
    """
    return importance_with_reason(trials, params)[0]


# --- the figure -----------------------------------------------------------------------


def diagnostics_data(
    trials: pd.DataFrame, params: dict[str, Param], metric_name: str, *, title: str = ""
) -> dict[str, Any]:
    """Everything :func:`diagnostics_figure` draws, as plain data and DataFrames."""
    importance, reason = importance_with_reason(trials, params)
    return {
        "title": title,
        "metric": metric_name,
        "progress": best_so_far(trials),
        "coords": normalised_params(trials, params),
        "axes": [
            {"name": name, "label": axis_label(p), "ticks": _axis_ticks(p)} for name, p in params.items()
        ],
        "importance": importance,
        "importance_reason": reason,
        "importance_trials": len(_finished(trials, params)) if importance else 0,
    }


def _na(ax: Any, reason: str) -> None:
    ax.text(
        0.5, 0.5, textwrap.fill(f"n/a: {reason}", 40), transform=ax.transAxes,
        ha="center", va="center", fontsize=10, color="#555555",
    )  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])


def _values_and_failures(ax: Any, x: pd.Series, value: pd.Series) -> None:
    """Each finished trial's value as a dot; each failed trial as a cross in a strip below
    every value (a failure has no value to place it by)."""
    finished = value.notna()
    if finished.any():
        ax.scatter(x[finished], value[finished], s=22, color=VALUE_COLOUR, alpha=0.75, zorder=2,
                   label="trial value")  # fmt: skip
    if not finished.any():  # nothing to read off the value axis
        ax.text(0.5, 0.5, "n/a: no trial finished", transform=ax.transAxes, ha="center",
                color="#555555")  # fmt: skip
        ax.set_yticks([])
    if (~finished).any():
        if finished.any():
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo - 0.1 * (hi - lo), hi)
        ax.scatter(
            x[~finished], [0.035] * int((~finished).sum()), marker="x", s=30, color=FAILED_COLOUR,
            transform=ax.get_xaxis_transform(), label="failed (no value)", zorder=2,
        )  # fmt: skip


def _progress_panel(
    ax: Any, progress: pd.DataFrame, x_col: str, xlim: tuple[float, float], xlabel: str, metric: str
) -> None:
    """Best so far as a step line over ``x_col`` (held to the right edge), each trial's value
    as a dot, failures as crosses along the bottom edge."""
    from matplotlib.ticker import MaxNLocator

    x, best = progress[x_col], progress["best_so_far"]
    if best.notna().any():
        steps_x, steps_y = [*x, xlim[1]], [*best, best.iloc[-1]]
        ax.plot(steps_x, steps_y, drawstyle="steps-post", color=BEST_COLOUR, lw=1.8, zorder=3,
                label="best so far")  # fmt: skip
    _values_and_failures(ax, x, progress["value"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_xlim(*xlim)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)


def _one_param_panel(ax: Any, coords: pd.DataFrame, axis: dict[str, Any], metric: str) -> None:
    """With one parameter, parallel coordinates say nothing: the metric against it instead."""
    _values_and_failures(ax, coords[axis["name"]], coords["value"])
    ax.set_xticks([pos for pos, _ in axis["ticks"]], [label for _, label in axis["ticks"]])
    ax.set_xlim(-0.04, 1.04)
    ax.set_xlabel(axis["label"].replace("\n", " "))
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)


def _parallel_panel(fig: Any, ax: Any, coords: pd.DataFrame, axes: list[dict[str, Any]], metric: str) -> None:
    """One vertical axis per parameter, one line per trial coloured by its value (darker is
    better, so the best stand out on white; the best on top and thickest); failed trials as
    grey dashes beneath."""
    import matplotlib as mpl

    if not axes:
        _na(ax, "no searched parameters")
        return
    if len(axes) == 1:
        _one_param_panel(ax, coords, axes[0], metric)
        return
    names = [a["name"] for a in axes]
    xs = list(range(len(names)))
    finished = coords["value"].notna()
    values = coords.loc[finished, "value"]
    cmap = mpl.colormaps["viridis_r"]
    lo, hi = (values.min(), values.max()) if len(values) else (0.0, 1.0)
    if not hi > lo:  # one distinct value: a readable colour bar around it
        pad = max(abs(lo) * 0.01, 1e-3)
        lo, hi = lo - pad, hi + pad
    norm = mpl.colors.Normalize(vmin=lo, vmax=hi)
    failed = coords.loc[~finished, names]
    for i, (_, row) in enumerate(failed.iterrows()):
        ax.plot(xs, row.to_numpy(float), color="#999999", ls="--", lw=1.0, alpha=0.8,
                label="failed (no value)" if i == 0 else None, zorder=1)  # fmt: skip
    best_row = values.idxmax() if len(values) else None
    for idx in values.sort_values(kind="mergesort").index:
        best = idx == best_row
        ax.plot(xs, coords.loc[idx, names].to_numpy(float), color=cmap(norm(values[idx])),
                lw=2.6 if best else 1.2, alpha=1.0 if best else 0.75, zorder=3 if best else 2,
                label="best trial" if best else None)  # fmt: skip
    for x, a in zip(xs, axes, strict=True):
        ax.axvline(x, color="#333333", lw=0.8, zorder=0)
        for pos, label in a["ticks"]:
            ax.plot([x - 0.025, x], [pos, pos], color="#333333", lw=0.8, zorder=0)
            ax.text(
                x - 0.04, pos, label, ha="right", va="center", fontsize=7.5, color="#333333", zorder=4,
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
            )  # fmt: skip
    ax.set_xticks(xs, [a["label"] for a in axes], fontsize=9)
    ax.set_xlim(-0.45, len(xs) - 0.7)
    ax.set_ylim(-0.06, 1.06)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    if len(values):
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric, pad=0.02)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=2, fontsize=8, frameon=False)


def _importance_panel(ax: Any, importance: dict[str, float], reason: str) -> None:
    if not importance:
        _na(ax, reason)
        return
    names = list(importance)[::-1]  # most important on top
    shares = [importance[n] for n in names]
    bars = ax.barh(names, shares, color=VALUE_COLOUR, alpha=0.85)
    ax.bar_label(bars, [f"{s:.2f}" for s in shares], padding=3, fontsize=8)
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("share of explained variance (sums to 1)")
    ax.grid(axis="x", alpha=0.3)


def diagnostics_figure(data: dict[str, Any]):  # -> matplotlib.figure.Figure
    """Four panels: (a) best so far vs trials, (b) vs trial-epochs, (c) parallel coordinates
    of the sampled parameters, (d) their importance."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    progress, metric = data["progress"], data["metric"]
    fig = Figure(figsize=(13, 9.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.1])
    ax_a, ax_b = top.subplots(1, 2)
    ax_c, ax_d = bottom.subplots(1, 2, width_ratios=[1.8, 1])

    n = len(progress)
    cost = float(progress["cumulative_trial_epochs"].max()) if n else 0.0
    _progress_panel(ax_a, progress, "trials", (0.5, max(n, 1) + 0.5), "trials (in start order)", metric)
    ax_a.set_title("(a) best so far vs trials", fontsize=10, loc="left")
    cost_xlim = (0.0, max(cost * 1.04, cost + 1.0))  # the cost axis starts at nothing spent
    xlabel = "trial-epochs (cumulative, in start order)"
    _progress_panel(ax_b, progress, "cumulative_trial_epochs", cost_xlim, xlabel, metric)
    ax_b.set_title("(b) best so far vs trial-epochs", fontsize=10, loc="left")
    _parallel_panel(bottom, ax_c, data["coords"], data["axes"], metric)
    c_title = "(c) sampled parameters (each axis spans its search range)"
    if len(data["axes"]) == 1:
        c_title = f"(c) {metric} vs the one searched parameter (its search range)"
    ax_c.set_title(c_title, fontsize=10, loc="left")
    _importance_panel(ax_d, data["importance"], data["importance_reason"])
    d_title = "(d) parameter importance"
    if data["importance"]:
        d_title += f" (fANOVA, {data['importance_trials']} finished trials)"
    ax_d.set_title(d_title, fontsize=10, loc="left")

    done = int(progress["value"].notna().sum())
    best = progress["best_so_far"].iloc[-1] if n else math.nan
    summary = f"{_count(n, 'trial')}, {done} finished"
    if done:
        summary += f"; best {metric} = {short_value(float(best))}"
    fig.suptitle(f"{data['title']}\n{summary}" if data["title"] else summary, fontsize=12)
    return fig


def write_diagnostics(
    trials: pd.DataFrame, params: dict[str, Param], metric_name: str, path_png: Path, *, title: str
) -> Path:
    """Draw one search's diagnostics (:func:`diagnostics_figure`) to ``path_png``."""
    path_png = Path(path_png)
    path_png.parent.mkdir(parents=True, exist_ok=True)
    diagnostics_figure(diagnostics_data(trials, params, metric_name, title=title)).savefig(path_png, dpi=DPI)
    return path_png
