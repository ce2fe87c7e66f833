"""One modality's encoder and head trained alone: the reference for the unimodal gap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from miles_tune.balance import register_method
from miles_tune.balance.base import BalancingMethod
from miles_tune.records import MM


@register_method("unimodal")
class Unimodal(BalancingMethod):
    """Trains encoder ``modality`` with its own head on L_modality only.

    Every other term has weight 0, so no other parameter changes; the best epoch is
    chosen by this head's validation metric. Its metrics are under the modality's head
    name in the record (``test/<modality>/acc``); the multimodal head is untrained.
    """

    name = "unimodal"

    def __init__(self, modality: str) -> None:
        self.modality = modality
        self.selection_head = modality

    @classmethod
    def example_args(cls, modalities: Sequence[str]) -> dict[str, Any]:
        return {"modality": modalities[-1]}

    def check(self, modalities: Sequence[str], fusion: str) -> None:
        if self.modality not in modalities:
            raise ValueError(f"unimodal: modality {self.modality!r} is not one of {list(modalities)}")

    def loss_weights(self) -> dict[str, float]:
        weights = {MM: 0.0, **dict.fromkeys(self.model.modalities, 0.0)}
        weights[self.modality] = 1.0
        return weights
