"""What the study's control rows and built-in data rest on: the step decay of OGM's official
setting, ``--variant`` and ``--points`` in the search, and the ``regime`` of the synthetic data."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from search_helpers import search_args

from miles_tune.config import TrainConfig
from miles_tune.data import create_dataset
from miles_tune.data.synthetic import check_options
from miles_tune.errors import ConfigError
from miles_tune.search import plan_search, search_tags
from miles_tune.train import Trainer


def group_lrs(records) -> list[dict[str, float]]:  # noqa: ANN001
    return [r.lr for r in records]


# -- step decay ------------------------------------------------------------------------------------
def test_step_decay_multiplies_every_rate_at_each_step(tiny_config: TrainConfig) -> None:
    cfg = dataclasses.replace(
        tiny_config, method="ogm", method_args={}, optimizer="sgd", epochs=5, lr=0.01,
        lr_step_size=2, lr_gamma=0.5,
    )  # fmt: skip
    lrs = group_lrs(list(Trainer(cfg).run()))
    expected = [0.01, 0.01, 0.005, 0.005, 0.0025]  # epochs 0..4: x0.5 at the start of 2 and 4
    for epoch, rates in enumerate(lrs):
        assert set(rates) >= {"fast", "slow", "fusion"}
        for rate in rates.values():
            assert math.isclose(rate, expected[epoch]), (epoch, rates)


def test_step_decay_resumes_exactly(tiny_config: TrainConfig, tmp_path) -> None:
    cfg = dataclasses.replace(tiny_config, method="vanilla", method_args={}, epochs=5, lr_step_size=2)
    full = Trainer(cfg)
    records = list(full.run())
    first = Trainer(dataclasses.replace(cfg, epochs=3))
    list(first.run())
    first.save_checkpoint(tmp_path / "c.pt")
    resumed = Trainer(cfg)
    resumed.load_checkpoint(tmp_path / "c.pt")
    rest = list(resumed.run())
    assert group_lrs(rest) == group_lrs(records[3:])
    assert [r.metrics for r in rest] == [r.metrics for r in records[3:]]


@pytest.mark.parametrize("method", ["miles", "mslr-k"])
def test_step_decay_is_refused_with_a_method_that_sets_rates(tiny_config: TrainConfig, method) -> None:
    from miles_tune.cli import check_config

    args = {"unimodal_lrs": {"fast": 1e-3, "slow": 2e-3}} if method == "mslr-k" else {}
    cfg = dataclasses.replace(tiny_config, method=method, method_args=args, lr_step_size=2)
    with pytest.raises(ConfigError, match=rf"lr_step_size: {method} sets the encoders' learning rates"):
        check_config(cfg)
    with pytest.raises(ConfigError, match="lr_step_size"):
        Trainer(cfg)


@pytest.mark.parametrize("field, value", [("lr_step_size", 0), ("lr_gamma", 0.0), ("lr_gamma", 1.5)])
def test_step_decay_settings_are_checked(field, value) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value}).validate()


# -- search: --variant and --points ------------------------------------------------------------------
def test_variant_names_the_row_and_is_tagged(tmp_path) -> None:
    plan = plan_search(search_args(tmp_path, "--method", "vanilla", "--variant", "noaux", "--set",
                                   "aux_losses=false", tracking=False))  # fmt: skip
    assert plan.variant == "noaux" and plan.name.startswith("synthetic-vanilla-noaux-concat-")
    assert search_tags(plan)["variant"] == "noaux"
    assert "variant" not in search_tags(plan_search(search_args(tmp_path, tracking=False)))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "ogm", "--variant", "ge"], r"--variant ge: ogm-ge is a method's name"),
        (["--variant", "a/b"], r"--variant 'a/b': use only letters"),
        (["--method", "unimodal", "--variant", "x"], r"the unimodal references have no variants"),
        (["--points", "-1"], r"--points must be >= 0"),
    ],
)
def test_bad_variant_or_points_refused(tmp_path, extra, message) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_search(search_args(tmp_path, *extra, tracking=False))


def test_points_caps_the_known_points(tmp_path) -> None:
    from miles_tune.search import make_searcher

    def first_points(*extra: str) -> list:
        plan = plan_search(search_args(tmp_path, "--searcher", "random", "--num-samples", "4", *extra,
                                       tracking=False))  # fmt: skip
        return make_searcher(plan)._points_to_evaluate or []

    assert len(first_points()) == 2  # miles ships two points
    assert first_points("--points", "1") == [{"lr": 1e-3, "tau": 0.2, "mu": 0.5}]  # the paper's default
    assert first_points("--points", "0") == []


def test_the_analysis_names_a_variant_row(tmp_path) -> None:
    from miles_tune.analysis.trials import finish_row

    row = finish_row({"method": "ogm", "variant": "sgd"}, {"val/mm/acc": 0.5, "val/mm/loss": 1.0})
    assert (row["method"], row["base_method"], row["variant"]) == ("ogm-sgd", "ogm", "sgd")
    plain = finish_row({"method": "ogm"}, {"val/mm/acc": 0.5})
    assert (plain["method"], plain["variant"]) == ("ogm", "")


# -- synthetic regimes -------------------------------------------------------------------------------
def test_regimes_resolve_their_defaults() -> None:
    assert check_options()["regime"] == "paper"  # the default
    inverted, paper = check_options(regime="inverted"), check_options(regime="paper")
    assert inverted["regime"] == "inverted" and (inverted["p_fast"], inverted["s_slow"]) == (0.8, 3.0)
    assert paper["p_fast"] == 0.95 and paper["s_slow"] < inverted["s_slow"]
    assert check_options(regime="paper", p_fast=0.7)["p_fast"] == 0.7  # an explicit value wins
    assert check_options(form="image", regime="paper")["s_slow"] == 0.7
    with pytest.raises(ConfigError, match=r"data\.regime must be one of 'inverted', 'paper'"):
        check_options(regime="nope")


def test_paper_regime_cue_is_right_more_often() -> None:
    """In ``paper`` the fast cue is the label's for 95 % of samples, against 80 % (its ceiling)."""

    def cue_agreement(regime: str) -> float:
        data = create_dataset("synthetic", regime=regime, n_train=4000, n_val=10, n_test=10)
        protos = data.train.inputs["fast"]
        # nearest class mean (estimated on the labels) recovers each sample's cue
        means = torch.stack([protos[data.train.labels == k].mean(0) for k in range(10)])
        cue = torch.cdist(protos, means).argmin(1)
        return float((cue == data.train.labels).float().mean())

    inverted, paper = cue_agreement("inverted"), cue_agreement("paper")
    assert 0.78 < inverted < 0.86 and 0.93 < paper < 0.98, (inverted, paper)
    assert create_dataset("synthetic", regime="paper", n_train=8, n_val=8, n_test=8).info["regime"] == "paper"
