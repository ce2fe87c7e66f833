"""The joint-fusion network: one encoder and one linear unimodal head per modality, one fusion head.

    x_m ──encoder_m──► h_m ──projection_m──► z_m ──┬──► fusion ──► multimodal logits
                                                   └──► head_m ───► unimodal logits (per m)

Projections exist only for ``sum`` fusion when encoder widths differ (they map every
modality to one common width); otherwise they are identities. They belong to their
modality's parameters, so a per-modality learning rate scales them with the encoder.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from miles_tune.models.fusion import create_fusion


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, C) multimodal
    unimodal: dict[str, torch.Tensor]  # modality -> (B, C)
    features: dict[str, torch.Tensor]  # modality -> (B, d) fused features z_m
    #: modality -> (B, d_m) the encoder's own output h_m, before its projection (z_m = h_m when
    #: the projection is the identity): what UMT distils
    encoded: dict[str, torch.Tensor] = field(default_factory=dict)


class JointFusionModel(nn.Module):
    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        num_classes: int,
        fusion: str = "concat",
        fusion_width: int | None = None,
    ) -> None:
        super().__init__()
        if len(encoders) < 2:
            raise ValueError(f"a joint-fusion model needs at least two modalities, got {list(encoders)}")
        self.modalities = tuple(encoders)
        self.num_classes = num_classes
        self.fusion_name = fusion
        self.encoders = nn.ModuleDict(encoders)
        dims = {m: int(enc.out_dim) for m, enc in encoders.items()}
        if fusion == "sum" and (fusion_width is not None or len(set(dims.values())) > 1):
            width = fusion_width or max(dims.values())
            self.projections = nn.ModuleDict(
                {m: nn.Identity() if d == width else nn.Linear(d, width) for m, d in dims.items()}
            )
            dims = dict.fromkeys(dims, width)
        else:
            self.projections = nn.ModuleDict({m: nn.Identity() for m in dims})
        self.feature_dims = dims
        self.fusion = create_fusion(fusion, [dims[m] for m in self.modalities], num_classes)
        self.heads = nn.ModuleDict({m: nn.Linear(dims[m], num_classes) for m in self.modalities})

    def encode(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = set(self.modalities) - set(inputs)
        if missing:
            raise KeyError(f"inputs lack modalities {sorted(missing)}")
        return {m: self.projections[m](self.encoders[m](inputs[m])) for m in self.modalities}

    def forward(self, inputs: Mapping[str, torch.Tensor], detach_unimodal: bool = False) -> ModelOutput:
        """``detach_unimodal``: the unimodal heads see detached features (linear probes)."""
        missing = set(self.modalities) - set(inputs)
        if missing:
            raise KeyError(f"inputs lack modalities {sorted(missing)}")
        h = {m: self.encoders[m](inputs[m]) for m in self.modalities}
        z = {m: self.projections[m](h[m]) for m in self.modalities}  # modality -> (B, d)
        logits = self.fusion([z[m] for m in self.modalities])  # (B, C)
        unimodal = {m: self.heads[m](z[m].detach() if detach_unimodal else z[m]) for m in self.modalities}
        return ModelOutput(logits=logits, unimodal=unimodal, features=z, encoded=h)

    def fuse_without(
        self,
        features: Mapping[str, torch.Tensor],
        missing: Iterable[str],
        fill: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The fused logits with the modalities in ``missing`` dropped: each z_m set to 0, or to
        ``fill[m]`` (a (d_m,) vector such as the training mean μ_m, broadcast over the batch).

        The one way to drop a modality's features: the missing-modality metrics of every
        evaluation (``mm_zero_<m>``, ``mm_mean_<m>``) and AGM's mono-modal responses use it.
        """
        missing = set(missing)
        unknown = missing - set(self.modalities)
        if unknown:
            raise KeyError(f"no modality {sorted(unknown)}; have {list(self.modalities)}")
        z = []
        for m in self.modalities:
            f = features[m]
            if m in missing:
                f = torch.zeros_like(f) if fill is None else fill[m].to(f).reshape(1, -1).expand_as(f)
            z.append(f)
        return self.fusion(z)

    # -- parameter partitions used by balancing methods (param groups) -----------------
    def modality_parameters(self, modality: str) -> Iterator[nn.Parameter]:
        """The encoder (and projection) of one modality: what a per-modality lr scales."""
        yield from self.encoders[modality].parameters()
        yield from self.projections[modality].parameters()

    def modality_modules(self, modality: str) -> list[nn.Module]:
        return [self.encoders[modality], self.projections[modality]]
