"""A tiny in-memory multimodal dataset for loop and method tests: any modalities, either task."""

from __future__ import annotations

import torch

from miles_tune.data import EncoderSpec, MultimodalData, TensorSplit


def toy_data(
    modalities: tuple[str, ...], task: str, n: int = 48, classes: int = 4, hidden: int = 8
) -> MultimodalData:
    """Each modality is the label signal (one-hot or multi-hot) scaled by its rank, plus noise."""
    g = torch.Generator().manual_seed(0)

    def split() -> TensorSplit:
        if task == "multiclass":
            y = torch.randint(classes, (n,), generator=g)
            signal = torch.nn.functional.one_hot(y, classes).float()
        else:
            y = (torch.rand(n, classes, generator=g) < 0.3).long()
            signal = y.float()
        inputs = {
            m: signal * (i + 1) + torch.randn(n, classes, generator=g) for i, m in enumerate(modalities)
        }
        return TensorSplit(inputs, y)

    enc = EncoderSpec("mlp", {"in_dim": classes, "hidden_dims": (hidden,)})
    return MultimodalData(
        name="toy",
        modalities=modalities,
        task=task,  # type: ignore[arg-type]
        num_classes=classes,
        train=split(),
        val=split(),
        test=split(),
        encoders=dict.fromkeys(modalities, enc),
        default_metric="acc" if task == "multiclass" else "f1_micro",
    )
