"""Plain joint training: the reference every balancing method must beat.

Paper: the "Vanilla" rows of the MILES paper (Guerra-Manzanares & Shamout, IJCNN 2025,
Tables II-III): the joint-fusion architecture with one global learning rate.

Reading chosen: the MILES paper does not say whether vanilla adds the auxiliary unimodal
losses of its Eq. 3 (methods.md §6, decision 4), so both are offered:

- ``aux_losses=True`` (default): L_mm + Σ_m L_m, so vanilla differs from MILES only by
  the scheduler (the fair ablation of MILES);
- ``aux_losses=False``: L_mm alone; the unimodal heads are linear probes trained on
  detached features, so they report each encoder's metric without shaping it.

Hyper-parameters (default search ranges in ``SEARCH_SPACE``): ``aux_losses`` in
{True, False} (fixed per study rather than searched); the learning rate is the loop's
``lr`` (log-uniform 1e-5 to 1e-2, ``COMMON_SEARCH_SPACE``).
"""

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
    SEARCH_SPACE = {"aux_losses": ("choice", (True, False))}

    def __init__(self, aux_losses: bool = True) -> None:
        self.aux_losses = bool(aux_losses)
