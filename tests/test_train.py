"""The training loop end to end: records, determinism, resume, errors, CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from miles_tune.cli import train_main
from miles_tune.config import TrainConfig
from miles_tune.data import create_dataset
from miles_tune.train import NonFiniteLossError, Trainer, read_history

TIMING = ("epoch_seconds", "samples_per_second")


def comparable(records) -> list[dict]:
    return [{k: v for k, v in r.flat().items() if k not in TIMING} for r in records]


def run_all(trainer: Trainer) -> list:
    return list(trainer.run())


def test_end_to_end_record_contents(tiny_config: TrainConfig) -> None:
    cfg = dataclasses.replace(tiny_config, method="miles", method_args={"tau": 0.0, "mu": 0.5})
    trainer = Trainer(cfg)
    records = run_all(trainer)
    assert [r.epoch for r in records] == [0, 1, 2]
    flat = records[-1].flat()
    for key in (
        "loss/total",
        "loss/mm",
        "loss/fast",
        "loss/slow",
        "u/fast",
        "u/slow",
        "delta",
        "lr/fast",
        "lr/slow",
        "lr/fusion",
        "lr/heads",
        "epoch_seconds",
        "samples_per_second",
        "miles/multiplier/fast",
    ):
        assert key in flat, key
    for split in ("train", "val", "test"):
        for head in ("mm", "fast", "slow"):
            assert 0.0 <= flat[f"{split}/{head}/acc"] <= 1.0
            assert math.isfinite(flat[f"{split}/{head}/loss"])
    # u and δ follow Eq. 4-5 from the validation metrics
    mm, fast, slow = (flat[f"val/{h}/acc"] for h in ("mm", "fast", "slow"))
    assert flat["u/fast"] == pytest.approx((mm - slow) / mm)
    assert flat["u/slow"] == pytest.approx((mm - fast) / mm)
    assert flat["delta"] == pytest.approx(abs(flat["u/fast"] - flat["u/slow"]))
    # the next epoch's encoder rates are MILES's decision on this one (τ = 0: always acts unless all u < 0)
    for prev, nxt in zip(records, records[1:], strict=False):
        u = prev.u
        expect = {m: 1e-3 for m in u}
        if not all(v < 0 for v in u.values()) and prev.delta > 0:
            expect[max(u, key=u.get)] = 0.5e-3
        assert {m: nxt.lr[m] for m in u} == pytest.approx(expect)
        assert nxt.lr["fusion"] == nxt.lr["heads"] == 1e-3
    summary = trainer.summary()
    best = max(records, key=lambda r: r.metric("val", "mm", "acc"))
    assert summary["best_epoch"] == best.epoch
    assert summary["best"]["test/mm/acc"] == best.metric("test", "mm", "acc")


def test_same_seed_same_metrics(tiny_config: TrainConfig) -> None:
    cfg = dataclasses.replace(tiny_config, encoders={"fast": {"dropout": 0.3}})
    first = comparable(run_all(Trainer(cfg)))
    second = comparable(run_all(Trainer(cfg)))
    assert first == second
    other = comparable(run_all(Trainer(dataclasses.replace(cfg, seed=1))))
    assert other != first


@pytest.mark.parametrize("variant", ["reset", "literal"])
def test_resume_ends_exactly_where_an_uninterrupted_run_ends(
    tiny_config: TrainConfig, tmp_path, variant
) -> None:
    cfg = dataclasses.replace(
        tiny_config,
        epochs=5,
        method_args={"tau": 0.0, "mu": 0.3, "variant": variant},
        encoders={"fast": {"dropout": 0.3}, "slow": {"dropout": 0.1}},
    )
    full = comparable(run_all(Trainer(cfg)))

    first = Trainer(dataclasses.replace(cfg, epochs=2))
    run_all(first)
    first.save_checkpoint(tmp_path / "ckpt.pt")
    resumed = Trainer(cfg)
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    assert resumed.epoch == 2
    run_all(resumed)
    assert comparable(resumed.history) == full
    assert resumed.summary()["best"] == Trainer_summary_best(cfg)


def Trainer_summary_best(cfg: TrainConfig) -> dict:
    t = Trainer(cfg)
    run_all(t)
    return t.summary()["best"]


def test_checkpoint_from_another_config_is_refused(tiny_config: TrainConfig, tmp_path) -> None:
    t = Trainer(tiny_config)
    t.save_checkpoint(tmp_path / "c.pt")
    other = Trainer(dataclasses.replace(tiny_config, lr=0.5))
    with pytest.raises(ValueError, match="lr"):
        other.load_checkpoint(tmp_path / "c.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        other.load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        other.load_checkpoint(tmp_path / "bad.pt")


def test_non_finite_loss_names_epoch_and_step(tiny_config: TrainConfig) -> None:
    data = create_dataset("synthetic", **tiny_config.data)
    data.train.inputs["slow"][7, 0] = math.nan
    trainer = Trainer(tiny_config, data=data)
    with pytest.raises(NonFiniteLossError, match=r"epoch 0, step \d+"):
        run_all(trainer)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"method_args": {"tau": -0.1}}, "tau"),
        ({"method_args": {"mu": 0.0}}, "mu"),
        ({"method_args": {"mu": 1.2}}, "mu"),
        ({"method": "vanilla", "method_args": {"tau": 0.2}}, "does not take tau"),
        ({"method": "magic"}, "unknown balancing method 'magic'"),
        ({"dataset": "nope"}, "unknown dataset 'nope'"),
        ({"data": {"n_trian": 5}}, "n_trian"),
        ({"metric": "f1_samples"}, "f1_samples"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"u_source": "test"}, "u_source"),
        ({"method": "unimodal", "method_args": {"modality": "smell"}}, "smell"),
    ],
)
def test_bad_settings_are_refused_before_training(tiny_config: TrainConfig, changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        Trainer(dataclasses.replace(tiny_config, **changes))


def test_unknown_config_key_is_refused() -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_cli_writes_history_and_summary(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = [
        "--epochs",
        "3",
        "--tau",
        "0.1",
        "--mu",
        "0.5",
        "--seed",
        "0",
        "--out",
        str(out),
        "--quiet",
        "--set",
        "data.n_train=96",
        "--set",
        "data.n_val=48",
        "--set",
        "data.n_test=48",
        "--batch-size",
        "32",
    ]
    assert train_main(args) == 0
    assert "best epoch" in capsys.readouterr().out
    table = pq.read_table(out / "history.parquet")
    assert table.num_rows == 3
    for col in ("epoch", "u/fast", "u/slow", "delta", "lr/fast", "lr/fusion", "val/mm/acc", "test/slow/loss"):
        assert col in table.column_names
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["method_args"] == {"tau": 0.1, "mu": 0.5}
    history = read_history(out / "history.parquet")
    assert summary["best"]["test/mm/acc"] == history[summary["best_epoch"]].metric("test", "mm", "acc")
    # --resume past the end runs nothing more and reports the same best epoch
    assert train_main([*args, "--resume", "--epochs", "4"]) == 0
    assert pq.read_table(out / "history.parquet").num_rows == 4


def test_cli_refuses_bad_mu_and_writes_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert train_main(["--mu", "1.5", "--out", str(out), "--quiet"]) == 2
    assert "mu" in capsys.readouterr().err
    assert not out.exists()


def test_module_entry_point_runs() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "miles_tune.train",
            "--epochs",
            "1",
            "--quiet",
            "--set",
            "data.n_train=64",
            "--set",
            "data.n_val=32",
            "--set",
            "data.n_test=32",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "miles on synthetic" in proc.stdout
