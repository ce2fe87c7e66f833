"""The paper's artefacts from real runs: tiny real searches (unimodal per modality, MILES with
seeds, vanilla and its seed re-run, τ, μ and u-source grids) into a real sqlite MLflow store
and their ``trials.parquet`` exports; every table's numbers are checked against values this
file computes on its own from the runs (``MlflowClient``), never from the code under test."""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from search_helpers import search_args

from miles_tune.analysis import load_exports, load_mlflow
from miles_tune.analysis import tables as T
from miles_tune.analysis.render import to_latex, to_markdown

ROOT = Path(__file__).resolve().parent.parent
METRIC = "acc"


def run_search(tmp: Path, *args: str) -> None:
    from miles_tune.search import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(search_args(tmp, "--max-concurrent", "2", *args))
    assert code == 0, out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The searches a user runs for the paper's tables, at a toy size."""
    import ray

    tmp = tmp_path_factory.mktemp("analysis")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_search(tmp, "--method", "unimodal", "--set", "method_args.modality=fast", "--num-samples", "2",
                   "--name", "uni-fast")  # fmt: skip
        run_search(tmp, "--method", "unimodal", "--set", "method_args.modality=slow", "--num-samples", "2",
                   "--name", "uni-slow")  # fmt: skip
        run_search(tmp, "--method", "miles", "--num-samples", "2", "--seeds", "0,1", "--name", "miles")
        run_search(tmp, "--method", "vanilla", "--num-samples", "2", "--name", "vanilla")
        best_miles = str(tmp / "runs" / "miles" / "best_config.yaml")
        best_vanilla = str(tmp / "runs" / "vanilla" / "best_config.yaml")
        run_search(tmp, "--method", "vanilla", "--from-best", best_vanilla, "--seeds", "0,1",
                   "--name", "vanilla-seeds")  # fmt: skip
        run_search(tmp, "--method", "miles", "--from-best", best_miles, "--grid", "tau=0.1,0.3",
                   "--name", "grid-tau")  # fmt: skip
        run_search(tmp, "--method", "miles", "--from-best", best_miles, "--grid", "mu=0.2,0.8",
                   "--name", "grid-mu")  # fmt: skip
        run_search(tmp, "--method", "miles", "--from-best", best_miles, "--grid", "u_source=train,val",
                   "--name", "grid-u")  # fmt: skip
    finally:
        ray.shutdown()
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    return {"tmp": tmp, "uri": uri, "trials": load_mlflow(uri, ["miles_tune"]), "runs": runs_by_search(uri)}


def runs_by_search(uri: str) -> dict[str, list[dict]]:
    """The independent view: each search's child runs as plain dicts, read with MlflowClient."""
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("miles_tune")
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    out: dict[str, list[dict]] = {}
    for r in runs:
        parent = parents.get(r.data.tags.get("mlflow.parentRunId", ""))
        if parent is None:
            continue
        out.setdefault(parent.info.run_name, []).append(
            {
                "run_id": r.info.run_id,
                "tags": parent.data.tags,
                "params": r.data.params,
                "metrics": r.data.metrics,
            }
        )
    return out


def configurations(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by their sampled params except the seed."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        key = json.dumps(
            {
                k: v
                for k, v in sorted(r["params"].items())
                if not k.startswith(("config.", "lr/")) and k != "seed"
            }
        )
        groups.setdefault(key, []).append(r)
    return groups


def best_configuration(runs: list[dict], head: str = "mm") -> list[dict]:
    """The best configuration by mean validation metric, ties to the lower mean validation loss."""

    def score(group: list[dict]) -> tuple[float, float]:
        value = statistics.fmean(r["metrics"][f"best/val/{head}/{METRIC}"] for r in group)
        loss = statistics.fmean(r["metrics"][f"best/val/{head}/loss"] for r in group)
        return (-value, loss)

    return min(configurations(runs).values(), key=score)


def mean(runs: list[dict], key: str) -> float:
    return statistics.fmean(r["metrics"][key] for r in runs)


def block(table, **key) -> list[dict]:
    rows = table.to_dict("records")
    return [r for r in rows if all(r[k] == v for k, v in key.items())]


# -- loading ----------------------------------------------------------------------------------
def test_stages_and_tags_come_from_the_parent_runs(study) -> None:
    trials = study["trials"]
    stages = trials.groupby("search")["stage"].first().to_dict()
    assert stages == {
        "uni-fast": "unimodal", "uni-slow": "unimodal", "miles": "search", "vanilla": "search",
        "vanilla-seeds": "seeds", "grid-tau": "grid", "grid-mu": "grid", "grid-u": "grid",
    }  # fmt: skip
    assert set(trials[trials["search"] == "miles"]["seed"]) == {0, 1}
    assert len(trials[trials["search"] == "miles"]) == 4  # 2 configurations × 2 seeds
    assert trials[trials["search"] == "miles"]["config_key"].nunique() == 2


def test_the_parquet_exports_give_the_same_trials(study) -> None:
    exported = load_exports([study["tmp"] / "runs"])
    tracked = study["trials"]
    cols = [
        "search",
        "stage",
        "from_trial",
        "trial_id",
        "seed",
        "value",
        "tie_loss",
        f"test/mm/{METRIC}",
        "best_epoch",
    ]
    a = exported[cols].sort_values(["search", "trial_id"]).to_dict("records")
    b = tracked[cols].sort_values(["search", "trial_id"]).to_dict("records")
    assert [r["trial_id"] for r in a] == [r["trial_id"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert [x[c] for c in cols[:5]] == [y[c] for c in cols[:5]]
        assert [x[c] for c in cols[5:]] == pytest.approx([y[c] for c in cols[5:]], nan_ok=True)
    assert T.main_table(exported)[["method", "mm"]].equals(T.main_table(tracked)[["method", "mm"]])


# -- the tables -------------------------------------------------------------------------------
def test_main_table_reports_the_validation_best_and_its_test_metric(study) -> None:
    table = T.main_table(study["trials"])
    runs = study["runs"]
    assert set(table["method"]) == {"miles", "vanilla"}  # no unimodal row, no grid or seeds search
    miles = block(table, method="miles")[0]
    chosen = best_configuration(runs["miles"])
    assert miles["n"] == 2 and miles["reported_from"] == "search"
    assert miles["mm"] == pytest.approx(mean(chosen, f"best/test/mm/{METRIC}"))
    sd = statistics.stdev(r["metrics"][f"best/test/mm/{METRIC}"] for r in chosen)
    assert miles["mm:std"] == pytest.approx(sd)
    # vanilla: selected in its search, reported from the seed re-run of that configuration
    vanilla = block(table, method="vanilla")[0]
    assert vanilla["reported_from"] == "re-run" and vanilla["n"] == 2
    assert vanilla["mm"] == pytest.approx(mean(runs["vanilla-seeds"], f"best/test/mm/{METRIC}"))
    # the budget is the selecting searches' own: 4 and 3 trials, every epoch counted
    assert miles["trials"] == 4 and vanilla["trials"] == 2
    epochs = sum(int(r["params"]["config.epochs"]) for r in runs["vanilla"])
    assert vanilla["trial_epochs"] == epochs and vanilla["device_hours"] > 0


def test_delta_is_stronger_minus_weaker_by_the_unimodal_references(study) -> None:
    runs = study["runs"]
    ref = {
        m: mean(best_configuration(runs[f"uni-{m}"], head=m), f"best/test/{m}/{METRIC}")
        for m in ("fast", "slow")
    }
    strong, weak = sorted(ref, key=lambda m: -ref[m])
    row = block(T.main_table(study["trials"]), method="miles")[0]
    chosen = best_configuration(runs["miles"])
    deltas = [
        r["metrics"][f"best/test/{strong}/{METRIC}"] - r["metrics"][f"best/test/{weak}/{METRIC}"]
        for r in chosen
    ]
    assert row["stronger"] == strong
    assert row["delta"] == pytest.approx(statistics.fmean(deltas))


def test_unimodal_table_and_the_gap_statistics(study) -> None:
    runs = study["runs"]
    uni = T.unimodal_table(study["trials"])
    ref = {}
    for m in ("fast", "slow"):
        chosen = best_configuration(runs[f"uni-{m}"], head=m)
        ref[m] = mean(chosen, f"best/test/{m}/{METRIC}")
        assert block(uni, modality=m)[0]["test"] == pytest.approx(ref[m])
    gap = T.unimodal_gap_table(study["trials"])
    row = block(gap, method="miles")[0]
    chosen = best_configuration(runs["miles"])
    gaps = [100 * (ref[m] - mean(chosen, f"best/test/{m}/{METRIC}")) for m in ("fast", "slow")]
    assert row["synthetic:fast"] == pytest.approx(gaps[0])
    assert row["gap"] == pytest.approx(statistics.fmean(gaps))
    assert row["gap:std"] == pytest.approx(statistics.stdev(gaps))


@pytest.mark.parametrize(("param", "values", "seeds"), [("tau", [0.1, 0.3], 1), ("mu", [0.2, 0.8], 1)])
def test_sensitivity_rows_match_their_grid_runs(study, param, values, seeds) -> None:
    table = T.sensitivity_table(study["trials"], param)
    runs = study["runs"][f"grid-{param}"]
    assert [r[param] for r in table.to_dict("records")] == values
    for row in table.to_dict("records"):
        mine = [r for r in runs if float(r["params"][param]) == row[param]]
        assert row["n"] == seeds == len(mine)
        assert row["mm"] == pytest.approx(mean(mine, f"best/test/mm/{METRIC}"))
        assert row["slow"] == pytest.approx(mean(mine, f"best/test/slow/{METRIC}"))
    assert "lr=" in table.attrs["notes"][0]  # what the grid held fixed


def test_u_source_rows_say_their_best_epoch(study) -> None:
    table = T.u_source_table(study["trials"])
    runs = study["runs"]["grid-u"]
    assert sorted(table["u_source"]) == ["train", "val"]
    for row in table.to_dict("records"):
        (mine,) = [r for r in runs if r["params"]["u_source"] == row["u_source"]]
        assert row["best_epoch"] == mine["metrics"]["best_epoch"]


def test_missing_modality_columns_are_the_selected_models_heads(study) -> None:
    table = T.missing_modality_table(study["trials"])
    chosen = best_configuration(study["runs"]["miles"])
    row = block(table, method="miles")[0]
    assert row["all"] == pytest.approx(mean(chosen, f"best/test/mm/{METRIC}"))
    for m, other in (("fast", "slow"), ("slow", "fast")):
        assert row[f"zero:{m}"] == pytest.approx(mean(chosen, f"best/test/mm_zero_{m}/{METRIC}"))
        assert row[f"mean:{m}"] == pytest.approx(mean(chosen, f"best/test/mm_mean_{m}/{METRIC}"))
        assert row[f"unimodal:{m}"] == pytest.approx(mean(chosen, f"best/test/{other}/{METRIC}"))


def test_renderings_show_mean_std_and_bold_the_best(study) -> None:
    table = T.main_table(study["trials"])
    md, tex = to_markdown(table), to_latex(table)
    assert "## synthetic · concat" in md and " ± " in md and "**" in md
    assert r"\toprule" in tex and r"\textbf{" in tex and r"$\pm$" in tex


# -- the command --------------------------------------------------------------------------------
def test_report_writes_every_artefact_and_an_index(study, tmp_path) -> None:
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "analysis" / "report.py"), "--tracking-uri", study["uri"],
         "--experiment", "miles_tune", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for name in ("main", "unimodal", "sensitivity_tau", "sensitivity_mu", "u_source", "unimodal_gap",
                 "missing_modality"):  # fmt: skip
        for ext in ("md", "csv", "tex", "png"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
    assert (out / "dynamics.png").stat().st_size > 0 and (out / "dynamics.csv").stat().st_size > 0
    assert sorted(p.name for p in out.glob("diagnostics_*.png")) == [
        "diagnostics_miles.png", "diagnostics_uni-fast.png", "diagnostics_uni-slow.png",
        "diagnostics_vanilla.png",
    ]  # fmt: skip
    index = (out / "index.md").read_text()
    assert "[main.md](main.md)" in index
    # this study ran no PBT search: its artefact, and only it, is skipped, saying why
    skipped = [line for line in index.splitlines() if ": skipped, " in line]
    why = "no PBT search (python -m miles_tune.search --scheduler pbt)"
    assert skipped == [f"- **pbt_schedule**: skipped, {why}"]


def test_one_artefact_alone_and_what_is_skipped(study, tmp_path) -> None:
    from miles_tune.analysis.cli import main

    out = tmp_path / "one"
    assert main("sensitivity", ["--tracking-uri", study["uri"], "--param", "mu", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        f"sensitivity_mu.{e}" for e in ("csv", "md", "png", "tex")
    ]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main("sensitivity", ["--tracking-uri", study["uri"], "--param", "tau", "--search", "miles",
                                    "--out", str(out)])  # fmt: skip
    assert code == 1 and "no grid over tau" in err.getvalue()
    with contextlib.redirect_stderr(err):
        assert main(None, ["--tracking-uri", study["uri"], "--experiment", "nope", "--out", str(out)]) == 2
    assert "no MLflow experiment 'nope'" in err.getvalue()
