"""The search on Ray clusters of its own: no GPUs, a killed worker, two nodes.

Each test starts and stops its own Ray; they run after tests/test_search.py's shared one is down.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
from search_helpers import child_runs, search_args

from miles_tune.search import plan_search, run_search
from miles_tune.spaces import trial_config
from miles_tune.train import Trainer

TIMING = ("epoch_seconds", "samples_per_second")


def test_gpu_request_on_a_gpu_less_cluster_is_dropped(tmp_path) -> None:
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        plan = plan_search(
            search_args(tmp_path, "--num-samples", "1", "--gpus-per-trial", "0.5", tracking=False)
        )
        with pytest.warns(UserWarning, match="no GPUs"):
            results = run_search(plan)
        assert results.num_errors == 0 and len(results) == 1
    finally:
        ray.shutdown()


def test_killed_trial_resumes_from_its_checkpoint_exactly(tmp_path) -> None:
    """The worker dies after epoch 1; Tune retries from the checkpoint; metrics equal an uninterrupted run."""
    import ray

    marker = tmp_path / "crashed"
    os.environ["MILES_TUNE_CRASH_ONCE"] = f"1:{marker}"
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        plan = plan_search(
            search_args(tmp_path, "--searcher", "random", "--num-samples", "1", "--max-failures", "2",
                        "--set", "epochs=4", "--set", "encoders.fast.dropout=0.2")
        )  # fmt: skip
        results = run_search(plan)
    finally:
        ray.shutdown()
        del os.environ["MILES_TUNE_CRASH_ONCE"]
    assert marker.exists(), "the fault was not injected"
    assert results.num_errors == 0
    assert len(results) == 1
    result = results[0]
    from miles_tune.trainable import read_trial_checkpoint

    resumed = read_trial_checkpoint(result.checkpoint)["history"]
    params = {k: v for k, v in result.config.items() if k != "miles_tune"}
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trial (1 CPU) did: float sums depend on the thread count
    try:
        reference = Trainer(dataclasses.replace(trial_config(plan.base, params), device="cpu"))
        expected = list(reference.run())
    finally:
        torch.set_num_threads(threads)
    strip = lambda rs: [{k: v for k, v in r.flat().items() if k not in TIMING} for r in rs]  # noqa: E731
    a, b = strip(resumed), strip(expected)
    diffs = [(i, k, x[k], b[i].get(k)) for i, x in enumerate(a) for k in x if x[k] != b[i].get(k)]
    assert not diffs, diffs[:8]
    assert result.metrics["best/test/mm/acc"] == reference.summary()["best"]["test/mm/acc"]

    client, parents, children = child_runs(plan.tracking_uri)
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(children[0].info.run_id, "val/mm/acc")]
    assert sorted(steps) == [0, 1, 2, 3]  # the re-run epoch was not logged twice


def test_two_node_cluster_spreads_trials(tmp_path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=2)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        plan = plan_search(
            search_args(tmp_path, "--searcher", "random", "--num-samples", "4", "--cpus-per-trial", "1",
                        "--set", "epochs=4", tracking=False)
        )  # fmt: skip
        results = run_search(plan)
        assert results.num_errors == 0
        nodes = {r.metrics["node_id"] for r in results}
        assert len(nodes) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()


# The default run keeps resume-to-exactly-N in test_search_grid's stop-signal test (in process,
# one Ray start); this one is the whole CLI path (SIGINT, exit 130, MLflow, Optuna) at ~70 s.
@pytest.mark.slow
def test_interrupted_search_resumes_to_exactly_n_trials(tmp_path) -> None:
    """SIGINT to the driver mid-search, then --resume: N trials, N FINISHED child runs, N Optuna trials."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import optuna
    import pyarrow.parquet as pq

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    args = search_args(tmp_path, "--num-samples", "4", "--max-concurrent", "1", "--name", "resume-me",
                       "--set", "epochs=8")  # fmt: skip
    cmd = [sys.executable, "-m", "miles_tune.search", *args]
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        deadline = time.monotonic() + 240
        finished = 0
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1)
            if (tmp_path / "mlflow.db").exists():
                try:
                    _, _, children = child_runs(uri)
                except Exception:  # the store may be mid-migration
                    continue
                finished = sum(r.info.status == "FINISHED" for r in children)
                if finished >= 1 and len(children) >= 2:
                    break
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    assert proc.returncode == 130
    _, parents, children = child_runs(uri)
    assert sum(r.info.status == "FINISHED" for r in children) < 4  # really interrupted
    assert parents[0].info.status == "KILLED"

    done = subprocess.run(
        [*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    table = pq.read_table(tmp_path / "runs" / "resume-me" / "trials.parquet").to_pandas()
    assert table["trial_id"].nunique() == 4
    _, parents, children = child_runs(uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4
    assert {r.info.status for r in children} == {"FINISHED"}
    study = optuna.load_study(
        study_name="resume-me", storage=f"sqlite:///{tmp_path / 'ray' / 'resume-me' / 'optuna.db'}"
    )
    assert len(study.trials) == 4 and {t.state.name for t in study.trials} == {"COMPLETE"}
