"""One run's training dynamics (the paper's Fig. 2) as an analysis artefact: a table and a figure.

:func:`dynamics_frame` is the data (one row per epoch, CSV-ready); :func:`write_dynamics`
writes it beside the figure that :mod:`miles_tune.plots` draws, so that the numbers behind
every line can be read back without re-running anything. Both read the same
:func:`~miles_tune.plots.utilisation_trace`, so the table holds exactly the heads and
groups the figure shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from miles_tune.plots import as_float, utilisation_figure, utilisation_trace
from miles_tune.records import EpochRecord, metric_key

if TYPE_CHECKING:
    import pandas as pd

DPI = 150


def _frame(trace: dict[str, Any]) -> pd.DataFrame:
    """The trace's per-epoch series as flat columns (the record's own key names)."""
    import pandas as pd

    metric = trace["metric"]
    columns: dict[str, list[Any]] = {"epoch": list(trace["epoch"])}
    columns.update({f"u/{m}": values for m, values in trace["u"].items()})
    columns["delta"] = trace["delta"]
    columns.update({f"lr/{g}": values for g, values in trace["lr"].items()})
    columns.update({metric_key("val", h, metric): values for h, values in trace["val"].items()})
    return pd.DataFrame(columns).astype({"epoch": "int64"})


def dynamics_frame(records: list[EpochRecord], metric: str, *, ablation_heads: bool = False) -> pd.DataFrame:
    """One row per epoch: ``epoch``, ``u/<m>``, ``delta``, ``lr/<group>`` (the rates as used)
    and ``val/<head>/<metric>`` for ``mm`` and each unimodal head (``ablation_heads`` adds
    ``no_<m>``, ``mm_zero_<m>``, ``mm_mean_<m>``). Missing values are NaN."""
    return _frame(utilisation_trace(records, metric, ablation_heads=ablation_heads))


def write_dynamics(
    records: list[EpochRecord],
    path_png: Path,
    *,
    metric: str,
    tau: float | None,
    base_lr: float | None,
    title: str,
    ablation_heads: bool = False,
) -> tuple[Path, Path]:
    """Write the utilisation figure to ``path_png`` and its numbers to the ``.csv`` beside it
    (same stem); returns both paths. ``tau`` draws MILES's threshold, ``base_lr`` (α) makes
    the lr panel read in multiples of α. One trace feeds both, so they cannot disagree."""
    path_png = Path(path_png)
    path_csv = path_png.with_suffix(".csv")
    path_png.parent.mkdir(parents=True, exist_ok=True)
    trace = utilisation_trace(
        records, metric, title=title, tau=tau, base_lr=base_lr, ablation_heads=ablation_heads
    )
    utilisation_figure(trace).savefig(path_png, dpi=DPI)
    _frame(trace).to_csv(path_csv, index=False)
    return path_png, path_csv


def schedule_frame(runs: dict[str, list[EpochRecord]]) -> pd.DataFrame:
    """Each encoder's rate relative to the fusion group's, per epoch, for each labelled run
    (``run``, ``epoch``, ``modality``, ``lr``, ``fusion_lr``, ``relative``): MILES's μ steps
    and a PBT member's learned ``lr_mult`` read on one scale."""
    import pandas as pd

    rows = []
    for label, records in runs.items():
        for record in records:
            fusion = as_float(record.lr.get("fusion"))
            for group, value in record.lr.items():
                if group in ("fusion", "heads") or group.startswith("head_"):
                    continue
                rate = as_float(value)
                relative = rate / fusion if fusion and fusion == fusion else float("nan")
                rows.append(
                    {"run": label, "epoch": record.epoch, "modality": group, "lr": rate,
                     "fusion_lr": fusion, "relative": relative}
                )  # fmt: skip
    columns = ["run", "epoch", "modality", "lr", "fusion_lr", "relative"]
    return pd.DataFrame(rows, columns=columns)


def write_schedule(runs: dict[str, list[EpochRecord]], path_png: Path, *, title: str) -> tuple[Path, Path]:
    """One panel per modality: the encoder's rate ÷ the fusion rate per epoch, one line per run
    (log scale); the numbers in the ``.csv`` beside it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    path_png = Path(path_png)
    path_png.parent.mkdir(parents=True, exist_ok=True)
    frame = schedule_frame(runs)
    modalities = list(dict.fromkeys(frame["modality"]))
    fig = Figure(figsize=(4.2 * max(1, len(modalities)), 3.4), layout="constrained")
    axes = fig.subplots(1, max(1, len(modalities)), squeeze=False)[0]
    for ax, modality in zip(axes, modalities, strict=False):
        for label, rows in frame[frame["modality"] == modality].groupby("run", sort=False):
            ax.step(rows["epoch"], rows["relative"], where="post", marker="o", markersize=3, label=label)
        ax.set_yscale("log")
        ax.set_title(f"{modality} encoder")
        ax.set_xlabel("epoch")
        ax.set_ylabel("rate ÷ fusion rate")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path_png, dpi=DPI)
    path_csv = path_png.with_suffix(".csv")
    frame.to_csv(path_csv, index=False)
    return path_png, path_csv
