"""The paper's tables as DataFrames, computed from a trials frame; :mod:`.render` draws them.

Every function takes the frame of :func:`miles_tune.analysis.load_mlflow` (or
:func:`~miles_tune.analysis.load_exports`) and returns one DataFrame: metrics are test
metrics on the 0–1 scale (the rendered tables show percentages), a column ``x`` with a
spread has it in ``x:std`` (sample standard deviation over seeds; 0 for one seed) and
``n`` says over how many seeds. ``frame.attrs`` describes the columns for rendering
(``title``, ``blocks``, ``rows``, ``columns``, ``notes``).

Heads: ``mm`` is the fused head, a modality's name its unimodal head (its encoder's
metric), ``mm_zero_<m>`` / ``mm_mean_<m>`` the fused head with modality m's features
zeroed / set to their training mean, ``no_<m>`` the other unimodal heads averaged.
"""

from __future__ import annotations

import math
from typing import Any

from miles_tune.analysis.select import (
    JOINT_KEYS,
    UNIMODAL_KEYS,
    Selected,
    budget,
    mean_sd,
    mean_std,
    select,
    trial_value,
)
from miles_tune.records import MM, is_missing_modality_head, mean_head, without_head, zeroed_head


def encoders(frame, dataset: str, metric: str) -> list[str]:  # noqa: ANN001
    """The modalities of a dataset, from its trials' unimodal-head test columns (sorted)."""
    rows = frame[frame["dataset"] == dataset]
    found = set()
    for col in rows.columns:
        parts = col.split("/")
        if len(parts) == 3 and parts[0] == "test" and parts[2] == metric and rows[col].notna().any():
            head = parts[1]
            if head != MM and not head.startswith(without_head("")) and not is_missing_modality_head(head):
                found.add(head)
    return sorted(found)


def metric_of(rows) -> str:  # noqa: ANN001
    """The metric the trials in ``rows`` were selected by (``acc`` when none say)."""
    metrics = [m for m in rows["metric"] if m]
    return metrics[0] if metrics else "acc"


def _column(key: str, header: str, kind: str = "metric", best: str | None = None) -> dict[str, Any]:
    return {"key": key, "header": header, "kind": kind, "best": best}


def _put(row: dict[str, Any], name: str, frame, column: str) -> None:  # noqa: ANN001
    row[name], row[f"{name}:std"] = mean_std(frame, column)


def _budget_columns() -> list[dict[str, Any]]:
    return [
        _column("trials", "trials", "int"),
        _column("trial_epochs", "trial-epochs", "int"),
        _column("device_hours", "device-h", "hours"),
    ]


def _frame(records: list[dict[str, Any]], **attrs: Any):  # noqa: ANN202
    import pandas as pd

    df = pd.DataFrame(records)
    df.attrs.update(attrs)
    return df


# -- Table I: unimodal references ------------------------------------------------------------
def unimodal_references(trials) -> dict[tuple[str, str], Selected]:  # noqa: ANN001
    """(dataset, modality) -> the selected unimodal model (the ``unimodal`` method's searches)."""
    refs = select(trials, UNIMODAL_KEYS, stage="unimodal") if len(trials) else []
    return {(s.key["dataset"], s.key["modality"]): s for s in refs if s.key["modality"]}


def unimodal_table(trials):  # noqa: ANN001, ANN201
    """Table I: the best unimodal model per dataset and modality: its test metric (of its own
    head), its validation metric, and the budget its searches spent."""
    rows = []
    for (dataset, modality), sel in sorted(unimodal_references(trials).items()):
        metric = metric_of(sel.trials)
        row = {
            "dataset": dataset,
            "modality": modality,
            "metric": metric,
            "n": sel.n,
            "reported_from": sel.reported_from,
        }
        _put(row, "test", sel.trials, f"test/{modality}/{metric}")
        _put(row, "val", sel.trials, f"val/{modality}/{metric}")
        _put(row, "best_epoch", sel.trials, "best_epoch")
        _put_selection(row, sel)
        rows.append(row)
    return _frame(
        rows,
        title="Best unimodal model per modality (the paper's Table I)",
        blocks=["dataset"],
        rows=["modality"],
        columns=[
            _column("test", "test", best="max"),
            _column("val", "val"),
            _column("best_epoch", "best epoch", "float"),
            _column("n", "seeds", "int"),
            *_budget_columns(),
            _column("params", "selected", "text"),
        ],
        notes=[
            "test: the modality's own head at the epoch with its best validation metric; "
            "mean ± std over seeds (n = seeds)."
        ],
    )


def modality_order(
    trials,  # noqa: ANN001
    dataset: str,
    fusion: str,
    selected: dict[tuple[str, str, str], Selected],
    refs: dict[tuple[str, str], Selected],
) -> tuple[list[str], str]:
    """The dataset's modalities, strongest first: by the unimodal references ``refs`` (test
    metric), else by the encoders of the selected vanilla model. Returns the order and what it
    is based on."""
    metric = metric_of(trials[trials["dataset"] == dataset])
    mods = encoders(trials, dataset, metric)
    if mods and all((dataset, m) in refs for m in mods):
        score = {m: refs[(dataset, m)].mean_std(f"test/{m}/{metric}")[0] for m in mods}
        return sorted(mods, key=lambda m: -score[m]), "unimodal references"
    vanilla = selected.get((dataset, fusion, "vanilla"))
    if vanilla is not None and mods:
        score = {m: vanilla.mean_std(f"test/{m}/{metric}")[0] for m in mods}
        if all(math.isfinite(v) for v in score.values()):
            return sorted(mods, key=lambda m: -score[m]), "vanilla's encoders"
    return mods, ""


# -- Tables II, III: main results ------------------------------------------------------------
def joint_selection(trials) -> dict[tuple[str, str, str], Selected]:  # noqa: ANN001
    return {
        tuple(s.key[k] for k in JOINT_KEYS): s
        for s in select(trials, JOINT_KEYS)
        if s.key["method"] != "unimodal"
    }


def main_table(trials):  # noqa: ANN001, ANN201
    """Tables II and III: per dataset and fusion, each method's selected model: the fused head,
    each encoder, Δ = stronger − weaker encoder, and the search budget behind it."""
    selected, refs = joint_selection(trials), unimodal_references(trials)
    rows, bases = [], {}
    modality_columns: list[str] = []
    for (dataset, fusion, method), sel in sorted(selected.items()):
        metric = metric_of(sel.trials)
        order, basis = modality_order(trials, dataset, fusion, selected, refs)
        bases[dataset] = basis
        row = {"dataset": dataset, "fusion": fusion, "method": method, "metric": metric, "n": sel.n}
        row["reported_from"] = sel.reported_from
        _put(row, "mm", sel.trials, f"test/mm/{metric}")
        for m in order:
            _put(row, m, sel.trials, f"test/{m}/{metric}")
            if m not in modality_columns:
                modality_columns.append(m)
        if len(order) >= 2 and basis:
            diffs = sel.trials[f"test/{order[0]}/{metric}"] - sel.trials[f"test/{order[-1]}/{metric}"]
            row["delta"], row["delta:std"] = mean_sd([float(d) for d in diffs])
            row["stronger"] = order[0]
        else:
            row["delta"], row["delta:std"], row["stronger"] = math.nan, math.nan, ""
        _put_selection(row, sel)
        rows.append(row)
    notes = [
        "Test metrics of each method's selected model (best validation metric of the fused head "
        "over its searches); mean ± std over n seeds, those of the search itself or of a re-run "
        "of the selected configuration (seeds of); bold: best in its dataset and fusion.",
        "Δ = stronger − weaker encoder (lower is more balanced); "
        + "; ".join(f"{d}: stronger by {b}" for d, b in sorted(bases.items()) if b),
        "Budget: the searches that selected (trials, trial-epochs, device-hours = training time "
        "× the GPU share, or the CPUs, each trial held).",
    ]
    return _frame(
        rows,
        title="Main results (the paper's Tables II and III)",
        blocks=["dataset", "fusion"],
        rows=["method"],
        columns=[
            _column("mm", "multimodal", best="max"),
            *[_column(m, m, best="max") for m in modality_columns],
            _column("delta", "Δ", best="min"),
            _column("n", "seeds", "int"),
            _column("reported_from", "seeds of", "text"),
            *_budget_columns(),
        ],
        notes=notes,
    )


# -- Tables IV, V, VI: grids -----------------------------------------------------------------
def grid_table(trials, param: str, *, with_epoch: bool = False):  # noqa: ANN001, ANN201
    """One grid's rows (the latest grid search over ``param`` per dataset, fusion and method):
    per value, the fused head and each encoder, mean ± std over seeds."""
    if len(trials) == 0:
        return _frame([], title=f"Grid over {param}", blocks=[], rows=[param], columns=[], notes=[])
    grids = trials[
        (trials["stage"] == "grid") & trials["grid"].fillna("").str.split(",").apply(lambda g: param in g)
    ]
    rows, fixed_notes = [], []
    modality_columns: list[str] = []
    for (dataset, fusion, method), group in grids.groupby(["dataset", "fusion", "method"], sort=True):
        latest = group.loc[group["start_time"].idxmax(), "search"]
        runs = group[group["search"] == latest].copy()
        runs["_value"] = [trial_value(r, param) for _, r in runs.iterrows()]
        metric = metric_of(runs)
        mods = encoders(trials, dataset, metric)
        fixed = _fixed_params(runs, exclude={param, "seed"})
        if fixed:
            fixed_notes.append(f"{dataset} · {fusion} · {method} ({latest}): {fixed}")
        for value, seeds in sorted(runs.groupby("_value", sort=False), key=lambda kv: _sort_value(kv[0])):
            row = {"dataset": dataset, "fusion": fusion, "method": method, param: value, "metric": metric}
            row["n"] = len(seeds)
            _put(row, "mm", seeds, f"test/mm/{metric}")
            for m in mods:
                _put(row, m, seeds, f"test/{m}/{metric}")
                if m not in modality_columns:
                    modality_columns.append(m)
            _put(row, "val_mm", seeds, f"val/mm/{metric}")
            if with_epoch:
                _put(row, "best_epoch", seeds, "best_epoch")
            rows.append(row)
    columns = [
        _column("mm", "multimodal", best="max"),
        *[_column(m, m, best="max") for m in modality_columns],
        _column("val_mm", "val multimodal"),
    ]
    if with_epoch:
        columns.append(_column("best_epoch", "best epoch", "float"))
    columns.append(_column("n", "seeds", "int"))
    return _frame(
        rows,
        title=f"Sensitivity to {param}",
        blocks=["dataset", "fusion", "method"],
        rows=[param],
        columns=columns,
        notes=[
            f"Test metrics at the best validation epoch of each {param} value (the latest grid search "
            f"over {param}), mean ± std over n seeds; bold: best value. Fixed: "
            + ("; ".join(fixed_notes) or "–"),
        ],
    )


def sensitivity_table(trials, param: str):  # noqa: ANN001, ANN201
    """Tables IV (τ) and V (μ): MILES over a grid of one hyper-parameter, the others fixed."""
    table = grid_table(trials, param)
    table.attrs["title"] = f"Sensitivity to {param} (the paper's Table {'IV' if param == 'tau' else 'V'})"
    return table


def u_source_table(trials):  # noqa: ANN001, ANN201
    """Table VI: u computed on the training set against the validation set, with metrics and
    the epoch selected. From searches: every selected MILES row (``miles``, ``miles-utrain``
    of a study), each searched with its own budget; else from a grid over ``u_source``."""
    searched = [
        (key, sel)
        for key, sel in sorted(joint_selection(trials).items())
        if _base_method(sel.trials) == "miles"
    ]
    sources = {str(trial_value(sel.trials.iloc[0], "u_source") or "val") for _, sel in searched}
    if len(sources) < 2:
        table = grid_table(trials, "u_source", with_epoch=True)
        table.attrs["title"] = "u from the training or the validation set (the paper's Table VI)"
        return table
    rows, modality_columns = [], []
    for (dataset, fusion, method), sel in searched:
        metric = metric_of(sel.trials)
        u_source = str(trial_value(sel.trials.iloc[0], "u_source") or "val")
        row = {"dataset": dataset, "fusion": fusion, "u_source": u_source, "method": method, "metric": metric}
        row["n"] = sel.n
        _put(row, "mm", sel.trials, f"test/mm/{metric}")
        for m in encoders(trials, dataset, metric):
            _put(row, m, sel.trials, f"test/{m}/{metric}")
            if m not in modality_columns:
                modality_columns.append(m)
        _put(row, "best_epoch", sel.trials, "best_epoch")
        _put_selection(row, sel)
        rows.append(row)
    return _frame(
        rows,
        title="u from the training or the validation set (the paper's Table VI)",
        blocks=["dataset", "fusion"],
        rows=["u_source"],
        columns=[
            _column("method", "row", "text"),
            _column("mm", "multimodal", best="max"),
            *[_column(m, m, best="max") for m in modality_columns],
            _column("best_epoch", "best epoch", "float"),
            _column("n", "seeds", "int"),
            *_budget_columns(),
        ],
        notes=[
            "Each row is MILES searched with its own budget (u from the validation set: miles; from "
            "the training set: miles-utrain), selected on validation, its test metrics mean ± std over "
            "the seeds reported; bold: best in its dataset and fusion."
        ],
    )


def _base_method(frame) -> str:  # noqa: ANN001
    """The registered method of a selection's trials (its row may be a variant)."""
    if "base_method" in frame and len(frame):
        return str(frame["base_method"].iloc[0])
    return str(frame["method"].iloc[0]) if len(frame) else ""


# -- §V-B: the gap to the unimodal models ------------------------------------------------------
def unimodal_gap_table(trials):  # noqa: ANN001, ANN201
    """For every method's selected model, each encoder's gap to the best unimodal model of its
    modality (in points: 100 × (unimodal − encoder)), and mean ± std over all its encoders."""
    refs = unimodal_references(trials)
    rows = []
    gap_columns: list[str] = []
    for (dataset, fusion, method), sel in sorted(joint_selection(trials).items()):
        metric = metric_of(sel.trials)
        row = {"fusion": fusion, "method": method}
        for m in encoders(trials, dataset, metric):
            if (dataset, m) not in refs:
                continue
            ref = refs[(dataset, m)].mean_std(f"test/{m}/{metric}")[0]
            mine = sel.mean_std(f"test/{m}/{metric}")[0]
            name = f"{dataset}:{m}"
            row[name] = 100 * (ref - mine)
            if name not in gap_columns:
                gap_columns.append(name)
        rows.append(row)
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        merged.setdefault((row["fusion"], row["method"]), {}).update(row)
    out = []
    for key in sorted(merged):
        row = merged[key]
        gaps = [row[c] for c in gap_columns if c in row and math.isfinite(row[c])]
        row["gap"], row["gap:std"] = mean_sd(gaps)
        row["encoders"] = len(gaps)
        out.append(row)
    return _frame(
        out,
        title="Gap of each encoder to its best unimodal model (the paper's §V-B)",
        blocks=["fusion"],
        rows=["method"],
        columns=[
            *[_column(c, c, "points") for c in gap_columns],
            _column("gap", "mean ± std", "points", best="min"),
            _column("encoders", "encoders", "int"),
        ],
        notes=[
            "Points: 100 × (best unimodal model's test metric − the encoder's test metric in the "
            "method's selected model); positive = below its unimodal model. Mean ± std over every "
            "encoder of every dataset (the paper reports ≈ 1.8 ± 1.6 for MILES with concatenation)."
        ],
    )


# -- missing modalities ------------------------------------------------------------------------
def missing_modality_table(trials):  # noqa: ANN001, ANN201
    """Per method's selected model: the fused head's test metric with every modality, and
    without each one: its features zeroed, set to their training mean, or left to the
    remaining unimodal head(s)."""
    rows = []
    columns: list[dict[str, Any]] = [_column("all", "all", best="max")]
    seen: set[str] = set()
    for (dataset, fusion, method), sel in sorted(joint_selection(trials).items()):
        metric = metric_of(sel.trials)
        mods = encoders(trials, dataset, metric)
        if not mods or f"test/{zeroed_head(mods[0])}/{metric}" not in sel.trials:
            continue  # runs from before the loop recorded these heads
        row = {"dataset": dataset, "fusion": fusion, "method": method, "metric": metric, "n": sel.n}
        _put(row, "all", sel.trials, f"test/mm/{metric}")
        for m in mods:
            others = [o for o in mods if o != m]
            remaining = others[0] if len(others) == 1 else without_head(m)
            for kind, head, header in (
                ("zero", zeroed_head(m), f"−{m}: zero"),
                ("mean", mean_head(m), f"−{m}: mean"),
                ("unimodal", remaining, f"−{m}: {'+'.join(others) if len(others) == 1 else 'others'}"),
            ):
                name = f"{kind}:{m}"
                _put(row, name, sel.trials, f"test/{head}/{metric}")
                if name not in seen:
                    seen.add(name)
                    columns.append(_column(name, header, best="max"))
        rows.append(row)
    columns.append(_column("n", "seeds", "int"))
    return _frame(
        rows,
        title="Test metric with a modality missing",
        blocks=["dataset", "fusion"],
        rows=["method"],
        columns=columns,
        notes=[
            "Each method's selected model on the test set: with every modality (all), and without "
            "modality m: the fused head with m's features zeroed (zero) or set to their training "
            "mean (mean), or the remaining unimodal head (the other modality's; for three or more, "
            "the average of the others). Mean ± std over n seeds; bold: best per column."
        ],
    )


def _fixed_params(runs, exclude: set[str]) -> str:  # noqa: ANN001
    """The searched-elsewhere parameters a grid held fixed, as ``lr=0.001, mu=0.5``."""
    names = [c[len("config.method_args.") :] for c in runs.columns if c.startswith("config.method_args.")]
    names = ["lr", *names]
    parts = []
    for name in names:
        if name in exclude:
            continue
        values = {str(trial_value(r, name)) for _, r in runs.iterrows()} - {"None"}
        if len(values) == 1:
            parts.append(f"{name}={values.pop()}")
    return ", ".join(parts)


def _put_selection(row: dict[str, Any], sel: Selected) -> None:
    """What every selected row states besides its metrics: the budget behind it, its params."""
    row.update(budget(sel.searched))
    row["params"] = _params_text(sel.params)


def _params_text(params: dict[str, Any]) -> str:
    from miles_tune.records import short_value

    return ", ".join(f"{k}={short_value(v)}" for k, v in params.items())


def _sort_value(value: Any) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) else (1, 0.0, str(value))
