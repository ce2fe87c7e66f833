"""InfoReg: regulating the information-sufficient modality in its prime learning window.

Paper: Huang, Wei, Yang & Hu, "Adaptive Unimodal Regulation for Balanced Multimodal
Information Acquisition", CVPR 2025. Official code: ``GeWu-Lab/InfoReg_CVPR2025``
(``main.py``; BalanceBenchmark has no InfoReg). Semantics follow the official code:

1. **Fisher trace** per epoch: over every batch, the squared batch gradient of each weight
   of an encoder's linear and convolutional layers, summed over the epoch; the epoch's trace
   T is the per-layer mean over elements, summed over the layers (not a true trace: the
   code's estimator, kept so that results match).
2. **Prime learning window**, at the start of epoch e: k = (T̄_now − T̄_before) / T̄_now, the
   relative growth of the moving average (``window`` epochs, the history padded with zeros
   before epoch 0) of the trace; regulation is on in epoch e when k > ``threshold`` (and in
   epoch 0). It can open again later: nothing is latched.
3. **Which modality**, per batch: s_m = Σ_i p_m(y_i | x_i), from the unimodal heads; the more
   confident modality is regulated with β = coef · exp(tanh(s_strong − s_weak)), the other
   not (a tie: neither).
4. **Regulation**, between backward and step: grad θ_m += β_m · (θ_m − θ_m^anchor) on every
   parameter of encoder m, with the anchor the encoder's weights at the start of the epoch:
   a proximal pull that slows the modality that is already learning well.

Readings chosen where the sources differ or are silent:

- The trace accumulates each batch's squared gradient *before* the proximal term is added
  (the code reads it after: the pull is not information about the data; θ ≈ anchor early in
  an epoch, so the difference is small).
- The window: the official code watches the audio encoder's trace alone (hard-coded); here
  the sum of every encoder's trace (the network's window).
- The coefficient: the official code uses 0.95 for audio and 0.1 for visual (CREMA-D's
  known dominant and weak modalities); here one ``coef`` (0.95) whichever modality is more
  confident, as the dominant modality is not known in advance on other data.
- Scores from the unimodal heads (the March 2025 version; the November 2025 version reads the
  fusion layer's slices). Loss: Eq. 3 (L_mm + Σ_m L_m, weights 1), as in the code.
- More than two modalities (not in the paper): every modality but the least confident gets
  β_m = coef · exp(tanh(s_m − min_j s_j)); for two this is the official rule.
- Multilabel (not in the paper): s_m = Σ_i mean_c p(correct side of class c), the mean
  probability the head gives each label's true value.
- No host sync per step: β and the trace stay on the device (one sync per epoch).

State for an exact resume: the per-epoch trace history (the anchor is the weights at the
start of an epoch, where a checkpoint is taken). Each epoch records ``inforeg/trace``,
``inforeg/window_k``, ``inforeg/active`` and ``inforeg/beta_<m>`` (β_m's mean over the steps).

Hyper-parameters and default search ranges (``SEARCH_SPACE``): ``coef`` log-uniform in
[0.1, 5] (official 0.95), ``threshold`` uniform in [0.01, 0.1] (official 0.05; March 2025:
0.04). ``window`` (10) is not searched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from miles_tune.balance import register_method
from miles_tune.balance.base import BalancingMethod, EpochEvaluation, EpochMeans
from miles_tune.errors import ConfigError
from miles_tune.models.joint import ModelOutput


def window_growth(history: Sequence[float], window: int = 10) -> float:
    """k: the relative growth of the ``window``-epoch moving average of the trace, the history
    padded with ``window`` zeros in front (1 before any epoch, 0 for an all-zero history)."""
    if not history:
        return 1.0
    padded = [0.0] * window + list(history)
    now, before = sum(padded[-window:]), sum(padded[-window - 1 : -1])
    return (now - before) / now if now > 0 else 0.0


def confidence(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """s_m: Σ_i p(y_i | x_i) (multilabel: Σ_i mean_c p(y_ic | x_i)), without gradient."""
    if task == "multilabel":
        p = torch.sigmoid(logits.float())
        return torch.where(labels > 0.5, p, 1 - p).mean(1).sum()
    return torch.softmax(logits.float(), 1).gather(1, labels.long().view(-1, 1)).sum()


def inforeg_coefficients(scores: torch.Tensor, coef: float) -> torch.Tensor:
    """β_m = coef · exp(tanh(s_m − min_j s_j)) for every modality but the least confident (0)."""
    weakest = scores.min()
    return torch.where(
        scores > weakest, coef * torch.exp(torch.tanh(scores - weakest)), torch.zeros_like(scores)
    )


def fisher_weights(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weights whose squared gradients make the trace: linear and convolutional layers'."""
    return [
        m.weight
        for m in module.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)) and m.weight.requires_grad
    ]


@register_method("inforeg")
class InfoReg(BalancingMethod):
    SEARCH_SPACE: ClassVar[dict[str, tuple[Any, ...]]] = {
        "coef": ("loguniform", 0.1, 5.0),
        "threshold": ("uniform", 0.01, 0.1),
    }

    def __init__(self, coef: float = 0.95, threshold: float = 0.05, window: int = 10) -> None:
        if not coef > 0:
            raise ConfigError(f"coef: must be > 0 (the regulation's strength), got {coef}")
        if not math.isfinite(threshold):
            raise ConfigError(f"threshold: must be a number, got {threshold}")
        if window < 1:
            raise ConfigError(f"window: must be ≥ 1 epoch, got {window}")
        self.coef = float(coef)
        self.threshold = float(threshold)
        self.window = int(window)
        self.history: list[float] = []  # the trace of every epoch so far
        self.growth = 1.0
        self.regulating = True
        self.anchor: dict[str, list[torch.Tensor]] = {}
        self.squares: list[torch.Tensor] = []  # per Fisher weight: Σ over the epoch's batches of g²
        self.beta = EpochMeans("inforeg/beta")

    @classmethod
    def example_args(cls, modalities: Sequence[str]) -> dict[str, Any]:
        return {"coef": 0.95}

    def attach(self, model, optimizer, context=None) -> None:  # noqa: ANN001
        super().attach(model, optimizer, context)
        self.encoder_params = {
            m: [p for p in model.modality_parameters(m) if p.requires_grad] for m in model.modalities
        }
        self.fisher = [
            p for m in model.modalities for mod in model.modality_modules(m) for p in fisher_weights(mod)
        ]

    def on_train_epoch_start(self, epoch: int) -> None:
        self.growth = window_growth(self.history, self.window)
        self.regulating = epoch == 0 or self.growth > self.threshold
        self.anchor = {m: [p.detach().clone() for p in ps] for m, ps in self.encoder_params.items()}
        self.squares = [torch.zeros_like(p) for p in self.fisher]
        self.beta.reset()

    @torch.no_grad()
    def on_after_backward(self, output: ModelOutput, labels: torch.Tensor, epoch: int, step: int) -> None:
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.fisher]
        torch._foreach_add_(self.squares, torch._foreach_mul(grads, grads))
        modalities = self.model.modalities
        task = self.context.task if self.context is not None else "multiclass"
        scores = torch.stack([confidence(output.unimodal[m], labels, task) for m in modalities])
        beta = inforeg_coefficients(scores, self.coef) if self.regulating else torch.zeros_like(scores)
        if self.regulating:
            for b, m in zip(beta, modalities, strict=True):
                params = [p for p in self.encoder_params[m] if p.grad is not None]
                anchors = [
                    a
                    for a, p in zip(self.anchor[m], self.encoder_params[m], strict=True)
                    if p.grad is not None
                ]
                pull = torch._foreach_sub([p.detach() for p in params], anchors)
                torch._foreach_add_([p.grad for p in params], torch._foreach_mul(pull, b))
        self.beta.add(beta)

    def on_epoch_end(self, evaluation: EpochEvaluation) -> None:
        if self.squares:
            trace = torch.stack([s.mean() for s in self.squares]).sum().item()
            self.history.append(float(trace))

    def record_extra(self) -> dict[str, float]:
        out = {
            "inforeg/trace": self.history[-1] if self.history else math.nan,
            "inforeg/window_k": self.growth,
            "inforeg/active": float(self.regulating),
        }
        return {**out, **self.beta.record(self.model.modalities)}

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history = [float(x) for x in state["history"]]
