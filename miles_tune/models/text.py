"""Text encoder: a BERT-family backbone from transformers, fine-tuned or frozen.

``create_encoder("bert", source="bert-base-uncased", pooling="cls", freeze=False)``.
The input is a batch of token ids, (B, L) integers padded with ``pad_token_id`` (the
MM-IMDb dataset's ``text="tokens"`` form); the attention mask is ``ids != pad_token_id``.
The output is the pooled last hidden state, (B, hidden), so ``out_dim`` is the
backbone's hidden size (768 for BERT-base, 384 for MiniLM, 32 for ``"tiny-random"``).

Weights come from :func:`miles_tune.data.text.load_text_model`: a hub name, a local
folder, ``"minilm-offline"`` or ``"tiny-random"`` (see that module).

``freeze=True`` keeps the backbone in eval mode with gradients off; the cheaper way to
train on frozen features is the dataset's ``text="features"`` form, which runs the
backbone once while building the cache and feeds an MLP: fine-tuning BERT-base on a
CPU costs hours per MM-IMDb epoch. transformers is imported only when an encoder is built.
"""

from __future__ import annotations

import torch
from torch import nn

from miles_tune.data.text import POOLINGS, load_text_model, pool
from miles_tune.errors import ConfigError
from miles_tune.models import register_encoder


class TextEncoder(nn.Module):
    def __init__(
        self,
        source: str = "bert-base-uncased",
        pooling: str = "cls",
        freeze: bool = False,
        seed: int = 0,
        local_files_only: bool = False,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        tokenizer, backbone = load_text_model(source, seed=seed, local_files_only=local_files_only)
        self.backbone = backbone
        self.source = source
        self.pooling = pooling
        self.freeze = freeze
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.out_dim = int(backbone.config.hidden_size)
        if freeze:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        self.backbone.train(not freeze)

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.freeze:  # a frozen backbone never runs dropout
            self.backbone.eval()
        return self

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, out_dim) pooled features."""
        if ids.dim() != 2:
            raise ConfigError(f"expected token ids of shape (B, L), got {tuple(ids.shape)}")
        ids = ids.long()
        mask = (ids != self.pad_token_id).long()
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
        return pool(hidden, mask, self.pooling)  # (B, H)


@register_encoder("bert")
def bert(
    source: str = "bert-base-uncased",
    pooling: str = "cls",
    freeze: bool = False,
    seed: int = 0,
    local_files_only: bool = False,
) -> TextEncoder:
    return TextEncoder(source, pooling, freeze, seed, local_files_only)
