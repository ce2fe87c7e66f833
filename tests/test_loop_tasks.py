"""The loop beyond the built-in data: multilabel tasks (F1 for u) and three modalities."""

from __future__ import annotations

import pytest
from toy_data import toy_data

from miles_tune.balance.miles import conditional_utilization
from miles_tune.config import TrainConfig
from miles_tune.data import MultimodalData
from miles_tune.train import Trainer


def make_data(modalities: tuple[str, ...], task: str) -> MultimodalData:
    return toy_data(modalities, task, n=80, hidden=16)


@pytest.mark.parametrize("metric", ["f1_micro", "f1_macro", "f1_samples"])
def test_multilabel_run_uses_f1_for_u(metric: str) -> None:
    data = make_data(("text", "image"), "multilabel")
    cfg = TrainConfig(
        method="miles", method_args={"tau": 0.0, "mu": 0.5}, metric=metric, epochs=2, batch_size=16
    )
    trainer = Trainer(cfg, data=data)
    records = list(trainer.run())
    last = records[-1]
    mm, text, image = (last.metric("val", h, metric) for h in ("mm", "text", "image"))
    assert last.u == pytest.approx(conditional_utilization(mm, {"text": image, "image": text}))
    assert "val/mm/f1_samples" in last.flat()
    assert trainer.summary()["selection"] == f"val/mm/{metric}"


def test_three_modalities_average_the_other_heads() -> None:
    data = make_data(("a", "b", "c"), "multiclass")
    cfg = TrainConfig(
        method="miles", method_args={"tau": 0.0, "mu": 0.5}, epochs=2, batch_size=16, fusion="sum"
    )
    records = list(Trainer(cfg, data=data).run())
    flat = records[-1].flat()
    for m in "abc":
        assert f"val/no_{m}/acc" in flat
        mm = flat["val/mm/acc"]
        assert flat[f"u/{m}"] == pytest.approx((mm - flat[f"val/no_{m}/acc"]) / mm)
    assert flat["delta"] == pytest.approx(
        max(flat[f"u/{m}"] for m in "abc") - min(flat[f"u/{m}"] for m in "abc")
    )
    # at most one encoder is slowed in the next epoch
    assert sum(records[-1].extra[f"miles/multiplier/{m}"] < 1 for m in "abc") <= 1
