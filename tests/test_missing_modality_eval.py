"""The fused head with one modality missing (``mm_zero_<m>``, ``mm_mean_<m>``), recorded in every
evaluation: checked against the fusion called by hand on explicitly built features."""

from __future__ import annotations

import pytest
import torch
from toy_data import toy_data

from miles_tune.config import TrainConfig
from miles_tune.metrics import compute_metrics, loss_function, probabilities
from miles_tune.models.fusion import create_fusion
from miles_tune.records import SPLITS, EpochRecord, is_missing_modality_head, mean_head, zeroed_head
from miles_tune.train import Trainer
from miles_tune.train.loop import evaluate_split

CASES = [
    ("concat", ("a", "b"), "multiclass"),
    ("sum", ("a", "b"), "multiclass"),
    ("concat", ("a", "b", "c"), "multiclass"),
    ("sum", ("a", "b", "c"), "multiclass"),
    ("concat", ("a", "b"), "multilabel"),
]


def make_trainer(fusion: str, modalities: tuple[str, ...], task: str, **changes) -> Trainer:  # noqa: ANN003
    settings = {"epochs": 3, "batch_size": 16, "seed": 0, "lr": 1e-2, **changes}
    cfg = TrainConfig(dataset="toy", fusion=fusion, **settings)
    return Trainer(cfg, data=toy_data(modalities, task, n=40))


@torch.no_grad()
def features(trainer: Trainer, split: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every sample's fused features z_m in one forward pass (eval mode), and the labels."""
    trainer.model.eval()
    data = trainer.splits[split]
    return trainer.model.encode(data.inputs), data.labels


@torch.no_grad()
def expected_heads(trainer: Trainer, split: str) -> dict[str, dict[str, float]]:
    """The missing-modality heads computed by hand: substitute z_m, call the fusion, score it."""
    model, task = trainer.model, trainer.data.task
    loss_fn = loss_function(task)
    train_z, _ = features(trainer, "train")
    mu = {m: z.mean(0) for m, z in train_z.items()}
    z, y = features(trainer, split)
    out = {}
    for i, m in enumerate(model.modalities):
        for head, value in ((zeroed_head(m), torch.zeros_like(z[m])), (mean_head(m), mu[m].expand_as(z[m]))):
            parts = [value if j == i else z[o] for j, o in enumerate(model.modalities)]
            logits = model.fusion(parts)
            out[head] = compute_metrics(probabilities(logits, task), y, task)
            out[head]["loss"] = loss_fn(logits, y).item()
    return out


@pytest.mark.parametrize("fusion", ["concat", "sum"])
@pytest.mark.parametrize("n_modalities", [2, 3])
def test_both_fusions_are_affine(fusion: str, n_modalities: int) -> None:
    """What the loop relies on: f(z | z_m := μ) = f(z | z_m := 0) + f(0..μ..0) − f(0..0)."""
    torch.manual_seed(0)
    f = create_fusion(fusion, [6] * n_modalities, 5)
    assert f.affine
    z = [torch.randn(7, 6) for _ in range(n_modalities)]
    mu = torch.randn(6)
    zeros = [torch.zeros(1, 6) for _ in range(n_modalities)]
    for i in range(n_modalities):
        with_mu = [mu.expand(7, 6) if j == i else x for j, x in enumerate(z)]
        zeroed = [torch.zeros(7, 6) if j == i else x for j, x in enumerate(z)]
        only_mu = [mu[None] if j == i else x for j, x in enumerate(zeros)]
        offset = f(only_mu) - f(zeros)
        torch.testing.assert_close(f(with_mu), f(zeroed) + offset)


@pytest.mark.parametrize(("fusion", "modalities", "task"), CASES)
def test_recorded_heads_match_the_fusion_on_substituted_features(
    fusion: str, modalities: tuple[str, ...], task: str
) -> None:
    trainer = make_trainer(fusion, modalities, task)
    trainer.run_epoch()
    record = trainer.run_epoch()  # trained weights; vanilla changes none after evaluating
    for split in SPLITS:
        expected = expected_heads(trainer, split)
        for head, values in expected.items():
            assert record.metrics[split][head] == pytest.approx(values, abs=1e-5), (split, head)


@pytest.mark.parametrize(("fusion", "modalities", "task"), CASES[:3])
def test_every_split_and_modality_has_both_heads_with_every_mm_metric(
    fusion: str, modalities: tuple[str, ...], task: str
) -> None:
    trainer = make_trainer(fusion, modalities, task)
    record = trainer.run_epoch()
    flat = record.flat()
    for split in SPLITS:
        names = set(record.metrics[split]["mm"])
        assert "loss" in names
        for m in modalities:
            for head in (zeroed_head(m), mean_head(m)):
                assert set(record.metrics[split][head]) == names
                assert all(f"{split}/{head}/{k}" in flat for k in names)
                assert is_missing_modality_head(head) and not is_missing_modality_head(m)
    assert zeroed_head("audio") == "mm_zero_audio" and mean_head("video") == "mm_mean_video"
    # ordinary <split>/<head>/<metric> keys: they survive the flat round trip (history, checkpoints)
    back = EpochRecord.from_flat(flat)
    assert back.metrics == record.metrics
    assert back.metric("test", "mm_zero_a", "acc") == flat["test/mm_zero_a/acc"]


def test_training_mean_is_the_train_splits_feature_mean() -> None:
    trainer = make_trainer("sum", ("a", "b", "c"), "multiclass")
    trainer.run_epoch()
    z, _ = features(trainer, "train")
    means = trainer.train_feature_means()
    assert set(means) == {"a", "b", "c"}
    for m, mu in means.items():
        torch.testing.assert_close(mu, z[m].double().mean(0))


def test_val_before_train_uses_fresh_means_never_stale_ones() -> None:
    trainer = make_trainer("concat", ("a", "b"), "multiclass")
    trainer.evaluate("train")  # means under the initial weights
    trainer.train_one_epoch(0)  # the weights move: those means are stale now
    val = trainer.evaluate("val")  # no train evaluation since: must recompute, not reuse
    expected = expected_heads(trainer, "val")
    for head, values in expected.items():
        assert val[head] == pytest.approx(values, abs=1e-5), head
    # a fresh trainer asked for val first computes the means it needs
    fresh = make_trainer("concat", ("a", "b"), "multiclass")
    assert fresh.evaluate("val") == make_trainer("concat", ("a", "b"), "multiclass").evaluate("val")
    for head, values in expected_heads(fresh, "val").items():
        assert fresh.evaluate("val")[head] == pytest.approx(values, abs=1e-5), head


def test_loading_weights_invalidates_the_means(tmp_path) -> None:
    trainer = make_trainer("concat", ("a", "b"), "multiclass")
    trainer.run_epoch()
    trainer.save_checkpoint(tmp_path / "c.pt")
    before = {m: mu.clone() for m, mu in trainer.train_feature_means().items()}
    trainer.run_epoch()
    moved = trainer.train_feature_means()
    assert any(not torch.equal(before[m], moved[m]) for m in before)
    trainer.load_checkpoint(tmp_path / "c.pt")  # back to the first epoch's weights
    for m, mu in trainer.train_feature_means().items():
        torch.testing.assert_close(mu, before[m])


def test_methods_side_evaluations_skip_the_missing_modality_heads() -> None:
    trainer = make_trainer("concat", ("a", "b"), "multiclass")
    side = trainer.context.evaluate(trainer.model, "val")
    assert not any(is_missing_modality_head(h) for h in side)
    full = trainer.evaluate("val")
    assert {h: v for h, v in full.items() if not is_missing_modality_head(h)} == side


def test_a_non_affine_fusion_is_refused(monkeypatch) -> None:
    trainer = make_trainer("concat", ("a", "b"), "multiclass")
    monkeypatch.setattr(type(trainer.model.fusion), "affine", False)
    with pytest.raises(TypeError, match="affine fusion"):
        trainer.evaluate("val")
    plain = evaluate_split(
        trainer.model,
        trainer.splits["val"],
        "multiclass",
        trainer.loss_fn,
        64,
        trainer.device,
        missing_modality=False,
    ).metrics
    assert set(plain) == {"mm", "a", "b"}


def test_same_seed_same_missing_modality_metrics() -> None:
    def run() -> list[dict[str, float]]:
        trainer = make_trainer("sum", ("a", "b"), "multiclass", encoders={"a": {"dropout": 0.3}})
        return [
            {k: v for k, v in r.flat().items() if "mm_zero_" in k or "mm_mean_" in k} for r in trainer.run()
        ]

    first, second = run(), run()
    assert first == second and first[0]


def test_eval_batch_size_does_not_change_the_heads() -> None:
    """Sums over batches, offsets once: several evaluation batches give the one-batch figures."""
    one = make_trainer("concat", ("a", "b", "c"), "multiclass")
    many = make_trainer("concat", ("a", "b", "c"), "multiclass", eval_batch_size=7)
    for split in SPLITS:
        a, b = one.evaluate(split), many.evaluate(split)
        for head in a:
            assert b[head] == pytest.approx(a[head], abs=1e-5), (split, head)
    many.evaluate("train")
    for m, mu in one.train_feature_means().items():
        torch.testing.assert_close(many.train_feature_means()[m], mu)


def test_zero_and_mean_heads_differ_from_the_full_head() -> None:
    """A sanity check that the substitution happens: some head without a modality scores
    differently from the full fused head once trained."""
    trainer = make_trainer("concat", ("a", "b"), "multiclass", epochs=4)
    records = list(trainer.run())
    val = records[-1].metrics["val"]
    losses = {h: v["loss"] for h, v in val.items()}
    assert any(losses[h] != losses["mm"] for h in losses if is_missing_modality_head(h))
