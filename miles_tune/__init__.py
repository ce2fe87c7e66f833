"""miles_tune: MILES and multimodal balancing baselines, searched at scale.

Subpackages: ``data`` (dataset registry), ``models`` (encoders, fusion, joint model),
``balance`` (MILES and the baselines), ``train`` (the loop). Heavy packages (ray,
mlflow, transformers) are imported only where they are used, so ``import miles_tune``
stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
