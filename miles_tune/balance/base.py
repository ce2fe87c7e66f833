"""The hooks a balancing method may use, and the defaults (plain joint training).

The loop calls these hooks and never asks which method it runs:

============================  =====================================================
hook                           used by (now or later)
============================  =====================================================
``check``                      refuse an unsupported setup at configuration time
``param_groups``               per-modality learning rates (MILES, MSLR)
``attach``                     keep the optimizer/model; build schedulers (MILES)
``loss_weights``               loss re-weighting (G-Blend); ``aux_losses`` says whether
                               unimodal heads shape encoders or are detached probes
``on_train_epoch_start``       per-branch freezing of BatchNorm (MSES), side training
                               (G-Blend)
``on_after_backward``          gradient modulation between backward and step (OGM)
``on_epoch_end``               sees every metric, u and δ of the epoch (MILES, MSES,
                               MSLR-D)
``should_stop``                stop signal (MSES)
``record_extra``               method figures for the epoch record (extra compute, ...)
``state_dict``                 everything needed to resume exactly
============================  =====================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from miles_tune.models.joint import JointFusionModel, ModelOutput
from miles_tune.records import MM


@dataclass
class EpochEvaluation:
    """What a method sees at the end of an epoch."""

    epoch: int
    metrics: dict[str, dict[str, dict[str, float]]]  # split -> head -> metric -> value
    metric: str  # the configured metric M (e.g. "acc")
    u_source: str  # the split u is computed on ("val" or "train")
    multimodal: float  # M(ŷ_mm) on u_source
    without: dict[str, float]  # modality -> M(prediction without it) on u_source
    u: dict[str, float]
    delta: float


def default_param_groups(
    model: JointFusionModel, lr: float, heads_with_encoders: bool = False
) -> list[dict[str, Any]]:
    """One group per modality (tagged ``"modality"``), then the untagged ``fusion`` and ``heads``.

    With ``heads_with_encoders`` each unimodal head joins its encoder's group instead.
    """
    groups: list[dict[str, Any]] = []
    for m in model.modalities:
        params = list(model.modality_parameters(m))
        if heads_with_encoders:
            params += list(model.heads[m].parameters())
        groups.append({"name": m, "modality": m, "params": params, "lr": lr})
    groups.append({"name": "fusion", "params": list(model.fusion.parameters()), "lr": lr})
    if not heads_with_encoders:
        groups.append({"name": "heads", "params": list(model.heads.parameters()), "lr": lr})
    return groups


class BalancingMethod:
    """Base class and default behaviour: joint training with Eq. 3's loss, no balancing."""

    name: ClassVar[str] = "base"
    #: unimodal heads shape their encoders (Eq. 3) when True; otherwise they train
    #: as linear probes on detached features, only to report each encoder's metric.
    aux_losses: bool = True
    #: which head's validation metric selects the best epoch
    selection_head: str = MM

    @classmethod
    def example_args(cls, modalities: Sequence[str]) -> dict[str, Any]:
        """Arguments for a smoke run on ``modalities`` (the registry-wide tests use them)."""
        return {}

    def check(self, modalities: Sequence[str], fusion: str) -> None:
        """Raise ``ValueError`` if this method cannot run on this setup."""

    def param_groups(
        self, model: JointFusionModel, lr: float, heads_with_encoders: bool = False
    ) -> list[dict[str, Any]]:
        return default_param_groups(model, lr, heads_with_encoders)

    def attach(self, model: JointFusionModel, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer

    def loss_weights(self) -> dict[str, float]:
        """Weight of each loss term: ``"mm"`` and one per modality."""
        return {MM: 1.0, **dict.fromkeys(self.model.modalities, 1.0)}

    def on_train_epoch_start(self, epoch: int) -> None:
        pass

    def on_after_backward(self, output: ModelOutput, labels: torch.Tensor, epoch: int, step: int) -> None:
        pass

    def on_epoch_end(self, evaluation: EpochEvaluation) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def record_extra(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
