"""MSES: modality-specific early stopping.

Paper: Fujimori, Endo, Kawamura & Ohsuga, "Modality-Specific Learning Rate Control for
Multimodal Classification", ACPR 2019 (called "MSSES" in the MILES paper's tables). No
public code; the abstract says the model "simultaneously learns modality-specific
classifiers as well as a multimodal classifier, to detect overfitting in each modality and
carry out early stopping separately", and the MILES paper that "training continues until
all parts of the network have converged". Everything below is a reconstruction
(methods.md §3.3):

- The model and loss are MILES's (Eq. 3: L_mm + Σ_m L_m, one global learning rate), so the
  unimodal heads are real classifiers whose validation scores can show each branch's
  convergence.
- Parts: one branch per modality (its encoder, projection and unimodal head) and the fused
  head. After every epoch each part's validation criterion is checked: the run's metric
  M on that part's head (``monitor="metric"``, higher is better), or the head's loss
  (``monitor="loss"``, lower is better); an improvement must exceed ``min_delta``.
- A branch whose criterion has not improved for ``patience`` consecutive epochs is frozen
  from the next epoch on: the learning rate of its encoder group and of its head's group
  is set to 0 (with Adam, AdamW or SGD that leaves the weights exactly unchanged), and its
  modules are put in eval mode, so BatchNorm statistics (and dropout) stop too. For that,
  MSES gives each unimodal head a param group of its own (``head_<m>``), unless
  ``heads_with_encoders`` already puts it with its encoder.
- ``restore_best=True`` reloads a branch's weights of its best epoch when it freezes (the
  paper does not say whether it did; default off).
- The fused head keeps training while any branch trains. The run stops (``should_stop``)
  once every branch is frozen and the fused head's criterion has also gone ``patience``
  epochs without improving: "every part has converged".
- Model selection is the loop's: the best validation multimodal metric.

Works for any number of modalities and both fusions.

Hyper-parameters and default search ranges (``SEARCH_SPACE``): ``patience`` in 3..10
(default 5), ``monitor`` in {metric, loss}, ``min_delta`` (0; not searched by default),
``restore_best`` (False).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from miles_tune.balance import register_method
from miles_tune.balance.base import (
    BalancingMethod,
    EpochEvaluation,
    RunContext,
    branch_groups,
    default_param_groups,
)
from miles_tune.errors import ConfigError
from miles_tune.records import MM

MONITORS = ("metric", "loss")


class Patience:
    """Best value and epochs-without-improvement per key (early-stopping bookkeeping)."""

    def __init__(self, higher_is_better: bool = True, min_delta: float = 0.0) -> None:
        self.sign = 1.0 if higher_is_better else -1.0
        self.min_delta = float(min_delta)
        self.best: dict[str, float] = {}
        self.wait: dict[str, int] = {}

    def update(self, key: str, value: float) -> bool:
        """Record one epoch's value; True if it improved on the best by more than ``min_delta``."""
        best = self.best.get(key)
        if best is None or self.sign * (value - best) > self.min_delta:
            self.best[key], self.wait[key] = float(value), 0
            return True
        self.wait[key] = self.wait.get(key, 0) + 1
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best), "wait": dict(self.wait)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = {k: float(v) for k, v in state["best"].items()}
        self.wait = {k: int(v) for k, v in state["wait"].items()}


@register_method("mses")
class MSES(BalancingMethod):
    """Per-branch early stopping on the validation criterion (see the module docstring)."""

    name = "mses"
    SEARCH_SPACE = {"patience": ("randint", 3, 10), "monitor": ("choice", ("metric", "loss"))}

    def __init__(
        self, patience: int = 5, monitor: str = "metric", min_delta: float = 0.0, restore_best: bool = False
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ConfigError(f"mses: patience must be a positive integer, got {patience!r}")
        if monitor not in MONITORS:
            raise ConfigError(f"mses: monitor must be one of {MONITORS}, got {monitor!r}")
        if not isinstance(min_delta, (int, float)) or not math.isfinite(min_delta) or min_delta < 0:
            raise ConfigError(f"mses: min_delta must be a finite number >= 0, got {min_delta!r}")
        self.patience, self.monitor = patience, monitor
        self.min_delta, self.restore_best = float(min_delta), bool(restore_best)
        self.tracker = Patience(higher_is_better=monitor == "metric", min_delta=min_delta)
        self.frozen_at: dict[str, int] = {}  # modality -> last epoch it trained
        self.best_state: dict[str, dict[str, torch.Tensor]] = {}
        self._stop = False

    @classmethod
    def example_args(cls, modalities: Sequence[str]) -> dict[str, Any]:
        return {"patience": 1}

    def param_groups(self, model, lr: float, heads_with_encoders: bool = False) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
        return default_param_groups(model, lr, heads_with_encoders, split_heads=True)

    def attach(self, model, optimizer, context: RunContext | None = None) -> None:  # type: ignore[no-untyped-def]
        super().attach(model, optimizer, context)
        self.parts = (*model.modalities, MM)

    # -- a branch -------------------------------------------------------------------------
    def branch_modules(self, modality: str) -> list[torch.nn.Module]:
        return [*self.model.modality_modules(modality), self.model.heads[modality]]

    def branch_state(self, modality: str) -> dict[str, torch.Tensor]:
        return {
            f"{i}.{k}": v.detach().clone()
            for i, mod in enumerate(self.branch_modules(modality))
            for k, v in mod.state_dict().items()
        }

    def load_branch_state(self, modality: str, state: Mapping[str, torch.Tensor]) -> None:
        for i, mod in enumerate(self.branch_modules(modality)):
            prefix = f"{i}."
            mod.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})

    def freeze(self, modality: str) -> None:
        for g in branch_groups(self.optimizer, modality):
            g["lr"] = 0.0
        for mod in self.branch_modules(modality):
            mod.eval()

    # -- hooks ----------------------------------------------------------------------------
    def on_train_epoch_start(self, epoch: int) -> None:
        for m in self.frozen_at:  # the loop has just put the whole model in train mode
            for mod in self.branch_modules(m):
                mod.eval()

    def on_epoch_end(self, evaluation: EpochEvaluation) -> None:
        key = evaluation.metric if self.monitor == "metric" else "loss"
        val = evaluation.metrics["val"]
        for part in self.parts:
            if part in self.frozen_at:
                continue
            improved = self.tracker.update(part, val[part][key])
            if improved and self.restore_best and part != MM:
                self.best_state[part] = self.branch_state(part)
        for m in self.model.modalities:
            if m not in self.frozen_at and self.tracker.wait[m] >= self.patience:
                self.frozen_at[m] = evaluation.epoch
                if self.restore_best:
                    self.load_branch_state(m, self.best_state[m])
                self.freeze(m)
        everything_frozen = len(self.frozen_at) == len(self.model.modalities)
        self._stop = everything_frozen and self.tracker.wait[MM] >= self.patience

    def should_stop(self) -> bool:
        return self._stop

    def record_extra(self) -> dict[str, float]:
        out = {f"mses/frozen/{m}": float(m in self.frozen_at) for m in self.model.modalities}
        out.update({f"mses/wait/{p}": float(self.tracker.wait.get(p, 0)) for p in self.parts})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "tracker": self.tracker.state_dict(),
            "frozen_at": dict(self.frozen_at),
            "best_state": {m: dict(s) for m, s in self.best_state.items()},
            "stop": self._stop,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.tracker.load_state_dict(state["tracker"])
        self.frozen_at = {m: int(e) for m, e in state["frozen_at"].items()}
        self.best_state = {m: dict(s) for m, s in state["best_state"].items()}
        self._stop = bool(state["stop"])
        for m in self.frozen_at:
            self.freeze(m)
