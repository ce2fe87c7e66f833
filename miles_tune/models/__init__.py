"""Models: an encoder registry, the two fusions, and :class:`JointFusionModel`.

``create_encoder("resnet18", in_channels=1, small_input=True)`` builds an encoder;
every encoder exposes ``out_dim``, the width of the feature vector it returns.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from miles_tune.registry import Registry

ENCODERS: Registry[nn.Module] = Registry("encoder")
register_encoder = ENCODERS.register


def create_encoder(name: str, **kwargs: Any) -> nn.Module:
    return ENCODERS.create(name, **kwargs)


def list_encoders() -> list[str]:
    return ENCODERS.names()


from miles_tune.models import mlp, resnet, text  # noqa: E402,F401  (register encoders)
from miles_tune.models.fusion import FUSIONS, ConcatFusion, SumFusion, create_fusion  # noqa: E402
from miles_tune.models.joint import JointFusionModel, ModelOutput  # noqa: E402

__all__ = [
    "ENCODERS",
    "FUSIONS",
    "ConcatFusion",
    "JointFusionModel",
    "ModelOutput",
    "SumFusion",
    "create_encoder",
    "create_fusion",
    "list_encoders",
    "register_encoder",
]
