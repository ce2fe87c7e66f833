"""AGM: adaptive gradient modulation from Shapley mono-modal responses.

Paper: Li, Li, Hu, Wang & Cheng, "Boosting Multi-modal Model Performance with Adaptive
Gradient Modulation", ICCV 2023. Official code: ``lihongcs/AGM`` (read in its copy
``Lingy12/AGM_ICCV2023``: ``run/CREMAD_main.py``, ``model/CREMAD_net.py``; three modalities in
``model/URFunny_net.py``); also BalanceBenchmark's ``AGM_trainer.py``. Per training step:

1. **Mono-modal responses** φ_m: the Shapley value of modality m in the fused logits, with the
   value of a coalition S the fused logits with every modality outside S dropped, and the
   empty coalition worth 0 (the paper's Eq. 1 sums over S ≠ ∅):
   φ_m = Σ_{S ⊆ M∖{m}} |S|!(M−|S|−1)!/M! · (v(S ∪ {m}) − v(S)). Σ_m φ_m is the fused logits.
2. **Score** s_m: the mean cross-entropy of φ_m against the labels, each sample's at most
   −log 1e-8 (the official clamp). Lower is stronger.
3. **Ratio** r_m = exp(M/(M−1)·(s̄ − s_m)) (s̄ the mean over modalities), and the same on
   the running means S_m of the scores, r̃_m; the coefficient is
   κ_m = exp(α · min(r̃_m − r_m, 10)): a modality doing better than its own history is
   slowed down, one doing worse is sped up. S_m is the mean of s_m over every step so far
   (not an EMA, never reset), updated after κ is computed, as in the code.
4. **Modulation**, in the :meth:`~miles_tune.balance.base.BalancingMethod.backward` hook: the
   gradient of the multimodal loss reaching each φ_m is scaled by κ_m (the official code's
   backward hooks on the responses). With the fused loss's gradient g at the logits, the step
   back-propagates Σ_m κ_m·⟨g, φ_m⟩ instead of the multimodal term, plus every other loss
   term unchanged: for the linear fusions, encoder m and its fusion weights get κ_m times
   their gradient, the fusion bias the mean of the κ_m.

Readings chosen where the sources differ or are silent:

- **Masking at the features, not the inputs.** The official code zeroes a modality's raw input
  and runs the whole network again (2^M − 1 extra forward passes, BatchNorm in eval mode).
  Here a coalition drops modalities with :meth:`JointFusionModel.fuse_without` (z_m := 0), the
  same drop as the missing-modality metrics: no encoder runs again, and for the affine fusions
  φ_m is exactly modality m's share of the fused logits, W_m z_m + b/M.
- BalanceBenchmark's trainer flips the ratio's sign (it swaps the κ of two modalities) and
  leaves out the single-modality Shapley term: the official code is followed.
- Window: the maintainers' runs modulated throughout (``lihongcs/AGM`` issue #3), so
  ``end_epoch=None`` means every epoch; the scores and running means are updated every step,
  inside the window or not, as in the code.
- Loss: the official code trains on the fused loss only, so ``aux_losses=False`` by default
  (unimodal heads are probes); ``aux_losses=True`` adds Eq. 3's unimodal terms, unscaled.
- Not included: the official training script's conditional gradient clipping (at norm 1.0
  when a fusion weight's gradient leaves [−1, 1]), which is not part of the method.
- Multilabel (not in the paper): s_m is the mean binary cross-entropy of φ_m over samples
  and classes, each element clamped alike. Its scale differs from the multiclass score, so
  α's range may need a wider search.
- No host sync per step: κ and the running means stay on the device.

State for an exact resume: the running means S_m and the step count. Each epoch records
``agm/kappa_<m>``, the mean κ_m over its steps (1 outside the window).

Hyper-parameters and default search ranges (``SEARCH_SPACE``): ``alpha`` log-uniform in
[0.05, 3] (official default 1.0; the maintainers used 1.5 on CREMA-D, 2.5 on AV-MNIST;
BalanceBenchmark 0.1), ``aux_losses``. ``start_epoch``, ``end_epoch`` and ``max_exponent``
(10, the CREMA-D script's cap) are not searched.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from miles_tune.balance import register_method
from miles_tune.balance.base import (
    BalancingMethod,
    EpochMeans,
    TrainStep,
    check_epoch_window,
    in_epoch_window,
)
from miles_tune.errors import ConfigError
from miles_tune.models.joint import JointFusionModel
from miles_tune.records import MM

#: the official per-sample score's ceiling: −log(1e-8)
MAX_SCORE = -math.log(1e-8)


def shapley_responses(
    model: JointFusionModel, features: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """φ_m for every modality: the Shapley value of m in the fused logits, coalitions valued by
    :meth:`JointFusionModel.fuse_without` (the modalities outside them dropped) and the empty
    coalition worth 0. Differentiable in the features and the fusion's weights."""
    modalities = list(model.modalities)
    n = len(modalities)
    value: dict[frozenset[str], torch.Tensor | float] = {frozenset(): 0.0}
    for size in range(1, n + 1):
        for members in itertools.combinations(modalities, size):
            absent = [m for m in modalities if m not in members]
            value[frozenset(members)] = model.fuse_without(features, absent)
    out = {}
    for m in modalities:
        others = [o for o in modalities if o != m]
        total: torch.Tensor | float = 0.0
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for members in itertools.combinations(others, size):
                s = frozenset(members)
                total = total + weight * (value[s | {m}] - value[s])
        out[m] = total
    return out


def response_score(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """s_m: the mean cross-entropy of a response, each sample's (multilabel: each element's) at
    most −log 1e-8."""
    if task == "multilabel":
        each = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    else:
        each = -F.log_softmax(logits.float(), dim=1).gather(1, labels.long().view(-1, 1)).squeeze(1)
    return each.clamp(max=MAX_SCORE).mean()


def agm_coefficients(
    scores: torch.Tensor, running: torch.Tensor, alpha: float, max_exponent: float = 10.0
) -> torch.Tensor:
    """κ_m = exp(α·min(r̃_m − r_m, max_exponent)), with r_m = exp(M/(M−1)·(s̄ − s_m)) from this
    step's scores and r̃_m the same from the running means (both (M,) tensors)."""
    m = scores.numel()
    ratio = torch.exp(m / (m - 1) * (scores.mean() - scores))
    target = torch.exp(m / (m - 1) * (running.mean() - running))
    return torch.exp(alpha * (target - ratio).clamp(max=max_exponent))


@register_method("agm")
class AGM(BalancingMethod):
    SEARCH_SPACE: ClassVar[dict[str, tuple[Any, ...]]] = {
        "alpha": ("loguniform", 0.05, 3.0),
        "aux_losses": ("choice", (False, True)),
    }

    def __init__(
        self,
        alpha: float = 1.0,
        start_epoch: int = 0,
        end_epoch: int | None = None,
        max_exponent: float = 10.0,
        aux_losses: bool = False,
    ) -> None:
        if not alpha > 0:
            raise ConfigError(f"alpha: must be > 0 (the modulation's strength), got {alpha}")
        check_epoch_window("agm", start_epoch, end_epoch)
        if not max_exponent > 0:
            raise ConfigError(f"max_exponent: must be > 0, got {max_exponent}")
        self.alpha = float(alpha)
        self.start_epoch = int(start_epoch)
        self.end_epoch = end_epoch
        self.max_exponent = float(max_exponent)
        self.aux_losses = bool(aux_losses)
        self.running: torch.Tensor | None = None  # S_m, on the device once training starts
        self.seen = 0  # steps so far (t in the official code)
        self.kappa = EpochMeans("agm/kappa")

    @classmethod
    def example_args(cls, modalities: Sequence[str]) -> dict[str, Any]:
        return {"alpha": 1.0}

    def on_train_epoch_start(self, epoch: int) -> None:
        self.kappa.reset()

    def backward(self, step: TrainStep) -> None:
        model, out = self.model, step.output
        task = self.context.task if self.context is not None else "multiclass"
        with torch.no_grad():
            phi = shapley_responses(model, {m: z.detach() for m, z in out.features.items()})
            scores = torch.stack([response_score(phi[m], step.labels, task) for m in model.modalities])
            if self.running is None:
                self.running = torch.zeros_like(scores)
            kappa = agm_coefficients(scores, self.running, self.alpha, self.max_exponent)
            self.seen += 1
            self.running = self.running * ((self.seen - 1) / self.seen) + scores / self.seen
        if (
            not in_epoch_window(step.epoch, self.start_epoch, self.end_epoch)
            or float(step.weights[MM]) == 0.0
        ):
            kappa = torch.ones_like(kappa)
            step.loss.backward()
        else:
            mm = float(step.weights[MM]) * step.terms[MM]
            (g,) = torch.autograd.grad(mm, out.logits, retain_graph=True)
            responses = shapley_responses(model, out.features)  # with the graph: Σ_m φ_m = logits
            modulated = sum(
                k * (g * responses[m]).sum() for k, m in zip(kappa, model.modalities, strict=True)
            )
            others = [
                float(step.weights[m]) * step.terms[m] for m in model.modalities if step.weights[m] != 0.0
            ]
            sum([modulated, *others, *step.extra.values()]).backward()
        self.kappa.add(kappa)

    def record_extra(self) -> dict[str, float]:
        return self.kappa.record(self.model.modalities)

    def state_dict(self) -> dict[str, Any]:
        running = None if self.running is None else self.running.detach().cpu()
        return {"running": running, "seen": self.seen}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        running = state["running"]
        device = next(self.model.parameters()).device
        self.running = None if running is None else running.to(device)
        self.seen = int(state["seen"])
