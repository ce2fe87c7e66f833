"""``--scheduler pbt``: population-based training of each encoder's learning rate.

The searches run on a real local Ray cluster (one start for the module) with a real sqlite
MLflow store; the planning checks and the trainer's rescaling are tested directly.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from search_helpers import search_args

from miles_tune.config import TrainConfig
from miles_tune.errors import ConfigError
from miles_tune.search import plan_search
from miles_tune.spaces import trial_config
from miles_tune.train import Trainer
from miles_tune.train.loop import CheckpointError

EPOCHS, INTERVAL, POPULATION = 6, 2, 4
PBT = [
    "--scheduler", "pbt", "--method", "vanilla", "--num-samples", str(POPULATION),
    "--perturbation-interval", str(INTERVAL), "--set", f"epochs={EPOCHS}", "--set", "data.n_train=256",
    "--set", "data.n_val=64", "--cpus-per-trial", "1", "--gpus-per-trial", "0",
]  # fmt: skip
TIMING = ("epoch_seconds", "samples_per_second", "time_", "timestamp", "reported_at", "setup_s", "pid")


# -- planning: what PBT can and cannot run with, refused before Ray starts ---------------------
def test_pbt_plans_random_search_over_lr_and_each_encoders_multiplier(tmp_path) -> None:
    plan = plan_search(search_args(tmp_path, *PBT, tracking=False))
    assert plan.searcher == "random"  # the default searcher under PBT
    assert plan.pbt_interval == INTERVAL
    assert plan.pbt_ranges == {"lr": (1e-4, 1e-2), "lr_mult.fast": (0.01, 10.0), "lr_mult.slow": (0.01, 10.0)}
    fixed = plan_search(
        search_args(tmp_path, *PBT, "--set", "lr_mult.slow=0.5", "--lr-mult-range", "0.1,4", tracking=False)
    )
    assert fixed.pbt_ranges == {"lr": (1e-4, 1e-2), "lr_mult.fast": (0.1, 4.0)}
    assert fixed.base["lr_mult"] == {"slow": 0.5}
    i = PBT.index("--perturbation-interval")
    default = plan_search(
        search_args(tmp_path, *PBT[:i], *PBT[i + 2 :], "--set", "epochs=20", tracking=False)
    )
    assert default.pbt_interval == 4  # a fifth of the epochs


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--searcher", "optuna"], "Optuna cannot drive PBT"),
        (["--grid", "aux_losses=true,false", "--set", "lr=0.001"], "--grid runs fixed points"),
        (["--max-concurrent", "2"], "--max-concurrent would shrink the population"),
        (["--perturbation-interval", str(EPOCHS)], "below the 6 epochs"),
        (["--lr-mult-range", "1,0.1"], "need 0 < LOW < HIGH"),
        (["--lr-mult-range", "a"], "expected LOW,HIGH"),
        (["--num-samples", "1"], "at least 2 members"),
        (["--set", "lr_mult.audio=2"], "lr_mult.audio: not a modality"),
        (
            ["--set", "lr=0.001", "--set", "lr_mult.fast=1", "--set", "lr_mult.slow=1"],
            "nothing left to mutate",
        ),
    ],
)
def test_pbt_refuses_what_it_cannot_run_in_one_line(tmp_path, extra: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        plan_search(search_args(tmp_path, *PBT, *extra, tracking=False))
    assert "\n" not in str(info.value)


def test_pbt_refuses_methods_that_set_the_encoders_rates_themselves(tmp_path) -> None:
    args = search_args(tmp_path, *PBT, tracking=False)
    args[args.index("vanilla")] = "mslr-k"
    with pytest.raises(ConfigError, match="mslr-k sets each encoder's learning rate itself"):
        plan_search([*args, "--set", "unimodal_lrs={fast: 0.001, slow: 0.01}"])
    args[args.index("mslr-k")] = "unimodal"
    with pytest.raises(ConfigError, match="unimodal run has one encoder"):
        plan_search([*args, "--set", "modality=fast"])
    with pytest.raises(ConfigError, match="pass --scheduler pbt"):
        plan_search(search_args(tmp_path, "--perturbation-interval", "2", tracking=False))


def test_lr_mult_scales_each_encoders_rate_and_is_checked(tiny_config: TrainConfig) -> None:
    tiny_config.method, tiny_config.method_args = "vanilla", {}
    tiny_config.lr_mult = {"fast": 0.25}
    rates = {g["name"]: g["lr"] for g in Trainer(tiny_config).optimizer.param_groups}
    assert rates == {"fast": 0.25 * tiny_config.lr, "slow": tiny_config.lr, "fusion": tiny_config.lr,
                     "heads": tiny_config.lr}  # fmt: skip
    tiny_config.lr_mult = {"audio": 2.0}
    with pytest.raises(ConfigError, match="lr_mult.audio: not a modality"):
        Trainer(tiny_config)
    cfg = trial_config({"lr_mult": {"fast": 3.0}}, {"lr": 0.1, "lr_mult.slow": 2.0})
    assert (cfg.lr, cfg.lr_mult) == (0.1, {"fast": 3.0, "slow": 2.0})


def test_a_retuned_checkpoint_runs_at_the_new_rates_from_where_the_donor_stopped(
    tiny_config, tmp_path
) -> None:
    """PBT's exploit: the donor's state under the exploiter's lr and lr_mult. MILES has moved the
    dominant encoder's rate (τ 0, μ 0.5): the loaded rates keep that schedule, × new/old."""
    tiny_config.method_args = {"tau": 0.0, "mu": 0.5}
    donor = Trainer(tiny_config)
    for _ in range(2):
        donor.run_epoch()
    donor.save_checkpoint(tmp_path / "donor.pt")
    moved = {g["name"]: g["lr"] for g in donor.optimizer.param_groups}
    assert len(set(moved.values())) > 1  # MILES did move a rate

    new = TrainConfig(**{**tiny_config.to_dict(), "lr": tiny_config.lr * 2, "lr_mult": {"slow": 3.0}})
    with pytest.raises(CheckpointError, match=r"differs in \['lr', 'lr_mult'\]"):
        Trainer(new).load_checkpoint(tmp_path / "donor.pt")  # a plain resume refuses it
    exploiter = Trainer(new)
    exploiter.load_checkpoint(tmp_path / "donor.pt", retune=True)
    for group in exploiter.optimizer.param_groups:
        expected = moved[group["name"]] * 2 * (3.0 if group["name"] == "slow" else 1.0)
        assert group["lr"] == pytest.approx(expected)
        assert group["initial_lr"] == pytest.approx(
            tiny_config.lr * 2 * (3.0 if group["name"] == "slow" else 1.0)
        )
    assert exploiter.epoch == 2 and [r.epoch for r in exploiter.history] == [0, 1]
    for a, b in zip(exploiter.model.parameters(), donor.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_pbt_draws_with_its_own_rng_and_keeps_values_in_range() -> None:
    from miles_tune.pbt import ClipToRange, LogUniformDraw

    draw = LogUniformDraw(0.01, 10.0, random.Random(3))
    draws = [draw() for _ in range(200)]
    assert min(draws) >= 0.01 and max(draws) <= 10.0 and min(draws) < 0.05 and max(draws) > 2
    again = LogUniformDraw(0.01, 10.0, random.Random(3))
    assert draws == [again() for _ in range(200)]  # the scheduler's seed fixes every draw
    clip = ClipToRange({"lr_mult.fast": (0.01, 10.0)})
    assert clip({"lr_mult.fast": 12.0, "seed": 1}) == {"lr_mult.fast": 10.0, "seed": 1}


# -- searches on a real local Ray cluster ------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    import ray

    os.environ.setdefault("RAY_TMPDIR", "/tmp/rayP")
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def rows_by_member(plan) -> dict[str, pd.DataFrame]:  # noqa: ANN001
    """trials.parquet per member, keyed by the member's index (trial ids differ between searches)."""
    table = pd.read_parquet(plan.results_dir / "trials.parquet")
    return {
        tid.rsplit("_", 1)[1]: rows.sort_values("epoch").reset_index(drop=True)
        for tid, rows in table.groupby("trial_id")
    }


@pytest.fixture(scope="module")
def uninterrupted(local_ray, tmp_path_factory):
    """One PBT search, tracked in MLflow, as the reference."""
    from miles_tune.search import run_search

    tmp = tmp_path_factory.mktemp("pbt")
    plan = plan_search(search_args(tmp, *PBT, "--name", "whole"))
    results = run_search(plan)
    return SimpleNamespace(plan=plan, results=results, tmp=tmp)


def test_members_exploit_and_explore_every_interval_and_mlflow_holds_the_schedule(uninterrupted) -> None:
    from miles_tune.tracking import LINEAGE_TAG, RETIRED_TAG, TRIAL_TAG, client

    plan, results = uninterrupted.plan, uninterrupted.results
    assert results.num_errors == 0 and len(results) == POPULATION
    members = rows_by_member(plan)
    assert all(rows["epoch"].tolist() == list(range(EPOCHS)) for rows in members.values())

    c = client(plan.tracking_uri)
    runs = [r for r in c.search_runs([e.experiment_id for e in c.search_experiments()])
            if "mlflow.parentRunId" in r.data.tags]  # fmt: skip
    current = [r for r in runs if TRIAL_TAG in r.data.tags]
    retired = [r for r in runs if RETIRED_TAG in r.data.tags]
    assert len(current) == POPULATION and {r.info.status for r in runs} == {"FINISHED"}
    # a round at every interval but the last epoch; one exploit per round with 4 members (a quarter)
    rounds = [e for e in range(INTERVAL, EPOCHS, INTERVAL)]
    lineages = [r for r in current if LINEAGE_TAG in r.data.tags]
    assert len(retired) == len(rounds) >= 1 and lineages
    assert sorted(int(r.data.tags["pbt.replaced_at"]) for r in retired) == rounds
    for run in lineages:
        donor, _, at = run.data.tags[LINEAGE_TAG].partition("@")
        assert int(at) in rounds and donor != run.data.tags[TRIAL_TAG]

    # each member's run holds the rates its final weights were trained with, every epoch: the
    # learned schedule; after a member's last exploit they are the member's final config's
    import yaml

    chosen = yaml.safe_load((plan.results_dir / "best_config.yaml").read_text())
    best = max(
        current, key=lambda r: (r.data.metrics["best/val/mm/acc"], -r.data.metrics["best/val/mm/loss"])
    )
    assert best.data.tags[TRIAL_TAG] == chosen["best_trial"]
    for run in lineages:
        config = next(r.config for r in results if r.metrics["trial_id"] == run.data.tags[TRIAL_TAG])
        history = {g: c.get_metric_history(run.info.run_id, f"lr/{g}") for g in ("fast", "slow", "fusion")}
        rates = {g: [m.value for m in sorted(h, key=lambda m: m.step)] for g, h in history.items()}
        assert all(len(v) == EPOCHS for v in rates.values()), rates
        last = int(run.data.tags["pbt.from_epoch"])
        for g in ("fast", "slow"):
            assert rates[g][last] == pytest.approx(config["lr"] * config[f"lr_mult.{g}"])
        assert rates["fusion"][last] == pytest.approx(config["lr"])
        assert len({round(v, 12) for v in rates["fast"]}) > 1  # the rates moved at an exploit
    table = pd.read_parquet(plan.results_dir / "trials.parquet")
    assert {"config/lr_mult.fast", "config/lr_mult.slow"} <= set(table.columns)
    # once it has finished, --keep-checkpoints best: the best member's best-epoch weights alone
    weights = sorted(p.relative_to(plan.storage) for p in Path(plan.storage).rglob("*.pt"))
    assert [(p.name, p.parts[1]) for p in weights] == [("best_model.pt", f"trial_{chosen['best_trial']}")]


def test_a_resumed_pbt_search_ends_exactly_where_an_uninterrupted_one_does(uninterrupted) -> None:
    """Stopped (Tune's stop signal, as Ctrl-C) just after the first round's exploits, then
    --resume: every member's every epoch, config and rate equals the uninterrupted search's.
    PBT's state (rounds, scores, RNG) travels in Tune's experiment state."""
    from ray import tune

    from miles_tune.search import interrupted, run_search

    tmp = uninterrupted.tmp
    marker = tmp / "stopped"

    class StopAfterFirstRound(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
            if result.get("training_iteration") == INTERVAL + 1 and not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGUSR1)

    args = search_args(tmp, *PBT, "--name", "cut", tracking=False)
    plan = plan_search(args)
    first = run_search(plan, extra_callbacks=[StopAfterFirstRound()])
    assert marker.exists() and interrupted(first, plan)
    plan = plan_search([*args, "--resume"])
    resumed = run_search(plan)
    assert resumed.num_errors == 0 and not interrupted(resumed, plan)

    whole, cut = rows_by_member(uninterrupted.plan), rows_by_member(plan)
    assert whole.keys() == cut.keys()
    for member, rows in whole.items():
        columns = [k for k in rows.columns if not k.startswith(TIMING) and k in cut[member].columns
                   and not k.startswith(("trial_id", "search", "mlflow_run_id", "node_ip", "hostname",
                                         "date", "done", "iterations_since_restore", "experiment_tag",
                                         "checkpoint_dir_name", "should_checkpoint", "logdir",
                                         "miles_tune/closes_run"))]  # fmt: skip
        pd.testing.assert_frame_equal(rows[columns], cut[member][columns], check_dtype=False, obj=member)


def test_the_analysis_draws_the_best_members_learned_schedule(uninterrupted, tmp_path) -> None:
    """A PBT search is its own row (``vanilla-pbt``); ``pbt_schedule`` plots its best member's
    rates from the member's run (its lineage), each encoder's ÷ the fusion rate."""
    from miles_tune.analysis.report import Inputs, write_report
    from miles_tune.analysis.trials import load_mlflow

    plan = uninterrupted.plan
    assert plan.variant == "pbt"
    trials = load_mlflow(plan.tracking_uri, ["miles_tune"])
    assert set(trials["method"]) == {"vanilla-pbt"} and len(trials) == POPULATION  # retired runs not counted
    done = write_report(Inputs(trials, tracking_uri=plan.tracking_uri), tmp_path, ["pbt_schedule"])
    png, csv = done["pbt_schedule"]
    assert png.stat().st_size > 10_000
    schedule = pd.read_csv(csv)
    best = next(r for r in uninterrupted.results if r.metrics["trial_id"] == plan_best(plan))
    last = schedule[schedule["epoch"] == EPOCHS - 1].set_index("modality")["relative"]
    for m in ("fast", "slow"):
        assert last[m] == pytest.approx(best.config[f"lr_mult.{m}"])


def plan_best(plan) -> str:  # noqa: ANN001
    import yaml

    return yaml.safe_load((plan.results_dir / "best_config.yaml").read_text())["best_trial"]
