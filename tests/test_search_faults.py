"""Faults in the middle of a search, on Ray clusters of the test's own.

A worker node removed while its trial runs: the trial moves to the surviving node, resumes
from its last checkpoint and ends with exactly the metrics of an uninterrupted run, with one
FINISHED MLflow run per trial and every epoch logged once.
"""

from __future__ import annotations

import dataclasses

import pytest
from search_helpers import child_runs, search_args

from miles_tune.search import plan_search, run_search
from miles_tune.spaces import trial_config
from miles_tune.train import Trainer
from miles_tune.trainable import read_trial_checkpoint

TIMING = ("epoch_seconds", "samples_per_second")
EPOCHS = 6
REMOVE_AFTER = 2  # epochs the doomed trial has reported when its node goes


def node_remover(cluster, after: int):  # noqa: ANN001, ANN201 -> tune.Callback
    """A Tune callback that removes the worker node of the first trial to report ``after`` epochs.

    Tune's driver runs callbacks between a trial's reports and a function trainable's
    ``tune.report`` blocks until the driver asks for the next result, so the trial is at
    most one epoch further (of ``EPOCHS``) when its node goes: still running, never done.
    The node goes after Tune recorded the epoch's result but before it confirmed the epoch's
    checkpoint (a ``save`` call to the now dead trial actor), a window a real node loss can
    hit too: the retry resumes from the previous checkpoint and re-runs that epoch.
    """
    from ray import tune

    class RemoveNodeMidTrial(tune.Callback):
        def __init__(self, cluster, after: int) -> None:  # noqa: ANN001
            self.cluster, self.after = cluster, after
            self.seen: dict[str, list[tuple[int, str]]] = {}  # trial id -> [(epoch, node id)]
            self.removed: dict | None = None
            self.recovered: list[str] = []

        def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
            self.seen.setdefault(trial.trial_id, []).append((int(result["epoch"]), result["node_id"]))
            if self.removed is not None or result["training_iteration"] < self.after or result.get("done"):
                return
            node = next(n for n in self.cluster.worker_nodes if n.node_id == result["node_id"])
            self.cluster.remove_node(node)
            self.removed = {"trial_id": trial.trial_id, "node_id": node.node_id, "epoch": result["epoch"]}

        def __getstate__(self) -> dict:  # the Tuner pickles its callbacks; a Cluster holds locks
            return {k: v for k, v in self.__dict__.items() if k != "cluster"}

        def on_trial_recover(self, iteration, trials, trial, **info):  # noqa: ANN001
            self.recovered.append(trial.trial_id)

    return RemoveNodeMidTrial(cluster, after)


def reference_history(plan, params):  # noqa: ANN001, ANN201
    """The same trial, uninterrupted, in-process, with the one thread a 1-CPU trial uses."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # float sums depend on the thread count
    try:
        trainer = Trainer(dataclasses.replace(trial_config(plan.base, params), device="cpu"))
        return list(trainer.run()), trainer.summary()
    finally:
        torch.set_num_threads(threads)


def strip(records) -> list[dict]:  # noqa: ANN001
    return [{k: v for k, v in r.flat().items() if k not in TIMING} for r in records]


@pytest.fixture(scope="module")
def node_lost_search(tmp_path_factory):  # noqa: ANN201
    """One search on a head (no trials) and two 1-CPU workers (one trial each); the node of the
    first trial to report ``REMOVE_AFTER`` of ``EPOCHS`` epochs is removed. Runs once for the
    module's tests; storage and the sqlite MLflow store live in one local folder all nodes share."""
    import ray
    from ray.cluster_utils import Cluster

    tmp_path = tmp_path_factory.mktemp("node-lost")
    cluster = Cluster(
        initialize_head=True,
        # no trials on the head; a free agent port (another Ray on this machine may hold the default)
        head_node_args={"num_cpus": 0, "include_dashboard": False, "dashboard_agent_listen_port": None},
    )
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        workers = {n.node_id for n in cluster.worker_nodes}
        plan = plan_search(
            search_args(tmp_path, "--searcher", "random", "--num-samples", "2", "--cpus-per-trial", "1",
                        "--gpus-per-trial", "0", "--max-failures", "2", "--set", f"epochs={EPOCHS}")
        )  # fmt: skip
        remover = node_remover(cluster, REMOVE_AFTER)
        results = run_search(plan, extra_callbacks=[remover])
    finally:
        ray.shutdown()
        cluster.shutdown()
    return plan, results, remover, workers


def test_node_lost_mid_search_moves_its_trial_to_the_other_node(node_lost_search) -> None:
    """The fault really happened to a running trial, which Tune retried on the surviving node."""
    _, results, remover, workers = node_lost_search
    removed = remover.removed
    assert removed is not None, "no node was removed"
    assert removed["node_id"] in workers
    assert REMOVE_AFTER - 1 <= removed["epoch"] < EPOCHS - 1  # mid-run: checkpointed, not finished
    victim = removed["trial_id"]
    assert remover.recovered == [victim]  # one retry, of that trial only
    survivor = (workers - {removed["node_id"]}).pop()
    seen = remover.seen[victim]
    assert seen[0][1] == removed["node_id"] and seen[-1][1] == survivor, seen

    assert results.num_errors == 0
    assert len(results) == 2
    by_trial = {r.metrics["trial_id"]: r for r in results}
    assert set(by_trial) == set(remover.seen)
    assert by_trial[victim].metrics["node_id"] == survivor
    for result in results:
        assert result.metrics["epoch"] == EPOCHS - 1
        assert [r.epoch for r in checkpoint_history(result.checkpoint)] == list(range(EPOCHS))


def test_node_lost_mid_search_logs_each_epoch_once_in_mlflow(node_lost_search) -> None:
    """One FINISHED child run per trial (none duplicated), each metric's steps 0..E-1 once."""
    plan, results, _, _ = node_lost_search
    by_trial = {r.metrics["trial_id"]: r for r in results}
    client, parents, children = child_runs(plan.tracking_uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["miles_tune.trial_id"] for r in children) == sorted(by_trial)
    assert {r.info.status for r in children} == {"FINISHED"}
    for run in children:
        trial_id = run.data.tags["miles_tune.trial_id"]
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.info.run_id == by_trial[trial_id].metrics["mlflow_run_id"]
        history = checkpoint_history(by_trial[trial_id].checkpoint)
        start = history[0].lr
        moved = {f"lr/{g}" for g in start if any(r.lr[g] != start[g] for r in history)}
        per_epoch = {k for k in history[0].flat() if not k.startswith("lr/")} | moved
        assert per_epoch <= set(run.data.metrics)  # constant learning rates are params
        assert float(run.data.params["lr"]) == start["fusion"]  # every group starts at α
        for key in run.data.metrics:
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            if key.startswith("best"):  # logged at the epochs that improved: each once
                assert steps == sorted(set(steps)) and steps[0] == 0, (run.info.run_name, key, steps)
            elif key == "train_seconds":  # the whole trial's, logged once as the run ends
                assert steps == [0], (run.info.run_name, key, steps)
            else:
                assert steps == list(range(EPOCHS)), (run.info.run_name, key, steps)


def test_node_lost_mid_search_ends_with_the_uninterrupted_metrics(node_lost_search) -> None:
    """Every trial's history (the moved one included) equals an uninterrupted run's, timings aside."""
    plan, results, _, _ = node_lost_search
    for result in results:
        trial_id = result.metrics["trial_id"]
        params = {k: v for k, v in result.config.items() if k != "miles_tune"}
        expected, summary = reference_history(plan, params)
        got, want = strip(checkpoint_history(result.checkpoint)), strip(expected)
        assert len(got) == len(want) == EPOCHS
        diffs = [(i, k, x[k], want[i].get(k)) for i, x in enumerate(got) for k in x if x[k] != want[i].get(k)]
        assert not diffs, (trial_id, diffs[:8])
        assert result.metrics["best/val/mm/acc"] == summary["best"]["val/mm/acc"]
        assert result.metrics["best/test/mm/acc"] == summary["best"]["test/mm/acc"]


def test_node_lost_mid_search_exports_each_epoch_once(node_lost_search) -> None:
    """trials.parquet holds every trial's epochs 0..E-1 once, the re-run ones included."""
    import pyarrow.parquet as pq

    from miles_tune.search import export_results

    plan, results, _, _ = node_lost_search
    export_results(results, plan)
    table = pq.read_table(plan.results_dir / "trials.parquet").to_pandas()
    assert table["trial_id"].nunique() == 2
    for trial_id, rows in table.groupby("trial_id"):
        assert list(rows["epoch"]) == list(range(EPOCHS)), (trial_id, list(rows["epoch"]))


def checkpoint_history(checkpoint):  # noqa: ANN001, ANN201
    return read_trial_checkpoint(checkpoint)["history"]
