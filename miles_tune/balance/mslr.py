"""MSLR-K, MSLR-S, MSLR-D: modality-specific learning rates.

Paper: Yao & Mihalcea, "Modality-specific Learning Rates for Effective Multimodal
Additive Late-fusion", Findings of ACL 2022. No official code; the paper's abstract and
the MILES paper's description are the sources (methods.md §3.4).

All three give each encoder its own learning rate, derived from the **best unimodal
learning rates** lr*_m (the rates of the Table I unimodal models, i.e. of a finished
``unimodal`` search); the fusion head and the unimodal heads run at the loop's ``lr``
(with ``heads_with_encoders`` a head follows its encoder). Missing unimodal rates are
refused: at construction when none are given, at configuration time (``check``) when a
modality has none.

- ``mslr-k`` (keep) [paper]: lr_m = lr*_m, fixed.
- ``mslr-s`` (smooth) [paper: "closer to the average learning rate across modalities";
  **no formula published — this is a reconstruction**]: with ``space="log"`` (default),
  lr_m = lr*_m^(1−s) · ḡ^s where ḡ is the geometric mean of the lr*_j (log-space
  interpolation towards the mean; s = ``smoothing`` = 0.5 gives √(lr*_m·ḡ)); with
  ``space="linear"``, lr_m = (1−s)·lr*_m + s·l̄ with the arithmetic mean l̄. s = 0 is MSLR-K,
  s = 1 gives every encoder the mean. Log space because unimodal rates can differ by
  orders of magnitude (BERT 2e-5 vs a CNN 1e-2), where the arithmetic mean is dominated
  by the largest.
- ``mslr-d`` (dynamic) [paper: "scales the learning rate for each unimodal encoder during
  training by a small factor based on the unimodal average prediction performance on the
  validation set over the last several epochs"; **no formula published — reconstruction
  after a third-party port** (CXianRen/AMST, ``mslr3_new.py``)]: start from the keep rates;
  after every epoch append each unimodal head's validation metric to a buffer of the last
  K = ``window`` values; after every K-th epoch (0-based epoch e with (e+1) % K = 0),
  ``rule="ratio"`` (default, the port's reading): lr_m ← lr_m · M_m(now) / mean(buffer_m);
  ``rule="step"`` (the alternative reading): lr_m ← lr_m·(1 + ``step``) if M_m(now) is above
  the buffer mean, ·(1 − step) if below. Rates compound; the fusion rate stays fixed.

Loss: Eq. 3 of the MILES paper (``aux_losses=True``, default) so that MSLR differs from
MILES only in how encoder rates are set; ``aux_losses=False`` trains on L_mm with probe heads.

Equal numeric rates for every modality are refused (``check``, so before a search starts)
as placeholders: the search spaces ship such values until a unimodal search has run.
``allow_placeholder_lrs=True`` forces a run on them.

Unimodal rates (``unimodal_lrs``) may be given as
- a mapping {modality: lr};
- a path to a YAML/JSON file holding that mapping (top level, or under ``unimodal_lrs``);
- a mapping {modality: path}, each file the ``best_config`` of that modality's unimodal
  search: its ``lr`` at the top level or under ``config`` / ``train``; when the file names
  its ``method_args.modality`` it must be that modality.

Hyper-parameters and default search ranges (``SEARCH_SPACE``): the unimodal rates are
fixed inputs (not searched); the fusion rate is the loop's ``lr``; ``smoothing`` in
[0.25, 1] (MSLR-S), ``window`` in 3..10 (MSLR-D; the port's default 5), ``rule`` (MSLR-D).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from miles_tune.balance import register_method
from miles_tune.balance.base import (
    BalancingMethod,
    EpochEvaluation,
    RunContext,
    check_unimodal_source,
    read_settings_file,
    set_modality_lrs,
)
from miles_tune.errors import ConfigError

SPACES = ("log", "linear")
RULES = ("ratio", "step")


def _lr_from_best_config(path: Path, modality: str) -> float:
    content = read_settings_file(path, "mslr")
    if not isinstance(content, Mapping):
        raise ConfigError(f"mslr: {path} does not hold a mapping")
    check_unimodal_source(content, path, modality, "mslr")
    for scope in (content, content.get("config") or {}, content.get("train") or {}):
        if isinstance(scope, Mapping) and "lr" in scope:
            try:  # YAML 1.1 reads 1e-3 as a string
                return float(scope["lr"])
            except (TypeError, ValueError):
                raise ConfigError(f"mslr: {path}: lr must be a number, got {scope['lr']!r}") from None
    raise ConfigError(f"mslr: {path} has no 'lr' (top level, or under 'config' or 'train')")


def load_unimodal_lrs(spec: Mapping[str, Any] | str | Path | None) -> dict[str, float]:
    """The best unimodal learning rate per modality, from a mapping or file(s) (module docstring)."""
    if spec is None or (isinstance(spec, (Mapping, str)) and not spec):
        raise ConfigError(
            "mslr needs the best unimodal learning rates: unimodal_lrs={modality: lr}, a YAML/JSON "
            "file with that mapping, or {modality: best_config file of its unimodal search}; none given"
        )
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        content = read_settings_file(path, "mslr")
        if isinstance(content, Mapping) and "unimodal_lrs" in content:
            content = content["unimodal_lrs"]
        if not isinstance(content, Mapping) or not content:
            raise ConfigError(f"mslr: {path} does not hold a {{modality: lr}} mapping")
        spec = content
    out = {}
    for m, value in spec.items():
        lr = _lr_from_best_config(Path(value), m) if isinstance(value, (str, Path)) else value
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not _finite(lr) or lr <= 0:
            raise ConfigError(
                f"mslr: the unimodal learning rate of {m!r} must be a positive number, got {lr!r}"
            )
        out[str(m)] = float(lr)
    return out


def refuse_placeholder(name: str, lrs: Mapping[str, float]) -> None:
    """Refuse rates that are equal for every modality: the placeholders a search space ships
    before any unimodal search, which would make MSLR plain joint training at one rate."""
    if len(lrs) < 2 or len(set(lrs.values())) > 1:
        return
    raise ConfigError(
        f"{name}: unimodal_lrs are the same for every modality ({next(iter(lrs.values())):g}): "
        "placeholders, not the result of unimodal searches; give each modality's best_config.yaml "
        "of a `--method unimodal` search (python -m miles_tune.study passes them on), or set "
        "method_args.allow_placeholder_lrs=true to run on them anyway"
    )


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def smooth_lrs(lrs: Mapping[str, float], smoothing: float = 0.5, space: str = "log") -> dict[str, float]:
    """MSLR-S (reconstruction): move each rate a fraction ``smoothing`` towards the mean rate
    (geometric mean in log space, arithmetic mean in linear space)."""
    if space not in SPACES:
        raise ConfigError(f"mslr-s: space must be one of {SPACES}, got {space!r}")
    if space == "log":
        mean_log = sum(math.log(v) for v in lrs.values()) / len(lrs)
        return {m: math.exp((1 - smoothing) * math.log(v) + smoothing * mean_log) for m, v in lrs.items()}
    mean = sum(lrs.values()) / len(lrs)
    return {m: (1 - smoothing) * v + smoothing * mean for m, v in lrs.items()}


def dynamic_factor(
    current: float, history: Sequence[float], rule: str = "ratio", step: float = 0.05
) -> float:
    """MSLR-D (reconstruction): the factor applied to an encoder's rate, from its current
    validation metric and the buffer of recent ones (which includes the current value)."""
    mean = sum(history) / len(history) if history else 0.0
    if mean <= 0:
        return 1.0
    if rule == "ratio":
        return current / mean
    if current > mean:
        return 1.0 + step
    return 1.0 - step if current < mean else 1.0


class _MSLR(BalancingMethod):
    """Encoder rates from the best unimodal rates; subclasses decide how (keep/smooth/dynamic)."""

    name = "mslr"
    sets_lrs = True
    own_encoder_lrs = True  # the unimodal rates, whatever lr and lr_mult say
    from_unimodal = "unimodal_lrs"
    until_unimodal = {"allow_placeholder_lrs": True}  # the space's placeholder rates, at plan time

    def __init__(
        self,
        unimodal_lrs: Mapping[str, Any] | str | None = None,
        aux_losses: bool = True,
        allow_placeholder_lrs: bool = False,
    ) -> None:
        self.unimodal_lrs = load_unimodal_lrs(unimodal_lrs)
        self.from_files = isinstance(unimodal_lrs, Mapping) and any(
            isinstance(v, (str, Path)) for v in unimodal_lrs.values()
        )
        self.allow_placeholder_lrs = bool(allow_placeholder_lrs)
        self.aux_losses = bool(aux_losses)

    @classmethod
    def example_args(cls, modalities: Sequence[str]) -> dict[str, Any]:
        return {"unimodal_lrs": {m: 1e-3 * 2.0**i for i, m in enumerate(modalities)}}

    def check(self, modalities: Sequence[str], fusion: str) -> None:
        missing = [m for m in modalities if m not in self.unimodal_lrs]
        if missing:
            raise ConfigError(
                f"{self.name}: no best unimodal learning rate for {missing} "
                f"(unimodal_lrs has {sorted(self.unimodal_lrs)})"
            )
        if not (self.from_files or self.allow_placeholder_lrs):  # searches' best_config files are real
            refuse_placeholder(self.name, {m: self.unimodal_lrs[m] for m in modalities})

    def initial_lrs(self, lrs: Mapping[str, float]) -> dict[str, float]:
        return dict(lrs)

    def attach(self, model, optimizer, context: RunContext | None = None) -> None:  # type: ignore[no-untyped-def]
        super().attach(model, optimizer, context)
        self.check(model.modalities, model.fusion_name)
        self.base_lrs = self.initial_lrs({m: self.unimodal_lrs[m] for m in model.modalities})
        self.current_lrs = dict(self.base_lrs)
        set_modality_lrs(optimizer, self.current_lrs)

    def record_extra(self) -> dict[str, float]:
        return {f"{self.name}/lr/{m}": v for m, v in self.current_lrs.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"current_lrs": dict(self.current_lrs)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.current_lrs = {m: float(state["current_lrs"][m]) for m in self.model.modalities}
        set_modality_lrs(self.optimizer, self.current_lrs)


@register_method("mslr-k")
class MSLRKeep(_MSLR):
    """MSLR-K: every encoder at its best unimodal learning rate, fixed."""

    name = "mslr-k"
    SEARCH_SPACE = {"aux_losses": ("choice", (True, False))}


@register_method("mslr-s")
class MSLRSmooth(_MSLR):
    """MSLR-S: unimodal rates smoothed towards their mean (reconstruction; see :func:`smooth_lrs`)."""

    name = "mslr-s"
    SEARCH_SPACE = {
        "smoothing": ("uniform", 0.25, 1.0),
        "space": ("choice", ("log", "linear")),
        "aux_losses": ("choice", (True, False)),
    }

    def __init__(
        self,
        unimodal_lrs: Mapping[str, Any] | str | None = None,
        smoothing: float = 0.5,
        space: str = "log",
        aux_losses: bool = True,
        allow_placeholder_lrs: bool = False,
    ) -> None:
        if not isinstance(smoothing, (int, float)) or not 0 <= smoothing <= 1:
            raise ConfigError(f"mslr-s: smoothing must lie in [0, 1], got {smoothing!r}")
        if space not in SPACES:
            raise ConfigError(f"mslr-s: space must be one of {SPACES}, got {space!r}")
        super().__init__(unimodal_lrs, aux_losses, allow_placeholder_lrs)
        self.smoothing, self.space = float(smoothing), space

    def initial_lrs(self, lrs: Mapping[str, float]) -> dict[str, float]:
        return smooth_lrs(lrs, self.smoothing, self.space)


@register_method("mslr-d")
class MSLRDynamic(_MSLR):
    """MSLR-D: keep rates, rescaled every ``window`` epochs by the recent validation trend."""

    name = "mslr-d"
    SEARCH_SPACE = {
        "window": ("randint", 3, 10),
        "rule": ("choice", ("ratio", "step")),
        "step": ("uniform", 0.01, 0.2),
        "aux_losses": ("choice", (True, False)),
    }

    def __init__(
        self,
        unimodal_lrs: Mapping[str, Any] | str | None = None,
        window: int = 5,
        rule: str = "ratio",
        step: float = 0.05,
        aux_losses: bool = True,
        allow_placeholder_lrs: bool = False,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"mslr-d: window must be a positive integer, got {window!r}")
        if rule not in RULES:
            raise ConfigError(f"mslr-d: rule must be one of {RULES}, got {rule!r}")
        if not isinstance(step, (int, float)) or not 0 < step < 1:
            raise ConfigError(f"mslr-d: step must lie in (0, 1), got {step!r}")
        super().__init__(unimodal_lrs, aux_losses, allow_placeholder_lrs)
        self.window, self.rule, self.step = window, rule, float(step)

    @classmethod
    def example_args(cls, modalities: Sequence[str]) -> dict[str, Any]:
        return {**super().example_args(modalities), "window": 2}

    def attach(self, model, optimizer, context: RunContext | None = None) -> None:  # type: ignore[no-untyped-def]
        super().attach(model, optimizer, context)
        self.history: dict[str, deque[float]] = {m: deque(maxlen=self.window) for m in model.modalities}

    def on_epoch_end(self, evaluation: EpochEvaluation) -> None:
        val = evaluation.metrics["val"]
        for m in self.model.modalities:
            self.history[m].append(val[m][evaluation.metric])
        if (evaluation.epoch + 1) % self.window == 0:
            for m in self.model.modalities:
                factor = dynamic_factor(self.history[m][-1], list(self.history[m]), self.rule, self.step)
                self.current_lrs[m] *= factor
            set_modality_lrs(self.optimizer, self.current_lrs)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "history": {m: list(h) for m, h in self.history.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        for m in self.model.modalities:
            self.history[m] = deque((float(v) for v in state["history"][m]), maxlen=self.window)
