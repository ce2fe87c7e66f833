"""OGM and OGM-GE: on-the-fly gradient modulation.

Paper: Peng, Wei, Deng, Wang & Hu, "Balanced Multimodal Learning via On-the-fly Gradient
Modulation", CVPR 2022. Semantics follow the authors' public code (methods.md §3.1):

1. Every training step, score each modality on the batch: s_m = Σ_i p_m(y_i | x_i), the
   softmax probability of the true class under modality m's logits. By default those
   logits are the modality's *slice of the fusion layer*, W_m z_m + b/M
   (``fusion.modality_logits``; for feature-level ``sum`` fusion W z_m + b/M), as in the
   official code; ``score_source="heads"`` uses the separate unimodal heads instead.
2. Coefficients (:func:`ogm_coefficients`): with ρ_m = s_m / min_j s_j, every modality
   with ρ_m > 1 gets k_m = 1 − tanh(α·ρ_m); the others keep k = 1. For two modalities this
   is the official rule (the stronger one is damped by 1 − tanh(α·s_strong/s_weak));
   with a tie the official code damps the *first* modality (ρ = 1), and so does this one.
   More than two modalities: BalanceMM's generalisation (divide by the minimum score).
3. Between ``loss.backward()`` and ``optimizer.step()``, inside the modulation window
   ``start_epoch ≤ epoch ≤ end_epoch`` (inclusive, as the official code), each selected
   encoder gradient g of modality m becomes k_m·g (OGM) or k_m·g + ε with
   ε ~ N(0, (std(g) + 1e-8)²) element-wise, std of the unscaled g (OGM-GE; the noise is
   added to every modality, including those with k = 1).

Readings chosen where the sources differ or are silent:

- Which gradients (``grad_dims``): the official code modulates 4-D gradients only (conv
  weights). With MLP encoders (the default synthetic vector form) that is *nothing*, so
  OGM would silently equal vanilla. The default is therefore BalanceMM's reading,
  ``"all-non-1d"`` (every encoder weight with ≥ 2 dimensions: conv and linear weights, not
  biases or BatchNorm). ``"conv"`` is the official rule; it is refused at configuration
  time when an encoder has no 4-D weight, instead of doing nothing.
- Loss: the official code trains on the fused loss only, so ``aux_losses=False`` by
  default (unimodal heads are probes on detached features); ``aux_losses=True`` adds
  Eq. 3's unimodal terms, whose encoder gradients are then modulated too.
- Window: ``end_epoch=None`` means the first half, ``epochs // 2`` (official: 0 to 50 of
  100). It is resolved from the run's configured epochs, so changing ``epochs`` on resume
  moves it; give ``end_epoch`` explicitly for a window independent of the run length.
- Multilabel tasks (not covered by OGM; the MILES paper still reports it on MM-IMDb):
  s_m = Σ_i mean_c p_m(y_ic | x_i) with sigmoid probabilities. A reconstruction.
- Optimizer: the official code uses SGD (lr 1e-3, momentum 0.9). Under Adam, the loop's
  default, a gradient scale that stays constant is normalised away by the second-moment
  estimate; only its step-to-step changes (and GE's noise) act. Run with
  ``optimizer="sgd"`` for the original setting.

Hyper-parameters and default search ranges (``SEARCH_SPACE``): ``alpha`` in [0.1, 1.0]
(official default 0.1; README: 0.1 for VGGSound, 0.8 for CREMA-D; BalanceMM 0.3),
``end_epoch`` (official: half the epochs; not searched by default), ``start_epoch`` (0),
``score_source``, ``grad_dims``, ``aux_losses``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from miles_tune.balance import register_method
from miles_tune.balance.base import BalancingMethod, RunContext, check_epoch_window, in_epoch_window
from miles_tune.errors import ConfigError
from miles_tune.models.joint import ModelOutput

GRAD_DIMS = ("all-non-1d", "conv")
SCORE_SOURCES = ("fusion", "heads")


def ogm_coefficients(scores: Mapping[str, float], alpha: float) -> dict[str, float]:
    """k_m = 1 − tanh(α·s_m/min_j s_j) for every m scoring above the minimum, else 1.

    All scores equal: the first modality gets 1 − tanh(α), as the official two-modality code
    does at ρ = 1. A zero minimum makes every other ratio infinite (k = 0).
    """
    if len(scores) < 2:
        raise ValueError(f"OGM needs at least two modalities, got {list(scores)}")
    low = min(scores.values())
    out = dict.fromkeys(scores, 1.0)
    above = [m for m, s in scores.items() if s > low]
    if not above:
        first = next(iter(scores))
        out[first] = 1.0 - math.tanh(alpha)
        return out
    for m in above:
        ratio = math.inf if low <= 0 else scores[m] / low
        out[m] = 1.0 - math.tanh(alpha * ratio)
    return out


def batch_score(logits: torch.Tensor, labels: torch.Tensor, task: str) -> float:
    """Σ_i p(y_i | x_i): softmax of the true class; multilabel: mean over classes of the
    sigmoid probability given to each true label value."""
    if task == "multiclass":
        return logits.softmax(-1).gather(1, labels.long().view(-1, 1)).sum().item()
    p = logits.sigmoid()
    return torch.where(labels.bool(), p, 1 - p).mean(1).sum().item()


def modulate_(grad: torch.Tensor, k: float, noise: bool) -> None:
    """In place: g ← k·g (OGM) or k·g + N(0, (std(g) + 1e-8)²) with the unscaled g's std (GE)."""
    if noise:
        std = grad.std().item() if grad.numel() > 1 else 0.0
        eps = torch.randn_like(grad) * (std + 1e-8)
        grad.mul_(k).add_(eps)
    else:
        grad.mul_(k)


def check_ogm_args(alpha: float, start_epoch: int, end_epoch: int | None, score_source: str, grad_dims: str):
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ConfigError(f"ogm: alpha must be a positive number, got {alpha!r}")
    check_epoch_window("ogm", start_epoch, end_epoch)
    if score_source not in SCORE_SOURCES:
        raise ConfigError(f"ogm: score_source must be one of {SCORE_SOURCES}, got {score_source!r}")
    if grad_dims not in GRAD_DIMS:
        raise ConfigError(f"ogm: grad_dims must be one of {GRAD_DIMS}, got {grad_dims!r}")


@register_method("ogm")
class OGM(BalancingMethod):
    """On-the-fly gradient modulation (see the module docstring for every reading)."""

    name = "ogm"
    gaussian_noise = False
    SEARCH_SPACE = {
        "alpha": ("uniform", 0.1, 1.0),
        "score_source": ("choice", ("fusion", "heads")),
        "grad_dims": ("choice", ("all-non-1d", "conv")),
        "aux_losses": ("choice", (False, True)),
    }

    def __init__(
        self,
        alpha: float = 0.1,
        start_epoch: int = 0,
        end_epoch: int | None = None,
        score_source: str = "fusion",
        grad_dims: str = "all-non-1d",
        aux_losses: bool = False,
    ) -> None:
        check_ogm_args(alpha, start_epoch, end_epoch, score_source, grad_dims)
        self.alpha = float(alpha)
        self.start_epoch, self.end_epoch = start_epoch, end_epoch
        self.score_source, self.grad_dims = score_source, grad_dims
        self.aux_losses = bool(aux_losses)
        self._sums: dict[str, float] = {}
        self._steps = 0

    @classmethod
    def example_args(cls, modalities: Sequence[str]) -> dict[str, Any]:
        return {"alpha": 0.5}

    def attach(self, model, optimizer, context: RunContext | None = None) -> None:  # type: ignore[no-untyped-def]
        super().attach(model, optimizer, context)
        self.task = context.task if context is not None else "multiclass"
        self.window_end = self.end_epoch
        if self.window_end is None and context is not None:
            self.window_end = context.epochs // 2
        keep = (lambda p: p.dim() == 4) if self.grad_dims == "conv" else (lambda p: p.dim() > 1)
        self.params = {m: [p for p in model.modality_parameters(m) if keep(p)] for m in model.modalities}
        empty = [m for m, ps in self.params.items() if not ps]
        if empty:
            what = "4-D (conv) weight" if self.grad_dims == "conv" else "weight with 2 or more dimensions"
            raise ConfigError(
                f"{self.name}: grad_dims={self.grad_dims!r} finds no {what} in the encoder of {empty}, "
                "so it would modulate nothing; use grad_dims='all-non-1d' (BalanceMM's reading)"
            )

    def in_window(self, epoch: int) -> bool:
        return in_epoch_window(epoch, self.start_epoch, self.window_end)

    def scores(self, output: ModelOutput, labels: torch.Tensor) -> dict[str, float]:
        modalities = self.model.modalities
        with torch.no_grad():
            if self.score_source == "fusion":
                logits = self.model.fusion.modality_logits([output.features[m] for m in modalities])
            else:
                logits = [output.unimodal[m] for m in modalities]
            return {m: batch_score(lg, labels, self.task) for m, lg in zip(modalities, logits, strict=True)}

    def on_train_epoch_start(self, epoch: int) -> None:
        self._sums = dict.fromkeys(self.model.modalities, 0.0)
        self._steps = 0

    def on_after_backward(self, output: ModelOutput, labels: torch.Tensor, epoch: int, step: int) -> None:
        if not self.in_window(epoch):
            return
        k = ogm_coefficients(self.scores(output, labels), self.alpha)
        for m, params in self.params.items():
            for p in params:
                if p.grad is not None:
                    modulate_(p.grad, k[m], self.gaussian_noise)
            self._sums[m] = self._sums.get(m, 0.0) + k[m]
        self._steps += 1

    def record_extra(self) -> dict[str, float]:
        """Mean coefficient per modality over the epoch's steps (1 outside the window)."""
        steps = max(self._steps, 1)
        return {
            f"{self.name}/coeff/{m}": (self._sums.get(m, 0.0) / steps if self._steps else 1.0)
            for m in self.model.modalities
        }


@register_method("ogm-ge")
class OGMGE(OGM):
    """OGM with generalisation enhancement: Gaussian noise scaled by each gradient's own spread.

    The noise comes from torch's global generator, whose state the loop checkpoints, so a
    resumed run draws the same noise as an uninterrupted one.
    """

    name = "ogm-ge"
    gaussian_noise = True
