"""The baselines' mechanisms, each checked against numbers computed here, independently.

OGM/OGM-GE coefficients and which gradients they touch; G-Blend weights from known loss
curves and its side trainings; MSES freezing; MSLR-K/S/D learning rates; exact resume for
every registered method; search spaces; configuration-time errors.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from toy_data import toy_data

from miles_tune.balance import METHODS, create_method, default_param_groups, list_methods
from miles_tune.balance.base import check_search_space, search_space_values
from miles_tune.balance.gblend import LossCurve, gblend_weights
from miles_tune.balance.mslr import dynamic_factor, load_unimodal_lrs, smooth_lrs
from miles_tune.balance.ogm import ogm_coefficients
from miles_tune.config import TrainConfig
from miles_tune.data import create_dataset
from miles_tune.errors import ConfigError
from miles_tune.models import JointFusionModel, create_encoder
from miles_tune.train import Trainer

EXCLUDED = ("epoch_seconds", "samples_per_second")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~40x faster than two
    (a busy neighbour stalls every OpenMP barrier). Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def comparable(records) -> list[dict]:
    return [{k: v for k, v in r.flat().items() if k not in EXCLUDED and "seconds" not in k} for r in records]


def tiny_mlp_model(fusion: str, seed: int = 0) -> JointFusionModel:
    torch.manual_seed(seed)
    encoders = {
        "a": create_encoder("mlp", in_dim=6, hidden_dims=(8,)),
        "b": create_encoder("mlp", in_dim=4, hidden_dims=(8,)),
    }
    return JointFusionModel(encoders, num_classes=3, fusion=fusion)


# -- OGM / OGM-GE ---------------------------------------------------------------------------
def test_ogm_coefficients_for_known_scores() -> None:
    alpha = 0.5
    # the stronger modality is damped by 1 - tanh(α·s_strong/s_weak), the other keeps 1
    assert ogm_coefficients({"a": 20.0, "b": 10.0}, alpha) == pytest.approx(
        {"a": 1 - math.tanh(1.0), "b": 1.0}
    )
    assert ogm_coefficients({"a": 6.0, "b": 24.0}, alpha) == pytest.approx(
        {"a": 1.0, "b": 1 - math.tanh(2.0)}
    )
    # a tie: the official code damps the first modality (ratio 1)
    assert ogm_coefficients({"a": 7.0, "b": 7.0}, alpha) == pytest.approx({"a": 1 - math.tanh(0.5), "b": 1.0})
    assert ogm_coefficients({"b": 7.0, "a": 7.0}, alpha) == pytest.approx({"b": 1 - math.tanh(0.5), "a": 1.0})
    # three modalities (BalanceMM): every modality above the minimum, by its ratio to it
    k = ogm_coefficients({"a": 3.0, "b": 1.0, "c": 2.0}, 0.3)
    assert k == pytest.approx({"a": 1 - math.tanh(0.9), "b": 1.0, "c": 1 - math.tanh(0.6)})
    # a zero minimum: the others get k = 0
    assert ogm_coefficients({"a": 0.0, "b": 1.0}, 0.3) == {"a": 1.0, "b": 0.0}


def fusion_slice_scores(model: JointFusionModel, features: dict, labels: torch.Tensor) -> dict[str, float]:
    """s_m = Σ_i softmax(W_m z_m + b/2)[y_i], written out for two modalities."""
    w, b = model.fusion.linear.weight, model.fusion.linear.bias
    za, zb = features["a"], features["b"]
    if model.fusion_name == "concat":
        la, lb = za @ w[:, : za.shape[1]].t() + b / 2, zb @ w[:, za.shape[1] :].t() + b / 2
    else:
        la, lb = za @ w.t() + b / 2, zb @ w.t() + b / 2
    idx = torch.arange(len(labels))
    return {
        "a": la.softmax(1)[idx, labels].sum().item(),
        "b": lb.softmax(1)[idx, labels].sum().item(),
    }


def official_two_modality_coefficients(s_a: float, s_b: float, alpha: float) -> tuple[float, float]:
    """The official rule as written for (audio, visual)."""
    ratio_b = s_b / s_a
    if ratio_b > 1:
        return 1.0, 1 - math.tanh(alpha * ratio_b)
    return 1 - math.tanh(alpha * (1 / ratio_b)), 1.0


def backward_once(model: JointFusionModel, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    inputs = {"a": torch.randn(16, 6, generator=g), "b": torch.randn(16, 4, generator=g)}
    labels = torch.randint(3, (16,), generator=g)
    out = model(inputs, detach_unimodal=True)
    F.cross_entropy(out.logits, labels).backward()
    return out, labels


@pytest.mark.parametrize("fusion", ["concat", "sum"])
@pytest.mark.parametrize("source", ["fusion", "heads"])
def test_ogm_scales_exactly_the_encoder_weight_gradients(fusion: str, source: str) -> None:
    model = tiny_mlp_model(fusion)
    opt = torch.optim.SGD(default_param_groups(model, 0.1), lr=0.1)
    method = create_method("ogm", alpha=0.7, score_source=source)
    method.attach(model, opt, None)
    out, labels = backward_once(model)
    # the heads are probes here: give them a gradient too, to check it is left alone
    sum(F.cross_entropy(out.unimodal[m], labels) for m in "ab").backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    if source == "fusion":
        scores = fusion_slice_scores(model, out.features, labels)
    else:
        idx = torch.arange(len(labels))
        scores = {m: out.unimodal[m].softmax(1)[idx, labels].sum().item() for m in "ab"}
    k_a, k_b = official_two_modality_coefficients(scores["a"], scores["b"], 0.7)
    assert min(k_a, k_b) < 1.0

    method.on_train_epoch_start(0)
    method.on_after_backward(out, labels, 0, 0)
    for name, p in model.named_parameters():
        if name.startswith("encoders.a.") and p.dim() > 1:
            torch.testing.assert_close(p.grad, k_a * before[name])
        elif name.startswith("encoders.b.") and p.dim() > 1:
            torch.testing.assert_close(p.grad, k_b * before[name])
        else:  # biases, the fusion layer, the heads
            assert torch.equal(p.grad, before[name]), name
    assert method.record_extra() == pytest.approx({"ogm/coeff/a": k_a, "ogm/coeff/b": k_b})


def test_ogm_ge_adds_noise_scaled_by_each_gradients_own_spread() -> None:
    model = tiny_mlp_model("concat")
    method = create_method("ogm-ge", alpha=0.4)
    method.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), None)
    out, labels = backward_once(model)
    before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    scores = fusion_slice_scores(model, out.features, labels)
    k = dict(zip("ab", official_two_modality_coefficients(scores["a"], scores["b"], 0.4), strict=True))
    torch.manual_seed(123)
    method.on_train_epoch_start(0)
    method.on_after_backward(out, labels, 0, 0)
    torch.manual_seed(123)  # replay the noise: modalities in order, weights in parameter order
    for m in "ab":
        for name, p in model.encoders[m].named_parameters():
            full = f"encoders.{m}.{name}"
            if p.dim() < 2:
                assert torch.equal(p.grad, before[full])
                continue
            g = before[full]
            noise = torch.randn_like(g) * (g.std().item() + 1e-8)
            torch.testing.assert_close(p.grad, k[m] * g + noise)  # also where k = 1
    assert torch.equal(model.fusion.linear.weight.grad, before["fusion.linear.weight"])


def test_ogm_conv_rule_touches_only_4d_gradients_and_refuses_mlps() -> None:
    torch.manual_seed(0)
    enc = {m: create_encoder("resnet6", in_channels=1, width=4) for m in "ab"}
    model = JointFusionModel(enc, num_classes=3, fusion="concat")
    method = create_method("ogm", alpha=0.5, grad_dims="conv")
    method.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), None)
    inputs = {m: torch.randn(8, 1, 28, 28) for m in "ab"}
    labels = torch.randint(3, (8,))
    out = model(inputs)
    F.cross_entropy(out.logits, labels).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    method.on_train_epoch_start(0)
    method.on_after_backward(out, labels, 0, 0)
    k = method.record_extra()
    changed = {
        n for n, p in model.named_parameters() if p.grad is not None and not torch.equal(p.grad, before[n])
    }
    conv = {n for n, p in model.named_parameters() if n.startswith("encoders.") and p.dim() == 4}
    damped = next(m for m in "ab" if k[f"ogm/coeff/{m}"] < 1)
    assert changed == {n for n in conv if n.startswith(f"encoders.{damped}.")}

    with pytest.raises(ValueError, match="grad_dims='conv' finds no 4-D"):
        create_method("ogm", grad_dims="conv").attach(
            tiny_mlp_model("sum"), torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))])
        )


def test_ogm_modulates_only_inside_its_window(tiny_config: TrainConfig) -> None:
    cfg = dataclasses.replace(
        tiny_config, method="ogm", method_args={"alpha": 0.5, "start_epoch": 1, "end_epoch": 1}
    )
    records = list(Trainer(cfg).run())
    coeffs = [[r.extra[f"ogm/coeff/{m}"] for m in ("fast", "slow")] for r in records]
    assert coeffs[0] == coeffs[2] == [1.0, 1.0]
    assert min(coeffs[1]) < 1.0
    # the default window is the first half, inclusive: epochs 0..epochs//2
    trainer = Trainer(dataclasses.replace(cfg, epochs=6, method_args={}))
    assert [trainer.method.in_window(e) for e in range(6)] == [True] * 4 + [False] * 2


# -- G-Blend ----------------------------------------------------------------------------------
CURVES = {
    # (train_N, val_N, train_N+n, val_N+n)
    "a": LossCurve(2.0, 2.0, 1.0, 1.5),  # ΔG 0.5, ΔO 0.5 -> 2
    "b": LossCurve(2.0, 2.1, 1.8, 1.8),  # ΔG 0.3, ΔO -0.1 -> 30
    "mm": LossCurve(2.0, 2.0, 0.5, 1.0),  # ΔG 1.0, ΔO 0.5 -> 4
}


def test_gblend_weights_for_known_loss_curves() -> None:
    w, fallback = gblend_weights(CURVES, delta=True)
    assert not fallback
    assert w == pytest.approx({"a": 2 / 36, "b": 30 / 36, "mm": 4 / 36})
    # non-delta (MultiBench): g = L^V_{N+n}, o = O_{N+n} clamped to eps
    w, _ = gblend_weights(CURVES, delta=False, eps=1e-4)
    raw = {"a": 1.5 / 0.5**2, "b": 1.8 / 1e-8, "mm": 1.0 / 0.5**2}
    assert w == pytest.approx({k: v / sum(raw.values()) for k, v in raw.items()})
    # a branch whose held-out loss got worse: |.| keeps it, clip drops it
    worse = {**CURVES, "b": LossCurve(2.0, 1.0, 1.0, 1.2)}  # ΔG -0.2, ΔO 1.2 -> -0.2/1.44
    r_b = 0.2 / 1.44
    w, _ = gblend_weights(worse, sign="abs")
    assert w["b"] == pytest.approx(r_b / (2 + r_b + 4))
    w, _ = gblend_weights(worse, sign="clip")
    assert w == pytest.approx({"a": 2 / 6, "b": 0.0, "mm": 4 / 6})
    # nothing generalises: uniform fallback
    flat = {k: LossCurve(1.0, 1.0, 0.5, 1.2) for k in CURVES}
    w, fallback = gblend_weights(flat, sign="clip")
    assert fallback and w == pytest.approx(dict.fromkeys(CURVES, 1 / 3))
    # ΔO = 0 is guarded by eps
    w, _ = gblend_weights({"a": LossCurve(1, 1, 0.5, 0.5), "mm": LossCurve(1, 1, 0.5, 0.9)}, eps=1e-2)
    assert w["a"] == pytest.approx((0.5 / 1e-4) / (0.5 / 1e-4 + 0.1 / 0.16))


def test_gblend_side_trainings_leave_the_run_untouched(tiny_config: TrainConfig) -> None:
    cfg = dataclasses.replace(tiny_config, method="gblend", method_args={"super_epoch": 2})
    trainer = Trainer(cfg)
    state = copy.deepcopy(trainer.model.state_dict())
    opt_state = copy.deepcopy(trainer.optimizer.state_dict())
    rng = torch.get_rng_state()
    trainer.model.train()
    trainer.method.on_train_epoch_start(0)
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert trainer.optimizer.state_dict() == opt_state
    w = trainer.method.loss_weights()
    assert sum(w.values()) == pytest.approx(1.0) and set(w) == {"mm", "fast", "slow"}
    assert trainer.method.record_extra()["gblend/extra_epochs"] == 3 * 2


def test_gblend_online_estimates_per_super_epoch_and_trains_with_them(tiny_config: TrainConfig) -> None:
    cfg = dataclasses.replace(tiny_config, epochs=5, method="gblend", method_args={"super_epoch": 2})
    records = list(Trainer(cfg).run())
    terms = ("fast", "slow", "mm")
    assert [r.extra["gblend/extra_epochs"] for r in records] == [6.0, 0.0, 6.0, 0.0, 6.0]
    assert records[-1].extra["gblend/extra_epochs_total"] == 18.0
    assert records[-1].extra["gblend/extra_seconds_total"] > 0
    for r in records:
        w = {k: r.extra[f"gblend/weight/{k}"] for k in terms}
        # w_k ∝ |ΔG_k / ΔO_k²| from the recorded side-training curves
        raw = {k: abs(r.extra[f"gblend/dG/{k}"] / max(r.extra[f"gblend/dO/{k}"] ** 2, 1e-8)) for k in terms}
        assert w == pytest.approx({k: v / sum(raw.values()) for k, v in raw.items()})
        # the epoch's training loss is the blend of its terms with these weights
        assert r.losses["total"] == pytest.approx(sum(w[k] * r.losses[k] for k in terms), rel=1e-6)
    # weights change only at super-epoch boundaries
    weight = [tuple(r.extra[f"gblend/weight/{k}"] for k in terms) for r in records]
    assert weight[0] == weight[1] and weight[2] == weight[3]
    # offline: one estimate at the start
    offline = list(Trainer(dataclasses.replace(cfg, method_args={"super_epoch": 2, "mode": "offline"})).run())
    assert [r.extra["gblend/extra_epochs"] for r in offline] == [6.0, 0.0, 0.0, 0.0, 0.0]
    assert offline[0].extra["gblend/weight/mm"] == pytest.approx(records[0].extra["gblend/weight/mm"])


def test_gblend_holdout_fraction_is_set_aside_from_training(tiny_config: TrainConfig) -> None:
    cfg = dataclasses.replace(
        tiny_config, epochs=1, method="gblend", method_args={"super_epoch": 1, "holdout": 0.25}
    )
    trainer = Trainer(cfg)
    train, held = trainer.splits["train"], trainer.splits["holdout"]
    assert (len(train), len(held)) == (72, 24)
    full = trainer.data.train.inputs["fast"]
    rows = torch.cat([train.inputs["fast"], held.inputs["fast"]])
    assert torch.equal(rows.sort(0).values, full.sort(0).values)  # a partition of the training set
    record = next(iter(trainer.run()))
    assert record.samples_per_second > 0 and "gblend/weight/mm" in record.extra
    with pytest.raises(ValueError, match="holdout"):
        create_method("gblend", holdout=1.5)


# -- MSES -------------------------------------------------------------------------------------
def first_exhausted(values: list[float], patience: int) -> int | None:
    """The epoch at which `patience` epochs in a row have not beaten the best so far."""
    best, wait = -math.inf, 0
    for e, v in enumerate(values):
        best, wait = (v, 0) if v > best else (best, wait + 1)
        if wait >= patience:
            return e
    return None


def waits(values: list[float]) -> list[int]:
    best, wait, out = -math.inf, 0, []
    for v in values:
        best, wait = (v, 0) if v > best else (best, wait + 1)
        out.append(wait)
    return out


def branch_snapshot(model: JointFusionModel, m: str) -> dict[str, torch.Tensor]:
    mods = {"enc": model.encoders[m], "proj": model.projections[m], "head": model.heads[m]}
    return {f"{k}.{n}": v.detach().clone() for k, mod in mods.items() for n, v in mod.state_dict().items()}


def test_mses_freezes_a_branch_exactly_when_its_patience_runs_out(tiny_config: TrainConfig) -> None:
    patience = 2
    cfg = dataclasses.replace(
        tiny_config, epochs=12, method="mses", method_args={"patience": patience, "monitor": "metric"}
    )
    trainer = Trainer(cfg)
    records, snaps = [], []
    for r in trainer.run():
        records.append(r)
        snaps.append({m: branch_snapshot(trainer.model, m) for m in ("fast", "slow")})
    frozen_any = False
    for m in ("fast", "slow"):
        acc = [r.metric("val", m, "acc") for r in records]
        e = first_exhausted(acc, patience)
        if e is None:
            assert all(r.lr[m] == 1e-3 for r in records)
            continue
        frozen_any = True
        assert [r.extra[f"mses/frozen/{m}"] for r in records] == [float(i >= e) for i in range(len(records))]
        for r in records:  # the rate of the epoch: trained up to e included, 0 after
            expected = 1e-3 if r.epoch <= e else 0.0
            assert r.lr[m] == r.lr[f"head_{m}"] == expected
        if e > 0:
            assert any(not torch.equal(v, snaps[e - 1][m][k]) for k, v in snaps[e][m].items())
        for later in snaps[e + 1 :]:
            for k, v in snaps[e][m].items():
                assert torch.equal(later[m][k], v), (m, k)
    assert frozen_any
    # the run stops once every branch is frozen and the fused head has stalled for `patience` epochs
    freeze = [
        first_exhausted([r.metric("val", m, "acc") for r in records], patience) for m in ("fast", "slow")
    ]
    mm_wait = waits([r.metric("val", "mm", "acc") for r in records])
    stops = [
        e for e in range(len(records)) if None not in freeze and max(freeze) <= e and mm_wait[e] >= patience
    ]
    assert trainer.stopped_early == bool(stops)
    assert len(records) == (stops[0] + 1 if stops else cfg.epochs)
    assert records[-1].lr["fusion"] == 1e-3


def test_mses_freezes_batchnorm_statistics_of_a_frozen_branch() -> None:
    data = create_dataset("synthetic", form="image", n_train=48, n_val=24, n_test=8)
    enc = {"name": "resnet6", "width": 4}
    cfg = TrainConfig(
        data={},
        epochs=4,
        batch_size=16,
        method="mses",
        method_args={"patience": 1, "monitor": "loss"},
        encoders={"fast": enc, "slow": enc},
        lr=0.05,  # overshoots: some validation loss gets worse quickly
    )
    trainer = Trainer(cfg, data=data)
    snaps = []
    for r in trainer.run():
        snaps.append((r, {m: branch_snapshot(trainer.model, m) for m in data.modalities}))
    frozen = [
        (m, next(i for i, (r, _) in enumerate(snaps) if r.extra[f"mses/frozen/{m}"]))
        for m in data.modalities
        if snaps[-1][0].extra[f"mses/frozen/{m}"]
    ]
    assert frozen, "no branch froze; the test needs one"
    for m, e in frozen:
        stats = {k: v for k, v in snaps[e][1][m].items() if "running" in k or "num_batches" in k}
        assert stats
        for _, later in snaps[e + 1 :]:
            for k, v in stats.items():
                assert torch.equal(later[m][k], v), (m, k)


def test_mses_restore_best_reloads_the_best_branch_weights(tiny_config: TrainConfig) -> None:
    cfg = dataclasses.replace(
        tiny_config, epochs=10, method="mses", method_args={"patience": 2, "restore_best": True}
    )
    trainer = Trainer(cfg)
    records, snaps = [], []
    for r in trainer.run():
        records.append(r)
        snaps.append(branch_snapshot(trainer.model, "slow"))
    acc = [r.metric("val", "slow", "acc") for r in records]
    e = first_exhausted(acc, 2)
    assert e is not None
    best_epoch = max(range(e + 1), key=lambda i: (acc[i], -i))  # first epoch with the best value
    for k in snaps[best_epoch]:
        if k.startswith(("enc.", "head.")):
            assert torch.equal(snaps[-1][k], snaps[best_epoch][k]), k


# -- MSLR -------------------------------------------------------------------------------------
RATES = {"fast": 1e-4, "slow": 1e-2}


@pytest.mark.parametrize(
    "method, args, expected",
    [
        ("mslr-k", {}, RATES),
        ("mslr-s", {}, {"fast": 10**-3.5, "slow": 10**-2.5}),  # halfway to the geometric mean 1e-3
        ("mslr-s", {"smoothing": 1.0}, {"fast": 1e-3, "slow": 1e-3}),
        ("mslr-s", {"space": "linear"}, {"fast": 0.5e-4 + 0.5 * 5.05e-3, "slow": 0.5e-2 + 0.5 * 5.05e-3}),
        ("mslr-s", {"smoothing": 0.0}, RATES),
    ],
)
@pytest.mark.parametrize("heads_with_encoders", [False, True])
def test_mslr_keep_and_smooth_rates_from_given_unimodal_rates(
    tiny_config: TrainConfig, method: str, args: dict, expected: dict, heads_with_encoders: bool
) -> None:
    cfg = dataclasses.replace(
        tiny_config,
        epochs=2,
        lr=3e-3,
        method=method,
        method_args={"unimodal_lrs": RATES, **args},
        heads_with_encoders=heads_with_encoders,
    )
    records = list(Trainer(cfg).run())
    for r in records:
        assert {m: r.lr[m] for m in RATES} == pytest.approx(expected, rel=1e-12)
        assert r.lr["fusion"] == 3e-3
        if not heads_with_encoders:
            assert r.lr["heads"] == 3e-3


def test_mslr_smoothing_function() -> None:
    assert smooth_lrs({"a": 1e-5, "b": 1e-3, "c": 1e-1}, 0.5) == pytest.approx(
        {"a": 1e-4, "b": 1e-3, "c": 1e-2}
    )


def test_mslr_dynamic_update_from_the_validation_history(tiny_config: TrainConfig) -> None:
    window = 2
    cfg = dataclasses.replace(
        tiny_config, epochs=7, method="mslr-d", method_args={"unimodal_lrs": RATES, "window": window}
    )
    records = list(Trainer(cfg).run())
    lrs = dict(RATES)
    for e, r in enumerate(records):
        assert {m: r.lr[m] for m in RATES} == pytest.approx(lrs, rel=1e-12), e
        if (e + 1) % window == 0:
            for m in RATES:
                acc = [records[i].metric("val", m, "acc") for i in (e - 1, e)]
                lrs[m] *= acc[1] / (sum(acc) / 2)
    assert any(records[-1].lr[m] != RATES[m] for m in RATES)  # it did move


def test_mslr_dynamic_step_rule() -> None:
    assert dynamic_factor(0.8, [0.6, 0.7, 0.8], "step", 0.1) == pytest.approx(1.1)
    assert dynamic_factor(0.5, [0.6, 0.7, 0.5], "step", 0.1) == pytest.approx(0.9)
    assert dynamic_factor(0.6, [0.6, 0.6], "step", 0.1) == 1.0
    assert dynamic_factor(0.9, [0.6, 0.9], "ratio") == pytest.approx(0.9 / 0.75)
    assert dynamic_factor(0.0, [0.0, 0.0], "ratio") == 1.0


def test_mslr_reads_rates_from_files(tmp_path) -> None:
    (tmp_path / "lrs.yaml").write_text("fast: 1.0e-4\nslow: 0.01\n")
    assert load_unimodal_lrs(str(tmp_path / "lrs.yaml")) == RATES
    (tmp_path / "lrs.json").write_text(json.dumps({"unimodal_lrs": RATES}))
    assert load_unimodal_lrs(tmp_path / "lrs.json") == RATES
    # one best_config per modality, as a finished unimodal search writes it
    (tmp_path / "fast.yaml").write_text("lr: 1.0e-4\nmethod: unimodal\nmethod_args: {modality: fast}\n")
    (tmp_path / "slow.yaml").write_text("config: {lr: 0.01}\n")
    spec = {"fast": str(tmp_path / "fast.yaml"), "slow": str(tmp_path / "slow.yaml")}
    assert load_unimodal_lrs(spec) == RATES
    with pytest.raises(ValueError, match="unimodal result of 'fast', given for 'slow'"):
        load_unimodal_lrs({"slow": str(tmp_path / "fast.yaml")})
    with pytest.raises(ValueError, match="does not exist"):
        load_unimodal_lrs(str(tmp_path / "nope.yaml"))
    (tmp_path / "bad.yaml").write_text("epochs: 3\n")
    with pytest.raises(ValueError, match="no 'lr'"):
        load_unimodal_lrs({"fast": str(tmp_path / "bad.yaml")})


@pytest.mark.parametrize("method", ["mslr-k", "mslr-s", "mslr-d"])
def test_mslr_without_unimodal_rates_is_refused(tiny_config: TrainConfig, method: str) -> None:
    with pytest.raises(ValueError, match="needs the best unimodal learning rates"):
        create_method(method)
    with pytest.raises(ValueError, match=r"no best unimodal learning rate for \['slow'\]"):
        Trainer(dataclasses.replace(tiny_config, method=method, method_args={"unimodal_lrs": {"fast": 1e-3}}))
    with pytest.raises(ValueError, match="positive number"):
        create_method(method, unimodal_lrs={"fast": -1.0, "slow": 1e-3})


# -- every method ----------------------------------------------------------------------------
RESUME_ARGS = {
    "gblend": {"super_epoch": 2},
    "mses": {"patience": 1},
    "mslr-d": {"unimodal_lrs": {"fast": 2e-3, "slow": 5e-4}, "window": 2},
    "ogm": {"alpha": 0.5, "end_epoch": 2},
    "ogm-ge": {"alpha": 0.5, "end_epoch": 2},
    "miles": {"tau": 0.0, "mu": 0.3},
}


@pytest.mark.parametrize("method", list_methods())
def test_every_method_resumes_exactly(tiny_config: TrainConfig, tmp_path, method: str) -> None:
    """2 + 2 epochs from a checkpoint end exactly where 4 uninterrupted epochs end."""
    data = create_dataset("synthetic", **tiny_config.data)
    args = RESUME_ARGS.get(method, METHODS.get(method).example_args(data.modalities))
    cfg = dataclasses.replace(
        tiny_config,
        epochs=4,
        method=method,
        method_args=args,
        encoders={"fast": {"dropout": 0.3}, "slow": {"dropout": 0.1}},
    )
    full_trainer = Trainer(cfg, data=data)
    full = comparable(full_trainer.run())
    first = Trainer(dataclasses.replace(cfg, epochs=2), data=data)
    list(first.run())
    first.save_checkpoint(tmp_path / "ckpt.pt")
    resumed = Trainer(cfg, data=data)
    resumed.load_checkpoint(tmp_path / "ckpt.pt")
    list(resumed.run())
    assert comparable(resumed.history) == full
    assert resumed.method.state_dict().keys() == full_trainer.method.state_dict().keys()


@pytest.mark.parametrize("setup", ["three-modalities-sum", "multilabel-concat"])
@pytest.mark.parametrize("method", list_methods())
def test_every_method_runs_on_three_modalities_and_multilabel(method: str, setup: str) -> None:
    data = (
        toy_data(("a", "b", "c"), "multiclass")
        if setup.startswith("three")
        else toy_data(("t", "i"), "multilabel")
    )
    args = METHODS.get(method).example_args(data.modalities)
    cfg = TrainConfig(method=method, method_args=args, epochs=2, batch_size=16, fusion=setup.split("-")[-1])
    if data.task not in METHODS.get(method).tasks:  # defined for other tasks only: refused, saying so
        with pytest.raises(
            ConfigError, match=f"{method} is defined for .* only; this dataset is {data.task}"
        ):
            Trainer(cfg, data=data)
        return
    records = list(Trainer(cfg, data=data).run())
    assert len(records) >= 1
    assert all(math.isfinite(v) for v in records[-1].flat().values())


@pytest.mark.parametrize("method", list_methods())
def test_search_space_is_valid_for_the_constructor(method: str) -> None:
    cls = METHODS.get(method)
    space = cls.SEARCH_SPACE
    check_search_space(space)
    accepted = METHODS.accepted_kwargs(method)
    assert set(space) <= set(accepted), f"{method}: {set(space) - set(accepted)} are not arguments"
    base = cls.example_args(("fast", "slow"))
    for name, spec in space.items():
        for value in search_space_values(spec):
            create_method(method, **{**base, name: value})
    assert cls.__module__ != "miles_tune.balance.base"
    doc = __import__(cls.__module__, fromlist=["_"]).__doc__
    assert doc and "search" in doc.lower(), f"{method}: module docstring must list search ranges"


@pytest.mark.parametrize(
    "method, args, message",
    [
        ("ogm", {"alpha": 0.0}, "alpha"),
        ("ogm", {"grad_dims": "linear"}, "grad_dims"),
        ("ogm", {"score_source": "probe"}, "score_source"),
        ("ogm", {"start_epoch": 3, "end_epoch": 1}, "end_epoch"),
        ("ogm", {"grad_dims": "conv"}, "finds no 4-D"),
        ("ogm-ge", {"grad_dims": "conv"}, "finds no 4-D"),
        ("gblend", {"mode": "sometimes"}, "mode"),
        ("gblend", {"super_epoch": 0}, "super_epoch"),
        ("gblend", {"sign": "neg"}, "sign"),
        ("mses", {"patience": 0}, "patience"),
        ("mses", {"monitor": "f1"}, "monitor"),
        ("mslr-s", {"unimodal_lrs": RATES, "smoothing": 2.0}, "smoothing"),
        ("mslr-d", {"unimodal_lrs": RATES, "rule": "log"}, "rule"),
        ("mslr-d", {"unimodal_lrs": RATES, "window": 0}, "window"),
    ],
)
def test_bad_method_settings_are_refused_before_training(
    tiny_config: TrainConfig, method: str, args: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Trainer(dataclasses.replace(tiny_config, method=method, method_args=args))


def test_mslr_refuses_a_search_result_of_another_modality(tmp_path) -> None:
    """A best_config.yaml as a unimodal search writes it (its settings under ``config``) is
    checked for its modality too, by the check UMT's teachers share."""
    best = {"config": {"lr": 1e-4, "method": "unimodal", "method_args": {"modality": "fast"}}}
    (tmp_path / "best_config.yaml").write_text(json.dumps(best))
    with pytest.raises(ValueError, match="unimodal result of 'fast', given for 'slow'"):
        load_unimodal_lrs({"fast": 1e-4, "slow": str(tmp_path / "best_config.yaml")})
    assert load_unimodal_lrs({"fast": str(tmp_path / "best_config.yaml"), "slow": 1e-2}) == RATES
