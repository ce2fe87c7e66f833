"""One modality's encoder and head trained alone: the reference for the unimodal gap.

Paper: Table I of the MILES paper (Guerra-Manzanares & Shamout, IJCNN 2025), "best
unimodal models": the reference for the unimodal-gap statistics, and the source of the
best unimodal learning rates that MSLR needs (``mslr.py`` reads them from a finished
unimodal search).

Reading chosen: the unimodal model is the same encoder and linear head as in the joint
model, trained on L_modality alone; the best epoch is chosen on that head's validation
metric. Every other loss term has weight 0, so no other parameter receives a non-zero
gradient; with Adam and no weight decay they therefore never change (with weight decay
they would decay, which does not affect this head).

Known cost, accepted: the loop still runs every encoder's forward (and backward through
zero-weighted terms), so a unimodal run costs about as much as a joint one. Skipping them
would need a model that can run a subset of modalities; not worth it for a reference run.

Hyper-parameters: ``modality`` (which one; not searched). The learning rate is the
loop's ``lr`` (log-uniform 1e-5 to 1e-2, ``COMMON_SEARCH_SPACE``); the best one per
modality is what MSLR-K/S/D start from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from miles_tune.balance import register_method
from miles_tune.balance.base import BalancingMethod
from miles_tune.errors import ConfigError
from miles_tune.records import MM


@register_method("unimodal")
class Unimodal(BalancingMethod):
    """Trains encoder ``modality`` with its own head on L_modality only.

    Every other term has weight 0, so no other parameter changes; the best epoch is
    chosen by this head's validation metric. Its metrics are under the modality's head
    name in the record (``test/<modality>/acc``); the multimodal head is untrained.
    """

    name = "unimodal"
    SEARCH_SPACE: dict[str, tuple[Any, ...]] = {}  # only the loop's lr is searched

    def __init__(self, modality: str) -> None:
        self.modality = modality
        self.selection_head = modality

    @classmethod
    def example_args(cls, modalities: Sequence[str]) -> dict[str, Any]:
        return {"modality": modalities[-1]}

    def check(self, modalities: Sequence[str], fusion: str) -> None:
        if self.modality not in modalities:
            raise ConfigError(f"unimodal: modality {self.modality!r} is not one of {list(modalities)}")

    def loss_weights(self) -> dict[str, float]:
        weights = {MM: 0.0, **dict.fromkeys(self.model.modalities, 0.0)}
        weights[self.modality] = 1.0
        return weights
