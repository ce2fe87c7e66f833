"""Checkpoints are read as plain data: a crafted one is refused, naming the file, and runs nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from miles_tune.config import TrainConfig
from miles_tune.errors import ConfigError
from miles_tune.train import CheckpointError, Trainer


class RunsCode:
    """Unpickling this calls ``os.system``: what a hostile checkpoint on shared storage would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_checkpoint(path: Path, marker: Path, real: dict) -> Path:
    """A real trainer state with a code-running object hidden in its method state."""
    state = dict(real)
    state["method"] = {**state["method"], "extra": RunsCode(marker)}
    torch.save(state, path)
    return path


def test_crafted_checkpoint_is_refused_and_executes_nothing(tiny_config: TrainConfig, tmp_path) -> None:
    trainer = Trainer(tiny_config)
    marker = tmp_path / "pwned"
    path = crafted_checkpoint(tmp_path / "evil.pt", marker, trainer.state_dict())
    with pytest.raises(
        CheckpointError, match=r"refusing checkpoint .*evil\.pt: it is not plain data"
    ) as info:
        Trainer(tiny_config).load_checkpoint(path)
    assert isinstance(info.value, ConfigError)
    assert "\n" not in str(info.value)
    assert "system" in str(info.value)  # says what it would have needed
    assert not marker.exists()


def test_train_cli_resume_refuses_a_crafted_checkpoint(tmp_path) -> None:
    out, marker = tmp_path / "run", tmp_path / "pwned"
    small = ["--set", "data.n_train=64", "--set", "data.n_val=32", "--set", "data.n_test=32"]
    base = [sys.executable, "-m", "miles_tune.train", "--epochs", "2", "--quiet", "--out", str(out), *small]
    first = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    real = torch.load(out / "checkpoint.pt", weights_only=True)
    crafted_checkpoint(out / "checkpoint.pt", marker, real)
    resumed = subprocess.run(
        [*base, "--epochs", "3", "--resume"], capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 2
    assert resumed.stderr.strip().startswith("error: refusing checkpoint")
    assert str(out / "checkpoint.pt") in resumed.stderr
    assert "Traceback" not in resumed.stderr and len(resumed.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_checkpoints_hold_only_plain_data_for_every_method(tmp_path) -> None:
    """Every registered method's state (and the RNG states) loads with weights_only=True, and a
    resumed run matches an uninterrupted one (the resume tests check the metrics in detail)."""
    from conftest import TINY_DATA

    from miles_tune.balance import METHODS

    for name in METHODS.names():
        cls = METHODS.get(name)
        cfg = TrainConfig(
            data=dict(TINY_DATA),
            epochs=2,
            batch_size=32,
            method=name,
            method_args=cls.example_args(("fast", "slow")),
        )
        trainer = Trainer(cfg)
        next(trainer.run())
        trainer.save_checkpoint(tmp_path / f"{name}.pt")
        torch.load(tmp_path / f"{name}.pt", weights_only=True)  # raises on anything but plain data
        resumed = Trainer(cfg)
        resumed.load_checkpoint(tmp_path / f"{name}.pt")
        assert resumed.epoch == 1, name


def test_miles_rates_reach_the_optimizer_after_a_resume(tiny_config: TrainConfig, tmp_path) -> None:
    """After a resume MILES's rates kept going to param-group dicts that ``optimizer.load_state_dict``
    had replaced: every encoder then trained at its checkpointed rate (found by the node-loss test)."""
    import dataclasses

    cfg = dataclasses.replace(tiny_config, method_args={"tau": 0.1, "mu": 0.5})
    first = Trainer(cfg)
    first.method.scheduler.step(0.9, {"fast": 0.3, "slow": 0.8})  # `fast` dominates: it is slowed
    first.save_checkpoint(tmp_path / "c.pt")
    resumed = Trainer(cfg)
    resumed.load_checkpoint(tmp_path / "c.pt")
    lrs = lambda t: {g["name"]: g["lr"] for g in t.optimizer.param_groups}  # noqa: E731
    assert lrs(resumed) == lrs(first) and lrs(resumed)["fast"] == pytest.approx(5e-4)
    resumed.method.scheduler.step(0.9, {"fast": 0.8, "slow": 0.3})  # `slow` dominates now
    assert lrs(resumed)["fast"] == pytest.approx(1e-3) and lrs(resumed)["slow"] == pytest.approx(5e-4)
