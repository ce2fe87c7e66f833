"""ResNet encoders: shapes, torchvision-compatible names and counts, checkpoint loading, registry."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from miles_tune.models import create_encoder, list_encoders
from miles_tune.models.resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    load_torchvision_state_dict,
    resnet6,
    resnet18,
    resnet50,
    resnet_from_torchvision_checkpoint,
)

VARIANTS = ["resnet6", "resnet10", "resnet18", "resnet34", "resnet50"]
# Feature width as a multiple of `width`.
OUT_MULT = {"resnet6": 2, "resnet10": 8, "resnet18": 8, "resnet34": 8, "resnet50": 32}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize(("small_input", "size"), [(True, 32), (False, 64)])
def test_forward_shape(name: str, in_channels: int, small_input: bool, size: int) -> None:
    width = 8  # narrow keeps the whole grid fast; the default width is checked below
    model = create_encoder(name, in_channels=in_channels, small_input=small_input, width=width)
    assert isinstance(model, ResNet)
    assert model.out_dim == model.feature_dim == OUT_MULT[name] * width
    out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, model.out_dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_default_width_out_dim(name: str) -> None:
    assert create_encoder(name).out_dim == OUT_MULT[name] * 64


def test_resnet50_out_dim_is_2048() -> None:
    assert resnet50().out_dim == 2048


def test_fc_changes_out_dim_not_feature_dim() -> None:
    model = resnet6(width=8, num_classes=5, small_input=True)
    assert model.feature_dim == 16 and model.out_dim == 5
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 5)
    assert model.forward_features(x).shape == (2, 16)


@settings(max_examples=10, deadline=None)
@given(h=st.integers(28, 96), w=st.integers(28, 96))
def test_small_input_any_size(h: int, w: int) -> None:
    model = create_encoder("resnet10", in_channels=1, small_input=True, width=4)
    assert model(torch.randn(2, 1, h, w)).shape == (2, 32)


def test_small_input_stem() -> None:
    model = resnet18(small_input=True, width=8)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    default = resnet18(width=8)
    assert default.conv1.kernel_size == (7, 7) and default.conv1.stride == (2, 2)
    assert isinstance(default.maxpool, torch.nn.MaxPool2d)


def test_resnet6_has_two_stages() -> None:
    names = {n.split(".")[0] for n, _ in resnet6(width=8).named_parameters()}
    assert {"layer1", "layer2"} <= names
    assert not {"layer3", "layer4", "fc"} & names


def test_wrong_input_channels_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        resnet6(in_channels=1, width=8)(torch.randn(2, 3, 32, 32))


# --- torchvision compatibility ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032)],
)
def test_param_count_matches_torchvision(name: str, expected: int) -> None:
    model = create_encoder(name, num_classes=1000, in_channels=3, width=64)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_torchvision_key_names_and_shapes() -> None:
    sd18 = resnet18(num_classes=1000).state_dict()
    assert sd18["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd18["layer1.0.conv1.weight"].shape == (64, 64, 3, 3)
    assert sd18["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd18["layer2.0.downsample.1.running_var"].shape == (128,)
    assert sd18["bn1.running_mean"].shape == (64,)
    assert sd18["fc.weight"].shape == (1000, 512)
    assert "layer1.0.downsample.0.weight" not in sd18  # stage 1 of BasicBlock keeps shape
    assert not any(".bias" in k and "conv" in k for k in sd18)  # convs are bias-free

    sd50 = resnet50(num_classes=1000).state_dict()
    assert sd50["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd50["layer4.2.bn3.num_batches_tracked"].shape == ()
    assert sd50["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert sd50["fc.weight"].shape == (1000, 2048)
    # v1.5: the stride is on the 3x3 conv of the first block of a downsampling stage.
    model = resnet50()
    assert model.layer2[0].conv1.stride == (1, 1) and model.layer2[0].conv2.stride == (2, 2)

    assert "fc.weight" not in resnet18().state_dict()


def test_init_and_zero_init_residual() -> None:
    model = resnet18(width=8)
    assert torch.all(model.layer1[0].bn2.weight == 1) and torch.all(model.bn1.bias == 0)
    zeroed = resnet18(width=8, zero_init_residual=True)
    for block in zeroed.modules():
        if isinstance(block, BasicBlock):
            assert torch.all(block.bn2.weight == 0) and torch.all(block.bn1.weight == 1)
    zeroed50 = resnet50(width=8, zero_init_residual=True)
    blocks = [m for m in zeroed50.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16 and all(torch.all(b.bn3.weight == 0) for b in blocks)


# --- checkpoint loading ----------------------------------------------------------------------


def _perturbed_bn(model: ResNet) -> ResNet:
    """Give BN buffers non-trivial values so an eval-mode comparison really tests them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model


@pytest.fixture(scope="module")
def tv_checkpoint() -> dict[str, torch.Tensor]:
    """A stand-in torchvision resnet18 checkpoint: our names are theirs, fc has 1000 classes."""
    torch.manual_seed(1)
    return _perturbed_bn(resnet18(num_classes=1000)).state_dict()


def test_round_trip_into_encoder(tv_checkpoint: dict[str, torch.Tensor]) -> None:
    source = resnet18(num_classes=1000)
    source.load_state_dict(tv_checkpoint)
    encoder = resnet18()
    load_torchvision_state_dict(encoder, tv_checkpoint)
    enc_sd = encoder.state_dict()
    assert set(enc_sd) == {k for k in tv_checkpoint if not k.startswith("fc.")}
    for k, v in enc_sd.items():
        assert torch.equal(v, tv_checkpoint[k]), k
    source.eval()
    encoder.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), source.forward_features(x))


def test_one_channel_sums_rgb_filters(tv_checkpoint: dict[str, torch.Tensor]) -> None:
    rgb = resnet18()
    load_torchvision_state_dict(rgb, tv_checkpoint)
    grey = resnet18(in_channels=1)
    load_torchvision_state_dict(grey, tv_checkpoint)
    torch.testing.assert_close(grey.conv1.weight, tv_checkpoint["conv1.weight"].sum(dim=1, keepdim=True))
    rgb.eval()
    grey.eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)


def test_loading_into_model_with_fc(tv_checkpoint: dict[str, torch.Tensor]) -> None:
    model = resnet18(num_classes=1000)
    load_torchvision_state_dict(model, tv_checkpoint)
    assert torch.equal(model.fc.weight, tv_checkpoint["fc.weight"])
    with pytest.raises(ValueError, match=r"fc\.weight"):
        load_torchvision_state_dict(resnet18(num_classes=10), tv_checkpoint)


def test_unexpected_key_raises(tv_checkpoint: dict[str, torch.Tensor]) -> None:
    bad = dict(tv_checkpoint)
    bad["layer5.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected keys: layer5\.0\.conv1\.weight"):
        load_torchvision_state_dict(resnet18(), bad)


def test_missing_key_raises_and_loads_nothing(tv_checkpoint: dict[str, torch.Tensor]) -> None:
    bad = {k: v for k, v in tv_checkpoint.items() if k != "layer3.1.bn2.running_var"}
    model = resnet18()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"missing keys: layer3\.1\.bn2\.running_var"):
        load_torchvision_state_dict(model, bad)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_shape_mismatch_raises(tv_checkpoint: dict[str, torch.Tensor]) -> None:
    bad = dict(tv_checkpoint)
    bad["layer2.0.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    with pytest.raises(ValueError, match=r"layer2\.0\.conv2\.weight \(checkpoint \(128, 128, 1, 1\)"):
        load_torchvision_state_dict(resnet18(), bad)


def test_small_input_conv1_mismatch_needs_non_strict(tv_checkpoint: dict[str, torch.Tensor]) -> None:
    model = resnet18(small_input=True)
    with pytest.raises(ValueError, match=r"conv1\.weight"):
        load_torchvision_state_dict(model, tv_checkpoint)
    init_conv1 = model.conv1.weight.detach().clone()
    with pytest.warns(UserWarning, match=r"conv1\.weight"):
        load_torchvision_state_dict(model, tv_checkpoint, strict=False)
    assert torch.equal(model.conv1.weight, init_conv1)
    assert torch.equal(model.layer4[1].conv2.weight, tv_checkpoint["layer4.1.conv2.weight"])


def test_old_checkpoint_without_num_batches_tracked(tv_checkpoint: dict[str, torch.Tensor]) -> None:
    old = {k: v for k, v in tv_checkpoint.items() if not k.endswith("num_batches_tracked")}
    model = resnet18()
    load_torchvision_state_dict(model, old)
    assert torch.equal(model.layer1[0].conv1.weight, old["layer1.0.conv1.weight"])


def test_from_checkpoint_file(tmp_path, tv_checkpoint: dict[str, torch.Tensor]) -> None:
    missing = tmp_path / "nope" / "resnet18.pth"
    with pytest.raises(FileNotFoundError, match="resnet18.pth") as err:
        resnet_from_torchvision_checkpoint("resnet18", missing)
    assert str(missing) in str(err.value)

    path = tmp_path / "resnet18.pth"
    torch.save(tv_checkpoint, path)
    model = resnet_from_torchvision_checkpoint("resnet18", path, in_channels=1)
    assert model.fc is None and model.in_channels == 1
    assert torch.equal(model.layer4[1].bn2.running_mean, tv_checkpoint["layer4.1.bn2.running_mean"])

    with pytest.raises(ValueError, match="not a ResNet"):
        resnet_from_torchvision_checkpoint("mlp", path)


# --- registry --------------------------------------------------------------------------------


def test_registry() -> None:
    assert set(VARIANTS) <= set(list_encoders())
    model = create_encoder("resnet10", in_channels=1, small_input=True, width=16)
    assert isinstance(model, ResNet) and model.out_dim == 128
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 128)
    with pytest.raises(ValueError, match="depth"):
        create_encoder("resnet18", depth=18)
