"""The newer balancing methods (PMR, AGM, MMPareto): each mechanism against numbers computed
here, independently of the method's code (by hand, or by a separate formula)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from toy_data import toy_data

from miles_tune.balance import METHODS, create_method
from miles_tune.balance.agm import agm_coefficients, response_score, shapley_responses
from miles_tune.balance.base import TrainStep
from miles_tune.balance.mmpareto import min_norm_weight, pareto_weight, rescaled
from miles_tune.balance.pmr import class_prototypes, pmr_weights, prototype_logits
from miles_tune.config import TrainConfig
from miles_tune.errors import ConfigError
from miles_tune.models import JointFusionModel
from miles_tune.records import MM
from miles_tune.train import Trainer


class Linear(torch.nn.Module):
    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.net = torch.nn.Linear(d_in, d_out)
        self.out_dim = d_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x))


def tiny_model(modalities=("a", "v"), fusion: str = "concat", seed: int = 0) -> JointFusionModel:
    torch.manual_seed(seed)
    encoders = {m: Linear(3, 4 + i) for i, m in enumerate(modalities)}
    return JointFusionModel(
        encoders, num_classes=3, fusion=fusion, fusion_width=5 if fusion == "sum" else None
    )


def batch(modalities=("a", "v"), n: int = 8, seed: int = 1) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, 3, generator=g) for m in modalities}, torch.randint(0, 3, (n,), generator=g)


def step_of(model: JointFusionModel, inputs, labels, weights=None) -> TrainStep:  # noqa: ANN001
    out = model(inputs)
    terms = {MM: torch.nn.functional.cross_entropy(out.logits, labels)}
    terms |= {m: torch.nn.functional.cross_entropy(out.unimodal[m], labels) for m in model.modalities}
    weights = weights or dict.fromkeys(terms, 1.0)
    step = TrainStep(inputs, out, labels, terms, weights, epoch=0, step=0)
    step.loss = sum(weights[k] * t for k, t in terms.items())
    return step


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# -- MMPareto --------------------------------------------------------------------------------
def test_the_min_norm_weight_of_two_gradients_is_the_closed_form() -> None:
    g_mm, g_u = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 2.0])
    # v11 = 1, v12 = -1, v22 = 5: α = (5 + 1) / (1 + 5 + 2) = 0.75; the point (0.5, 0.5) is
    # equally far along both gradients: d·g_mm = d·g_u = ‖d‖² = 0.5
    alpha = min_norm_weight(g_mm, g_u)
    assert alpha.item() == pytest.approx(0.75)
    d = alpha * g_mm + (1 - alpha) * g_u
    assert (d @ g_mm).item() == pytest.approx(0.5) and (d @ g_u).item() == pytest.approx(0.5)
    # the official solver's bounds when one gradient dominates the other
    assert min_norm_weight(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0])).item() == pytest.approx(0.999)
    assert min_norm_weight(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0])).item() == pytest.approx(0.001)
    # agreeing gradients (cos > 0): ½, ½ and no conflict
    alpha, conflict = pareto_weight(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert alpha.item() == 0.5 and not conflict.item()


def test_the_final_gradient_is_enlarged_to_gamma_times_the_plain_sum() -> None:
    g_mm, g_u = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 2.0])
    alpha, conflict = pareto_weight(g_mm, g_u)
    assert conflict.item()
    h = 2 * (alpha * g_mm + (1 - alpha) * g_u)  # (1, 1); the plain sum (0, 2) has norm 2
    final = rescaled(h, g_mm + g_u, gamma=1.5)
    assert final.tolist() == pytest.approx([1.5 * math.sqrt(2), 1.5 * math.sqrt(2)])  # norm 3 = 1.5 × 2
    # no conflict: γ·(g_mm + g_u)
    agree = rescaled(torch.tensor([2.0, 1.0]), torch.tensor([2.0, 1.0]), gamma=1.5)
    assert agree.tolist() == pytest.approx([3.0, 1.5])
    assert rescaled(torch.zeros(2), torch.tensor([1.0, 0.0]), gamma=1.5).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("rescale", ["per_tensor", "per_encoder"])
def test_mmpareto_rewrites_each_encoders_gradient_and_leaves_the_heads_plain(rescale: str) -> None:
    """The method's backward against the rule applied here in numpy to gradients taken one term
    at a time; the fusion and the heads keep the plain sum's gradient."""
    model = tiny_model(("a", "v", "t"))
    inputs, labels = batch(("a", "v", "t"))
    method = create_method("mmpareto", gamma=1.5, rescale=rescale)
    method.attach(model, torch.optim.SGD(model.parameters(), lr=0.1))

    def term_grads(name: str) -> dict[str, np.ndarray]:
        model.zero_grad()
        step_of(model, inputs, labels).terms[name].backward()
        return {
            n: (p.grad.numpy().copy() if p.grad is not None else np.zeros(p.shape))
            for n, p in model.named_parameters()
        }

    per_term = {k: term_grads(k) for k in (MM, "a", "v", "t")}
    model.zero_grad()
    step_of(model, inputs, labels).loss.backward()
    plain = grads(model)
    model.zero_grad()
    method.backward(step_of(model, inputs, labels))
    got = grads(model)
    for m in ("a", "v", "t"):
        names = [
            n for n, _ in model.named_parameters() if n.startswith((f"encoders.{m}.", f"projections.{m}."))
        ]
        gm = np.concatenate([per_term[MM][n].ravel() for n in names])
        gu = np.concatenate([per_term[m][n].ravel() for n in names])
        if gm @ gu > 0:
            alpha = 0.5
        else:
            alpha = float(np.clip((gu @ gu - gm @ gu) / ((gm - gu) @ (gm - gu)), 0.001, 0.999))
        h = {n: 2 * (alpha * per_term[MM][n] + (1 - alpha) * per_term[m][n]) for n in names}
        if rescale == "per_tensor":
            norms = {
                n: (np.linalg.norm(per_term[MM][n] + per_term[m][n]), np.linalg.norm(h[n])) for n in names
            }
            want = {n: 1.5 * max(s, hn) / hn * h[n] for n, (s, hn) in norms.items()}
        else:
            flat_h = np.concatenate([h[n].ravel() for n in names])
            factor = 1.5 * max(np.linalg.norm(gm + gu), np.linalg.norm(flat_h)) / np.linalg.norm(flat_h)
            want = {n: factor * h[n] for n in names}
        for n in names:
            np.testing.assert_allclose(got[n].numpy(), want[n], rtol=1e-4, atol=1e-7, err_msg=n)
    for n in got:
        if n.startswith(("fusion.", "heads.")):
            torch.testing.assert_close(got[n], plain[n])


# -- AGM -------------------------------------------------------------------------------------
@pytest.mark.parametrize("modalities", [("a", "v"), ("a", "v", "t")])
@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_agm_responses_are_each_modalitys_share_of_the_fused_logits(modalities, fusion: str) -> None:
    """With the features dropped to 0 and the empty coalition worth 0, the Shapley value of a
    modality in an affine fusion is W_m z_m + b/M: the fusion's own ``modality_logits``."""
    model = tiny_model(modalities, fusion)
    inputs, _ = batch(modalities)
    with torch.no_grad():
        out = model(inputs)
        phi = shapley_responses(model, out.features)
        shares = model.fusion.modality_logits([out.features[m] for m in modalities])
    for m, share in zip(modalities, shares, strict=True):
        torch.testing.assert_close(phi[m], share)
    torch.testing.assert_close(sum(phi.values()), out.logits)


def test_agm_coefficients_by_hand() -> None:
    # s = (0.5, 1.0): r_a = e^{2(0.75 - 0.5)} = e^0.5, r_v = e^-0.5; running means equal: r̃ = 1
    kappa = agm_coefficients(torch.tensor([0.5, 1.0]), torch.tensor([0.8, 0.8]), alpha=1.0)
    assert kappa.tolist() == pytest.approx([math.exp(1 - math.exp(0.5)), math.exp(1 - math.exp(-0.5))])
    # three modalities: r_m = exp(3/2 · (s̄ − s_m)); the exponent is capped
    s, running = torch.tensor([0.2, 0.4, 0.9]), torch.tensor([0.5, 0.5, 0.5])
    r = [math.exp(1.5 * (0.5 - x)) for x in (0.2, 0.4, 0.9)]
    want = [math.exp(0.7 * min(1 - ri, 10.0)) for ri in r]
    assert agm_coefficients(s, running, alpha=0.7).tolist() == pytest.approx(want, rel=1e-6)
    capped = agm_coefficients(
        torch.tensor([0.0, 50.0]), torch.tensor([50.0, 0.0]), alpha=0.1, max_exponent=10
    )
    # a: r̃ − r = e^-50 − e^50, so κ_a = exp(−0.1·e^50) = 0; v: e^50 − e^-50, capped at 10
    assert capped.tolist() == pytest.approx([0.0, math.exp(0.1 * 10.0)])


def test_agm_score_is_the_clamped_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 100.0]])
    labels = torch.tensor([0, 0])
    first = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert response_score(logits, labels, "multiclass").item() == pytest.approx((first + -math.log(1e-8)) / 2)


def test_agm_scales_each_modalitys_gradient_through_the_fusion_by_its_coefficient() -> None:
    """Encoder m and its fusion weights get κ_m times the fused loss's gradient, the fusion bias
    the mean κ; with probe heads (aux_losses off) nothing else reaches the encoders."""
    model = tiny_model(("a", "v"))
    inputs, labels = batch(("a", "v"))
    method = create_method("agm", alpha=1.0)
    method.attach(model, torch.optim.SGD(model.parameters(), lr=0.1))
    method.running, method.seen = torch.tensor([0.3, 1.5]), 10  # a history: κ ≠ 1

    def probe_step() -> TrainStep:
        out = model(inputs, detach_unimodal=True)
        terms = {MM: torch.nn.functional.cross_entropy(out.logits, labels)}
        terms |= {m: torch.nn.functional.cross_entropy(out.unimodal[m], labels) for m in ("a", "v")}
        step = TrainStep(inputs, out, labels, terms, dict.fromkeys(terms, 1.0), epoch=0, step=0)
        step.loss = sum(terms.values())
        return step

    model.zero_grad()
    probe_step().loss.backward()
    plain = grads(model)
    with torch.no_grad():  # κ from the batch's scores, computed here from the formulas
        out = model(inputs)
        shares = model.fusion.modality_logits([out.features["a"], out.features["v"]])
        s = [torch.nn.functional.cross_entropy(x, labels).item() for x in shares]
    r = [math.exp(2 * ((s[0] + s[1]) / 2 - x)) for x in s]
    target = [math.exp(2 * (0.9 - 0.3)), math.exp(2 * (0.9 - 1.5))]
    kappa = [math.exp(min(t - ri, 10.0)) for t, ri in zip(target, r, strict=True)]
    model.zero_grad()
    method.backward(probe_step())
    got = grads(model)
    for name, g in got.items():
        if name.startswith("encoders.a") or name.startswith("encoders.v"):
            k = kappa[0] if name.startswith("encoders.a") else kappa[1]
            torch.testing.assert_close(g, k * plain[name], rtol=1e-4, atol=1e-7)
        elif name.startswith("heads."):
            torch.testing.assert_close(g, plain[name])
    w = model.fusion.linear.weight.shape[1]
    weight = got["fusion.linear.weight"]
    torch.testing.assert_close(
        weight[:, :4], kappa[0] * plain["fusion.linear.weight"][:, :4], rtol=1e-4, atol=1e-7
    )
    torch.testing.assert_close(
        weight[:, 4:w], kappa[1] * plain["fusion.linear.weight"][:, 4:], rtol=1e-4, atol=1e-7
    )
    torch.testing.assert_close(
        got["fusion.linear.bias"], sum(kappa) / 2 * plain["fusion.linear.bias"], rtol=1e-4, atol=1e-7
    )
    assert method.seen == 11  # the running means then take this step's scores
    assert method.running.tolist() == pytest.approx(
        [(0.3 * 10 + s[0]) / 11, (1.5 * 10 + s[1]) / 11], rel=1e-5
    )


# -- PMR -------------------------------------------------------------------------------------
def test_pmr_prototypes_and_weights_by_hand() -> None:
    features = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])
    protos = class_prototypes(features, labels, num_classes=3, previous=torch.full((3, 2), 7.0))
    assert protos.tolist() == [[1.0, 0.0], [0.0, 3.0], [7.0, 7.0]]  # class 2 unseen: keeps its previous
    first = class_prototypes(features, labels, num_classes=3)
    assert first[2].tolist() == [0.5, 1.5]  # before any: the mean of all the features
    # distances from (1, 3) to the prototypes: 3, 1, √52
    logits = prototype_logits(torch.tensor([[1.0, 3.0]]), protos)
    assert logits[0].tolist() == pytest.approx([-3.0, -1.0, -math.sqrt(52)])
    # the weaker modality (smaller summed true-class probability) gets α, the stronger none
    assert pmr_weights(torch.tensor([3.0, 2.0]), alpha=2.0).tolist() == [0.0, 2.0]
    assert pmr_weights(torch.tensor([1.0, 2.0]), alpha=2.0).tolist() == [2.0, 0.0]
    assert pmr_weights(torch.tensor([2.0, 2.0]), alpha=2.0).tolist() == [0.0, 0.0]  # a tie: neither
    assert pmr_weights(torch.tensor([3.0, 1.0, 2.0]), alpha=0.5).tolist() == [0.0, 0.5, 0.5]


def test_pmr_adds_the_weaker_modalitys_prototype_loss(tiny_config: TrainConfig) -> None:
    data = toy_data(("a", "v"), "multiclass")
    cfg = TrainConfig(method="pmr", method_args={"alpha": 2.0}, epochs=1, batch_size=16)
    trainer = Trainer(cfg, data=data)
    method = trainer.method
    method.on_train_epoch_start(0)
    inputs, labels = next(iter(torch.utils.data.DataLoader(data.train, batch_size=16)))
    step = step_of(trainer.model, inputs, labels)
    extra = method.extra_losses(step)["pmr"]
    with torch.no_grad():  # the rule, computed here
        z = step.output.features
        p = {m: torch.softmax(-torch.cdist(z[m], method.prototypes[m]), 1) for m in ("a", "v")}
        s = {m: p[m][torch.arange(16), labels].sum().item() for m in ("a", "v")}
        weak = min(s, key=s.get)
        want = 2.0 * torch.nn.functional.cross_entropy(-torch.cdist(z[weak], method.prototypes[weak]), labels)
    assert extra.item() == pytest.approx(want.item(), rel=1e-5)
    assert extra.requires_grad


def test_pmr_refuses_multilabel_data_before_training() -> None:
    data = toy_data(("t", "i"), "multilabel")
    with pytest.raises(
        ConfigError, match=r"pmr is defined for multiclass data only; this dataset is multilabel"
    ):
        Trainer(TrainConfig(method="pmr", epochs=1), data=data)


@pytest.mark.parametrize(
    "method, args, message",
    [
        ("mmpareto", {"gamma": 0.0}, "gamma"),
        ("mmpareto", {"rescale": "per_layer"}, "rescale"),
        ("agm", {"alpha": -1.0}, "alpha"),
        ("agm", {"start_epoch": 3, "end_epoch": 1}, "end_epoch"),
        ("pmr", {"momentum": 1.0}, "momentum"),
        ("pmr", {"proto_fraction": 0.0}, "proto_fraction"),
    ],
)
def test_bad_settings_of_the_newer_methods_are_refused_by_name(method: str, args: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_method(method, **args)


def test_the_newer_methods_record_what_they_did(tiny_config: TrainConfig) -> None:
    recorded = (
        ("mmpareto", "mmpareto/conflict_"), ("agm", "agm/kappa_"), ("pmr", "pmr/boosted_"),
        ("inforeg", "inforeg/beta_"), ("relearn", "relearn/alpha_"), ("umt", "umt/distill_"),
    )  # fmt: skip
    for method, key in recorded:
        args = METHODS.get(method).example_args(("fast", "slow"))
        cfg = dataclasses.replace(tiny_config, method=method, method_args=args, epochs=1)
        record = next(Trainer(cfg).run())
        values = [v for k, v in record.flat().items() if key in k]
        assert len(values) == 2 and all(math.isfinite(v) for v in values), (method, record.flat().keys())


# -- InfoReg ---------------------------------------------------------------------------------
def test_inforeg_window_by_hand() -> None:
    from miles_tune.balance.inforeg import window_growth

    assert window_growth([]) == 1.0
    # a flat trace of 5, padded with ten zeros: k = 5/5, 5/10, ..., 5/50 at epochs 1..10, then 0
    assert [window_growth([5.0] * e) for e in (1, 2, 10, 11)] == pytest.approx([1.0, 0.5, 0.1, 0.0])
    assert window_growth([1.0, 2.0, 3.0]) == pytest.approx(3 / 6)
    assert window_growth([3.0, 2.0, 1.0], window=2) == pytest.approx((3 - 5) / 3)  # falling: no regulation


def test_inforeg_coefficient_and_proximal_pull_by_hand() -> None:
    from miles_tune.balance.inforeg import confidence, inforeg_coefficients

    # true-class probabilities: audio 0.9 and 0.6 (s = 1.5), visual 0.5 and 0.3 (s = 0.8)
    probs = {"a": [[0.9, 0.1], [0.4, 0.6]], "v": [[0.5, 0.5], [0.7, 0.3]]}
    labels = torch.tensor([0, 1])
    scores = torch.stack([confidence(torch.tensor(probs[m]).log(), labels, "multiclass") for m in "av"])
    assert scores.tolist() == pytest.approx([1.5, 0.8])
    beta = inforeg_coefficients(scores, coef=0.95)
    assert beta.tolist() == pytest.approx([0.95 * math.exp(math.tanh(0.7)), 0.0])  # 1.73859, 0
    assert inforeg_coefficients(torch.tensor([0.8, 0.8]), 0.95).tolist() == [0.0, 0.0]
    # the pull: θ = (1, 2), anchor (0.5, 2.5), grad (0.1, 0.1) → (0.1 + β·0.5, 0.1 − β·0.5)
    model = tiny_model(("a", "v"))
    method = create_method("inforeg", coef=0.95)
    method.attach(model, torch.optim.SGD(model.parameters(), lr=0.1))
    method.on_train_epoch_start(0)
    inputs, labels = batch(("a", "v"))
    step = step_of(model, inputs, labels)
    step.loss.backward()
    with torch.no_grad():
        for p in model.modality_parameters("a"):
            p.add_(0.5)  # θ − anchor = 0.5 everywhere in encoder a
        s = torch.stack([confidence(step.output.unimodal[m], labels, "multiclass") for m in "av"])
        want_beta = inforeg_coefficients(s, 0.95)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    method.on_after_backward(step.output, labels, 0, 0)
    for n, p in model.named_parameters():
        if n.startswith("encoders.a."):
            torch.testing.assert_close(p.grad, before[n] + want_beta[0] * 0.5)
        else:  # encoder v has not moved from its anchor; the fusion and heads are not regulated
            torch.testing.assert_close(p.grad, before[n])


def test_inforeg_fisher_trace_is_the_official_estimator() -> None:
    """Squared batch gradients of the encoders' layer weights, summed over the epoch's batches;
    per layer the mean over elements, summed over layers."""
    model = tiny_model(("a", "v"))
    method = create_method("inforeg")
    method.attach(model, torch.optim.SGD(model.parameters(), lr=0.1))
    method.on_train_epoch_start(0)
    inputs, labels = batch(("a", "v"))
    out = model(inputs)
    for _ in range(2):  # two batches, each weight's gradient 0.25 everywhere: g² = 1/16
        for p in method.fisher:
            p.grad = torch.full_like(p, 0.25)
        method.on_after_backward(out, labels, 0, 0)
    method.on_epoch_end(None)
    assert len(method.fisher) == 2  # one linear layer per encoder
    assert method.history == pytest.approx([2 * 2 * 0.0625])  # 2 batches × 2 layers × 1/16


# -- Diagnosing & Re-learning ----------------------------------------------------------------
def test_relearn_diagnosis_pieces_by_hand() -> None:
    from miles_tune.balance.relearn import kmeans, purity, scale_to_unit_range

    x = torch.tensor([[0.0, 10.0], [2.0, 10.0], [1.0, 20.0]])
    assert scale_to_unit_range(x).tolist() == [[-1.0, -1.0], [1.0, -1.0], [0.0, 1.0]]
    # clusters {0,1}: labels 0,1 (a tie: class 0, one hit); {2,3,4}: labels 1,1,0 (class 1, two hits)
    assert purity(torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 1, 1, 1, 0])) == pytest.approx(3 / 5)
    g = torch.Generator().manual_seed(0)
    blobs = torch.cat(
        [
            torch.randn(20, 2, generator=g) * 0.1 + c
            for c in (torch.tensor([5.0, 0]), torch.tensor([-5.0, 0]), torch.tensor([0, 5.0]))
        ]
    )
    labels = torch.arange(3).repeat_interleave(20)
    clusters = kmeans(blobs, 3, torch.Generator().manual_seed(1), restarts=2)
    assert purity(clusters, labels) == 1.0 and len(clusters.unique()) == 3


def test_relearn_mixes_each_encoder_towards_its_initial_weights() -> None:
    """α = tanh(λ·|P_train − P_val|), then θ ← (1 − α)·θ + α·θ_init on the encoder alone."""
    model = tiny_model(("a", "v"))
    method = create_method("relearn", lam=3.0)
    method.attach(model, torch.optim.SGD(model.parameters(), lr=0.1))
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # training moved every weight by 1
    alpha = math.tanh(3.0 * abs(0.9 - 0.6))  # 0.7163
    method.pending = {"a": alpha}
    method.on_train_epoch_start(5)
    for n, p in model.named_parameters():
        want = initial[n] + (1 - alpha) if n.startswith("encoders.a.") else initial[n] + 1
        torch.testing.assert_close(p.detach(), want)
    assert method.pending == {}


# -- UMT -------------------------------------------------------------------------------------
def test_umt_distils_each_encoder_towards_its_teachers_features(tmp_path) -> None:
    """The extra loss is λ·Σ_m mean((h_m − t_m)²), t_m the output of encoder m of the teacher's
    saved model, computed here by loading those weights into a module of our own."""
    import yaml

    teacher_model = tiny_model(("a", "v"), seed=7)  # a trained unimodal model would be here
    torch.save(teacher_model.state_dict(), tmp_path / "best_model.pt")
    (tmp_path / "search").mkdir()
    best = {
        "config": {"method": "unimodal", "method_args": {"modality": "v"}},
        "best_model": str(tmp_path / "best_model.pt"),
    }
    (tmp_path / "search" / "best_config.yaml").write_text(yaml.safe_dump(best))
    teachers = {"a": str(tmp_path / "best_model.pt"), "v": str(tmp_path / "search")}
    student = tiny_model(("a", "v"), seed=0)
    method = create_method("umt", teachers=teachers, lam=10.0)
    method.check(("a", "v"), "concat")
    method.attach(student, torch.optim.SGD(student.parameters(), lr=0.1))
    inputs, labels = batch(("a", "v"))
    step = step_of(student, inputs, labels)
    got = method.extra_losses(step)["umt"]
    want = 0.0
    for m in ("a", "v"):
        own = Linear(3, 4 + ("a", "v").index(m))
        own.load_state_dict(
            {
                k.removeprefix(f"encoders.{m}."): v
                for k, v in teacher_model.state_dict().items()
                if k.startswith(f"encoders.{m}.")
            }
        )
        with torch.no_grad():
            want += torch.mean((student.encoders[m](inputs[m]) - own(inputs[m])) ** 2).item()
    assert got.item() == pytest.approx(10.0 * want, rel=1e-6)
    assert got.requires_grad
    assert not any(p.requires_grad for t in method.teacher_encoders.values() for p in t.parameters())


def test_umt_refuses_teachers_it_cannot_use(tmp_path) -> None:
    import yaml

    with pytest.raises(ConfigError, match="umt needs a teacher per modality"):
        create_method("umt")
    with pytest.raises(ConfigError, match="teachers='initial' distils towards untrained encoders"):
        create_method("umt", teachers="initial").check(("a", "v"), "concat")
    create_method("umt", teachers="initial", allow_initial_teachers=True).check(("a", "v"), "concat")
    with pytest.raises(ConfigError, match=r"teachers.v: .*nope.pt does not exist"):
        create_method("umt", teachers={"v": str(tmp_path / "nope.pt")}).check(("v",), "concat")
    with pytest.raises(
        ConfigError, match=r"umt: teachers for \['a'\]; this dataset's modalities are \['a', 'v'\]"
    ):
        create_method("umt", teachers={"a": "x.pt"}).check(("a", "v"), "concat")
    (tmp_path / "best_config.yaml").write_text(
        yaml.safe_dump({"config": {"method": "unimodal", "method_args": {"modality": "a"}}})
    )
    with pytest.raises(ConfigError, match="names no best_model"):
        create_method("umt", teachers={"a": str(tmp_path)}).check(("a",), "concat")
    wrong = {"config": {"method": "unimodal", "method_args": {"modality": "a"}}, "best_model": "x.pt"}
    (tmp_path / "best_config.yaml").write_text(yaml.safe_dump(wrong))
    with pytest.raises(ConfigError, match="is the unimodal result of 'a', given for 'v'"):
        create_method("umt", teachers={"v": str(tmp_path)}).check(("v",), "concat")
    torch.save(tiny_model(("a", "v")).state_dict(), tmp_path / "other.pt")
    model = tiny_model(("a", "v", "t"))  # encoder v here is 3 → 5, in the file 3 → 5; t is missing
    umt = create_method("umt", teachers={m: str(tmp_path / "other.pt") for m in ("a", "v", "t")})
    with pytest.raises(ConfigError, match=r"teachers.t: .*other.pt does not fit this encoder"):
        umt.attach(model, torch.optim.SGD(model.parameters(), lr=0.1))


def test_a_methods_feature_pass_leaves_every_module_in_its_mode() -> None:
    """``RunContext.features`` runs in eval mode and gives back the modes it found (MSES freezes
    branches in eval mode; a feature pass must not unfreeze them)."""
    from miles_tune.data import TensorSplit
    from miles_tune.train.loop import encode_split

    model = tiny_model(("a", "v"))
    model.train()
    model.encoders["v"].eval()
    inputs, labels = batch(("a", "v"), n=10)
    feats, got_labels = encode_split(model, TensorSplit(inputs, labels), 4, torch.device("cpu"))
    assert (
        feats["a"].shape == (10, 4) and feats["v"].shape == (10, 5) and got_labels.tolist() == labels.tolist()
    )
    assert model.training and model.encoders["a"].training and not model.encoders["v"].training
    with torch.no_grad():
        torch.testing.assert_close(feats["a"], model.encode(inputs)["a"])
