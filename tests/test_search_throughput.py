"""Reused Ray workers and what a search keeps on disk, on a real local Ray cluster (one start)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from search_helpers import search_args

from miles_tune.search import format_storage, plan_search, run_search
from miles_tune.spaces import trial_config
from miles_tune.train import Trainer

TIMING = ("epoch_seconds", "samples_per_second")


@pytest.fixture(scope="module")
def ray_two_cpus():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def records_of(results_dir: Path) -> dict[str, pd.DataFrame]:
    df = pd.read_parquet(results_dir / "trials.parquet")
    return {tid: rows.sort_values("epoch").reset_index(drop=True) for tid, rows in df.groupby("trial_id")}


def test_two_trials_on_one_reused_worker_give_exactly_what_each_gives_alone(ray_two_cpus, tmp_path) -> None:
    """MILES with τ 0 (its rule fires every epoch, so the method's state and the encoders' rates
    move) and τ 0.5, one after the other on one worker process: each trial's every epoch equals
    the same configuration trained alone, in a fresh process state, here."""
    args = search_args(
        tmp_path, "--grid", "tau=0.0,0.5", "--set", "lr=0.01", "--set", "mu=0.3",
        "--max-concurrent", "1", "--cpus-per-trial", "1", "--name", "reuse", tracking=False,
    )  # fmt: skip
    plan = plan_search(args)
    results = run_search(plan)
    assert results.num_errors == 0
    trials = records_of(plan.results_dir)
    assert len(trials) == 2
    pids = {int(rows["pid"].iloc[0]) for rows in trials.values()}
    assert len(pids) == 1, "Tune did not reuse the worker: the test proves nothing"
    for rows in trials.values():
        params = {"lr": 0.01, "mu": 0.3, "tau": float(rows["config/tau"].iloc[0])}
        torch.set_num_threads(1)  # what the trial had (one CPU)
        alone = [r.flat() for r in Trainer(trial_config(plan.base, params)).run()]
        assert len(alone) == len(rows)
        for epoch, record in enumerate(alone):
            for key, value in record.items():
                if key not in TIMING and not key.startswith("lr/"):
                    assert rows[key].iloc[epoch] == value, (params, epoch, key)
        assert rows["lr/fast"].tolist() == [r["lr/fast"] for r in alone]
    tau0 = next(rows for rows in trials.values() if rows["config/tau"].iloc[0] == 0.0)
    assert tau0["lr/fast"].nunique() + tau0["lr/slow"].nunique() > 2  # the rule did fire


def test_every_trial_closes_its_own_run_even_the_last_ones(ray_two_cpus, tmp_path) -> None:
    """A trial closes its MLflow run in a background thread of its reused worker; when the search
    ends, Tune stops the workers and they finish those closes, so the driver redoes none."""
    from miles_tune.tracking import SYNCED_TAG, client

    args = search_args(
        tmp_path, "--searcher", "random", "--num-samples", "3", "--cpus-per-trial", "1", "--name", "closes"
    )
    plan = plan_search(args)
    assert run_search(plan).num_errors == 0
    c = client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 3
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags[SYNCED_TAG] == "true"
        assert run.data.tags["closed_by"] == "trial", run.info.run_name
        assert "plots/utilisation.png" in {a.path for a in c.list_artifacts(run.info.run_id, "plots")}


def checkpoint_files(storage: Path) -> dict[str, set[str]]:
    """Trial folder -> the files of its checkpoints."""
    out: dict[str, set[str]] = {}
    for trial_dir in storage.glob("*/trial_*"):
        out[trial_dir.name] = {f.name for c in trial_dir.glob("checkpoint_*") for f in c.iterdir()}
    return out


@pytest.mark.parametrize("keep", ["best", "none", "all"])
def test_keep_checkpoints_leaves_what_it_says(ray_two_cpus, tmp_path, keep: str, capsys) -> None:
    args = search_args(
        tmp_path, "--searcher", "random", "--num-samples", "3", "--cpus-per-trial", "1",
        "--keep-checkpoints", keep, "--name", f"keep-{keep}", tracking=False,
    )  # fmt: skip
    plan = plan_search(args)
    results = run_search(plan)
    assert results.num_errors == 0
    files = checkpoint_files(tmp_path / "ray")
    assert len(files) == 3
    assert all(len(list((tmp_path / "ray").glob(f"*/{t}/checkpoint_*"))) == 1 for t in files)  # one each
    assert all({"history.json", "summary.json", "trial.json"} <= f for f in files.values())
    best = results.get_best_result(plan.metric, "max")
    best_dir = f"trial_{best.metrics['trial_id']}"
    with_trainer = {t for t, f in files.items() if "trainer.pt" in f}
    with_best = {t for t, f in files.items() if "best_model.pt" in f}
    if keep == "all":
        assert with_trainer == with_best == set(files)
    elif keep == "none":
        assert with_trainer == with_best == set()
    else:
        assert with_trainer == set() and with_best == {best_dir}
        weights = torch.load(
            next((tmp_path / "ray").glob(f"*/{best_dir}/checkpoint_*/best_model.pt")), weights_only=True
        )
        model = Trainer(trial_config(plan.base, {k: best.config[k] for k in ("lr", "tau", "mu")})).model
        model.load_state_dict(weights)  # the best epoch's weights of this model
    # best_config.yaml names the kept file (what UMT's teachers read), when one is kept
    named = yaml.safe_load((plan.results_dir / "best_config.yaml").read_text()).get("best_model")
    if keep == "none":
        assert named is None
    else:
        assert Path(named).is_file() and Path(named).parent.parent.name == best_dir
    line = format_storage(plan)
    assert line.startswith("storage: ") and f"--keep-checkpoints {keep}" in line


def named_by_state_on_storage(experiment: Path) -> dict[str, str] | None:
    """Trial id -> the checkpoint that the experiment state on storage names (what ``--resume``
    restores each trial from); None while the file is absent or being written."""
    import json

    from ray.tune.trainable.metadata import _TrainingRunMetadata

    files = sorted(experiment.glob("experiment_state-*.json"))
    try:
        state = json.loads(files[-1].read_text())
    except (IndexError, ValueError, OSError):
        return None
    named = {}
    for trial_json, metadata_json in state["trial_data"]:
        manager = _TrainingRunMetadata.from_json_state(metadata_json).checkpoint_manager
        latest = manager.latest_checkpoint_result if manager else None
        if latest is not None:
            named[json.loads(trial_json)["trial_id"]] = latest.checkpoint.path
    return named


def test_older_checkpoints_go_while_trials_run_and_the_state_on_storage_never_names_a_gone_one(
    ray_two_cpus, tmp_path, monkeypatch
) -> None:
    """Tune keeps every checkpoint (so it forces no experiment snapshot per checkpoint), and
    DropSupersededCheckpoints deletes a trial's older ones once the state on storage names a
    newer one. Watched at every step of a real search: whatever state is on storage names
    checkpoints that exist, and a running trial does lose its older ones."""
    from ray import tune

    from miles_tune import storage

    monkeypatch.setattr(storage, "SNAPSHOT_PERIOD_S", 0.2)  # several snapshots in a short search
    seen = {"states": 0, "named": 0, "gone": [], "dropped_while_running": set(), "most_on_disk": 0}
    experiment = tmp_path / "ray" / "drops"

    class Watch(tune.Callback):
        def on_step_end(self, iteration, trials, **info):  # noqa: ANN001
            named = named_by_state_on_storage(experiment)
            if named is None:
                return
            seen["states"] += 1
            for path in named.values():
                seen["named"] += 1
                if not Path(path).is_dir():  # asserted after the search (Tune would catch it here)
                    seen["gone"].append(path)
            for trial in trials:
                on_disk = sorted((experiment / f"trial_{trial.trial_id}").glob("checkpoint_*"))
                seen["most_on_disk"] = max(seen["most_on_disk"], len(on_disk))
                if trial.status == "RUNNING" and on_disk and on_disk[0].name != "checkpoint_000000":
                    seen["dropped_while_running"].add(trial.trial_id)

    args = search_args(
        tmp_path, "--searcher", "random", "--num-samples", "2", "--cpus-per-trial", "1",
        "--set", "epochs=40", "--name", "drops", tracking=False,
    )  # fmt: skip
    plan = plan_search(args)
    results = run_search(plan, extra_callbacks=[Watch()])
    assert results.num_errors == 0
    assert seen["states"] > 5 and seen["named"] > 5, seen
    assert seen["gone"] == [], "the state on storage named a checkpoint already deleted"
    assert seen["dropped_while_running"], f"no trial lost an older checkpoint while it ran: {seen}"
    assert seen["most_on_disk"] < 40, seen  # not every epoch's checkpoint piled up
    # once the search has finished: the last checkpoint of each trial alone, as --keep-checkpoints had it
    assert sorted(len(list(t.glob("checkpoint_*"))) for t in experiment.glob("trial_*")) == [1, 1]
    assert "TUNE_GLOBAL_CHECKPOINT_S" not in os.environ  # Tune's settings are put back after fit()
