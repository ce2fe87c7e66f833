"""A figure beside every analysis table: the same numbers as the table, drawn.

One panel per block of the table (dataset and fusion). A table whose rows are the values
of a grid (τ, μ) is drawn as lines against the value; any other as grouped bars per row
(method, modality), with the seeds' standard deviation as error bars. The fused head is
black and every modality keeps its colour (:func:`miles_tune.plots.modality_colours`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

PLOTTED = ("metric", "points")
SHARED = {"mm", "all", "gap", "val_mm", "delta", "test", "val"}  # columns that are no modality's


def _values(rows: list[dict[str, Any]], key: str, scale: float) -> tuple[list[float], list[float]]:
    means = [scale * float(r.get(key, math.nan)) if r.get(key) is not None else math.nan for r in rows]
    stds = [scale * float(r.get(f"{key}:std", 0.0) or 0.0) for r in rows]
    return means, [0.0 if math.isnan(s) else s for s in stds]


HATCHES = {"zero": "//", "mean": "..", "unimodal": ""}  # missing_modality's three variants


def _style(key: str, colours: dict[str, str], i: int) -> dict[str, Any]:
    """A column's colour and hatch: the fused head black, Δ grey, a modality its colour (its
    missing-modality variants hatched: zeroed //, mean-filled .., the other head plain)."""
    if key in ("val", "val_mm"):  # validation beside test: the same black, hatched
        return {"color": "#9e9e9e", "hatch": "//"}
    if key in SHARED - {"delta"}:
        return {"color": "#000000"}
    if key == "delta":
        return {"color": "#bdbdbd", "hatch": "xx"}
    kind, _, name = key.rpartition(":")
    if name in colours:
        return {
            "color": colours[name],
            "hatch": HATCHES.get(kind, ""),
            "alpha": 0.6 if kind == "unimodal" else 1,
        }
    import matplotlib

    return {"color": matplotlib.colormaps["tab10"](i % 10)}


def table_figure(table, path: Path) -> Path:  # noqa: ANN001
    """Draw ``table`` (see :mod:`miles_tune.analysis.render`) into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from miles_tune.analysis.render import blocks, shown_columns
    from miles_tune.plots import modality_colours

    groups = blocks(table) if not table.empty else []
    labels = table.attrs.get("rows", [])
    n = max(1, len(groups))
    cols = min(n, 2)
    fig, axes = plt.subplots(
        math.ceil(n / cols), cols, figsize=(7.6 * cols, 3.8 * math.ceil(n / cols)), squeeze=False
    )
    if not groups:
        axes[0][0].text(0.5, 0.5, "no runs for this table", ha="center", va="center")
        axes[0][0].set_axis_off()
    for ax, (title, rows) in zip(axes.flat, groups, strict=False):
        columns = [c for c in shown_columns(table, rows) if c["kind"] in PLOTTED]
        # sorted: a modality has one colour in every figure of a report, whatever the row order
        colours = modality_colours(sorted({c["key"].split(":")[-1] for c in columns} - SHARED))
        unit = "percent" if any(c["kind"] == "metric" for c in columns) else "points"
        metric = next((r.get("metric") for r in rows if r.get("metric")), "")
        ylabel = f"test {metric} (%)" if unit == "percent" else "points"
        numeric_grid = len(labels) == 1 and all(isinstance(r[labels[0]], (int, float)) for r in rows)
        if any(c["key"].startswith("val") for c in columns):
            ylabel = f"{metric} (%): test; val " + ("dashed" if numeric_grid and len(rows) > 1 else "grey")
        if numeric_grid and len(rows) > 1:
            xs = [float(r[labels[0]]) for r in rows]
            for i, c in enumerate(columns):
                means, stds = _values(rows, c["key"], 100.0 if c["kind"] == "metric" else 1.0)
                style = {"linestyle": "--"} if c["key"].startswith("val") else {}
                ax.errorbar(
                    xs,
                    means,
                    yerr=stds if any(stds) else None,
                    marker="o",
                    capsize=3,
                    label=c["header"],
                    color=_style(c["key"], colours, i)["color"],
                    **style,
                )
            ax.set_xlabel(labels[0])
        else:
            names = [" ".join(str(r[k]) for k in labels) for r in rows]
            width = 0.8 / max(1, len(columns))
            for i, c in enumerate(columns):
                means, stds = _values(rows, c["key"], 100.0 if c["kind"] == "metric" else 1.0)
                xs = [j + (i - (len(columns) - 1) / 2) * width for j in range(len(rows))]
                ax.bar(
                    xs,
                    means,
                    width,
                    yerr=stds if any(stds) else None,
                    capsize=2,
                    label=c["header"],
                    edgecolor="white",
                    linewidth=0.5,
                    **_style(c["key"], colours, i),
                )
            ax.set_xticks(
                range(len(rows)),
                names,
                rotation=30 if len(rows) > 4 else 0,
                ha="right" if len(rows) > 4 else "center",
            )
            finite = [
                v
                for c in columns
                for v in _values(rows, c["key"], 100.0 if c["kind"] == "metric" else 1.0)[0]
                if math.isfinite(v)
            ]
            if unit == "percent" and finite:
                low = min(finite)
                ax.set_ylim(max(0.0, math.floor(low / 5) * 5 - 5), min(100.0, max(finite) + 3))
            ax.axhline(0, color="#999999", linewidth=0.6)
        ax.set_ylabel(ylabel)
        ax.set_title(title or table.attrs.get("title", ""), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    for ax in list(axes.flat)[len(groups) or 1 :]:
        ax.set_axis_off()
    fig.suptitle(table.attrs.get("title", ""), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
