"""The utilisation figure: trace data, colours, τ line, ticks, legends, title (pure, no Ray/MLflow)."""

from __future__ import annotations

import io
import itertools
import math

import pytest

from miles_tune.plots import (
    SHARED_COLOURS,
    lr_bundles,
    modality_colours,
    series_style,
    utilisation_figure,
    utilisation_trace,
)
from miles_tune.records import EpochRecord

ALPHA = 1.2e-3
MU = 0.5


def make_records(modalities, n=12, scaled=(3, 7), split_heads=False, alpha=ALPHA, ablations=False):
    """A MILES-like run: the first modality's encoder runs at μα in the ``scaled`` epochs;
    ``ablations`` adds the fused head with each modality zeroed / at its training mean."""
    out = []
    for e in range(n):
        u = {m: 0.5 / (i + 1) - 0.01 * e for i, m in enumerate(modalities)}
        delta = 0.3 if e + 1 in scaled else 0.1
        lr = {m: alpha * (MU if (i == 0 and e in scaled) else 1.0) for i, m in enumerate(modalities)}
        lr["fusion"] = alpha
        if split_heads:
            lr.update({f"head_{m}": alpha for m in modalities})
        else:
            lr["heads"] = alpha
        val = {"mm": {"acc": 0.5 + 0.03 * e}}
        val.update({m: {"acc": 0.4 + 0.02 * e / (i + 1)} for i, m in enumerate(modalities)})
        if len(modalities) >= 3:
            val.update({f"no_{m}": {"acc": 0.45 + 0.02 * e} for m in modalities})
        if ablations:
            val.update({f"mm_zero_{m}": {"acc": 0.3 + 0.01 * e} for m in modalities})
            val.update({f"mm_mean_{m}": {"acc": 0.35 + 0.01 * e} for m in modalities})
        out.append(EpochRecord(e, {"total": 1.0}, {"val": val}, u, delta, lr, 1.0, 100.0))
    return out


def lines_by_label(fig):
    """label -> [colour of that label's line in each axes where it appears]."""
    from matplotlib.colors import to_hex

    out: dict[str, list[str]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            label = line.get_label()
            if not label.startswith("_"):
                out.setdefault(label, []).append(to_hex(line.get_color()))
    return out


def legend_texts(ax) -> str:
    legend = ax.get_legend()
    return " ".join(t.get_text() for t in legend.get_texts()) if legend else ""


# --- data -----------------------------------------------------------------------------


def test_trace_keeps_the_old_call_and_carries_the_new_options():
    records = make_records(["fast", "slow"])
    plain = utilisation_trace(records, "acc")
    assert plain["title"] == "" and plain["tau"] is None and plain["base_lr"] is None
    trace = utilisation_trace(records, "acc", title="miles-003 lr=1.2e-3", tau=0.21, base_lr=ALPHA)
    assert trace["title"] == "miles-003 lr=1.2e-3" and trace["tau"] == 0.21 and trace["base_lr"] == ALPHA
    assert trace["epoch"] == list(range(12))
    assert trace["modalities"] == ["fast", "slow"]
    assert set(trace["val"]) == {"mm", "fast", "slow"}


@pytest.mark.parametrize("base_lr", [ALPHA, None])
def test_lr_as_multipliers_of_alpha_or_of_the_first_rate(base_lr):
    trace = utilisation_trace(make_records(["fast", "slow"]), base_lr=base_lr)
    expected_fast = [MU if e in (3, 7) else 1.0 for e in range(12)]
    assert trace["lr_mult"]["fast"] == pytest.approx(expected_fast)
    for g in ("slow", "fusion", "heads"):
        assert trace["lr_mult"][g] == pytest.approx([1.0] * 12)
    assert trace["lr"]["fast"][3] == pytest.approx(MU * ALPHA)  # the raw rates are kept


def test_without_base_lr_each_group_is_relative_to_its_own_start():
    records = make_records(["fast", "slow"], n=4, scaled=(0, 2))  # fast starts at μα
    for r in records:
        r.lr["heads"] = 10 * ALPHA
    trace = utilisation_trace(records)
    assert trace["lr_ref"]["fast"] == pytest.approx(MU * ALPHA)
    assert trace["lr_mult"]["fast"] == pytest.approx([1.0, 2.0, 1.0, 2.0])
    assert trace["lr_mult"]["heads"] == pytest.approx([1.0] * 4)


def test_identical_groups_are_bundled():
    trace = utilisation_trace(make_records(["fast", "slow"]), base_lr=ALPHA)
    assert trace["lr_bundles"] == [["fast"], ["slow", "fusion", "heads"]]
    nan = math.nan
    assert lr_bundles({"a": [1.0, nan], "b": [1.0, nan], "c": [1.0, 2.0]}) == [["a", "b"], ["c"]]
    assert lr_bundles({}) == []


def test_empty_records_and_missing_values():
    empty = utilisation_trace([], "acc", tau=0.2)
    assert empty["epoch"] == [] and empty["u"] == {} and empty["lr_mult"] == {} and empty["val"] == {}
    records = make_records(["fast", "slow"], n=3)
    records[1].lr.pop("fusion")
    records[2].metrics["val"]["slow"].pop("acc")
    records[2].delta = math.nan
    trace = utilisation_trace(records, base_lr=ALPHA)
    assert math.isnan(trace["lr"]["fusion"][1]) and math.isnan(trace["lr_mult"]["fusion"][1])
    assert math.isnan(trace["val"]["slow"][2]) and math.isnan(trace["delta"][2])


@pytest.mark.parametrize("modalities", [["fast", "slow"], ["audio", "video", "text"]])
def test_ablation_heads_are_neither_modalities_nor_shown_by_default(modalities):
    records = make_records(modalities, n=3, ablations=True)
    for r in records:  # a run whose u is missing: modalities come from the heads alone
        r.u = {}
    trace = utilisation_trace(records)
    assert trace["modalities"] == modalities
    assert set(trace["val"]) == {"mm", *modalities}
    fig = utilisation_figure(trace)
    assert {t.get_text() for t in fig.axes[2].get_legend().get_texts()} == {"mm", *modalities}

    every = utilisation_trace(records, ablation_heads=True)
    assert every["modalities"] == modalities
    ablations = {f"{p}{m}" for p in ("mm_zero_", "mm_mean_") for m in modalities}
    ablations |= {f"no_{m}" for m in modalities} if len(modalities) >= 3 else set()
    assert set(every["val"]) == {"mm", *modalities} | ablations
    assert every["val"][f"mm_zero_{modalities[0]}"][2] == pytest.approx(0.32)


# --- colours --------------------------------------------------------------------------


def test_modality_colours_are_deterministic_distinct_and_never_shared_greys():
    mods = ["fast", "slow", "text"]
    colours = modality_colours(mods)
    assert colours == modality_colours(list(mods))
    assert list(colours) == mods
    assert len(set(colours.values())) == 3
    assert not set(colours.values()) & set(SHARED_COLOURS.values())
    assert modality_colours(["a", "b", "a"]) == modality_colours(["a", "b"])
    assert len(set(modality_colours([f"m{i}" for i in range(10)]).values())) == 10


def test_series_style_ties_groups_and_heads_to_their_modality():
    colours = modality_colours(["fast", "slow"])
    assert series_style("fast", colours) == {"color": colours["fast"], "linestyle": "-"}
    assert series_style("head_fast", colours) == {"color": colours["fast"], "linestyle": "--"}
    assert series_style("no_fast", colours) == {"color": colours["fast"], "linestyle": ":"}
    zero, mean = series_style("mm_zero_fast", colours), series_style("mm_mean_fast", colours)
    assert zero["color"] == mean["color"] == colours["fast"]
    assert len({zero["linestyle"], mean["linestyle"], ":", "-", "--"}) == 5
    assert series_style("mm_zero_other", colours)["color"] not in colours.values()
    for shared in ("mm", "fusion", "heads"):
        assert series_style(shared, colours)["color"] == SHARED_COLOURS[shared]
    assert series_style("other", colours)["color"] not in colours.values()


@pytest.mark.parametrize("modalities", [["fast", "slow"], ["audio", "video", "text"]])
def test_one_colour_per_modality_across_panels(modalities):
    records = make_records(modalities, split_heads=len(modalities) == 3)
    fig = utilisation_figure(utilisation_trace(records, tau=0.2, base_lr=ALPHA, ablation_heads=True))
    by_label = lines_by_label(fig)
    colours = modality_colours(modalities)
    for m in modalities:
        assert len(by_label[m]) == 3, m  # u, lr group, unimodal head
        assert set(by_label[m]) == {colours[m].lower()}
        if len(modalities) == 3:
            assert by_label[f"head_{m}"] == [colours[m].lower()]
            assert by_label[f"no_{m}"] == [colours[m].lower()]
    shared = {by_label[n][0] for n in ("mm", "fusion", "heads" if len(modalities) == 2 else "fusion")}
    assert not shared & {c.lower() for c in colours.values()}


# --- figure ---------------------------------------------------------------------------


def tau_lines(ax):
    return [line for line in ax.get_lines() if line.get_gid() == "tau"]


def test_tau_line_on_the_delta_panel_iff_tau_is_given():
    records = make_records(["fast", "slow"])
    ax_u = utilisation_figure(utilisation_trace(records, tau=0.21)).axes[0]
    (line,) = tau_lines(ax_u)
    assert set(line.get_ydata()) == {0.21}
    assert "τ = 0.21" in legend_texts(ax_u)
    assert "δ" in legend_texts(ax_u)
    fig = utilisation_figure(utilisation_trace(records))
    assert not any(tau_lines(ax) for ax in fig.axes)


def test_integer_epoch_ticks():
    fig = utilisation_figure(utilisation_trace(make_records(["fast", "slow"], n=5)))
    fig.savefig(io.BytesIO(), format="png")
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize("split_heads", [False, True])
def test_every_lr_group_is_in_the_legend_and_drawn(split_heads):
    records = make_records(["audio", "video", "text"], split_heads=split_heads)
    fig = utilisation_figure(utilisation_trace(records, base_lr=ALPHA))
    ax_lr = fig.axes[1]
    entries = [t.get_text().replace("\n", " ") for t in ax_lr.get_legend().get_texts()]
    names = [n for entry in entries for n in entry.split(", ")]
    groups = list(records[0].lr)
    assert sorted(names) == sorted(groups)
    drawn = {line.get_label() for line in ax_lr.get_lines()}
    assert set(groups) <= drawn
    assert ax_lr.get_yscale() == "linear"


def test_identical_groups_share_one_legend_entry():
    fig = utilisation_figure(utilisation_trace(make_records(["fast", "slow"]), base_lr=ALPHA))
    entries = [t.get_text().replace("\n", " ") for t in fig.axes[1].get_legend().get_texts()]
    assert entries == ["fast", "slow, fusion, heads"]
    assert "1.2e-3" in fig.axes[1].get_ylabel()


def test_last_epoch_rate_is_visible():
    records = make_records(["fast", "slow"], n=12, scaled=(3, 7, 11))
    fig = utilisation_figure(utilisation_trace(records, base_lr=ALPHA))
    ax_lr = fig.axes[1]
    (fast,) = [line for line in ax_lr.get_lines() if line.get_label() == "fast"]
    xs, ys = list(fast.get_xdata()), list(fast.get_ydata())
    assert xs[-1] == 12 and ys[-2:] == pytest.approx([MU, MU])  # the last step spans epoch 11
    finals = {t.get_text() for t in ax_lr.texts if t.get_gid() == "lr_final"}
    assert finals == {"0.5×", "1×"}


def test_title():
    records = make_records(["fast", "slow"], n=3)
    fig = utilisation_figure(utilisation_trace(records, title="miles-003 lr=1.2e-3 tau=0.21 mu=0.65"))
    assert fig._suptitle is not None and fig._suptitle.get_text() == "miles-003 lr=1.2e-3 tau=0.21 mu=0.65"
    assert utilisation_figure(utilisation_trace(records))._suptitle is None


@pytest.mark.parametrize("tau", [None, 0.2])
def test_empty_and_nan_traces_render(tau):
    utilisation_figure(utilisation_trace([], "acc", tau=tau)).savefig(io.BytesIO(), format="png")
    records = make_records(["fast", "slow"], n=4)
    records[1].u["fast"] = math.nan
    records[2].delta = math.nan
    for r in records:
        r.lr["heads"] = math.nan
        r.metrics["val"]["mm"]["acc"] = math.nan
    fig = utilisation_figure(utilisation_trace(records, tau=tau))
    fig.savefig(io.BytesIO(), format="png")


def test_import_miles_tune_stays_free_of_matplotlib():
    import subprocess
    import sys

    code = "import sys, miles_tune, miles_tune.plots; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("modalities", "split_heads"),
    [(["fast", "slow"], False), (["audio", "video", "text"], True), (["spectrogram", "poster_image"], True)],
)
def test_panels_legends_and_labels_fit_the_figure_without_overlap(modalities, split_heads):
    """The layout is fixed margins sized by the widest legend (no constrained layout): every
    panel with its tick labels, legend, end label and title lies inside the figure, and no
    legend covers a panel."""
    records = make_records(modalities, split_heads=split_heads)
    fig = utilisation_figure(utilisation_trace(records, title="miles-003 lr=1.2e-3 tau=0.21", tau=0.2))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    inside = lambda b: b.x0 >= page.x0 and b.y0 >= page.y0 and b.x1 <= page.x1 and b.y1 <= page.y1  # noqa: E731
    panels = [ax.get_tightbbox(renderer) for ax in fig.axes]
    legends = [ax.get_legend().get_window_extent(renderer) for ax in fig.axes if ax.get_legend()]
    labels = [t.get_window_extent(renderer) for ax in fig.axes for t in ax.texts]
    assert len(legends) == 3 and labels
    for box in [*panels, *legends, *labels, fig._suptitle.get_window_extent(renderer)]:
        assert inside(box), box
    frames = [ax.get_window_extent(renderer) for ax in fig.axes]
    for legend in legends:
        assert not any(legend.overlaps(frame) for frame in frames)
    for upper, lower in itertools.pairwise(frames):
        assert upper.y0 > lower.y1  # panels stacked with a gap
