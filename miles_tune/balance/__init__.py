"""Balancing methods: a registry of :class:`BalancingMethod` classes and the MILES rule.

``create_method("miles", tau=0.2, mu=0.5)`` builds one; ``list_methods()`` names them:
MILES (``miles.py``) and the baselines it is compared with: ``vanilla``, ``unimodal``,
``mses``, ``mslr-k``/``mslr-s``/``mslr-d``, ``ogm``/``ogm-ge``, ``gblend``, and the newer
``pmr``, ``agm``, ``umt``, ``mmpareto``, ``inforeg`` and ``relearn`` (one module each).
Each method's hyper-parameters are its constructor's keyword arguments, so a
misspelt one is refused before anything trains.
"""

from __future__ import annotations

from typing import Any

from miles_tune.balance.base import (
    COMMON_SEARCH_SPACE,
    BalancingMethod,
    EpochEvaluation,
    RunContext,
    TrainStep,
    default_param_groups,
)
from miles_tune.registry import Registry

METHODS: Registry[BalancingMethod] = Registry("balancing method")
register_method = METHODS.register


def create_method(name: str, **kwargs: Any) -> BalancingMethod:
    return METHODS.create(name, **kwargs)


def list_methods() -> list[str]:
    return METHODS.names()


def check_step_decay(method: str, lr_step_size: int | None) -> None:
    """Refuse a step decay (``lr_step_size``) with a method that sets learning rates itself:
    its next change would overwrite the decayed rates."""
    from miles_tune.errors import ConfigError

    if lr_step_size is not None and METHODS.get(method).sets_lrs:
        raise ConfigError(
            f"lr_step_size: {method} sets the encoders' learning rates itself, which would overwrite "
            "a step decay; drop lr_step_size for it"
        )


def check_lr_mult(method: str, lr_mult: dict[str, float], modalities: tuple[str, ...] | list[str]) -> None:
    """Refuse ``lr_mult`` for a modality the data lacks, or with a method whose encoders' rates
    come from its own settings (``own_encoder_lrs``: MSLR), where it would be overwritten."""
    from miles_tune.errors import ConfigError

    unknown = sorted(set(lr_mult) - set(modalities))
    if unknown:
        raise ConfigError(
            f"lr_mult.{unknown[0]}: not a modality of this dataset (its modalities: {', '.join(modalities)})"
        )
    if lr_mult and METHODS.get(method).own_encoder_lrs:
        raise ConfigError(
            f"lr_mult: {method} sets each encoder's learning rate from its own settings, which would "
            "overwrite the multipliers; drop lr_mult for it"
        )


def check_task(method: str, task: str) -> None:
    """Refuse a task the method is not defined for (its ``tasks``), saying which it is."""
    from miles_tune.errors import ConfigError

    tasks = METHODS.get(method).tasks
    if task not in tasks:
        raise ConfigError(
            f"method {method} is defined for {' and '.join(tasks)} data only; this dataset is {task} "
            "(see its module's docstring)"
        )


from miles_tune.balance import (  # noqa: E402,F401  (register methods)
    agm,
    gblend,
    inforeg,
    mmpareto,
    mses,
    mslr,
    ogm,
    pmr,
    relearn,
    umt,
    unimodal,
    vanilla,
)
from miles_tune.balance.miles import (  # noqa: E402
    Miles,
    MilesScheduler,
    conditional_utilization,
    imbalance,
    miles_multipliers,
)

__all__ = [
    "COMMON_SEARCH_SPACE",
    "METHODS",
    "BalancingMethod",
    "check_step_decay",
    "check_task",
    "EpochEvaluation",
    "Miles",
    "MilesScheduler",
    "RunContext",
    "TrainStep",
    "conditional_utilization",
    "create_method",
    "default_param_groups",
    "imbalance",
    "list_methods",
    "miles_multipliers",
    "register_method",
]
