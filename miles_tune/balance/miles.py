"""MILES: the Modality-Informed Learning rate Scheduler.

Guerra-Manzanares & Shamout, "Modality-Informed Learning Rate Scheduler for Balancing
Multimodal Learning", IJCNN 2025 (arXiv 2510.17394).

After every epoch, the conditional utilisation rate of each modality (Eq. 4)

    u_m = (M(ŷ_mm) − M(ŷ_without m)) / M(ŷ_mm)

measures how much the fused head gains from modality m. When the imbalance
δ = max_m u_m − min_m u_m (Eq. 5; |u_A − u_B| for two modalities) exceeds τ, the
encoder of the most-used modality runs the next epoch at μ × the base learning rate
(Algorithm 1). The fusion head and the unimodal heads always keep the base rate, and
the reduction never compounds.

Two readings of Algorithm 1 are offered (``variant``):

- ``"reset"`` (default): at most one modality is slowed at a time; every other
  encoder goes back to the base rate. This is the paper's prose ("only one of the
  modality-specific learning rates is adjusted").
- ``"literal"``: Algorithm 1 as written; an encoder slowed earlier keeps μ until a
  "no action" epoch (δ ≤ τ, or every u < 0) resets all of them.

Hyper-parameters and default search ranges (``Miles.SEARCH_SPACE``): ``tau`` in [0, 0.5]
(paper default 0.2), ``mu`` in [0.01, 1] (paper default 0.5), ``variant``; the learning
rate α is the loop's ``lr`` (log-uniform 1e-5 to 1e-2).

For two modalities, "the modality with the largest u gets μ" reproduces every branch
of Algorithm 1, zeros included; an exact tie for the largest u (possible only with
three or more modalities) slows the first modality in model order, as Algorithm 1's
final ``else`` favours A.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from miles_tune.balance import register_method
from miles_tune.balance.base import BalancingMethod, EpochEvaluation, RunContext, modality_groups
from miles_tune.errors import ConfigError

VARIANTS = ("reset", "literal")


def check_tau_mu(tau: float, mu: float) -> None:
    """Refuse τ < 0 and μ outside (0, 1] (μ = 1 disables MILES)."""
    if not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
        raise ConfigError(f"MILES: tau must be a finite number >= 0, got {tau!r}")
    if not isinstance(mu, (int, float)) or not math.isfinite(mu) or not 0 < mu <= 1:
        raise ConfigError(f"MILES: mu must satisfy 0 < mu <= 1, got {mu!r}")


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ConfigError(f"MILES: variant must be one of {VARIANTS}, got {variant!r}")


def conditional_utilization(multimodal: float, without: Mapping[str, float]) -> dict[str, float]:
    """Eq. 4: u per modality.

    ``without[m]`` is the metric of the prediction made without modality m: with two
    modalities, the other modality's unimodal head; with more, the averaged
    probabilities of the other unimodal heads. All u are 0 when the multimodal metric is 0.
    """
    if multimodal == 0:
        return dict.fromkeys(without, 0.0)
    return {m: (multimodal - w) / multimodal for m, w in without.items()}


def imbalance(u: Mapping[str, float]) -> float:
    """Eq. 5 generalised: max(u) − min(u), which is |u_A − u_B| for two modalities."""
    if len(u) < 2:
        raise ValueError(f"imbalance needs at least two modalities, got {list(u)}")
    return max(u.values()) - min(u.values())


def miles_multipliers(
    u: Mapping[str, float],
    tau: float,
    mu: float,
    previous: Mapping[str, float] | None = None,
    variant: str = "reset",
) -> dict[str, float]:
    """Algorithm 1: the learning-rate multiplier per modality for the next epoch.

    No action (all 1) when δ ≤ τ or every u < 0; otherwise the modality with the largest
    u gets μ, and the others get 1 (``"reset"``) or keep their ``previous`` multiplier
    (``"literal"``).
    """
    check_tau_mu(tau, mu)
    check_variant(variant)
    if imbalance(u) <= tau or all(v < 0 for v in u.values()):
        return dict.fromkeys(u, 1.0)
    dominant = max(u, key=u.__getitem__)  # first of equal maxima
    if variant == "literal" and previous is not None:
        out = {m: float(previous.get(m, 1.0)) for m in u}
    else:
        out = dict.fromkeys(u, 1.0)
    out[dominant] = float(mu)
    return out


class MilesScheduler:
    """A torch-style scheduler over the optimizer's param groups tagged ``"modality"``.

    Untagged groups (fusion head, unimodal heads) stay at their base rate. Call
    :meth:`step` once per epoch with the epoch's metrics; the new rates apply to the
    next epoch. Each tagged group runs at ``initial_lr × multiplier`` (never compounding).
    Do not attach another LR scheduler to the same optimizer: it would overwrite these rates.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, tau: float, mu: float, variant: str = "reset"):
        check_tau_mu(tau, mu)
        check_variant(variant)
        self.optimizer = optimizer
        self.tau, self.mu, self.variant = float(tau), float(mu), variant
        if len(self.groups) < 2:
            raise ValueError("MilesScheduler needs at least two param groups tagged with a 'modality' key")
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.multipliers: dict[str, float] = dict.fromkeys(self.groups, 1.0)
        self.last_u: dict[str, float] | None = None
        self.last_delta: float | None = None
        self.last_epoch = 0
        self._apply()

    @property
    def groups(self) -> dict[str, dict[str, Any]]:
        """The tagged groups, looked up each time: ``optimizer.load_state_dict`` (a resume) replaces
        the group dicts, so references kept from before would no longer reach the optimizer."""
        return modality_groups(self.optimizer)

    @property
    def base_lrs(self) -> list[float]:
        return [g["initial_lr"] for g in self.optimizer.param_groups]

    def _apply(self) -> None:
        for m, g in self.groups.items():
            g["lr"] = g["initial_lr"] * self.multipliers[m]

    def step(self, multimodal: float, without: Mapping[str, float]) -> dict[str, float]:
        if set(without) != set(self.groups):
            raise ValueError(
                f"MILES: metrics are for {sorted(without)}, param groups for {sorted(self.groups)}"
            )
        u = conditional_utilization(multimodal, {m: without[m] for m in self.groups})
        self.multipliers = miles_multipliers(u, self.tau, self.mu, self.multipliers, self.variant)
        self.last_u, self.last_delta = u, imbalance(u)
        self.last_epoch += 1
        self._apply()
        return dict(self.multipliers)

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "tau": self.tau,
            "mu": self.mu,
            "variant": self.variant,
            "multipliers": dict(self.multipliers),
            "last_u": None if self.last_u is None else dict(self.last_u),
            "last_delta": self.last_delta,
            "last_epoch": self.last_epoch,
            "base_lrs": self.base_lrs,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_tau_mu(state["tau"], state["mu"])
        check_variant(state["variant"])
        self.tau, self.mu, self.variant = float(state["tau"]), float(state["mu"]), state["variant"]
        self.multipliers = {m: float(state["multipliers"][m]) for m in self.groups}
        self.last_u = None if state["last_u"] is None else dict(state["last_u"])
        self.last_delta = state["last_delta"]
        self.last_epoch = int(state["last_epoch"])
        for g, lr in zip(self.optimizer.param_groups, state["base_lrs"], strict=True):
            g["initial_lr"] = lr
        self._apply()


@register_method("miles")
class Miles(BalancingMethod):
    """MILES as a balancing method: Eq. 3's loss plus :class:`MilesScheduler` after each epoch.

    Hyper-parameters (paper defaults; default search ranges in ``search_spaces/``):
    ``tau`` ≥ 0 (0.2; range [0, 0.5]), ``mu`` in (0, 1] (0.5; range [0.01, 1]),
    ``variant`` "reset" | "literal". Which split and metric u comes from is a loop
    setting (``u_source``, ``metric``).
    """

    name = "miles"
    sets_lrs = True
    SEARCH_SPACE = {
        "tau": ("uniform", 0.0, 0.5),
        "mu": ("uniform", 0.01, 1.0),
        "variant": ("choice", ("reset", "literal")),
    }

    def __init__(self, tau: float = 0.2, mu: float = 0.5, variant: str = "reset") -> None:
        check_tau_mu(tau, mu)
        check_variant(variant)
        self.tau, self.mu, self.variant = float(tau), float(mu), variant

    def attach(self, model, optimizer, context: RunContext | None = None) -> None:  # type: ignore[no-untyped-def]
        super().attach(model, optimizer, context)
        self.scheduler = MilesScheduler(optimizer, self.tau, self.mu, self.variant)

    def on_epoch_end(self, evaluation: EpochEvaluation) -> None:
        self.scheduler.step(evaluation.multimodal, evaluation.without)

    def record_extra(self) -> dict[str, float]:
        return {f"miles/multiplier/{m}": v for m, v in self.scheduler.multipliers.items()}

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scheduler.load_state_dict(state)
