"""The utilisation trace of a run (the paper's Fig. 2): data first, rendering second.

:func:`utilisation_trace` turns epoch records into plain series (no matplotlib);
:func:`utilisation_figure` draws them in three panels that share the epoch axis:

1. u per modality, the imbalance δ and, when given, MILES's threshold τ;
2. the learning rate of every param group as a multiple of α (or of its first rate);
3. the validation metric of the fused head ``mm`` and of each unimodal head (the ablation
   heads ``no_<m>``, ``mm_zero_<m>``, ``mm_mean_<m>`` only on request: they are diagnostics
   of the fused model, not what the trace follows, and would crowd the panel).

Every modality keeps one colour in all three panels (:func:`modality_colours`,
:func:`series_style`); the fused head ``mm`` and the ``fusion``/``heads`` groups are
black and greys, which no modality gets.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

from miles_tune.records import MEAN_PREFIX, MM, ZEROED_PREFIX, EpochRecord, short_value, without_head

# Okabe–Ito (colour-blind safe) without its yellow and black, then tab10 hues that are
# neither grey nor close to the first ones: modalities never get black or grey.
MODALITY_PALETTE = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#8c564b",  # brown
    "#bcbd22",  # olive
    "#9467bd",  # purple
    "#17becf",  # cyan
)
# Shared (not per-modality) series: the fused head and the fusion / heads groups.
SHARED_COLOURS = {MM: "#000000", "fusion": "#4d4d4d", "heads": "#a0a0a0"}
OTHER_COLOUR = "#7f7f7f"  # any other name that belongs to no modality
DELTA_COLOUR = "#000000"
TAU_COLOUR = "#7f7f7f"
# Heads named after a modality that are not its unimodal head: the other unimodal heads
# averaged (``no_<m>``), the fused head with m's features zeroed / set to their training
# mean. Longest first, so that a name is split at the right prefix.
ABLATION_PREFIXES = (ZEROED_PREFIX, MEAN_PREFIX, without_head(""))
ABLATION_LINESTYLES = {without_head(""): ":", ZEROED_PREFIX: "-.", MEAN_PREFIX: (0, (3, 1, 1, 1, 1, 1))}


def ablation_of(head: str) -> tuple[str, str] | None:
    """``(prefix, modality)`` of an ablation head such as ``mm_zero_audio``, else None."""
    for prefix in ABLATION_PREFIXES:
        if head.startswith(prefix) and len(head) > len(prefix):
            return prefix, head[len(prefix) :]
    return None


def is_main_head(head: str) -> bool:
    """The fused head or a unimodal head: what the trace shows by default."""
    return ablation_of(head) is None


def modality_colours(modalities: Iterable[str]) -> dict[str, str]:
    """One colour per modality, in the order given (the dataset's modality order).

    Deterministic: the same modalities in the same order always get the same colours.
    Past the palette the colours repeat; none is black or grey.
    """
    out: dict[str, str] = {}
    for m in modalities:
        if m not in out:
            out[m] = MODALITY_PALETTE[len(out) % len(MODALITY_PALETTE)]
    return out


def series_style(name: str, colours: dict[str, str]) -> dict[str, str]:
    """Colour and line style of a series named after a modality, a param group or a head.

    ``<m>`` (u, encoder group, unimodal head): m's colour, solid; ``head_<m>`` (its own
    head group): m's colour, dashed; ``no_<m>`` (the heads without m): m's colour, dotted;
    ``mm_zero_<m>`` / ``mm_mean_<m>`` (the fused head without m's features): m's colour,
    dash-dot / dash-dot-dot; ``mm``, ``fusion``, ``heads``: black / greys, solid; anything
    else: grey, dash-dot.
    """
    if name in colours:
        return {"color": colours[name], "linestyle": "-"}
    if name.startswith("head_") and name[len("head_") :] in colours:
        return {"color": colours[name[len("head_") :]], "linestyle": "--"}
    ablation = ablation_of(name)
    if ablation is not None and ablation[1] in colours:
        return {"color": colours[ablation[1]], "linestyle": ABLATION_LINESTYLES[ablation[0]]}
    if name in SHARED_COLOURS:
        return {"color": SHARED_COLOURS[name], "linestyle": "-"}
    return {"color": OTHER_COLOUR, "linestyle": "-."}


def as_float(value: Any) -> float:
    """``float(value)``, NaN for what is not a number (a missing rate or metric)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    """Equal series, NaN equal to NaN (relative tolerance for float round-off)."""
    return len(a) == len(b) and all(
        (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-15)
        for x, y in zip(a, b, strict=True)
    )


def lr_bundles(series: dict[str, list[float]]) -> list[list[str]]:
    """Groups whose whole series are identical, bundled (in first-seen order)."""
    bundles: list[list[str]] = []
    for g, values in series.items():
        for b in bundles:
            if _same(series[b[0]], values):
                b.append(g)
                break
        else:
            bundles.append([g])
    return bundles


def _modalities(records: list[EpochRecord]) -> list[str]:
    """The modalities in model order: the u keys, then any unimodal head not yet seen
    (neither ``mm`` nor an ablation head)."""
    out: list[str] = []
    for r in records:
        for m in r.u:
            if m not in out:
                out.append(m)
    for r in records:
        for h in r.metrics.get("val", {}):
            if h != MM and is_main_head(h) and h not in out:
                out.append(h)
    return out


def _keys(dicts: Iterable[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for d in dicts:
        out.extend(k for k in d if k not in out)
    return out


def utilisation_trace(
    records: list[EpochRecord],
    metric: str = "acc",
    *,
    title: str = "",
    tau: float | None = None,
    base_lr: float | None = None,
    ablation_heads: bool = False,
) -> dict[str, Any]:
    """Series per epoch: u per modality, δ, lr per group, validation metric per head.

    ``val`` holds ``mm`` and the unimodal heads; ``ablation_heads`` adds ``no_<m>``,
    ``mm_zero_<m>`` and ``mm_mean_<m>`` (e.g. to see how much the fused head loses without m).

    ``lr_mult`` is each group's rate divided by ``base_lr`` (α) or, when ``base_lr`` is
    None, by the group's first finite non-zero rate (``lr_ref`` holds the divisors).
    ``lr_bundles`` lists groups whose multiplier series are identical. Missing values
    are NaN. ``title`` and ``tau`` are carried for the figure.
    """
    val = [r.metrics.get("val", {}) for r in records]
    lr = {g: [as_float(r.lr.get(g)) for r in records] for g in _keys(r.lr for r in records)}
    if base_lr is not None:
        ref = {g: float(base_lr) for g in lr}
    else:
        ref = {g: next((v for v in vs if math.isfinite(v) and v != 0), math.nan) for g, vs in lr.items()}
    lr_mult = {g: [v / ref[g] if ref[g] else math.nan for v in values] for g, values in lr.items()}
    return {
        "epoch": [r.epoch for r in records],
        "modalities": _modalities(records),
        "u": {m: [as_float(r.u.get(m)) for r in records] for m in _keys(r.u for r in records)},
        "delta": [as_float(r.delta) for r in records],
        "tau": None if tau is None else float(tau),
        "lr": lr,
        "base_lr": None if base_lr is None else float(base_lr),
        "lr_ref": ref,
        "lr_mult": lr_mult,
        "lr_bundles": lr_bundles(lr_mult),
        "val": {
            h: [as_float(v.get(h, {}).get(metric)) for v in val]
            for h in _keys(val)
            if ablation_heads or is_main_head(h)
        },
        "metric": metric,
        "title": title,
    }


def _finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _wrap(text: str) -> str:
    """Break a long legend entry at spaces only (so joining lines with spaces restores it)."""
    return textwrap.fill(text, 24, break_long_words=False, break_on_hyphens=False)


def _fmt_mult(v: float) -> str:
    return f"{v:.3g}×"


FIGSIZE = (9.0, 8.5)  # inches


def utilisation_figure(trace: dict[str, Any]):  # -> matplotlib.figure.Figure
    """Three panels sharing integer epoch ticks; legends sit right of the panels."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import ScaledTranslation

    x = list(trace["epoch"])
    colours = modality_colours(trace.get("modalities") or list(trace["u"]))
    marker = {"marker": "o", "markersize": 3.5} if len(x) <= 30 else {}
    # legends right of the panels, leaving room for the final-lr labels at the lr lines' ends
    legend_kw = {"loc": "upper left", "bbox_to_anchor": (1.08, 1.0), "borderaxespad": 0.0, "fontsize": 9}

    fig = Figure(figsize=FIGSIZE)
    ax_u, ax_lr, ax_m = fig.subplots(3, 1, sharex=True)
    if trace.get("title"):
        fig.suptitle(trace["title"], fontsize=12)

    # 1. utilisation per modality, δ and τ
    for m, values in trace["u"].items():
        ax_u.plot(x, values, label=m, lw=1.8, **series_style(m, colours), **marker)
    ax_u.plot(x, trace["delta"], label="δ", color=DELTA_COLOUR, ls="--", lw=1.8, **marker)
    tau = trace.get("tau")
    if tau is not None:
        ax_u.axhline(tau, color=TAU_COLOUR, ls=":", lw=1.5, label=f"τ = {tau:.3g}", gid="tau")
        if x:  # where δ > τ (MILES acts on the next epoch)
            d = [as_float(v) for v in trace["delta"]]
            over = [math.isfinite(v) and v > tau for v in d]
            ax_u.fill_between(x, d, tau, where=over, interpolate=True, color=TAU_COLOUR, alpha=0.15, lw=0)
    ax_u.set_ylabel("utilisation u, imbalance δ")
    ax_u.grid(alpha=0.3)

    # 2. learning-rate multipliers. Groups with identical series share one striped line
    # (their colours alternate along it); distinct lines that meet are offset by a line width.
    ax_lr.grid(alpha=0.3)
    mult = trace.get("lr_mult", {})
    bundles = trace.get("lr_bundles") or [[g] for g in mult]
    order = [g for b in bundles for g in b]
    lw, gap, stripe = 2.2, 2.2, 7.0  # points
    lines = {}
    xs = x + [x[-1] + 1] if x else []  # steps-post: the last epoch's rate spans the last epoch
    for i, bundle in enumerate(bundles):
        dy = (i - (len(bundles) - 1) / 2) * gap / 72.0
        transform = ax_lr.transData + ScaledTranslation(0, dy, fig.dpi_scale_trans)
        k = len(bundle)
        for j, g in enumerate(bundle):
            style = series_style(g, colours)
            if k > 1:
                style["linestyle"] = ((k - j) % k * stripe, (stripe, (k - 1) * stripe))
            ys = list(mult[g]) + ([mult[g][-1]] if x else [])
            (lines[g],) = ax_lr.plot(
                xs, ys, label=g, drawstyle="steps-post", lw=lw, transform=transform, **style
            )
    finals = _finite(mult[g][-1] for g in order if mult[g])
    top = max(_finite(v for g in order for v in mult[g]), default=1.0)
    ax_lr.set_ylim(0, max(top, 1.0) * 1.15)
    sep, y_text = 0.07 * ax_lr.get_ylim()[1], -math.inf  # labels at least 7 % of the axis apart
    right = ax_lr.transData + ScaledTranslation(4 / 72.0, 0, fig.dpi_scale_trans)
    for v in sorted(set(finals)):  # the last epoch's value(s) at the lines' right end
        who = [g for g in order if mult[g] and _same([mult[g][-1]], [v])]
        colour = series_style(who[0], colours)["color"] if len(who) == 1 else "#333333"
        y_text = max(v, y_text + sep)
        ax_lr.text(
            xs[-1], y_text, _fmt_mult(v), transform=right, va="center", ha="left", fontsize=9,
            color=colour, clip_on=False, gid="lr_final",
        )  # fmt: skip
    base = trace.get("base_lr")
    ax_lr.set_ylabel(f"lr ÷ α  (α = {short_value(base)})" if base is not None else "lr ÷ first lr")
    if lines:
        from matplotlib.lines import Line2D

        def proxy(g: str) -> Line2D:  # legend handles: solid, in the group's own style
            return Line2D([], [], lw=lw, **series_style(g, colours))

        handles = [tuple(proxy(g) for g in b) if len(b) > 1 else proxy(b[0]) for b in bundles]
        ax_lr.legend(
            handles,
            [_wrap(", ".join(b)) for b in bundles],
            handler_map={tuple: HandlerTuple(ndivide=None, pad=0.0)},
            handlelength=4.0,
            title="param group",
            title_fontsize=9,
            **legend_kw,
        )

    # 3. validation metric per head
    for h, values in trace["val"].items():
        ax_m.plot(x, values, label=h, lw=1.8, **series_style(h, colours), **marker)
    ax_m.set_ylabel(f"val {trace['metric']}")
    ax_m.set_xlabel("epoch")
    ax_m.grid(alpha=0.3)

    for ax, title in ((ax_u, None), (ax_m, "head")):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title=title, title_fontsize=9, **legend_kw)
    ax_m.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_m.set_xlim((min(x), max(x) + 1) if x else (0, 1))
    _place_panels(fig, titled=bool(trace.get("title")))
    return fig


def _place_panels(fig, titled: bool) -> None:  # noqa: ANN001
    """Fixed margins in inches, the right one wide enough for the widest legend. Constrained
    layout measured every tick label before each draw, a quarter of the figure's cost, and
    each trial of a search renders this figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    width, height = fig.get_size_inches()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    widest = max((leg.get_window_extent(renderer).width / fig.dpi for leg in legends), default=0.0)
    left, top, bottom, gap = 0.85, 0.5 if titled else 0.2, 0.55, 0.15  # inches
    # a legend starts 8 % of the panel's width right of it (room for the lr panel's end labels)
    panel = (width - left - widest - 0.1) / 1.08
    n = len(fig.axes)
    fig.subplots_adjust(
        left=left / width,
        right=(left + panel) / width,
        top=1 - top / height,
        bottom=bottom / height,
        hspace=gap / ((height - top - bottom - gap * (n - 1)) / n),
    )
