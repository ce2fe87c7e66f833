"""Plain joint training: the reference every balancing method must beat."""

from __future__ import annotations

from miles_tune.balance import register_method
from miles_tune.balance.base import BalancingMethod


@register_method("vanilla")
class Vanilla(BalancingMethod):
    """Joint training with one global learning rate.

    ``aux_losses=True`` (default) trains with Eq. 3 of the MILES paper, L_mm + Σ_m L_m, so
    vanilla differs from MILES only by the scheduler. ``aux_losses=False`` trains on L_mm
    alone; the unimodal heads are then linear probes on detached features.
    """

    name = "vanilla"

    def __init__(self, aux_losses: bool = True) -> None:
        self.aux_losses = bool(aux_losses)
