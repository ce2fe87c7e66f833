"""The search on real Ray, real Optuna (sqlite) and real MLflow stores.

Ray starts are grouped: one local Ray with two fake GPUs serves most tests.
"""

from __future__ import annotations

import pytest
from search_helpers import child_runs, mlflow_server, search_args

from miles_tune.search import plan_search, run_search

TIMING = ("epoch_seconds", "samples_per_second")


@pytest.fixture(scope="module")
def ray_two_fake_gpus():
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


class MaxRunning:
    """Counts how many trials Tune had RUNNING at once."""

    def __new__(cls):
        from ray import tune

        class _MaxRunning(tune.Callback):
            peak = 0

            def on_step_end(self, iteration, trials, **info):
                running = sum(t.status == "RUNNING" for t in trials)
                type(self).peak = max(type(self).peak, running)

        return _MaxRunning()


def test_quarter_gpus_run_eight_trials_at_once_and_log_every_epoch(ray_two_fake_gpus, tmp_path) -> None:
    plan = plan_search(
        search_args(tmp_path, "--searcher", "random", "--num-samples", "8", "--gpus-per-trial", "0.25",
                    "--cpus-per-trial", "0.25", "--set", "epochs=4")
    )  # fmt: skip
    counter = MaxRunning()
    results = run_search(plan, extra_callbacks=[counter])
    assert results.num_errors == 0
    assert len(results) == 8
    assert type(counter).peak == 8
    gpu_ids = sorted(r.metrics["gpu_ids"] for r in results)
    assert gpu_ids == ["0"] * 4 + ["1"] * 4  # four quarter-GPU trials per fake GPU
    assert all(r.metrics["training_iteration"] == 4 for r in results)

    client, parents, children = child_runs(plan.tracking_uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 8
    assert {r.info.status for r in children} == {"FINISHED"}
    run = children[0]
    assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    for tag in ("dataset", "method", "fusion", "seed", "searcher", "miles_tune.trial_id"):
        assert tag in run.data.tags
    assert run.data.params["config.method"] == "miles" and "config.method_args.tau" in run.data.params
    assert {"lr", "tau", "mu"} <= set(run.data.params)  # the searched ones, under their own names
    assert not any(k.startswith("lr/") for k in run.data.params)  # every group starts at α: `lr`
    for key in (
        "u/fast",
        "u/slow",
        "delta",
        "loss/total",
        "val/mm/acc",
        "test/slow/acc",
    ):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == [0, 1, 2, 3], key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"history.parquet", "summary.json", "plots"} <= artifacts
    assert not any(k.startswith("system/") for k in run.data.metrics)  # no real GPU: off by default


def test_optuna_evaluates_the_known_good_points_first(ray_two_fake_gpus, tmp_path) -> None:
    import optuna

    plan = plan_search(search_args(tmp_path, "--num-samples", "3", "--max-concurrent", "1", tracking=False))
    results = run_search(plan)
    assert results.num_errors == 0
    study = optuna.load_study(
        study_name=plan.name, storage=f"sqlite:///{tmp_path / 'ray' / plan.name / 'optuna.db'}"
    )
    trials = sorted(study.trials, key=lambda t: t.number)
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
    assert trials[0].params == pytest.approx({"lr": 1e-3, "tau": 0.2, "mu": 0.5})
    assert trials[1].params == pytest.approx({"lr": 1e-3, "tau": 0.05, "mu": 0.1})
    files = {p.name for p in plan.results_dir.iterdir()}  # untracked searches write them too
    assert {"best_config.yaml", "trials.parquet", "search_space.yaml"} <= files


def test_real_mlflow_server_as_tracking_uri(ray_two_fake_gpus, tmp_path) -> None:
    with mlflow_server(tmp_path) as url:
        plan = plan_search(search_args(tmp_path, "--num-samples", "2", "--tracking-uri", url))
        assert plan.tracking_uri == url
        results = run_search(plan)
        assert results.num_errors == 0
        client, parents, children = child_runs(url)
        assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}
        history = client.get_metric_history(children[0].info.run_id, "delta")
        assert sorted(m.step for m in history) == [0, 1, 2]
        assert "plots" in {a.path for a in client.list_artifacts(children[0].info.run_id)}
