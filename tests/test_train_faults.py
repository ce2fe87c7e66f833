"""Training that diverges stops with NonFiniteLossError naming the epoch and the step."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from miles_tune.config import TrainConfig
from miles_tune.train import NonFiniteLossError, Trainer


def test_an_overflowing_update_names_epoch_and_step(tiny_config: TrainConfig) -> None:
    """lr 1e38 overflows inside Adam's update: a bare RuntimeError before."""
    trainer = Trainer(dataclasses.replace(tiny_config, lr=1e38))
    with pytest.raises(NonFiniteLossError, match=r"non-finite parameter update at epoch 0, step 0 .*1e\+38"):
        list(trainer.run())


def test_a_non_finite_parameter_is_caught_after_the_pass(tiny_config: TrainConfig) -> None:
    """A parameter made NaN by the last update of an epoch is named before evaluation uses it."""
    trainer = Trainer(tiny_config)
    steps = math.ceil(tiny_config.data["n_train"] / tiny_config.batch_size)

    def poison(output, labels, epoch, step) -> None:  # noqa: ANN001
        if step == steps - 1:
            with torch.no_grad():
                trainer.model.fusion.linear.weight.fill_(math.nan)

    trainer.method.on_after_backward = poison
    with pytest.raises(
        NonFiniteLossError,
        match=rf"non-finite parameter fusion\.\S+ after the update at epoch 0, step {steps - 1}",
    ):
        list(trainer.run())


def test_a_nan_parameter_mid_epoch_is_named_at_the_next_step(tiny_config: TrainConfig) -> None:
    trainer = Trainer(tiny_config)

    def poison(output, labels, epoch, step) -> None:  # noqa: ANN001
        if step == 1:
            with torch.no_grad():
                trainer.model.fusion.linear.weight.fill_(math.nan)

    trainer.method.on_after_backward = poison
    with pytest.raises(NonFiniteLossError, match=r"after the update at epoch 0, step 1$"):
        list(trainer.run())


def test_train_cli_reports_a_diverging_run_in_one_line(tmp_path, capsys) -> None:
    from miles_tune.cli import train_main

    small = ["--set", "data.n_train=64", "--set", "data.n_val=32", "--set", "data.n_test=32"]
    code = train_main(["--lr", "1e38", "--epochs", "2", "--quiet", "--out", str(tmp_path / "run"), *small])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("error: non-finite parameter update at epoch 0, step 0") and "\n" not in err
