from __future__ import annotations

import pytest
import torch

from miles_tune.models import JointFusionModel, create_encoder, list_encoders


def make_model(fusion: str, dims=(8, 12, 8), hidden=(16, 16, 16)) -> JointFusionModel:
    encoders = {
        name: create_encoder("mlp", in_dim=d, hidden_dims=(h,))
        for name, d, h in zip("abc", dims, hidden, strict=False)
    }
    return JointFusionModel(encoders, num_classes=5, fusion=fusion)


@pytest.mark.parametrize("fusion", ["concat", "sum"])
@pytest.mark.parametrize("n_modalities", [2, 3])
def test_forward_shapes_and_fusion_slices(fusion: str, n_modalities: int) -> None:
    model = make_model(fusion, dims=(8, 12, 8)[:n_modalities], hidden=(16, 24, 16)[:n_modalities])
    inputs = {m: torch.randn(4, d) for m, d in zip("abc", (8, 12, 8), strict=False) if m in model.modalities}
    out = model(inputs)
    assert out.logits.shape == (4, 5)
    assert set(out.unimodal) == set(model.modalities)
    assert all(v.shape == (4, 5) for v in out.unimodal.values())
    if fusion == "sum":  # widths 16 and 24 differ: every modality is projected to 24
        assert set(model.feature_dims.values()) == {24}
    # the per-modality fusion slices add up to the fused logits
    slices = model.fusion.modality_logits([out.features[m] for m in model.modalities])
    torch.testing.assert_close(torch.stack(slices).sum(0), out.logits)


def test_sum_fusion_is_feature_level_sum() -> None:
    model = make_model("sum", dims=(8, 8), hidden=(16, 16))
    x = {"a": torch.randn(3, 8), "b": torch.randn(3, 8)}
    z = model.encode(x)
    torch.testing.assert_close(model(x).logits, model.fusion.linear(z["a"] + z["b"]))


def test_detached_unimodal_heads_do_not_train_encoders() -> None:
    model = make_model("concat", dims=(8, 8), hidden=(16, 16))
    x = {"a": torch.randn(3, 8), "b": torch.randn(3, 8)}
    out = model(x, detach_unimodal=True)
    out.unimodal["a"].sum().backward()
    assert all(p.grad is None for p in model.encoders["a"].parameters())
    assert model.heads["a"].weight.grad is not None
    model.zero_grad()
    model(x).unimodal["a"].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders["a"].parameters())


def test_model_refuses_one_modality_and_missing_inputs() -> None:
    with pytest.raises(ValueError, match="two modalities"):
        JointFusionModel({"a": create_encoder("mlp", in_dim=3)}, num_classes=2)
    model = make_model("concat", dims=(8, 8), hidden=(16, 16))
    with pytest.raises(KeyError, match="b"):
        model({"a": torch.randn(2, 8)})


@pytest.mark.parametrize("name", list_encoders())
def test_every_registered_encoder_builds_and_runs(name: str) -> None:
    if name == "mlp":
        enc, x = create_encoder(name, in_dim=10), torch.randn(2, 10)
    elif name == "bert":  # a tiny random BertConfig: no weights to fetch
        enc, x = create_encoder(name, source="tiny-random"), torch.randint(1, 50, (2, 12))
    else:
        enc, x = create_encoder(name, in_channels=1, small_input=True, width=8), torch.randn(2, 1, 28, 28)
    assert enc(x).shape == (2, enc.out_dim)
