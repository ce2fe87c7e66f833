"""Analysis figures of one run (training dynamics) and of one search (diagnostics): their data
against independent computations, the files they write, and searches that went badly."""

from __future__ import annotations

import math
import random

import pandas as pd
import pytest

from miles_tune.analysis.diagnostics import (
    best_so_far,
    diagnostics_data,
    normalised_params,
    param_importance,
    write_diagnostics,
)
from miles_tune.analysis.dynamics import dynamics_frame, write_dynamics
from miles_tune.records import EpochRecord
from miles_tune.spaces import Param

MODALITIES = ("audio", "video", "text")


def run_records(n: int = 6) -> list[EpochRecord]:
    """Three modalities with every head the loop writes: mm, unimodal, no_<m>, mm_zero_<m>,
    mm_mean_<m>; values are simple functions of the epoch so they can be checked."""
    out = []
    for e in range(n):
        val: dict[str, dict[str, float]] = {"mm": {"acc": 0.5 + 0.01 * e, "f1": 0.4}}
        for i, m in enumerate(MODALITIES):
            val[m] = {"acc": 0.3 + 0.01 * i + 0.001 * e, "f1": 0.2}
            val[f"no_{m}"] = {"acc": 0.1}
            val[f"mm_zero_{m}"] = {"acc": 0.2}
            val[f"mm_mean_{m}"] = {"acc": 0.25}
        metrics = {"train": {"mm": {"acc": 0.9}}, "val": val}
        u = {m: 0.1 * (i + 1) + 0.001 * e for i, m in enumerate(MODALITIES)}
        lr = {"audio": 1e-3 * (0.5 if e % 2 else 1.0), "video": 1e-3, "text": 1e-3, "fusion": 1e-3}
        out.append(EpochRecord(e, {"total": 1.0 - 0.1 * e}, metrics, u, 0.2 + 0.01 * e, lr, 2.0, 50.0))
    return out


def test_dynamics_frame_columns_and_values():
    records = run_records()
    frame = dynamics_frame(records, "acc")
    heads = ["mm", *MODALITIES]
    expected = (
        ["epoch"]
        + [f"u/{m}" for m in MODALITIES]
        + ["delta"]
        + [f"lr/{g}" for g in ("audio", "video", "text", "fusion")]
        + [f"val/{h}/acc" for h in heads]
    )
    assert list(frame.columns) == expected  # no ablation heads, no train split, no f1
    assert frame["epoch"].tolist() == list(range(6)) and frame["epoch"].dtype == "int64"
    for r, (_, row) in zip(records, frame.iterrows(), strict=True):
        flat = r.flat()
        for column in expected[1:]:
            assert row[column] == pytest.approx(flat[column]), column

    every = dynamics_frame(records, "acc", ablation_heads=True)
    for m in MODALITIES:
        assert {f"val/no_{m}/acc", f"val/mm_zero_{m}/acc", f"val/mm_mean_{m}/acc"} <= set(every.columns)
    assert "u/mm_zero_audio" not in every.columns


def test_dynamics_frame_missing_values_are_nan_and_empty_run_has_columns():
    records = run_records(3)
    records[1].metrics["val"]["video"].pop("acc")
    frame = dynamics_frame(records, "acc")
    assert math.isnan(frame.loc[1, "val/video/acc"]) and frame.loc[2, "val/video/acc"] == pytest.approx(0.312)
    empty = dynamics_frame([], "acc")
    assert len(empty) == 0 and list(empty.columns) == ["epoch", "delta"]


def test_write_dynamics_writes_png_and_csv(tmp_path):
    records = run_records()
    png, csv = write_dynamics(
        records, tmp_path / "run" / "dynamics.png", metric="acc", tau=0.21, base_lr=1e-3, title="miles"
    )
    assert png == tmp_path / "run" / "dynamics.png" and csv == tmp_path / "run" / "dynamics.csv"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    back = pd.read_csv(csv)
    pd.testing.assert_frame_equal(back, dynamics_frame(records, "acc"), check_exact=False)


# --- diagnostics ---------------------------------------------------------------------

PARAMS = {
    "lr": Param("lr", "loguniform", (1e-5, 1e-1)),
    "tau": Param("tau", "uniform", (0.0, 0.5)),
    "patience": Param("patience", "randint", (1, 10)),
    "fusion": Param("fusion", "choice", ("concat", "sum", "film")),
}


def search_trials(n: int = 24, seed: int = 3, failed: tuple[int, ...] = (5,)) -> pd.DataFrame:
    """A search whose metric depends mostly on lr; rows shuffled (trial_order says the order)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        lr = 10 ** rng.uniform(-5, -1)
        value = 0.8 - 0.04 * (math.log10(lr) + 3) ** 2 + rng.gauss(0, 0.005)
        rows.append(
            {
                "trial_order": i,
                "epochs_run": rng.randint(2, 20),
                "value": math.nan if i in failed else value,
                "param/lr": lr,
                "param/tau": rng.uniform(0, 0.5),
                "param/patience": rng.randint(1, 10),
                "param/fusion": rng.choice(["concat", "sum", "film"]),
                "seed": 0,
            }
        )
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)


def test_best_so_far_is_the_running_maximum_in_start_order():
    trials = search_trials()
    out = best_so_far(trials)
    assert list(out.columns) == ["trial_order", "trials", "cumulative_trial_epochs", "value", "best_so_far"]
    ordered = sorted(trials.to_dict("records"), key=lambda r: r["trial_order"])
    best, spent = -math.inf, 0
    for row, trial in zip(out.itertuples(), ordered, strict=True):
        spent += trial["epochs_run"]
        if not math.isnan(trial["value"]):
            best = max(best, trial["value"])
        assert row.trial_order == trial["trial_order"]
        assert row.cumulative_trial_epochs == spent
        assert row.best_so_far == pytest.approx(best)
    assert out["trials"].tolist() == list(range(1, 25))
    assert out["best_so_far"].is_monotonic_increasing
    assert math.isnan(out.loc[5, "value"]) and out.loc[5, "best_so_far"] == out.loc[4, "best_so_far"]


def test_best_so_far_before_any_trial_finished_is_nan():
    trials = search_trials(4, failed=(0, 1))
    out = best_so_far(trials)
    assert out["best_so_far"].isna().tolist() == [True, True, False, False]


def test_param_importance_keys_sum_and_determinism():
    trials = search_trials()
    first = param_importance(trials, PARAMS)
    assert set(first) == set(PARAMS)
    assert sum(first.values()) == pytest.approx(1.0)
    assert all(v >= 0 for v in first.values())
    assert list(first)[0] == "lr"  # the metric depends on lr alone; most important first
    assert param_importance(trials, PARAMS) == first
    assert param_importance(trials.sample(frac=1.0, random_state=7), PARAMS) == first


def test_param_importance_reads_choices_and_ints_back_from_text():
    """MLflow gives params back as text; a choice of ints in a frame with NaN comes back as floats."""
    params = {**PARAMS, "batch_size": Param("batch_size", "choice", (32, 64))}
    trials = search_trials()
    trials["param/batch_size"] = [32.0, 64.0] * 12
    as_text = trials.copy()
    for name in params:
        as_text[f"param/{name}"] = as_text[f"param/{name}"].map(repr if name != "fusion" else str)
    as_text["param/batch_size"] = ["32", "64"] * 12
    first = param_importance(trials, params)
    assert set(first) == set(params)
    assert param_importance(as_text, params) == pytest.approx(first)


def test_param_importance_when_there_is_nothing_to_compare():
    trials = search_trials()
    assert param_importance(trials, {"lr": PARAMS["lr"]}) == {}  # one param: share 1 says nothing
    assert param_importance(trials, {}) == {}
    assert param_importance(search_trials(3, failed=(1,)), PARAMS) == {}  # 2 finished
    flat = trials.assign(value=0.5)
    assert param_importance(flat, PARAMS) == {}
    missing = trials.drop(columns=["param/tau"])
    assert param_importance(missing, PARAMS) == {}


def test_normalised_params_place_values_on_their_axes():
    trials = pd.DataFrame(
        {
            "trial_order": [0, 1, 2],
            "epochs_run": [1, 1, 1],
            "value": [0.1, 0.2, math.nan],
            "param/lr": [1e-5, 1e-3, 1e-1],
            "param/tau": [0.0, 0.25, 0.5],
            "param/patience": [1, 10, 4],
            "param/fusion": ["film", "concat", "nope"],
        }
    )
    coords = normalised_params(trials, PARAMS)
    assert coords["lr"].tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert coords["tau"].tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert coords["patience"].tolist() == pytest.approx([0.0, 1.0, 1 / 3])
    assert coords["fusion"].tolist()[:2] == pytest.approx([1.0, 0.0]) and math.isnan(coords.loc[2, "fusion"])
    data = diagnostics_data(trials, PARAMS, "val/mm/acc", title="t")
    (fusion_axis,) = [a for a in data["axes"] if a["name"] == "fusion"]
    assert fusion_axis["ticks"] == [(0.0, "concat"), (0.5, "sum"), (1.0, "film")]
    (lr_axis,) = [a for a in data["axes"] if a["name"] == "lr"]
    assert [label for _, label in lr_axis["ticks"]][0] == "1e-5" and "(log)" in lr_axis["label"]


def is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_write_diagnostics_writes_a_png(tmp_path):
    target = tmp_path / "search" / "diagnostics.png"
    path = write_diagnostics(search_trials(), PARAMS, "val/mm/acc", target, title="search")
    assert path == target and is_png(path)


@pytest.mark.parametrize(
    "case",
    [
        "one trial",
        "one failed trial",
        "all failed",
        "no value column",
        "one param",
        "choices only",
        "no params",
        "no trials",
    ],
)
def test_write_diagnostics_on_searches_that_went_badly(tmp_path, case):
    trials, params = search_trials(), dict(PARAMS)
    if case == "one trial":
        trials = trials[trials["trial_order"] == 0]
    elif case == "one failed trial":
        trials = search_trials(1, failed=(0,))
    elif case == "all failed":
        trials = trials.assign(value=math.nan)
    elif case == "no value column":  # all failed, and a caller dropped the empty columns
        trials = trials.drop(columns=["value", "param/tau"])
    elif case == "one param":
        params = {"lr": PARAMS["lr"]}
    elif case == "choices only":
        params = {"fusion": PARAMS["fusion"], "bs": Param("bs", "choice", (32, 64))}
        trials = trials.assign(**{"param/bs": [32, 64] * 12})
    elif case == "no params":
        params = {}
    elif case == "no trials":
        trials = trials.iloc[:0]
    data = diagnostics_data(trials, params, "val/mm/acc", title=case)
    if case != "choices only":
        assert data["importance"] == {} and data["importance_reason"]
    else:
        assert set(data["importance"]) == {"fusion", "bs"}
    assert is_png(write_diagnostics(trials, params, "val/mm/acc", tmp_path / "d.png", title=case))


def test_importing_the_analysis_modules_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, miles_tune.analysis.dynamics, miles_tune.analysis.diagnostics\n"
        "heavy = {'matplotlib', 'pandas', 'torch', 'optuna', 'sklearn'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
