"""MMPareto: a Pareto (min-norm) combination of the multimodal and unimodal gradients.

Paper: Wei & Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance",
ICML 2024. Official code: ``GeWu-Lab/MMPareto_ICML2024`` (``code/MMPareto.py``, the
two-vector solver in ``code/min_norm_solvers.py``). Semantics follow the official code; the
method acts in the :meth:`~miles_tune.balance.base.BalancingMethod.backward` hook, replacing
the step's single ``loss.backward()``:

1. Per modality m, the gradient of the (weighted) multimodal term g_mm and of m's unimodal
   term g_u on encoder m's parameters (its encoder and projection), each by its own backward
   pass; then the plain backward of the whole loss, which leaves every other parameter (the
   fusion and the heads) with its ordinary gradient, and encoder m with g_mm + g_u.
2. Over the whole encoder (all its parameters flattened): if cos(g_mm, g_u) > 0 the weights
   are ½, ½; otherwise the min-norm weights of the two gradients,
   α = ((g_u − g_mm)·g_u) / ‖g_mm − g_u‖², clipped to [0.001, 0.999] as the official solver
   does (:func:`min_norm_weight`).
3. h = 2(α·g_mm + (1 − α)·g_u), rescaled to at least the norm of the plain sum and enlarged
   by γ: grad = γ · max(‖g_mm + g_u‖, ‖h‖) · h / ‖h‖. The official code rescales each
   parameter tensor on its own (``rescale="per_tensor"``, the default); ``"per_encoder"``
   uses one norm for the whole encoder, which keeps the Pareto direction exact. γ multiplies
   the non-conflicting case too (then the gradient is γ·(g_mm + g_u)), as in the code. A
   zero h (a Pareto-stationary point) gives a zero gradient.

Readings chosen where the sources are silent or differ:

- BalanceBenchmark's MMPareto trainer accumulates every loss's gradient before it reads them
  (cos is always 1, so it is the plain sum with the encoders' gradients ×3): not followed.
- Loss weights other than 1 (G-Blend-style weights do not apply here; they are 1 by default):
  g_mm and g_u are the gradients of the *weighted* terms, so with ½, ½ the combination is the
  gradient of the weighted sum.
- More than two modalities: encoder m only receives L_mm and L_m, so the two-gradient rule
  applies per encoder unchanged (no iterative solver is needed). Multilabel: the rule only
  needs scalar losses, so it runs unchanged.
- The paper's method needs the unimodal losses (they are what it combines): ``aux_losses`` is
  always on.
- The loop's no-host-sync step is kept: α and the branch are computed on the device.

Stateless across steps: nothing to resume beyond the model and optimizer. Each epoch records
``mmpareto/conflict_<m>``, the fraction of steps in which encoder m's two gradients
conflicted (cos ≤ 0).

Hyper-parameters and default search ranges (``SEARCH_SPACE``): ``gamma`` in [1, 2]
(official: 1.5, hard-coded), ``rescale`` (per_tensor, per_encoder; not searched by default).
Cost: per step, one backward pass per loss term on the encoders plus the plain one.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from miles_tune.balance import register_method
from miles_tune.balance.base import BalancingMethod, EpochMeans, TrainStep
from miles_tune.errors import ConfigError
from miles_tune.records import MM

RESCALES = ("per_tensor", "per_encoder")
#: the official solver's bounds on the weight of the first gradient (``min_norm_solvers.py``)
WEIGHT_BOUNDS = (0.001, 0.999)


def min_norm_weight(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """The weight α on ``g1`` of the min-norm point α·g1 + (1 − α)·g2 of two flat gradients,
    as the official two-vector solver gives it: 0.999 when g1·g2 ≥ ‖g1‖², 0.001 when
    g1·g2 ≥ ‖g2‖², else (‖g2‖² − g1·g2) / ‖g1 − g2‖² (a 0-d tensor; no host sync)."""
    v11, v12, v22 = g1 @ g1, g1 @ g2, g2 @ g2
    lo, hi = WEIGHT_BOUNDS
    inner = (v22 - v12) / (v11 + v22 - 2 * v12).clamp_min(torch.finfo(g1.dtype).tiny)
    return torch.where(
        v12 >= v11, torch.full_like(v11, hi), torch.where(v12 >= v22, torch.full_like(v11, lo), inner)
    )


def pareto_weight(g_mm: torch.Tensor, g_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(α on g_mm, conflict): ½ when the two gradients agree (cos > 0), else the min-norm weight."""
    conflict = (g_mm @ g_u) <= 0  # cos ≤ 0 ⇔ the inner product ≤ 0
    return torch.where(conflict, min_norm_weight(g_mm, g_u), torch.full_like(g_mm[:1].sum(), 0.5)), conflict


def rescaled(h: torch.Tensor, plain: torch.Tensor, gamma: float) -> torch.Tensor:
    """γ · max(‖plain‖, ‖h‖) · h / ‖h‖, and 0 where h is 0 (no common descent direction)."""
    h_norm = h.norm()
    factor = torch.where(
        h_norm > 0, torch.maximum(plain.norm() / h_norm.clamp_min(1e-30), torch.ones_like(h_norm)), 0.0
    )
    return gamma * factor * h


@register_method("mmpareto")
class MMPareto(BalancingMethod):
    SEARCH_SPACE: ClassVar[dict[str, tuple[Any, ...]]] = {"gamma": ("uniform", 1.0, 2.0)}
    aux_losses = True

    def __init__(self, gamma: float = 1.5, rescale: str = "per_tensor") -> None:
        if not gamma > 0:
            raise ConfigError(f"gamma: must be > 0 (the gradient's enlargement), got {gamma}")
        if rescale not in RESCALES:
            raise ConfigError(f"rescale: must be one of {', '.join(RESCALES)}, got {rescale!r}")
        self.gamma = float(gamma)
        self.rescale = rescale
        self.conflicts = EpochMeans("mmpareto/conflict")

    def on_train_epoch_start(self, epoch: int) -> None:
        self.conflicts.reset()

    def backward(self, step: TrainStep) -> None:
        model = self.model
        encoders = {m: [p for p in model.modality_parameters(m) if p.requires_grad] for m in model.modalities}
        w = step.weights
        g_mm = self._grads(float(w[MM]) * step.terms[MM], [p for ps in encoders.values() for p in ps])
        g_u = {m: self._grads(float(w[m]) * step.terms[m], ps) for m, ps in encoders.items()}
        step.loss.backward()  # every parameter's plain gradient; encoder m: g_mm + g_u
        conflicts = []
        for m, params in encoders.items():
            plain = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
            mm = [g_mm[p] for p in params]
            uni = [g_u[m][p] for p in params]
            alpha, conflict = pareto_weight(
                torch.cat([g.flatten() for g in mm]), torch.cat([g.flatten() for g in uni])
            )
            conflicts.append(conflict)
            h = [2 * (alpha * a + (1 - alpha) * b) for a, b in zip(mm, uni, strict=True)]
            if self.rescale == "per_tensor":
                new = [rescaled(hp, g, self.gamma) for hp, g in zip(h, plain, strict=True)]
            else:
                flat_h = torch.cat([hp.flatten() for hp in h])
                flat_plain = torch.cat([g.flatten() for g in plain])
                scale = rescaled(flat_h, flat_plain, self.gamma).norm() / flat_h.norm().clamp_min(1e-30)
                new = [scale * hp for hp in h]
            for p, g in zip(params, new, strict=True):
                p.grad = g.detach().clone() if p.grad is None else p.grad.copy_(g)
        self.conflicts.add(torch.stack(conflicts))

    @staticmethod
    def _grads(
        term: torch.Tensor, params: list[torch.nn.Parameter]
    ) -> dict[torch.nn.Parameter, torch.Tensor]:
        """d term / d params (zeros for parameters the term does not reach), keeping the graph."""
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        return {p: torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)}

    def record_extra(self) -> dict[str, float]:
        return self.conflicts.record(self.model.modalities)
