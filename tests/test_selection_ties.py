"""Model selection's tie rule: higher value, then lower loss of the same head, then the later
epoch; NaN never wins. Checked on hand-made records and on a real run whose validation
accuracy ties."""

from __future__ import annotations

import math

import pytest
from toy_data import toy_data

from miles_tune.config import TrainConfig
from miles_tune.records import EpochRecord, best_metrics, is_better, rank_key, tie_break_key
from miles_tune.train import Trainer

SELECTION = "val/mm/acc"


def record(epoch: int, acc: float, loss: float | None = None) -> EpochRecord:
    val = {"acc": acc} if loss is None else {"acc": acc, "loss": loss}
    return EpochRecord(
        epoch=epoch,
        losses={"total": 1.0},
        metrics={"val": {"mm": val}, "test": {"mm": {"acc": 0.5, "loss": 2.0}}},
        u={"a": 0.1, "b": 0.2},
        delta=0.1,
        lr={"g": 1e-3},
        epoch_seconds=0.1,
        samples_per_second=100.0,
    )


def test_tie_break_key_is_the_same_heads_loss() -> None:
    assert tie_break_key("val/mm/acc") == "val/mm/loss"
    assert tie_break_key("val/audio/f1_macro") == "val/audio/loss"
    assert tie_break_key("train/mm_zero_a/acc") == "train/mm_zero_a/loss"
    with pytest.raises(ValueError, match="<split>/<head>/<metric>"):
        tie_break_key("val/mm")


def test_higher_value_wins_whatever_the_loss() -> None:
    assert is_better(record(1, 0.6, loss=9.0), record(0, 0.5, loss=0.1), SELECTION)
    assert not is_better(record(1, 0.5, loss=0.1), record(0, 0.6, loss=9.0), SELECTION)


def test_equal_value_lower_loss_wins() -> None:
    assert is_better(record(1, 1.0, loss=0.2), record(0, 1.0, loss=0.3), SELECTION)
    assert not is_better(record(1, 1.0, loss=0.3), record(0, 1.0, loss=0.2), SELECTION)


def test_tie_on_both_goes_to_the_later_epoch() -> None:
    assert is_better(record(1, 1.0, loss=0.2), record(0, 1.0, loss=0.2), SELECTION)
    assert is_better(record(1, 1.0), record(0, 1.0), SELECTION)  # no loss on either side
    assert is_better(record(1, 1.0, loss=math.nan), record(0, 1.0, loss=math.nan), SELECTION)


def test_nan_value_never_wins_and_nan_loss_loses_to_a_finite_one() -> None:
    assert not is_better(record(0, math.nan, loss=0.1), None, SELECTION)
    assert not is_better(record(1, math.nan, loss=0.0), record(0, 0.1, loss=5.0), SELECTION)
    assert is_better(record(0, 0.1, loss=math.nan), None, SELECTION)  # the first real value is selected
    assert not is_better(record(1, 1.0, loss=math.nan), record(0, 1.0, loss=0.3), SELECTION)
    assert is_better(record(1, 1.0, loss=0.3), record(0, 1.0, loss=math.nan), SELECTION)
    assert not is_better(record(1, 1.0), record(0, 1.0, loss=0.3), SELECTION)  # a missing loss is NaN


def test_rank_key_sorts_the_best_first() -> None:
    entries = {
        "nan value": (math.nan, 0.0),
        "low value": (0.4, 0.0),
        "top, nan loss": (0.9, math.nan),
        "top, high loss": (0.9, 0.8),
        "top, low loss": (0.9, 0.1),
        "mid, inf loss": (0.7, math.inf),
    }
    order = sorted(entries, key=lambda name: rank_key(*entries[name]))
    assert order == [
        "top, low loss",
        "top, high loss",
        "top, nan loss",
        "mid, inf loss",
        "low value",
        "nan value",
    ]
    assert rank_key(0.9, 0.1) < rank_key(0.9, 0.2) < rank_key(0.8, 0.0)
    assert rank_key(0.9, 0.1) == rank_key(0.9, 0.1)  # an exact tie: the caller's order decides


def test_is_better_agrees_with_rank_key() -> None:
    values = [0.5, 1.0, math.nan]
    losses = [0.1, 0.2, math.nan]
    pairs = [(v, lo) for v in values for lo in losses]
    for v_best, l_best in pairs:
        if math.isnan(v_best):
            continue  # never selected
        best = record(0, v_best, l_best)
        for v, lo in pairs:
            expected = not math.isnan(v) and rank_key(v, lo) <= rank_key(v_best, l_best)
            assert is_better(record(1, v, lo), best, SELECTION) == expected, (v, lo, v_best, l_best)


def test_best_metrics_carry_the_tie_break_loss() -> None:
    assert best_metrics(record(3, 1.0, loss=0.25), SELECTION) == {
        "best/val/mm/acc": 1.0,
        "best/val/mm/loss": 0.25,
        "best_epoch": 3,
        "best/test/mm/acc": 0.5,
        "best/test/mm/loss": 2.0,
    }
    assert math.isnan(best_metrics(record(3, 1.0), SELECTION)["best/val/mm/loss"])


def expected_best_epoch(records: list[EpochRecord], selection: str) -> int:
    """The rule written out on its own: the highest value, then the lowest loss, then the last."""
    loss_key = selection.rsplit("/", 1)[0] + "/loss"
    flats = [r.flat() for r in records]
    top = max(f[selection] for f in flats if not math.isnan(f[selection]))
    tied = [f for f in flats if f[selection] == top]
    lowest = min(f[loss_key] for f in tied)
    return max(int(f["epoch"]) for f in tied if f[loss_key] == lowest)


def tie_config(epochs: int) -> TrainConfig:
    # toy data, 48 validation samples: accuracy moves in steps of 1/48 and ties across epochs
    return TrainConfig(dataset="toy", epochs=epochs, batch_size=16, seed=0, lr=1e-2)


def test_a_real_run_selects_by_the_rule_over_its_history(tmp_path) -> None:
    data = toy_data(("a", "b"), "multiclass")
    trainer = Trainer(tie_config(12), data=data)
    records = list(trainer.run())
    top = max(r.metric("val", "mm", "acc") for r in records)
    assert sum(r.metric("val", "mm", "acc") == top for r in records) >= 2, "no tie: the test proves nothing"
    expected = expected_best_epoch(trainer.history, trainer.selection_key)
    assert trainer.best_epoch == expected
    assert trainer.best_value == trainer.history[expected].metric("val", "mm", "acc")
    assert trainer.summary()["best_epoch"] == expected

    # a resumed run (checkpoint mid-way) selects the same epoch as the uninterrupted one
    first = Trainer(tie_config(12), data=data)
    for _ in range(6):
        first.run_epoch()
    first.save_checkpoint(tmp_path / "c.pt")
    resumed = Trainer(tie_config(12), data=data)
    resumed.load_checkpoint(tmp_path / "c.pt")
    list(resumed.run())
    assert (resumed.best_epoch, resumed.best_value) == (trainer.best_epoch, trainer.best_value)
