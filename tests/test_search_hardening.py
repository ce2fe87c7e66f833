"""A search never merges into another, never hangs, and is refused before any work when it must be.

Checks that need no Ray come first; the ones on a real Ray, a real ``mlflow server`` and real
concurrent processes follow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from search_helpers import MlflowServer, child_runs, free_port, search_args

from miles_tune.errors import ConfigError
from miles_tune.search import main, plan_search, run_search

ROOT = Path(__file__).resolve().parent.parent


def ray_started() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["/abs/x", "../x", "it's", "..", ".", "a b", "x/y", 'q"'])
def test_unsafe_names_are_refused_before_ray(tmp_path, capsys, name) -> None:
    code = main(search_args(tmp_path, "--name", name))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --name") and "letters, digits" in err, err
    assert not ray_started()
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()


def test_default_names_are_unique_within_a_second(tmp_path) -> None:
    names = {plan_search(search_args(tmp_path, tracking=False)).name for _ in range(20)}
    assert len(names) == 20


def test_mlflow_filter_values_are_quoted(tmp_path) -> None:
    """Values with quotes find their run instead of breaking (or injecting into) the filter."""
    from miles_tune import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.prepare_store(uri)
    exp = tracking.ensure_experiment(uri, "e")
    ids = {v: tracking.start_parent_run(uri, exp, v, {}, {}) for v in ["it's", 'say "hi"', "x' or '1'='1"]}
    for value, run_id in ids.items():
        assert tracking.find_parent_run(uri, exp, value) == run_id
    with pytest.raises(ConfigError, match="both kinds of quote"):
        tracking.quote('it\'s "both"')


# -- a name in use ---------------------------------------------------------------------------


def test_a_second_search_under_a_name_in_use_is_refused_naming_the_holder(tmp_path, capsys) -> None:
    """The lock is held by another process (a running search); a second search is refused in
    well under a second, before Ray and before MLflow, and is told who holds the name."""
    from miles_tune.search import LOCK_FILE

    lock = tmp_path / "ray" / "taken" / LOCK_FILE
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time\nfrom miles_tune.locks import NameLock\n"
         f"held = NameLock({str(lock)!r}, 'x'); held.acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        code = main(search_args(tmp_path, "--name", "taken"))
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert code == 2 and elapsed < 20, (code, elapsed)
    assert f"pid {holder.pid}" in err and "in use by another search" in err, err
    assert not ray_started()
    assert not (tmp_path / "mlflow.db").exists()


def test_resume_of_an_unknown_name_touches_nothing(tmp_path, capsys) -> None:
    """Before: refused, but a parent run named 'typo' stayed RUNNING for ever."""
    code = main(search_args(tmp_path, "--resume", "--name", "typo"))
    assert code == 2
    assert "nothing to restore" in capsys.readouterr().err
    assert not ray_started()
    assert not (tmp_path / "mlflow.db").exists()  # MLflow never touched


# -- resources and tracking refused before Ray -------------------------------------------------


@pytest.mark.parametrize("flag", ["--gpus-per-trial", "--cpus-per-trial"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_resources_are_refused(tmp_path, capsys, flag, value) -> None:
    assert main(search_args(tmp_path, flag, value, tracking=False)) == 2
    assert f"{flag} must be a finite number" in capsys.readouterr().err
    assert not ray_started()


def test_an_unreachable_tracking_server_is_refused_in_seconds(tmp_path, capsys) -> None:
    """Before: 255 s of silent retries, then a traceback (with Ray already up)."""
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    code = main(search_args(tmp_path, "--tracking-uri", url))
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    assert code == 2 and elapsed < 15, (code, elapsed)
    assert err.startswith(f"error: the MLflow tracking store {url} did not answer") and "\n" not in err, err
    assert not ray_started()


def test_concurrent_first_use_of_a_sqlite_store_is_safe(tmp_path) -> None:
    """Three processes open a fresh store at the same instant. Without the lock, MLflow's schema
    migration fails in all but one ('table _alembic_tmp_... already exists')."""
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    start_at = time.time() + 8  # after every interpreter has imported mlflow
    code = (
        "import sys, time\nfrom miles_tune import tracking\n"
        f"while time.time() < {start_at}: time.sleep(0.002)\n"
        f"tracking.prepare_store({uri!r}); tracking.ensure_experiment({uri!r}, 'e'); print('ok')"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-800:] for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["ok"] * 3


# -- on a real Ray ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_a_deterministic_failure_fails_once_without_retries(local_ray, tmp_path) -> None:
    """lr 1e38 diverges in every attempt: before, each trial ran 1 + --max-failures times."""
    from ray import tune

    class CountStarts(tune.Callback):
        starts: dict[str, int] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            type(self).starts[trial.trial_id] = type(self).starts.get(trial.trial_id, 0) + 1

    plan = plan_search(
        search_args(tmp_path, "--searcher", "random", "--num-samples", "2", "--max-failures", "3",
                    "--set", "lr=1.0e38", "--set", "epochs=3")
    )  # fmt: skip
    counter = CountStarts()
    results = run_search(plan, extra_callbacks=[counter])
    assert results.num_errors == 2
    assert sorted(CountStarts.starts.values()) == [1, 1]  # no retry
    for result in results:
        assert "NonFiniteLossError" in str(result.error)
    _, parents, children = child_runs(plan.tracking_uri)
    assert len(children) == 2
    assert {r.info.status for r in children} == {"FAILED"}
    assert all("non-finite parameter update at epoch 0, step 0" in r.data.tags["error"] for r in children)
    assert parents[0].info.status == "FAILED"


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_training_goes_on_while_the_tracking_server_is_down(local_ray, tmp_path) -> None:
    """A real ``mlflow server`` stopped after the trials logged their first epochs and restarted a
    few seconds later: the trials keep training and checkpointing meanwhile, catch up when it is
    back, and every epoch of every trial ends up in MLflow exactly once, with its artifacts."""
    from mlflow import MlflowClient

    server = MlflowServer(tmp_path)
    url = server.start()
    epochs = 8
    plan = plan_search(
        search_args(tmp_path, "--searcher", "random", "--num-samples", "2", "--cpus-per-trial", "1",
                    "--tracking-uri", url, "--set", f"epochs={epochs}", "--set", "data.n_train=3000",
                    # the data where MILES moves the slow encoder's rate, whose line is checked below
                    "--set", "data.regime=inverted")
    )  # fmt: skip
    outage: dict[str, float] = {}

    def stop_then_restart() -> None:
        client = MlflowClient(url)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                exp = client.get_experiment_by_name("miles_tune")
                runs = client.search_runs([exp.experiment_id]) if exp else []
                children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
                if len(children) == 2 and all(r.data.metrics.get("epoch", -1) >= 1 for r in children):
                    break
            except Exception:
                pass
            time.sleep(0.3)
        server.stop()
        outage["down"] = time.monotonic()
        time.sleep(6)
        server.start()
        outage["up"] = time.monotonic()

    from ray import tune

    class EndAfterTheOutage(tune.Callback):
        """Trials train faster than the server restarts (a worker is reused, its run is closed in
        the background): the search must not end before the server is back, or there would be
        nothing to catch up on (``--resume`` completes that case: the test below)."""

        def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
            deadline = time.monotonic() + 240
            while "up" not in outage and time.monotonic() < deadline:
                time.sleep(0.2)

    watcher = threading.Thread(target=stop_then_restart, daemon=True)
    try:
        watcher.start()
        results = run_search(plan, extra_callbacks=[EndAfterTheOutage()])
        watcher.join(timeout=300)
        if server.proc is None:
            server.start()
        assert "up" in outage, "the server was never stopped"
        assert results.num_errors == 0
        for result in results:  # training went on: every epoch ran and was reported to Tune
            assert result.metrics["training_iteration"] == epochs
        client, parents, children = child_runs(url)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == 2
        for run in children:
            assert run.info.status == "FINISHED"
            assert run.data.tags.get("miles_tune.synced") == "true"
            for key in ("epoch", "val/mm/acc", "u/fast", "delta", "lr/slow"):
                assert _steps(client, run.info.run_id, key) == list(range(epochs)), key
            artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"history.parquet", "summary.json", "plots"} <= artifacts
    finally:
        server.stop()


# ~45 s: a server started, killed and restarted around two searches. The default run keeps
# the first half (test_training_goes_on_while_the_tracking_server_is_down).
@pytest.mark.slow
def test_runs_left_incomplete_by_a_dead_server_are_completed_by_resume(local_ray, tmp_path) -> None:
    """The server dies during the search and is still down when it ends: the search finishes
    anyway (its results exported), and ``--resume`` once the server is back completes every run
    from the trials' checkpoints."""
    server = MlflowServer(tmp_path)
    url = server.start()
    epochs = 4
    args = search_args(tmp_path, "--searcher", "random", "--num-samples", "2", "--cpus-per-trial", "1",
                       "--tracking-uri", url, "--name", "outage", "--set", f"epochs={epochs}")  # fmt: skip
    plan = plan_search(args)
    from ray import tune

    class KillServerAtFirstResult(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            server.stop()

        def __reduce__(self):  # Tune pickles its callbacks; the server (a process) stays here
            return (tune.Callback, ())

    started = time.monotonic()
    try:
        results = run_search(plan, extra_callbacks=[KillServerAtFirstResult()])
    finally:
        server.stop()
    elapsed = time.monotonic() - started
    assert results.num_errors == 0 and len(results) == 2
    assert elapsed < 150, elapsed  # bounded MLflow calls: no minutes-long stalls
    server.start()
    try:
        client, parents, children = child_runs(url)
        assert parents[0].info.status == "RUNNING"  # the search could not even close its own run
        assert not any(r.data.tags.get("miles_tune.synced") for r in children)
        resumed = run_search(plan_search([*args, "--resume"]))
        assert resumed.num_errors == 0
        client, parents, children = child_runs(url)
        assert len(children) == 2
        assert parents[0].info.status == "FINISHED"
        for run in children:
            assert run.info.status == "FINISHED" and run.data.tags.get("miles_tune.synced") == "true"
            assert _steps(client, run.info.run_id, "val/mm/acc") == list(range(epochs))
            assert "summary.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    finally:
        server.stop()


# -- real concurrent searches ------------------------------------------------------------------


# Two whole searches at once (~35 s); the default run keeps its two parts: unique default
# names (test_default_names_are_unique_within_a_second) and the sqlite first-use race.
@pytest.mark.slow
def test_a_seed_loop_started_in_one_second_gives_separate_searches(tmp_path) -> None:
    """The issue's example, on a fresh sqlite store: two searches with default names started at
    once. Before: both got the same name and merged, or the second crashed in MLflow's migration."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "miles_tune.search",
                *search_args(tmp_path, "--num-samples", "1", "--searcher", "random", "--cpus-per-trial", "1"),
                "--seed",
                str(seed),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for seed in (0, 1)
    ]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
    names = sorted(p.name for p in (tmp_path / "ray").iterdir())
    assert len(names) == 2 and names[0] != names[1]
    _, parents, children = child_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(parents) == 2 and len(children) == 2
    assert {r.data.tags["seed"] for r in parents} == {"0", "1"}
