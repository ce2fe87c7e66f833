"""G-Blend: gradient blending by the overfitting-to-generalisation ratio.

Paper: Wang, Tran & Feiszli, "What Makes Training Multi-modal Classification Networks
Hard?", CVPR 2020. The original is in Caffe2; the formulas below agree with two PyTorch
ports, MultiBench (``training_structures/gradient_blend.py``) and BalanceMM
(``GBlending_trainer.py``) (methods.md §3.2).

Loss: L_blend = Σ_k w_k·L_k over the terms k = each modality's unimodal head and the fused
head (so the unimodal heads shape their encoders). The weights come from short *side
trainings* of copies of the model, one per term, each trained on its own loss L_k alone for
n epochs from the current state with a fresh optimizer of the run's kind and base
learning rate: a modality's copy trains its encoder and head; the fused copy trains every
encoder and the fusion head. With the train loss L^T and the held-out loss L^V of head k
measured (eval mode) before (N) and after (N+n) the side training:

- overfitting O = L^V − L^T; ``delta=True`` (the paper's form, default; BalanceMM):
  ΔG_k = L^V_N − L^V_{N+n} and ΔO_k = O_{N+n} − O_N; ``delta=False`` (MultiBench's
  default): ΔG_k = L^V_{N+n} and ΔO_k = O_{N+n};
- w_k ∝ ΔG_k / ΔO_k², normalised so that Σ_k w_k = 1 (:func:`gblend_weights`).

Readings chosen where the sources leave room:

- ``mode="online"`` (default): split training into super-epochs of ``super_epoch`` epochs;
  at the start of each, re-estimate the weights on copies of the current model, then train
  the real model on L_blend. ``mode="offline"``: estimate once, from the initial model,
  with ``super_epoch``-epoch side trainings, then keep the weights for the whole run.
- Held-out set (``holdout``): ``"val"`` (default: the validation split, which the loop
  also uses for model selection), or a fraction of the training set, which the loop then
  sets aside from the start (``train_holdout``), so the real model never trains on it
  (MultiBench: the first 8 % of train; here a seeded random 8 % for ``holdout=0.08``).
- Degenerate denominators: ``delta=False`` clamps O to at least ``eps`` (MultiBench's
  clamp of a negative O); ``delta=True`` uses max(ΔO², eps²).
- Sign (``sign``): ``"abs"`` (both ports) weights |ΔG/ΔO²|, so a branch whose held-out
  loss got *worse* still gets weight; ``"clip"`` gives it 0 (the paper's intent as read
  here). If every raw weight is 0, the weights fall back to uniform (recorded).
- Not done: MultiBench's final fine-tuning of the fused head on frozen features, and
  BalanceMM's zeroed-modality copies through the fusion layer (the separate unimodal
  heads are the paper's C_1..C_M, so they are used instead).
- Each side training runs the whole model's forward (the loop's own training pass), so
  its cost is that of full epochs.

Determinism: the side trainings draw from their own random stream (torch's generator is
forked and seeded from the run seed, the epoch and the term) and shuffle with their own
seeds, so the real run's randomness is untouched and a resumed run estimates exactly the
same weights. Cost: (M+1)·n extra training epochs plus 2(M+1)+2 evaluations of the train
and held-out splits per estimate; each epoch record carries ``gblend/extra_seconds``,
``gblend/extra_epochs`` (side-training passes at the start of that epoch) and their running
totals, and ``gblend/weight/<term>``.

Works for any number of modalities and both fusions.

Hyper-parameters and default search ranges (``SEARCH_SPACE``): ``super_epoch`` in 5..20
(default 10, as BalanceMM; MultiBench 10-20), ``mode`` in {online, offline}, ``delta``,
``sign``; ``holdout`` and ``eps`` (1e-4) are fixed by default.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from miles_tune.balance import register_method
from miles_tune.balance.base import BalancingMethod, RunContext
from miles_tune.errors import ConfigError
from miles_tune.records import MM

MODES = ("online", "offline")
SIGNS = ("abs", "clip")


@dataclass(frozen=True)
class LossCurve:
    """Head k's train and held-out losses before (N) and after (N+n) its side training."""

    train_start: float
    val_start: float
    train_end: float
    val_end: float


def generalization_overfitting(curve: LossCurve, delta: bool = True) -> tuple[float, float]:
    """(ΔG, ΔO) of one side training; ``delta=False`` gives MultiBench's (L^V_{N+n}, O_{N+n})."""
    o_start = curve.val_start - curve.train_start
    o_end = curve.val_end - curve.train_end
    if delta:
        return curve.val_start - curve.val_end, o_end - o_start
    return curve.val_end, o_end


def gblend_weights(
    curves: Mapping[str, LossCurve], delta: bool = True, eps: float = 1e-4, sign: str = "abs"
) -> tuple[dict[str, float], bool]:
    """w_k ∝ ΔG_k / ΔO_k², normalised to sum to 1; returns (weights, fell back to uniform)."""
    if sign not in SIGNS:
        raise ConfigError(f"gblend: sign must be one of {SIGNS}, got {sign!r}")
    raw = {}
    for k, curve in curves.items():
        g, o = generalization_overfitting(curve, delta)
        o2 = max(o, eps) ** 2 if not delta else max(o * o, eps * eps)
        r = g / o2
        raw[k] = abs(r) if sign == "abs" else max(r, 0.0)
    total = sum(raw.values())
    if not math.isfinite(total) or total <= 0:
        return dict.fromkeys(curves, 1.0 / len(curves)), True
    return {k: v / total for k, v in raw.items()}, False


@register_method("gblend")
class GBlend(BalancingMethod):
    """Gradient blending (see the module docstring for every reading)."""

    name = "gblend"
    SEARCH_SPACE = {
        "super_epoch": ("randint", 5, 20),
        "mode": ("choice", ("online", "offline")),
        "delta": ("choice", (True, False)),
        "sign": ("choice", ("abs", "clip")),
    }

    def __init__(
        self,
        mode: str = "online",
        super_epoch: int = 10,
        holdout: str | float = "val",
        delta: bool = True,
        eps: float = 1e-4,
        sign: str = "abs",
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"gblend: mode must be one of {MODES}, got {mode!r}")
        if isinstance(super_epoch, bool) or not isinstance(super_epoch, int) or super_epoch < 1:
            raise ConfigError(f"gblend: super_epoch must be a positive integer, got {super_epoch!r}")
        if holdout != "val" and not (isinstance(holdout, float) and 0 < holdout < 1):
            raise ConfigError(
                f"gblend: holdout must be 'val' or a fraction in (0, 1) of train, got {holdout!r}"
            )
        if not isinstance(eps, (int, float)) or not eps > 0:
            raise ConfigError(f"gblend: eps must be > 0, got {eps!r}")
        if sign not in SIGNS:
            raise ConfigError(f"gblend: sign must be one of {SIGNS}, got {sign!r}")
        self.mode, self.super_epoch, self.holdout = mode, super_epoch, holdout
        self.delta, self.eps, self.sign = bool(delta), float(eps), sign
        self.train_holdout = 0.0 if holdout == "val" else float(holdout)
        self.holdout_split = "val" if holdout == "val" else "holdout"

    @classmethod
    def example_args(cls, modalities: Sequence[str]) -> dict[str, Any]:
        return {"super_epoch": 1}

    def attach(self, model, optimizer, context: RunContext | None = None) -> None:  # type: ignore[no-untyped-def]
        if context is None:
            raise ValueError("gblend needs the loop's RunContext (data and side-training helpers)")
        super().attach(model, optimizer, context)
        self.terms = (*model.modalities, MM)
        self.weights = dict.fromkeys(self.terms, 1.0)  # Eq. 3 until the first estimate
        self.estimated = False
        self.fallback = False
        self.last: dict[str, tuple[float, float]] = {}  # term -> (ΔG, ΔO) of the last estimate
        self.extra_seconds = self.extra_epochs = 0.0
        self.total_seconds = self.total_epochs = 0.0

    def loss_weights(self) -> dict[str, float]:
        return dict(self.weights)

    def side_seed(self, epoch: int, term_index: int) -> int:
        ctx = self.context
        assert ctx is not None
        return (ctx.seed + 1) * 7_919_993 + epoch * 10_007 + term_index * 101

    def branch_parameters(self, model: torch.nn.Module, term: str) -> list[torch.nn.Parameter]:
        if term == MM:
            params = [p for m in model.modalities for p in model.modality_parameters(m)]
            return params + list(model.fusion.parameters())
        return list(model.modality_parameters(term)) + list(model.heads[term].parameters())

    def side_curves(self, epoch: int) -> dict[str, LossCurve]:
        """Train one copy per term on that term's loss alone; its head's losses before and after."""
        ctx = self.context
        assert ctx is not None
        held = self.holdout_split
        devices = [ctx.device] if ctx.device.type == "cuda" else []
        curves = {}
        with torch.random.fork_rng(devices=devices):
            start = copy.deepcopy(self.model)
            before = {s: ctx.evaluate(start, s) for s in ("train", held)}
            for i, term in enumerate(self.terms):
                torch.manual_seed(self.side_seed(epoch, i))
                side = copy.deepcopy(self.model)
                optimizer = ctx.make_optimizer([{"params": self.branch_parameters(side, term), "lr": ctx.lr}])
                weights = dict.fromkeys(self.terms, 0.0)
                weights[term] = 1.0
                for j in range(self.super_epoch):
                    ctx.train_epoch(
                        side,
                        optimizer,
                        weights,
                        seed=self.side_seed(epoch, i) + j,
                        detach_unimodal=term == MM,
                    )
                after = {s: ctx.evaluate(side, s) for s in ("train", held)}
                curves[term] = LossCurve(
                    before["train"][term]["loss"],
                    before[held][term]["loss"],
                    after["train"][term]["loss"],
                    after[held][term]["loss"],
                )
        return curves

    def on_train_epoch_start(self, epoch: int) -> None:
        self.extra_seconds = self.extra_epochs = 0.0
        due = epoch % self.super_epoch == 0 if self.mode == "online" else not self.estimated
        if not due:
            return
        started = time.perf_counter()
        curves = self.side_curves(epoch)
        self.weights, self.fallback = gblend_weights(curves, self.delta, self.eps, self.sign)
        self.last = {k: generalization_overfitting(c, self.delta) for k, c in curves.items()}
        self.estimated = True
        self.extra_seconds = time.perf_counter() - started
        self.extra_epochs = float(len(self.terms) * self.super_epoch)
        self.total_seconds += self.extra_seconds
        self.total_epochs += self.extra_epochs

    def record_extra(self) -> dict[str, float]:
        out = {f"gblend/weight/{k}": w for k, w in self.weights.items()}
        for k, (g, o) in self.last.items():
            out[f"gblend/dG/{k}"], out[f"gblend/dO/{k}"] = g, o
        out.update(
            {
                "gblend/fallback": float(self.fallback),
                "gblend/extra_seconds": self.extra_seconds,
                "gblend/extra_epochs": self.extra_epochs,
                "gblend/extra_seconds_total": self.total_seconds,
                "gblend/extra_epochs_total": self.total_epochs,
            }
        )
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": dict(self.weights),
            "estimated": self.estimated,
            "fallback": self.fallback,
            "last": {k: list(v) for k, v in self.last.items()},
            "total_seconds": self.total_seconds,
            "total_epochs": self.total_epochs,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.weights = {k: float(state["weights"][k]) for k in self.terms}
        self.estimated, self.fallback = bool(state["estimated"]), bool(state["fallback"])
        self.last = {k: (float(v[0]), float(v[1])) for k, v in state["last"].items()}
        self.total_seconds, self.total_epochs = float(state["total_seconds"]), float(state["total_epochs"])
