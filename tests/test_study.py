"""``python -m miles_tune.study``: the plan (no Ray), the manifest, then real studies at the
``tiny`` budget (a local Ray, MLflow on sqlite): every stage and the report; a second run that
starts nothing; a study killed (SIGKILL of its process group) in the middle and resumed, which
ends with exactly the runs of an uninterrupted one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from miles_tune.errors import ConfigError
from miles_tune.study import plan as study_plan
from miles_tune.study.manifest import Manifest
from miles_tune.study.plan import MU_GRID, TAU_GRID, estimate_lines, plan_study, search_argv
from miles_tune.study.run import main

DATA = ["--set", "data.n_train=200", "--set", "data.n_val=100", "--set", "data.n_test=100"]


def args(out: Path, *extra: str) -> list[str]:
    return ["--dataset", "synthetic", "--out", str(out), "--budget", "tiny", *DATA, *extra]


# -- the plan: no Ray -----------------------------------------------------------------------------


def test_plan_has_every_stage_and_the_controls(tmp_path) -> None:
    plan = plan_study(args(tmp_path / "s", "--fusions", "concat", "sum"))
    stages = [s.stage for s in plan.searches]
    assert list(dict.fromkeys(stages)) == ["unimodal", "methods", "seeds", "sensitivity", "u_source"]
    labels = [a.label for a in plan.arms]
    assert labels[:3] == ["vanilla", "vanilla-noaux", "miles"]
    for expected in ("ogm", "ogm-sgd", "ogm-ge", "ogm-ge-sgd", "gblend-train-holdout", "mses",
                     "mslr-k", "mslr-s", "mslr-d"):  # fmt: skip
        assert expected in labels
    assert "unimodal" not in labels and "gblend" not in labels  # G-Blend only on a training hold-out
    by_label = {a.label: dict(a.settings) for a in plan.arms}
    assert by_label["vanilla"] == {"aux_losses": True} and by_label["vanilla-noaux"] == {"aux_losses": False}
    assert by_label["gblend-train-holdout"] == {"holdout": 0.08}
    sgd = by_label["ogm-sgd"]
    assert sgd == by_label["ogm-ge-sgd"]
    assert (sgd["optimizer"], sgd["momentum"], sgd["weight_decay"], sgd["lr_gamma"]) == (
        "sgd",
        0.9,
        1e-4,
        0.1,
    )
    assert sgd["lr_step_size"] == round(0.7 * plan.epochs)
    assert by_label["ogm"] == {}
    # the same budget for every row of the method stage: trials, epochs, searcher, scheduler, points
    method_searches = [s for s in plan.searches if s.stage == "methods"]
    assert len(method_searches) == len(plan.arms) * 2
    argvs = [search_argv(plan, s) for s in method_searches]
    for argv in argvs:
        for flag in ("--num-samples", "--searcher", "--scheduler", "--points", "--set"):
            assert flag in argv
        assert argv[argv.index("--num-samples") + 1] == "2" and argv[argv.index("--points") + 1] == "1"
        assert f"epochs={plan.epochs}" in argv
    # grids: the paper's values, around MILES's best of each fusion
    grids = {s.name: s for s in plan.searches if s.stage == "sensitivity"}
    assert grids[f"{plan.name}-grid-tau-concat"].grid == ("tau", TAU_GRID)
    assert grids[f"{plan.name}-grid-mu-sum"].grid == ("mu", MU_GRID)
    assert grids[f"{plan.name}-grid-mu-sum"].from_best == f"{plan.name}-search-miles-sum"
    # names are deterministic: the same command plans the same searches
    again = plan_study(args(tmp_path / "s", "--fusions", "concat", "sum"))
    assert [s.name for s in again.searches] == [s.name for s in plan.searches]
    assert len({s.name for s in plan.searches}) == len(plan.searches)


def test_derived_searches_read_their_sources(tmp_path) -> None:
    plan = plan_study(args(tmp_path / "s", "--methods", "mslr-k", "--seeds", "3"))
    seeds = plan.search(f"{plan.name}-seeds-mslr-k-concat")
    argv = search_argv(plan, seeds)
    best = plan.results / f"{plan.name}-search-mslr-k-concat" / "best_config.yaml"
    assert argv[argv.index("--from-best") + 1] == str(best)
    assert argv[argv.index("--seeds") + 1] == "1,2,3"  # fresh seeds, not the selecting search's 0
    lrs = next(a.split("=", 1)[1] for a in argv if a.startswith("unimodal_lrs="))
    assert json.loads(lrs) == {
        m: str(plan.results / f"{plan.name}-unimodal-{m}" / "best_config.yaml") for m in ("fast", "slow")
    }
    assert "allow_placeholder_lrs=true" not in argv
    assert "allow_placeholder_lrs=true" in search_argv(plan, seeds, validating=True)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--methods", "nope"], r"--methods: unknown nope"),
        (["--trials", "0"], r"--trials must be a positive integer"),
        (["--set", "lr=-1"], r"lr must be a positive number"),
        (["--set", "data.p_fast=2"], r"data\.p_fast"),
        (["--name", "a b"], r"--name 'a b'"),
        (["--set", "epochs=4"], r"--set epochs: the study sets every trial's epochs; pass --epochs"),
        (["--set", "seed=3"], r"--set seed: the study sets the training seeds"),
    ],
)
def test_bad_settings_are_refused_before_ray(tmp_path, capsys, extra, message) -> None:
    import re

    assert main(args(tmp_path / "s", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and re.search(message, err), err
    assert not (tmp_path / "s").exists()  # nothing written
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_budget_flags_override_the_budget(tmp_path) -> None:
    plan = plan_study(
        args(tmp_path / "s", "--trials", "5", "--seeds", "4", "--epochs", "7", "--budget", "small")
    )
    assert plan.settings["trials"] == 5 and plan.settings["seeds"] == 4 and plan.epochs == 7
    assert plan.search(f"{plan.name}-search-miles-concat").trials == 5
    assert plan.search(f"{plan.name}-seeds-miles-concat").seeds == (1, 2, 3, 4)
    assert plan.search(f"{plan.name}-grid-tau-concat").trials == len(TAU_GRID)  # small: 1 grid seed
    paper = plan_study(args(tmp_path / "p", "--budget", "paper"))
    assert paper.settings["trials"] == 80 and paper.epochs == 20  # the space's full epochs
    assert paper.settings["fusions"] == ["concat", "sum"] and paper.settings["searcher"] == "random"
    assert plan_study(args(tmp_path / "t")).settings["fusions"] == ["concat"]  # tiny: one fusion


def test_estimate_is_trial_epochs_times_the_measured_epoch(tmp_path) -> None:
    plan = plan_study(args(tmp_path / "s", "--methods", "vanilla", "--fusions", "concat"))
    total = sum(plan.trial_epochs(s) for s in plan.searches)
    assert total == sum(s.trials for s in plan.searches) * plan.epochs
    line = estimate_lines(plan, 36.0, "here", share=0.25, slots=4)[0]
    assert f"{total} trial-epochs = {total * 36 * 0.25 / 3600:.2f} device-hours" in line


def test_manifest_refuses_another_study_or_other_settings(tmp_path) -> None:
    m = Manifest.open(tmp_path, "s1", {"trials": 2})
    m.update("x", status="done")
    assert Manifest.open(tmp_path, "s1", {"trials": 2}).status("x") == "done"
    with pytest.raises(ConfigError, match=r"ran with trials=2, not 3"):
        Manifest.open(tmp_path, "s1", {"trials": 3})
    with pytest.raises(ConfigError, match=r"holds the study 's1', not 's2'"):
        Manifest.open(tmp_path, "s2", {"trials": 2})


def test_paper_grid_values() -> None:
    assert study_plan.TAU_GRID == (0.0, 0.1, 0.2, 0.3, 0.5)
    assert study_plan.MU_GRID == (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


# -- real studies --------------------------------------------------------------------------------
# the default suite runs the lean one (vanilla and its control: unimodal, methods and seeds
# stages, 6 searches); the slow tests every stage (MILES brings the grids and u-source stage)
STUDY = ["--methods", "vanilla", "--fusions", "concat", "--epochs", "2", "--trials", "1",
         "--max-concurrent", "2"]  # fmt: skip
EVERY_STAGE = ["--methods", "miles", "--fusions", "concat", "--epochs", "2", "--max-concurrent", "2"]


def runs_of(out: Path, study: str) -> list[dict]:
    """Every run of the study's experiment: name, parent, params and metrics, by search suffix."""
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = c.get_experiment_by_name(study)
    runs = c.search_runs([exp.experiment_id], max_results=10_000)
    names = {r.info.run_id: r.info.run_name for r in runs}
    out_runs = []
    for r in runs:
        parent = names.get(r.data.tags.get("mlflow.parentRunId", ""), "")
        out_runs.append(
            {
                "search": (parent or r.info.run_name).removeprefix(study),
                "name": r.info.run_name.removeprefix(study),
                "status": r.info.status,
                "params": {
                    k: v
                    for k, v in r.data.params.items()
                    if not k.startswith(("from_best", "space")) and "/" not in v
                },  # fmt: skip
                "metrics": {
                    k: round(v, 6)
                    for k, v in r.data.metrics.items()
                    if k.startswith("best/") or k == "best_epoch"
                },  # fmt: skip
            }
        )
    return sorted(out_runs, key=lambda r: (r["search"], r["name"]))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "ref"
    assert main(args(out, *STUDY)) == 0
    return out


def test_a_study_runs_its_stages_and_writes_the_report(finished) -> None:
    manifest = json.loads((finished / "manifest.json").read_text())
    searches = manifest["searches"]
    assert [s["stage"] for s in searches.values()] == ["unimodal"] * 2 + ["methods"] * 2 + ["seeds"] * 2
    assert all(s["status"] == "done" and s["errors"] == 0 for s in searches.values())
    assert manifest["measured"]["epoch_seconds"] > 0
    main_md = (finished / "report" / "main.md").read_text()
    assert "| vanilla |" in main_md and "| vanilla-noaux |" in main_md and "re-run" in main_md
    assert json.loads((finished / "report" / "manifest.json").read_text())["searches"] == searches
    runs = runs_of(finished, "ref")
    children = [r for r in runs if r["name"] != r["search"]]
    assert len(children) == sum(s["trials"] for s in searches.values()) == 8  # 1 trial per search, 2 seeds
    assert len({(r["search"], r["name"]) for r in children}) == len(children)  # no duplicate
    noaux = [r for r in children if r["search"] == "-search-vanilla-noaux-concat"]
    assert noaux and all(r["params"]["config.method_args.aux_losses"] == "False" for r in noaux)


@pytest.mark.slow
def test_every_stage_runs_and_the_report_is_written(tmp_path) -> None:
    finished = tmp_path / "ref"
    assert main(args(finished, *EVERY_STAGE)) == 0
    manifest = json.loads((finished / "manifest.json").read_text())
    searches = manifest["searches"]
    assert len(searches) == 8 and all(s["status"] == "done" for s in searches.values())
    assert {s["stage"] for s in searches.values()} == {
        "unimodal",
        "methods",
        "seeds",
        "sensitivity",
        "u_source",
    }
    assert manifest["measured"]["epoch_seconds"] > 0
    report = finished / "report"
    for name in ("main", "unimodal", "sensitivity_tau", "sensitivity_mu", "u_source", "unimodal_gap",
                 "missing_modality"):  # fmt: skip
        assert (report / f"{name}.md").is_file(), name
    assert json.loads((report / "manifest.json").read_text())["searches"] == searches
    assert manifest["report"]["skipped"] == {}
    tau = (report / "sensitivity_tau.md").read_text()
    assert all(f"| {v} |" in tau for v in ("0.0", "0.1", "0.2", "0.3", "0.5")), tau
    u_source = (report / "u_source.md").read_text()
    assert "miles-utrain" in u_source and "| train |" in u_source and "| val |" in u_source
    runs = runs_of(finished, "ref")
    children = [r for r in runs if r["name"] != r["search"]]
    assert len(children) == sum(s["trials"] for s in searches.values()) == 24
    assert len({(r["search"], r["name"]) for r in children}) == len(children)  # no duplicate


NEWER = ("pmr", "agm", "umt", "mmpareto", "inforeg", "relearn")


@pytest.mark.slow
def test_the_newer_methods_run_in_a_tiny_study_like_any_other(tmp_path) -> None:
    """Issue 13's smoke: each newer method through a tiny study, by the study's own planning
    (no option of its own), with one row in the report's main table."""
    out = tmp_path / "newer"
    study = [
        "--methods",
        *NEWER,
        "--fusions",
        "concat",
        "--epochs",
        "2",
        "--trials",
        "1",
        "--max-concurrent",
        "2",
    ]
    assert main(args(out, *study)) == 0
    searches = json.loads((out / "manifest.json").read_text())["searches"]
    method_searches = {n: s for n, s in searches.items() if s["stage"] == "methods"}
    assert sorted(n.split("-")[2] for n in method_searches) == sorted(NEWER)
    assert all(s["status"] == "done" and s["errors"] == 0 for s in searches.values())
    main_md = (out / "report" / "main.md").read_text()
    assert all(f"| {m} |" in main_md for m in NEWER), main_md


def test_a_finished_study_only_remakes_its_report(finished, capsys, monkeypatch) -> None:
    from miles_tune.study import run as study_run

    def no_ray(plan):  # noqa: ANN001, ANN202
        raise AssertionError("a finished study must not start Ray")

    monkeypatch.setattr(study_run, "connect", no_ray)
    before = runs_of(finished, "ref")
    (finished / "report" / "main.md").unlink()
    assert main(args(finished, *STUDY)) == 0
    assert "6 of 6 searches finished earlier" in capsys.readouterr().out
    assert runs_of(finished, "ref") == before
    assert (finished / "report" / "main.md").is_file()


def test_other_settings_in_the_same_folder_are_refused(finished, capsys) -> None:
    assert main(args(finished, *STUDY, "--trials", "3")) == 2  # the last --trials wins
    assert "this study ran with trials=1, not 3" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_study_resumes_to_the_runs_of_an_uninterrupted_one(finished, tmp_path) -> None:
    """SIGKILL of the study's whole process group once the method stage's search has a checkpoint,
    then the same command again: the same runs, params and metrics as the uninterrupted study."""
    out = tmp_path / "ref"  # the same folder name: the same study and search names
    ray_tmp = Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))  # short: Ray's socket paths have a limit
    env = dict(os.environ, RAY_TMPDIR=str(ray_tmp))
    cmd = [sys.executable, "-m", "miles_tune.study", *args(out, *STUDY)]
    log = tmp_path / "killed.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=sink, stderr=subprocess.STDOUT)
    target = out / "ray_results" / "ref-search-vanilla-concat"
    deadline = time.monotonic() + 300
    try:
        while not list(target.glob("trial_*/checkpoint_*")):
            ended = proc.poll() is not None or time.monotonic() > deadline
            assert not ended, f"the study ended before the kill: {log.read_text()[-2000:]}"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kill_leftovers(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert any(s["status"] == "running" for s in manifest["searches"].values())
    assert main(args(out, *STUDY)) == 0
    resumed = json.loads((out / "manifest.json").read_text())
    assert all(s["status"] == "done" for s in resumed["searches"].values())
    assert runs_of(out, "ref") == runs_of(finished, "ref")


def kill_leftovers(ray_tmp: Path) -> None:
    """Any process of the killed study's own Ray (found by its temp folder), by PID."""
    found = subprocess.run(["pgrep", "-f", str(ray_tmp)], capture_output=True, text=True).stdout.split()
    for pid in map(int, found):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
