"""The utilisation trace of a run (the paper's Fig. 2): data first, rendering second."""

from __future__ import annotations

from typing import Any

from miles_tune.records import EpochRecord


def utilisation_trace(records: list[EpochRecord], metric: str = "acc") -> dict[str, Any]:
    """Series per epoch: u per modality, δ, lr per group, validation metric per head."""
    epochs = [r.epoch for r in records]
    heads = list(records[0].metrics["val"]) if records else []
    return {
        "epoch": epochs,
        "u": {m: [r.u[m] for r in records] for m in (records[0].u if records else {})},
        "delta": [r.delta for r in records],
        "lr": {g: [r.lr[g] for r in records] for g in (records[0].lr if records else {})},
        "val": {h: [r.metrics["val"][h].get(metric) for r in records] for h in heads},
        "metric": metric,
    }


def utilisation_figure(trace: dict[str, Any]):  # -> matplotlib.figure.Figure
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 8), layout="constrained")
    ax_u, ax_lr, ax_m = fig.subplots(3, 1, sharex=True)
    x = trace["epoch"]
    for m, values in trace["u"].items():
        ax_u.plot(x, values, label=f"u/{m}")
    ax_u.plot(x, trace["delta"], "k--", label="δ")
    ax_u.set_ylabel("utilisation")
    ax_u.legend(loc="best", fontsize="small")
    for g, values in trace["lr"].items():
        ax_lr.plot(x, values, label=g, drawstyle="steps-post")  # constant within an epoch
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.legend(loc="best", fontsize="small")
    for h, values in trace["val"].items():
        ax_m.plot(x, values, label=h)
    ax_m.set_ylabel(f"val {trace['metric']}")
    ax_m.set_xlabel("epoch")
    ax_m.legend(loc="best", fontsize="small")
    return fig
