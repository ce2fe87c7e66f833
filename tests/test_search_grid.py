"""``--grid``, ``--seeds`` and ``--from-best``: planning refusals without Ray, then real searches
(Ray, Optuna on sqlite, MLflow on sqlite) on tiny data in one module-scoped Ray session."""

from __future__ import annotations

import math
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml
from search_helpers import child_runs, search_args

from miles_tune.search import main, parent_params, plan_search, search_tags
from miles_tune.trainable import TRIAL_INDEX, sampled_params

FAST = ["--set", "epochs=2", "--max-concurrent", "2", "--cpus-per-trial", "1", "--gpus-per-trial", "0"]
FIXED = ["--set", "lr=0.001", "--set", "mu=0.5"]  # everything but tau


def plan(tmp_path: Path, *extra: str):  # noqa: ANN201
    return plan_search(search_args(tmp_path, *extra, tracking=False))


def best_file(tmp_path: Path, config: dict | None = None, **top) -> Path:  # noqa: ANN001
    """A best_config.yaml as export_results writes it."""
    config = config or {
        "dataset": "synthetic",
        "method": "miles",
        "lr": 0.002,
        "seed": 0,
        "method_args": {"variant": "reset", "tau": 0.15, "mu": 0.4},
    }
    path = tmp_path / "best_config.yaml"
    path.write_text(yaml.safe_dump({"config": config, "best_trial": "abc_00001", "best_metrics": {}, **top}))
    return path


def ray_started() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


# -- planning: no Ray --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--grid", "tau=0.1,0.3"], r"--grid tau: every other searched parameter must be fixed "
         r"\(--set or --from-best\); still searched: lr, mu$"),
        (["--grid", "data.n_train=10,20", *FIXED], r"--grid data\.n_train: dotted keys are not supported"),
        (["--grid", "tau=-1", *FIXED], r"--grid tau=-1: .*tau"),
        (["--grid", "tau=0.1,0.1", *FIXED], r"--grid tau: '0\.1' is given twice"),
        (["--grid", "tau=0.1,,0.2", *FIXED], r"--grid tau: an empty value"),
        (["--grid", "tau", *FIXED], r"--grid expects NAME=V1,V2"),
        (["--grid", "nope=1,2", *FIXED], r"--grid nope: neither a searched parameter"),
        (["--grid", "fusion=sum,concat", *FIXED, "--set", "tau=0.2"], r"--grid fusion: one value per search"),
        (["--grid", "tau=0.1", "--grid", "tau=0.2", *FIXED], r"--grid tau: given twice"),
        (["--grid", "tau=0.1,0.3", "--num-samples", "3", *FIXED], r"--num-samples 3: --grid .*--seeds"),
        (["--method", "unimodal", "--grid", "modality=fast,slow", "--set", "lr=0.001"], r"one metric"),
        (["--method", "vanilla", "--set", "lr=0.001", "--num-samples", "4"], r"--num-samples 4: every"),
        (["--seeds", "0,x"], r"--seeds '0,x': expected integers"),
        (["--seeds", "1.5"], r"--seeds '1\.5': expected integers"),
        (["--seeds", ""], r"--seeds '': expected integers"),
        (["--seeds", "0,1,0"], r"--seeds: 0 is given twice"),
        (["--seeds", "-1"], r"--seeds: -1 is outside"),
        (["--seeds", str(2**32)], r"--seeds: 4294967296 is outside"),
        (["--seeds", "0,1", "--set", "seed=3"], r"--seeds sets every trial's training seed"),
        (["--seeds", "0,1", "--grid", "seed=3,4", *FIXED, "--set", "tau=0.2"], r"--grid seed and --seeds"),
        (["--seeds", "0,1", "--scheduler", "asha"], r"--seeds .*--scheduler asha"),
    ],
)  # fmt: skip
def test_bad_grid_and_seeds_are_refused_before_ray(tmp_path, capsys, args, message) -> None:
    import re

    code = main(search_args(tmp_path, *args, tracking=False))
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err
    assert re.search(message, err), err
    assert not ray_started()


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: p / "missing.yaml", "cannot read it"),
        (lambda p: p, "cannot read it"),  # a folder
        (lambda p: (p / "b.yaml").write_text("config: [1") and p / "b.yaml", "not valid YAML"),
        (lambda p: (p / "b.yaml").write_text("best_trial: x\n") and p / "b.yaml", "no 'config' mapping"),
        (lambda p: (p / "b.yaml").write_text("config: 3\n") and p / "b.yaml", "no 'config' mapping"),
        (
            lambda p: best_file(p, {"dataset": "synthetic", "method": "vanilla", "lr": 0.1}),
            "method 'vanilla'",
        ),
        (lambda p: best_file(p, {"dataset": "cremad", "method": "miles", "lr": 0.1}), "dataset 'cremad'"),
        (
            lambda p: best_file(p, {"dataset": "synthetic", "method": "miles", "lr": 0.1}),
            "no method_args.tau",
        ),
    ],
)
def test_bad_from_best_files_are_refused_naming_the_file(tmp_path, capsys, write, message) -> None:
    path = write(tmp_path)
    code = main(search_args(tmp_path, "--from-best", str(path), tracking=False))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith(f"error: --from-best {path}: ") and message in err, err
    assert not ray_started()


def test_stage_follows_what_is_searched(tmp_path) -> None:
    cases = {
        ("--grid", "tau=0.1,0.3", *FIXED): "grid",
        ("--grid", "tau=0.1,0.3", *FIXED, "--seeds", "0,1"): "grid",
        ("--method", "unimodal"): "unimodal",
        ("--method", "unimodal", "--seeds", "0,1"): "unimodal",
        ("--method", "unimodal", "--set", "lr=0.01", "--seeds", "0,1"): "unimodal",
        ("--seeds", "0,1"): "search",
        (): "search",
        ("--set", "tau=0.2", *FIXED, "--seeds", "0,1"): "seeds",
        ("--from-best", str(best_file(tmp_path)), "--seeds", "0,1,2"): "seeds",
        ("--from-best", str(best_file(tmp_path))): "seeds",  # a re-run, with its one seed
    }
    for args, stage in cases.items():
        assert plan(tmp_path, *args).stage == stage, args


def test_grid_plan_runs_every_value_once_and_tags_it(tmp_path) -> None:
    p = plan(tmp_path, "--grid", "tau=0.1,0.3", "--grid", "u_source=train,val", *FIXED, "--seeds", "0,1")
    assert p.grid == {"tau": [0.1, 0.3], "u_source": ["train", "val"]}
    assert p.space.method("miles").params == {}  # the grid left the space
    assert (p.searcher, p.num_samples, p.tune_num_samples, p.configurations, p.trials) == ("grid", 1, 1, 4, 8)
    assert p.base["lr"] == 0.001 and p.base["method_args"]["mu"] == 0.5  # --set mu: a method argument
    tags = search_tags(p)
    assert (tags["stage"], tags["grid"], tags["seeds"], tags["searcher"]) == (
        "grid",
        "tau,u_source",
        "0,1",
        "grid",
    )
    assert "from_trial" not in tags
    params = parent_params(p)
    assert params["tau"] == "grid(0.1, 0.3)" and params["seed"] == "grid(0, 1)"
    assert {"gpus_per_trial", "cpus_per_trial"} <= set(params)


def test_a_grid_value_wins_over_set_and_from_best(tmp_path) -> None:
    p = plan(
        tmp_path, "--from-best", str(best_file(tmp_path)), "--set", "method_args.tau=0.4", "--grid", "tau=0.1"
    )
    assert p.grid == {"tau": [0.1]} and "tau" not in p.base["method_args"]


def test_from_best_fixes_every_searched_parameter_and_set_wins(tmp_path) -> None:
    path = best_file(tmp_path)
    p = plan(tmp_path, "--from-best", str(path), "--set", "mu=0.9", "--seeds", "3,4")
    assert p.space.method("miles").params == {}
    assert p.base["lr"] == 0.002 and p.base["method_args"]["tau"] == 0.15
    assert p.base["method_args"]["mu"] == 0.9  # --set wins over the file
    assert p.base["method_args"]["variant"] == "reset"
    assert (p.stage, p.from_trial, p.searcher, p.trials) == ("seeds", "abc_00001", "grid", 2)
    tags = search_tags(p)
    assert tags["from_trial"] == "abc_00001" and tags["stage"] == "seeds" and tags["seeds"] == "3,4"
    assert parent_params(p)["from_best"] == str(path.resolve())


def test_seeds_with_optuna_repeat_each_configuration(tmp_path) -> None:
    p = plan(tmp_path, "--seeds", "0,1,2", "--num-samples", "2")
    assert (p.searcher, p.stage, p.num_samples, p.tune_num_samples, p.trials) == ("optuna", "search", 2, 6, 6)
    p = plan(tmp_path, "--seeds", "0,1,2", "--num-samples", "2", "--searcher", "random")
    assert (p.searcher, p.tune_num_samples, p.trials) == ("random", 2, 6)


def test_sampled_params_maps_the_repeat_index_to_its_seed() -> None:
    from ray.tune.search import repeater

    assert TRIAL_INDEX == repeater.TRIAL_INDEX
    config = {"lr": 0.01, "tau": 0.2, TRIAL_INDEX: 1, "miles_tune": {"seeds": [7, 9]}}
    assert sampled_params(config) == {"lr": 0.01, "tau": 0.2, "seed": 9}
    assert sampled_params({"lr": 0.01, "seed": 3, "miles_tune": {}}) == {"lr": 0.01, "seed": 3}


def test_ties_go_to_the_lower_loss_then_the_earlier_trial(tmp_path) -> None:
    from types import SimpleNamespace

    from miles_tune.search import best_result

    p = plan(tmp_path)
    key, loss = p.metric, "best/val/mm/loss"

    def result(number: int, value: float, tie: float | None = None, seed: int | None = None):  # noqa: ANN202
        metrics = {"experiment_tag": f"{number}_lr=0.1", key: value}
        if tie is not None:
            metrics[loss] = tie
        config = {"lr": number / 10} if seed is None else {"lr": number // 2 / 10, "seed": seed}
        return SimpleNamespace(metrics=metrics, config=config)

    results = [result(3, 0.9, 0.2), result(1, 0.9, 0.3), result(2, 0.9, 0.2), result(0, math.nan, 0.0)]
    assert best_result(results, p) is results[2]  # the lower loss, then the earlier trial (2 < 3)
    assert best_result([result(1, 0.9), result(0, 0.9, 0.5)], p).metrics["experiment_tag"].startswith("0")
    assert best_result([SimpleNamespace(metrics=None), result(4, 0.5, 1.0)], p).metrics[key] == 0.5
    assert best_result([SimpleNamespace(metrics={}, config={})], p) is None
    # with seeds, configurations rank by their mean over seeds: 0.8 and 0.8 beat 0.9 and 0.5
    seeded = [result(0, 0.9, 0.1, seed=0), result(1, 0.5, 0.1, seed=1), result(2, 0.8, 0.3, seed=0),
              result(3, 0.8, 0.2, seed=1)]  # fmt: skip
    assert best_result(seeded, p) is seeded[3]  # the better of the best configuration's trials


# -- real searches -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    import ray

    os.environ.setdefault("RAY_TMPDIR", "/tmp/rayB")
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def read_table(plan):  # noqa: ANN001, ANN201
    import pyarrow.parquet as pq

    return pq.read_table(plan.results_dir / "trials.parquet").to_pandas()


def per_trial(table):  # noqa: ANN001, ANN201
    """One row per trial: its sampled config (not Tune's copy of the fixed part)."""
    columns = [c for c in table.columns if c.startswith("config/") and not c.startswith("config/miles_tune/")]
    return table.groupby("trial_id")[columns].first().reset_index()


@pytest.fixture(scope="module")
def tau_grid(local_ray, tmp_path_factory):
    from miles_tune.search import run_search

    tmp = tmp_path_factory.mktemp("grid")
    p = plan_search(search_args(tmp, "--grid", "tau=0.1,0.3", *FIXED, *FAST))
    results = run_search(p)
    return p, results


def test_a_tau_grid_runs_exactly_its_values(tau_grid) -> None:
    p, results = tau_grid
    assert results.num_errors == 0 and len(results) == 2
    assert sorted(r.config["tau"] for r in results) == [0.1, 0.3]
    _, parents, children = child_runs(p.tracking_uri)
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert (tags["stage"], tags["grid"], tags["searcher"]) == ("grid", "tau", "grid")
    assert "seeds" not in tags and "from_trial" not in tags
    assert parent.data.params["gpus_per_trial"] == "0.0" and parent.data.params["cpus_per_trial"] == "1.0"
    assert sorted(float(c.data.params["tau"]) for c in children) == [0.1, 0.3]
    for child in children:
        assert child.info.status == "FINISHED"
        assert (child.data.tags["stage"], child.data.tags["grid"]) == ("grid", "tau")
        assert "lr" not in child.data.params and child.data.params["config.lr"] == "0.001"  # fixed
        assert child.data.params["config.method_args.mu"] == "0.5"
        assert child.data.metrics["train_seconds"] > 0


def test_trials_parquet_says_what_the_search_was(tau_grid) -> None:
    p, _ = tau_grid
    table = read_table(p)
    constant = {
        "search": p.name,
        "dataset": "synthetic",
        "method": "miles",
        "fusion": "concat",
        "stage": "grid",
        "grid": "tau",
        "gpus_per_trial": 0.0,
        "cpus_per_trial": 1.0,
    }
    for column, value in constant.items():
        assert table[column].tolist() == [value] * len(table), column
    assert sorted(per_trial(table)["config/tau"]) == [0.1, 0.3]
    assert "config/__trial_index__" not in table.columns


def test_from_best_with_seeds_reruns_one_configuration(local_ray, tau_grid, tmp_path) -> None:
    from miles_tune.search import run_search

    grid_plan, _ = tau_grid
    path = grid_plan.results_dir / "best_config.yaml"
    best = yaml.safe_load(path.read_text())
    p = plan_search(search_args(tmp_path, "--from-best", str(path), "--seeds", "0,1", *FAST))
    assert p.stage == "seeds"
    results = run_search(p)
    assert results.num_errors == 0 and len(results) == 2
    _, parents, children = child_runs(p.tracking_uri)
    tags = parents[0].data.tags
    assert (tags["stage"], tags["seeds"], tags["from_trial"]) == ("seeds", "0,1", best["best_trial"])
    assert sorted(c.data.params["seed"] for c in children) == ["0", "1"]
    configs = {
        (
            c.data.params["config.lr"],
            c.data.params["config.method_args.tau"],
            c.data.params["config.method_args.mu"],
        )
        for c in children
    }
    cfg = best["config"]
    assert configs == {(str(cfg["lr"]), str(cfg["method_args"]["tau"]), str(cfg["method_args"]["mu"]))}
    assert {c.data.tags["from_trial"] for c in children} == {best["best_trial"]}


def assert_seed_pairs(table, configurations: int = 2) -> None:  # noqa: ANN001
    """Each configuration run with seeds 0 and 1, nothing else differing."""
    trials = per_trial(table)
    assert len(trials) == 2 * configurations
    others = [c for c in trials.columns if c.startswith("config/") and c != "config/seed"]
    groups = trials.groupby(others)["config/seed"].apply(sorted)
    assert len(groups) == configurations and all(seeds == [0, 1] for seeds in groups), trials


def test_seeds_with_optuna_run_each_configuration_per_seed(local_ray, tmp_path) -> None:
    from miles_tune.search import run_search

    p = plan_search(search_args(tmp_path, "--seeds", "0,1", "--num-samples", "2", *FAST))
    results = run_search(p)
    assert results.num_errors == 0 and len(results) == 4
    table = read_table(p)
    assert "config/seed" in table.columns and "config/__trial_index__" not in table.columns
    assert_seed_pairs(table)
    assert set(table["stage"]) == {"search"} and set(table["grid"]) == {""}
    _, parents, children = child_runs(p.tracking_uri)
    assert (parents[0].data.tags["seeds"], parents[0].data.tags["stage"]) == ("0,1", "search")
    assert sorted(c.data.params["seed"] for c in children) == ["0", "0", "1", "1"]
    assert all(" seed=" in c.info.run_name for c in children)
    assert all(c.data.params["config.seed"] == c.data.params["seed"] for c in children)
    assert "__trial_index__" not in children[0].data.params
    best = yaml.safe_load((p.results_dir / "best_config.yaml").read_text())
    assert best["config"]["seed"] in (0, 1)


@pytest.mark.slow  # the Optuna path above runs by default; this is the same property for random search
def test_seeds_with_random_search_hold_each_sample_over_the_seeds(local_ray, tmp_path) -> None:
    """A space without known points: each configuration is a random sample, repeated per seed."""
    from miles_tune.search import run_search
    from miles_tune.spaces import load_search_space

    raw = yaml.safe_load(load_search_space("synthetic").path.read_text())
    raw["methods"] = {"miles": {**raw["methods"]["miles"], "points": []}}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(raw))
    args = search_args(tmp_path, "--space", str(space), "--searcher", "random", "--seeds", "0,1",
                       "--num-samples", "2", *FAST, tracking=False)  # fmt: skip
    p = plan_search(args)
    results = run_search(p)
    assert results.num_errors == 0 and len(results) == 4
    assert_seed_pairs(read_table(p))


@pytest.mark.slow
def test_an_interrupted_seeds_search_resumes_to_every_pair(local_ray, tmp_path) -> None:
    """Stopped between the two seeds of a configuration: the Repeater's groups are restored
    (Tune saves wrapper state), so the resumed search runs the same configuration with the
    other seed, and Optuna gets one trial for it, scored once both seeds are in."""
    import optuna
    from ray import tune

    from miles_tune.search import interrupted, run_search

    marker = tmp_path / "stopped"

    class StopAfterFirst(tune.Callback):
        """Tune's own stop signal, as Ctrl-C would be; once only (a second one is fatal), also
        after --resume, which restores the callbacks that were pickled with the search."""

        def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
            if not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGUSR1)

    args = search_args(tmp_path, "--seeds", "0,1", "--num-samples", "1", "--name", "seeds-resume", *FAST,
                       "--max-concurrent", "1", tracking=False)  # fmt: skip
    p = plan_search(args)
    first = run_search(p, extra_callbacks=[StopAfterFirst()])
    assert interrupted(first, p)
    p = plan_search([*args, "--resume"])
    results = run_search(p)
    assert results.num_errors == 0 and not interrupted(results, p)
    assert_seed_pairs(read_table(p), configurations=1)
    db = tmp_path / "ray" / "seeds-resume" / "optuna.db"
    study = optuna.load_study(study_name="seeds-resume", storage=f"sqlite:///{db}")
    assert len(study.trials) == 1 and {t.state.name for t in study.trials} == {"COMPLETE"}


def test_a_stop_signal_is_seen_when_tune_marks_every_trial_terminated(local_ray, tmp_path) -> None:
    """Random search without --max-concurrent creates every trial at once; on a stop signal
    (Ctrl-C) Tune marks them all TERMINATED, the never-started ones too. The search must still
    say it was interrupted (the study relies on it), and --resume must run exactly the rest."""
    from ray import tune

    from miles_tune.search import interrupted, run_search

    marker = tmp_path / "stopped"

    class StopAtFirstResult(tune.Callback):
        """Once only, also after --resume (which restores the callbacks pickled with the search)."""

        def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
            if not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGUSR1)  # Tune's stop signal, as SIGINT

    args = search_args(tmp_path, "--searcher", "random", "--num-samples", "4", "--name", "stop-all",
                       "--set", "epochs=2", "--cpus-per-trial", "1", "--gpus-per-trial", "0",
                       tracking=False)  # fmt: skip
    p = plan_search(args)
    first = run_search(p, extra_callbacks=[StopAtFirstResult()])
    assert len(first) == 4 and {t.status for t in first._experiment_analysis.trials} == {"TERMINATED"}
    assert interrupted(first, p)
    p = plan_search([*args, "--resume"])
    results = run_search(p)
    assert results.num_errors == 0 and not interrupted(results, p)
    table = read_table(p)
    assert table["trial_id"].nunique() == 4 and table.groupby("trial_id")["epoch"].nunique().eq(2).all()
