"""What makes trials cheap, tested without Ray: the dataset a worker holds, a training pass with
no host sync per step, data kept on the device, mixed precision and channels-last options."""

from __future__ import annotations

import dataclasses
import math
import os
import sys

import pytest
import torch
from fixtures_data import smoke_args

from miles_tune.config import TrainConfig
from miles_tune.data import TensorSplit, create_dataset, held_dataset, iterate_batches
from miles_tune.data.base import input_bytes, on_device
from miles_tune.errors import ConfigError
from miles_tune.train import NonFiniteLossError, Trainer
from miles_tune.train.loop import keep_on_device


def test_a_worker_builds_a_dataset_once_per_name_and_options() -> None:
    a = held_dataset("synthetic", n_train=64, n_val=32, n_test=32)
    assert held_dataset("synthetic", n_test=32, n_val=32, n_train=64) is a  # option order does not matter
    b = held_dataset("synthetic", n_train=64, n_val=32, n_test=32, seed=1)
    assert b is not a
    assert not torch.equal(b.train.inputs["fast"], a.train.inputs["fast"])
    again = held_dataset("synthetic", n_train=64, n_val=32, n_test=32)
    assert again is not a  # only the latest is held: the first was released
    assert torch.equal(again.train.inputs["fast"], a.train.inputs["fast"])


def test_training_on_a_held_dataset_leaves_it_unchanged(tiny_config: TrainConfig) -> None:
    data = held_dataset(tiny_config.dataset, **tiny_config.data)
    before = {m: x.clone() for m, x in data.train.inputs.items()}
    config = dataclasses.replace(
        tiny_config, method="gblend", method_args={}
    )  # a hold-out and side trainings
    for _ in Trainer(config, data=data).run():
        pass
    assert all(torch.equal(before[m], data.train.inputs[m]) for m in before)


class SyncCounter:
    """Counts miles_tune's calls that copy a tensor's value to the host (on a GPU, each waits for
    the device). Torch's own are not counted: Adam reads its step counter, a host tensor."""

    NAMES = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):  # noqa: ANN001, ANN002, ANN003
                caller = sys._getframe(1).f_code.co_filename
                if f"{os.sep}miles_tune{os.sep}" in caller:
                    self.calls += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize("method", ["vanilla", "miles"])
def test_a_training_pass_syncs_a_fixed_number_of_times_whatever_its_steps(
    tiny_config: TrainConfig, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    def syncs(n_train: int) -> int:
        config = dataclasses.replace(
            tiny_config, method=method, data={**tiny_config.data, "n_train": n_train}
        )
        trainer = Trainer(config)
        counter = SyncCounter(monkeypatch)
        trainer.train_one_epoch(0)
        monkeypatch.undo()
        return counter.calls

    few, many = syncs(64), syncs(640)  # 2 steps against 20 at batch size 32
    assert few == many, (few, many)
    assert many <= 6


def test_the_first_non_finite_loss_is_named_exactly_without_a_sync_per_step(tiny_config: TrainConfig) -> None:
    config = dataclasses.replace(tiny_config, data={**tiny_config.data, "n_train": 320})  # 10 steps
    data = create_dataset("synthetic", **config.data)
    order = torch.randperm(320, generator=torch.Generator().manual_seed(config.seed * 1_000_003))
    sample = int(order[6 * config.batch_size + 5])  # in the batch of step 6 of epoch 0
    data.train.inputs["slow"][sample, 0] = math.inf
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite training loss \((nan|inf)\) at epoch 0, step 6$"
    ):
        for _ in Trainer(config, data=data).run():
            pass


def test_bf16_autocast_trains_close_to_float32(tiny_config: TrainConfig) -> None:
    config = dataclasses.replace(tiny_config, epochs=2)
    fp32 = [r.losses["total"] for r in Trainer(config).run()]
    bf16 = [r.losses["total"] for r in Trainer(dataclasses.replace(config, amp="bf16")).run()]
    assert fp32 != bf16  # it did run in bfloat16
    assert all(math.isfinite(v) for v in bf16)
    assert bf16 == pytest.approx(fp32, rel=0.05)


def test_channels_last_gives_the_float32_results_of_the_default_layout(tiny_config: TrainConfig) -> None:
    data = {"form": "image", "n_train": 64, "n_val": 32, "n_test": 32}
    config = dataclasses.replace(tiny_config, data=data, epochs=1)
    trainer = Trainer(dataclasses.replace(config, channels_last=True))
    conv = next(p for p in trainer.model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    nhwc = next(trainer.run())
    nchw = next(Trainer(config).run())
    assert nhwc.losses == pytest.approx(nchw.losses, rel=1e-4)


@pytest.mark.parametrize(
    "setting, message", [({"amp": "fp16"}, "amp"), ({"channels_last": "yes"}, "channels_last")]
)
def test_bad_speed_settings_are_refused_by_name(
    tiny_config: TrainConfig, setting: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(tiny_config, **setting).validate()


def test_a_split_is_held_on_the_device_only_off_the_cpu(tiny_config: TrainConfig) -> None:
    splits = {"train": create_dataset("synthetic", **tiny_config.data).train}
    assert not keep_on_device(splits, torch.device("cpu"), None)
    assert not keep_on_device(splits, torch.device("cpu"), True)  # the host is where it is already
    assert keep_on_device(splits, torch.device("cuda"), None)  # small: held (no GPU needed to decide)
    assert not keep_on_device(splits, torch.device("cuda"), False)


def test_a_memory_mapped_split_read_whole_gives_the_same_batches(tmp_path) -> None:
    data = create_dataset("smnist", **smoke_args("smnist", tmp_path)[0])
    whole = on_device(data.train, "cpu")
    assert isinstance(whole, TensorSplit) and len(whole) == len(data.train)
    assert input_bytes(data.train) == input_bytes(whole)
    pairs = zip(
        iterate_batches(data.train, 16, shuffle=True, seed=3),
        iterate_batches(whole, 16, shuffle=True, seed=3),
        strict=True,
    )
    for (xa, ya), (xb, yb) in pairs:
        assert torch.equal(ya, yb) and all(torch.equal(xa[m], xb[m]) for m in xa)


def test_a_stopping_worker_waits_for_its_runs_to_close_but_not_forever() -> None:
    """``finish_closes`` (what Tune's stop of a reused worker calls) joins the background closes
    of :func:`close_in_background`, bounded by its timeout."""
    import threading
    import time
    from types import SimpleNamespace

    from miles_tune import trainable

    release = threading.Event()
    closed: list[str] = []

    class SlowRun:
        spec = SimpleNamespace(trial_id="t0")

        def sync(self, history, **kwargs) -> bool:  # noqa: ANN001
            release.wait(10)
            closed.append(kwargs["status"])
            return True

    trainable.close_in_background(SlowRun(), [], {}, {})
    started = time.monotonic()
    assert not trainable.finish_closes(timeout=0.2)  # still closing: gives up after its timeout
    assert 0.15 < time.monotonic() - started < 5 and closed == []
    release.set()
    assert trainable.finish_closes(timeout=5)
    assert closed == ["FINISHED"] and trainable.finish_closes(timeout=0)
