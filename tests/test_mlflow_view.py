"""What a researcher sees in MLflow: comparable child runs, honest statuses, a parent that
explains its search. One real small search with ASHA on a real sqlite store, read back run by
run; the naming and logging rules underneath are tested on their own first."""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import pytest
import yaml
from search_helpers import child_runs, search_args

from miles_tune import tracking
from miles_tune.records import EpochRecord, best_metrics, is_better
from miles_tune.spaces import load_search_space, parse_search_space
from miles_tune.trainable import end_tags, trial_name

EPOCHS = 6


def record(epoch: int, val: float, lr: dict[str, float], test: float = 0.5) -> EpochRecord:
    return EpochRecord(
        epoch=epoch,
        losses={"total": 1.0 / (epoch + 1)},
        metrics={"val": {"mm": {"acc": val}}, "test": {"mm": {"acc": test}}},
        u={"a": 0.1, "b": 0.2},
        delta=0.1,
        lr=lr,
        epoch_seconds=0.1,
        samples_per_second=100.0,
    )


# -- the rules ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "shown"),
    [(1.2e-3, "1.2e-3"), (0.0012345, "1.23e-3"), (0.21, "0.21"), (0.654321, "0.654"), (1e-4, "1e-4"),
     (5, "5"), (0.0, "0"), (12345.0, "1.23e4"), ("metric", "metric"), (True, "True")],
)  # fmt: skip
def test_short_values_keep_three_significant_digits(value, shown) -> None:
    assert tracking.short_value(value) == shown


def test_run_names_say_method_number_and_what_was_sampled() -> None:
    name = tracking.run_name(
        trial_name("miles", "3_lr=0.0012,mu=0.65"), {"lr": 1.2e-3, "tau": 0.21, "mu": 0.65}
    )
    assert name == "miles-003 lr=1.2e-3 tau=0.21 mu=0.65"
    assert tracking.run_name(trial_name("vanilla", ""), {}) == "vanilla"


def test_selection_prefers_higher_then_later_and_nan_never_wins() -> None:
    lr = {"g": 1.0}
    first, tie, better, nan = (
        record(0, 0.5, lr),
        record(1, 0.5, lr),
        record(2, 0.6, lr),
        record(3, math.nan, lr),
    )
    assert is_better(first, None, "val/mm/acc")
    assert is_better(tie, first, "val/mm/acc")  # no loss to break the tie: the later epoch
    assert is_better(better, first, "val/mm/acc")
    assert not is_better(first, better, "val/mm/acc")
    assert not is_better(nan, None, "val/mm/acc")
    got = best_metrics(better, "val/mm/acc")
    assert math.isnan(got.pop("best/val/mm/loss"))  # these records have no loss
    assert got == {"best/val/mm/acc": 0.6, "best_epoch": 2, "best/test/mm/acc": 0.5}


def test_end_tags_say_who_stopped_a_trial() -> None:
    records = [record(e, 0.5, {"g": 1.0}) for e in range(3)]
    full = {"config": {"epochs": 3, "method": "miles"}, "stopped_early": False}
    short = {"config": {"epochs": 6, "method": "miles"}, "stopped_early": False}
    itself = {"config": {"epochs": 6, "method": "mses"}, "stopped_early": True}
    assert end_tags(full, records, "asha") == {"epochs_run": 3}  # ran to the end: not stopped
    assert end_tags(short, records, "asha") == {"epochs_run": 3, "stopped_by": "asha"}
    assert end_tags(short, records, "none") == {"epochs_run": 3}
    assert end_tags(itself, records, "asha") == {"epochs_run": 3, "stopped_by": "mses"}


def test_space_as_used_reads_back_as_a_search_space(tmp_path) -> None:
    space = load_search_space("synthetic")
    space.fix("miles", {"mu"})
    base = space.base_config("miles", "concat", 7, {"epochs": 4, "method_args": {"mu": 0.3}})
    used = space.as_used("miles", base, 5, {"gpus_per_trial": 0.0, "cpus_per_trial": 1.0})
    again = parse_search_space(yaml.safe_load(yaml.safe_dump(used)), tmp_path / "search_space.yaml")
    assert set(again.method("miles").params) == {"lr", "tau"}
    assert again.method("miles").fixed == {"variant": "reset", "mu": 0.3}
    assert again.train["epochs"] == 4 and again.num_samples == 5
    assert again.method("miles").params["tau"].describe() == "uniform(0.0, 0.5)"


def test_constant_rates_are_params_and_a_moving_rate_gets_its_whole_line(tmp_path) -> None:
    """A trial logs epoch by epoch, is interrupted, and a new process reattaches to its run."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.prepare_store(uri)
    exp = tracking.ensure_experiment(uri, "view")
    parent = tracking.start_parent_run(uri, exp, "s", {}, {})
    spec = tracking.RunSpec(uri, exp, parent, "t_00001", "miles-001", {"method": "miles", "lr": 1e-3},
                            {"lr": 1e-3}, "val/mm/acc", {"gpu_ids": "", "host": "h"})  # fmt: skip
    lrs = [{"a": 2e-3, "fusion": 1e-3}] * 3 + [{"a": 5e-4, "fusion": 1e-3}] * 2  # α = 1e-3
    vals = [0.5, 0.7, 0.6, 0.8, 0.8]
    records = [record(e, v, lr) for e, (v, lr) in enumerate(zip(vals, lrs, strict=True))]
    run = tracking.TrialRun(spec)
    for n in (1, 2, 3):
        assert run.sync(records[:n])
    again = tracking.TrialRun(spec)  # a retried trial finds the run by its trial tag
    assert again.sync(records, status="FINISHED", tags={"epochs_run": 5}, force=True)
    assert again.run_id == run.run_id
    c = tracking.client(uri)
    got = c.get_run(run.run_id)
    assert got.data.params["lr/a"] == "0.002" and "lr/fusion" not in got.data.params  # α is `lr`
    assert "lr/fusion" not in got.data.metrics  # constant: no flat line
    line = {m.step: m.value for m in c.get_metric_history(run.run_id, "lr/a")}
    assert line == {0: 2e-3, 1: 2e-3, 2: 2e-3, 3: 5e-4, 4: 5e-4}
    best = [(m.step, m.value) for m in c.get_metric_history(run.run_id, "best/val/mm/acc")]
    # logged as it improves, at its epoch; a tie with no loss to break it goes to the later epoch
    assert sorted(best) == [(0, 0.5), (1, 0.7), (3, 0.8), (4, 0.8)]
    assert got.data.metrics["best_epoch"] == 4
    assert sorted(m.step for m in c.get_metric_history(run.run_id, "epoch")) == [0, 1, 2, 3, 4]
    assert "gpu_ids" not in got.data.tags and got.data.tags["epochs_run"] == "5"


def test_short_epochs_are_logged_together_each_at_the_time_it_was_seen(tmp_path) -> None:
    """Epochs wait until they hold ``sync_every_s`` of training, then go in one sync; whoever
    ends the run logs the rest. Each metric keeps the time its epoch was first seen."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.prepare_store(uri)
    exp = tracking.ensure_experiment(uri, "view")
    parent = tracking.start_parent_run(uri, exp, "s", {}, {})
    spec = tracking.RunSpec(uri, exp, parent, "t_00001", "miles-001", {"method": "miles", "lr": 1e-3},
                            {"lr": 1e-3}, "val/mm/acc", sync_every_s=0.35)  # fmt: skip
    records = [record(e, 0.5 + e / 100, {"a": 1e-3}) for e in range(7)]  # 0.1 s of training each
    c, run, logged = tracking.client(uri), tracking.TrialRun(spec), []
    assert run.sync([])  # the run exists from the trial's start
    for n in range(1, 8):
        assert run.sync(records[:n])
        logged.append(len(c.get_metric_history(run.run_id, "epoch")))
        time.sleep(0.02)
    assert logged == [0, 0, 0, 4, 4, 4, 4]  # epochs 0-3 hold 0.4 s ≥ 0.35 s; 4-6 hold 0.3 s
    closer = tracking.TrialRun(spec, run_id=run.run_id)  # the driver, from the trial's checkpoint
    assert closer.sync(records, status="FINISHED", force=True)
    history = sorted(c.get_metric_history(run.run_id, "val/mm/acc"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(7))
    seen = [m.timestamp for m in history[:4]]
    assert seen == sorted(seen) and seen[0] < seen[3]  # not one time for the four epochs


def test_a_close_cut_short_is_completed_by_the_driver(tmp_path, monkeypatch) -> None:
    """The trial's close dies at its last step (its worker stopped): the run must not be marked
    complete while still RUNNING, or the driver would skip it and leave it RUNNING."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.prepare_store(uri)
    exp = tracking.ensure_experiment(uri, "view")
    parent = tracking.start_parent_run(uri, exp, "s", {}, {})
    spec = tracking.RunSpec(uri, exp, parent, "t_00001", "miles-001", {"method": "miles", "lr": 1e-3},
                            {"lr": 1e-3}, "val/mm/acc")  # fmt: skip
    records = [record(e, 0.5, {"a": 1e-3}) for e in range(3)]
    real_client = tracking.client

    class DiesWhenItEnds:  # the real client, whose set_terminated fails once
        def __init__(self, uri: str) -> None:
            self.real = real_client(uri)

        def __getattr__(self, name: str):
            return getattr(self.real, name)

        def set_terminated(self, *args, **kwargs):
            raise RuntimeError("worker stopped")

    monkeypatch.setattr(tracking, "client", DiesWhenItEnds)
    trial = tracking.TrialRun(spec)
    assert not trial.sync(records, status="FINISHED", force=True)
    monkeypatch.setattr(tracking, "client", real_client)
    assert tracking.synced_trials(uri, exp, parent) == set()  # not marked complete
    driver = tracking.TrialRun(spec, run_id=trial.run_id)
    assert driver.sync(records, status="FINISHED", tags={"closed_by": "search"}, force=True)
    run = real_client(uri).get_run(trial.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[tracking.SYNCED_TAG] == "true"
    assert tracking.synced_trials(uri, exp, parent) == {"t_00001"}


# -- a real search ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def asha_search(tmp_path_factory):
    import ray

    from miles_tune.search import main

    tmp = tmp_path_factory.mktemp("view")
    # system metrics on (default: only with a GPU), sampled often enough for trials of seconds
    os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "0.1"  # a reused worker's trials are short
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        args = search_args(tmp, "--scheduler", "asha", "--grace-period", "1", "--num-samples", "8",
                           "--set", f"epochs={EPOCHS}", "--name", "view-asha",
                           "--system-metrics")  # fmt: skip
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(args)
    finally:
        ray.shutdown()
        os.environ.pop("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")
    assert code == 0, out.getvalue()
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    c, parents, children = child_runs(uri)
    return {"tmp": tmp, "uri": uri, "client": c, "parent": parents[0], "children": children,
            "stdout": out.getvalue()}  # fmt: skip


def test_every_child_carries_its_result(asha_search) -> None:
    c, children = asha_search["client"], asha_search["children"]
    assert len(children) == 8
    for run in children:
        rid, metrics = run.info.run_id, run.data.metrics
        history = {m.step: m.value for m in c.get_metric_history(rid, "val/mm/acc")}
        loss = {m.step: m.value for m in c.get_metric_history(rid, "val/mm/loss")}
        # the highest; on a tie the lower validation loss, then the later epoch
        best_epoch = max(history, key=lambda e: (history[e], -loss[e], e))
        assert metrics["best/val/mm/acc"] == history[best_epoch]
        assert metrics["best_epoch"] == best_epoch
        test = {m.step: m.value for m in c.get_metric_history(rid, "test/mm/acc")}
        assert metrics["best/test/mm/acc"] == test[best_epoch]
        artifacts = {a.path for a in c.list_artifacts(rid)}
        assert {"history.parquet", "summary.json", "plots"} <= artifacts, run.info.run_name
        summary = json.loads(Path(c.download_artifacts(rid, "summary.json")).read_text())
        assert summary["best_epoch"] == best_epoch and summary["epochs_run"] == len(history)


def test_system_metrics_reach_the_trials_runs(asha_search) -> None:
    """--system-metrics on CPU trials (the default is on only with a GPU). On a reused worker a
    trial here lasts a fraction of a second (sampled every 0.1 s), and one ASHA stops at once may
    end before its first sample: most have some."""
    sampled = [r for r in asha_search["children"] if "system/cpu_utilization_percentage" in r.data.metrics]
    assert len(sampled) >= len(asha_search["children"]) // 2
    assert all(r.data.metrics["system/system_memory_usage_megabytes"] > 0 for r in sampled)


def test_stopped_trials_are_tagged_with_the_epochs_they_ran(asha_search) -> None:
    c, children = asha_search["client"], asha_search["children"]
    stopped = 0
    for run in children:
        epochs = len(c.get_metric_history(run.info.run_id, "epoch"))
        tags = run.data.tags
        assert run.info.status == "FINISHED" and tags[tracking.SYNCED_TAG] == "true"
        assert tags["epochs_run"] == str(epochs)
        assert (tags.get("stopped_by") == "asha") == (epochs < EPOCHS), (run.info.run_name, epochs)
        stopped += epochs < EPOCHS
    assert stopped >= 1  # 8 trials, halving from epoch 1: ASHA stops some


def test_children_have_readable_names_and_short_params(asha_search) -> None:
    children = asha_search["children"]
    pattern = re.compile(r"miles-(\d{3}) lr=(\S+) tau=(\S+) mu=(\S+)")
    numbers = set()
    for run in children:
        match = pattern.fullmatch(run.info.run_name)
        assert match, run.info.run_name
        numbers.add(match[1])
        params = run.data.params
        for key, shown in zip(("lr", "tau", "mu"), match.groups()[1:], strict=True):
            assert tracking.short_value(float(params[key])) == shown
            assert float(params[key]) == float(
                params[f"config.{'lr' if key == 'lr' else 'method_args.' + key}"]
            )
        assert not any(k.startswith(("method_args.", "base.")) for k in params)
        assert "gpu_ids" not in run.data.tags  # empty on CPU: not written
        assert run.data.tags["mlflow.source.name"] == "miles_tune.search" and run.data.tags["host"]
    assert len(numbers) == 8


def test_the_parent_explains_its_search(asha_search) -> None:
    c, parent, children = asha_search["client"], asha_search["parent"], asha_search["children"]
    best_id = parent.data.tags["best_run_id"]
    by_id = {r.info.run_id: r for r in children}
    top = max(r.data.metrics["best/val/mm/acc"] for r in children)
    assert by_id[best_id].data.metrics["best/val/mm/acc"] == top
    assert parent.data.metrics["best/val/mm/acc"] == top
    assert parent.data.metrics["best_epoch"] == by_id[best_id].data.metrics["best_epoch"]
    assert {a.path for a in c.list_artifacts(parent.info.run_id)} >= {
        "best_config.yaml", "trials.parquet", "search_space.yaml"
    }  # fmt: skip
    used = yaml.safe_load(Path(c.download_artifacts(parent.info.run_id, "search_space.yaml")).read_text())
    assert set(used["methods"]["miles"]["space"]) == {"lr", "tau", "mu"}
    assert used["train"]["epochs"] == EPOCHS
    params = parent.data.params
    assert params["tau"] == "uniform(0.0, 0.5)" and params["config.epochs"] == str(EPOCHS)
    child_params = set(children[0].data.params)
    assert {k for k in params if k.startswith("config.")} <= child_params  # one naming for both
    for tag in ("dataset", "method", "fusion", "searcher", "scheduler", "seed", "mlflow.source.name"):
        assert parent.data.tags[tag]
    assert parent.data.tags["best_run_name"] == by_id[best_id].info.run_name
    assert f"runs/{best_id}" in parent.data.tags["mlflow.note.content"]  # the description links it
    exp, out = parent.info.experiment_id, asha_search["stdout"]
    assert f"#/experiments/{exp}/runs?workflowType=machine_learning" in out
    assert f"searchFilter=tags.mlflow.parentRunId%20%3D%20%27{parent.info.run_id}%27" in out
