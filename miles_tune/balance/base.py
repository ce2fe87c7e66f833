"""The hooks a balancing method may use, and the defaults (plain joint training).

The loop calls these hooks and never asks which method it runs:

============================  =====================================================
hook                           used by (now or later)
============================  =====================================================
``check``                      refuse an unsupported setup at configuration time
``train_holdout``              (attribute) a fraction of the training set the loop must
                               set aside for the method's own estimates (G-Blend)
``param_groups``               per-modality learning rates (MILES, MSLR), one group per
                               unimodal head (MSES)
``sets_lrs``                   (attribute) the method sets learning rates itself after
                               the start (MILES, MSLR): a step decay (``lr_step_size``)
                               would be overwritten, so the loop refuses the pair
``own_encoder_lrs``            (attribute) the encoders' rates come from the method's
                               own settings (MSLR's unimodal rates), not ``lr × lr_mult``:
                               the loop refuses ``lr_mult`` (and the search PBT) for it
``attach``                     keep the model, optimizer and :class:`RunContext`; set
                               initial rates, build schedulers (MILES, MSLR); refuse
                               what needs the model to judge (OGM)
``tasks``                      (attribute) the tasks the method is defined for; the
                               loop and the search refuse the others (PMR: multiclass)
``from_unimodal``              (attributes) what a study passes on from its unimodal
``until_unimodal``             searches (MSLR's rates, UMT's teachers), and how the
                               method is checked before those exist
``loss_weights``               loss re-weighting (G-Blend, unimodal); ``aux_losses``
                               says whether unimodal heads shape encoders or are
                               detached probes
``on_train_epoch_start``       per-branch freezing of BatchNorm (MSES), side training
                               on model copies (G-Blend), class prototypes (PMR)
``extra_losses``               loss terms of the method's own, computed from the step's
                               outputs and added to Eq. 3's weighted sum (PMR, UMT)
``backward``                   replaces the step's single ``loss.backward()``: per-term
                               gradients combined (MMPareto), gradients into each
                               modality's share of the fused logits scaled (AGM)
``on_after_backward``          gradient modulation between backward and step (OGM)
``on_epoch_end``               sees every metric, u and δ of the epoch (MILES, MSES,
                               MSLR-D)
``should_stop``                stop signal (MSES)
``record_extra``               method figures for the epoch record (extra compute, ...)
``state_dict``                 everything needed to resume exactly
============================  =====================================================

Each method also declares ``SEARCH_SPACE``: its hyper-parameters (constructor keyword
arguments) with default search ranges, as plain data, e.g.
``{"tau": ("uniform", 0.0, 0.5), "variant": ("choice", ("reset", "literal"))}``;
distributions are ``uniform``, ``loguniform``, ``randint`` (both ends inclusive) and
``choice``. The loop settings searched for every method are in :data:`COMMON_SEARCH_SPACE`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset

from miles_tune.errors import ConfigError
from miles_tune.models.joint import JointFusionModel, ModelOutput
from miles_tune.records import MM


@dataclass
class EpochEvaluation:
    """What a method sees at the end of an epoch."""

    epoch: int
    metrics: dict[str, dict[str, dict[str, float]]]  # split -> head -> metric -> value
    metric: str  # the configured metric M (e.g. "acc")
    u_source: str  # the split u is computed on ("val" or "train")
    multimodal: float  # M(ŷ_mm) on u_source
    without: dict[str, float]  # modality -> M(prediction without it) on u_source
    u: dict[str, float]
    delta: float


@dataclass
class TrainStep:
    """One training step as the loss hooks see it (``extra_losses``, then ``backward``).

    ``terms`` are Eq. 3's unweighted loss terms, ``"mm"`` then one per modality (float32,
    still attached to the graph); ``weights`` are their weights (:meth:`loss_weights`), and a
    term of weight 0 is left out of ``loss``. ``loss`` is Σ_t weights[t]·terms[t] plus the
    method's extra terms, set once they are known.
    """

    inputs: Mapping[str, torch.Tensor]
    output: ModelOutput
    labels: torch.Tensor
    terms: dict[str, torch.Tensor]
    weights: Mapping[str, float]
    epoch: int
    step: int
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    loss: torch.Tensor | None = None


class EpochMeans:
    """One value per modality per step, summed on the device (no host sync per step) and read
    once as means over the epoch's steps: what a method records of what it did (AGM's κ,
    PMR's boosted modality, ...) as ``<prefix>_<modality>``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.reset()

    def reset(self) -> None:
        self.total: torch.Tensor | None = None
        self.steps = 0

    def add(self, values: torch.Tensor) -> None:
        """This step's (M,) values, in the model's modality order."""
        values = values.detach().float()
        self.total = values if self.total is None else self.total + values
        self.steps += 1

    def record(self, modalities: Sequence[str]) -> dict[str, float]:
        if not self.steps:
            return {}
        means = (self.total / self.steps).tolist()
        return {f"{self.prefix}_{m}": v for m, v in zip(modalities, means, strict=True)}


#: loop settings searched for every method (the methods' own are their ``SEARCH_SPACE``)
COMMON_SEARCH_SPACE: dict[str, tuple[Any, ...]] = {"lr": ("loguniform", 1e-5, 1e-2)}

SearchSpace = dict[str, tuple[Any, ...]]


@dataclass
class RunContext:
    """What the loop lends a method at :meth:`BalancingMethod.attach` (built by ``Trainer``).

    Settings of the run, its data splits, and helpers that let a method train and evaluate
    *copies* of the model with the loop's own code (G-Blend's side trainings), so that no
    method re-implements batching, the loss or evaluation.
    """

    modalities: tuple[str, ...]
    task: str  # "multiclass" | "multilabel"
    metric: str  # the metric M of Eq. 4 and model selection
    epochs: int  # the configured number of epochs of this run
    lr: float  # the base learning rate α
    batch_size: int
    seed: int
    device: torch.device
    heads_with_encoders: bool
    #: "train" (what the loop trains on, without any hold-out), "val", "test", and
    #: "holdout" when the method asked for one with ``train_holdout``
    splits: Mapping[str, Dataset]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    #: ``make_optimizer(param_groups)``: a fresh optimizer of the configured kind
    make_optimizer: Callable[[list[dict[str, Any]]], torch.optim.Optimizer]
    #: ``train_epoch(model, optimizer, weights, *, seed, split="train", detach_unimodal=False)``:
    #: one shuffled pass (order from ``seed``) with loss Σ weights[t]·L_t; returns the mean
    #: loss per term ("total", "mm", modalities). Leaves the model in train mode.
    train_epoch: Callable[..., dict[str, float]]
    #: ``evaluate(model, split)``: split -> {head: {metric: value, "loss": value}} in eval mode
    evaluate: Callable[[JointFusionModel, str], dict[str, dict[str, float]]]
    #: ``features(model, split, *, fraction=1.0, seed=0)``: every modality's features z_m
    #: (modality -> (N, d_m)) and the labels of a split, or of a seeded ``fraction`` of it, in
    #: eval mode without gradients, on the run's device (PMR's prototypes)
    features: Callable[..., tuple[dict[str, torch.Tensor], torch.Tensor]]


def default_param_groups(
    model: JointFusionModel, lr: float, heads_with_encoders: bool = False, split_heads: bool = False
) -> list[dict[str, Any]]:
    """One group per modality (tagged ``"modality"``), then the untagged ``fusion`` and ``heads``.

    With ``heads_with_encoders`` each unimodal head joins its encoder's group instead.
    With ``split_heads`` (and not ``heads_with_encoders``) each unimodal head gets a group
    of its own, ``head_<m>`` tagged ``"head_of": m``, so a method can stop one head alone.
    """
    groups: list[dict[str, Any]] = []
    for m in model.modalities:
        params = list(model.modality_parameters(m))
        if heads_with_encoders:
            params += list(model.heads[m].parameters())
        groups.append({"name": m, "modality": m, "params": params, "lr": lr})
    groups.append({"name": "fusion", "params": list(model.fusion.parameters()), "lr": lr})
    if not heads_with_encoders:
        if split_heads:
            for m in model.modalities:
                groups.append(
                    {"name": f"head_{m}", "head_of": m, "params": list(model.heads[m].parameters()), "lr": lr}
                )
        else:
            groups.append({"name": "heads", "params": list(model.heads.parameters()), "lr": lr})
    return groups


def modality_groups(optimizer: torch.optim.Optimizer) -> dict[str, dict[str, Any]]:
    """The param groups tagged with a ``"modality"`` key, by modality."""
    return {g["modality"]: g for g in optimizer.param_groups if "modality" in g}


def branch_groups(optimizer: torch.optim.Optimizer, modality: str) -> list[dict[str, Any]]:
    """Every group that belongs to one modality's branch: its encoder group and its head's group."""
    return [
        g for g in optimizer.param_groups if g.get("modality") == modality or g.get("head_of") == modality
    ]


def set_modality_lrs(optimizer: torch.optim.Optimizer, lrs: Mapping[str, float]) -> None:
    """Set the learning rate of each modality's encoder group (the head follows only when it
    shares the encoder's group, ``heads_with_encoders``). Unknown modalities are refused."""
    groups = modality_groups(optimizer)
    missing = set(lrs) - set(groups)
    if missing:
        raise ValueError(f"no param group tagged with modality {sorted(missing)}; have {sorted(groups)}")
    for m, lr in lrs.items():
        groups[m]["lr"] = float(lr)


def check_epoch_window(method: str, start_epoch: int, end_epoch: int | None) -> None:
    """Refuse a bad window ``start_epoch ≤ epoch ≤ end_epoch`` in which a method acts (OGM,
    AGM, PMR); ``end_epoch=None`` is the method's own default end."""
    if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0:
        raise ConfigError(f"{method}: start_epoch must be an integer >= 0, got {start_epoch!r}")
    if end_epoch is not None and (
        isinstance(end_epoch, bool) or not isinstance(end_epoch, int) or end_epoch < start_epoch
    ):
        raise ConfigError(f"{method}: end_epoch must be None or an integer >= start_epoch, got {end_epoch!r}")


def in_epoch_window(epoch: int, start_epoch: int, end_epoch: int | None) -> bool:
    """Whether ``epoch`` is in ``start_epoch ≤ epoch ≤ end_epoch`` (inclusive; None: no end)."""
    return start_epoch <= epoch and (end_epoch is None or epoch <= end_epoch)


def read_settings_file(path: Path, who: str) -> Any:
    """A YAML or JSON file's content, or a one-line :class:`ConfigError` naming ``who`` and the file."""
    import json

    import yaml

    if not path.is_file():
        raise ConfigError(f"{who}: {path} does not exist")
    try:
        text = path.read_text()
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:  # JSON and Unicode errors are ValueErrors
        raise ConfigError(f"{who}: cannot read {path}: {' '.join(str(exc).split())}") from exc


def check_unimodal_source(content: Any, path: Path, modality: str, who: str) -> None:
    """Refuse the result of a unimodal search (a ``best_config.yaml``: its settings under
    ``config``, or at the top level) given for another modality than the one it trained."""
    for scope in (content, content.get("config") if isinstance(content, Mapping) else None):
        args = scope.get("method_args") if isinstance(scope, Mapping) else None
        named = args.get("modality") if isinstance(args, Mapping) else None
        if named is not None and named != modality:
            raise ConfigError(f"{who}: {path} is the unimodal result of {named!r}, given for {modality!r}")


def check_search_space(space: Mapping[str, tuple[Any, ...]]) -> None:
    """Refuse a malformed ``SEARCH_SPACE`` entry (used by the tests and the search-space loader)."""
    for name, spec in space.items():
        kind, *args = spec
        if kind in ("uniform", "loguniform", "randint"):
            lo, hi = args
            if not lo <= hi or (kind == "loguniform" and lo <= 0):
                raise ValueError(f"search space {name}: bad bounds {spec}")
        elif kind == "choice":
            if len(args) != 1 or not isinstance(args[0], tuple) or not args[0]:
                raise ValueError(f"search space {name}: choice needs one non-empty tuple, got {spec}")
        else:
            raise ValueError(f"search space {name}: unknown distribution {kind!r}")


def search_space_values(spec: tuple[Any, ...]) -> Iterable[Any]:
    """The values a search must be able to draw at least: the bounds, or every choice."""
    kind, *args = spec
    return args[0] if kind == "choice" else args


class BalancingMethod:
    """Base class and default behaviour: joint training with Eq. 3's loss, no balancing."""

    name: ClassVar[str] = "base"
    #: the method's hyper-parameters with default search ranges (see the module docstring)
    SEARCH_SPACE: ClassVar[SearchSpace] = {}
    #: unimodal heads shape their encoders (Eq. 3) when True; otherwise they train
    #: as linear probes on detached features, only to report each encoder's metric.
    aux_losses: bool = True
    #: which head's validation metric selects the best epoch
    selection_head: str = MM
    #: fraction of the training set the loop sets aside (deterministically, by seed) as
    #: ``context.splits["holdout"]``; the loop then trains and reports "train" without it
    train_holdout: float = 0.0
    #: True when the method sets group learning rates during training (see the hook table)
    sets_lrs: ClassVar[bool] = False
    own_encoder_lrs: ClassVar[bool] = False
    #: the tasks the method is defined for (see the hook table)
    tasks: ClassVar[tuple[str, ...]] = ("multiclass", "multilabel")
    #: the argument through which a study hands the method its unimodal searches, as
    #: {modality: best_config.yaml} (MSLR: ``unimodal_lrs``, UMT: ``teachers``); None: not needed
    from_unimodal: ClassVar[str | None] = None
    #: the settings with which a study checks the method before those searches exist
    until_unimodal: ClassVar[dict[str, Any]] = {}
    context: RunContext | None = None

    @classmethod
    def example_args(cls, modalities: Sequence[str]) -> dict[str, Any]:
        """Arguments for a smoke run on ``modalities`` (the registry-wide tests use them)."""
        return {}

    def check(self, modalities: Sequence[str], fusion: str) -> None:
        """Raise :class:`~miles_tune.errors.ConfigError` if this method cannot run on this setup."""

    def param_groups(
        self, model: JointFusionModel, lr: float, heads_with_encoders: bool = False
    ) -> list[dict[str, Any]]:
        return default_param_groups(model, lr, heads_with_encoders)

    def attach(
        self, model: JointFusionModel, optimizer: torch.optim.Optimizer, context: RunContext | None = None
    ) -> None:
        """Called once, before training and before any checkpoint is loaded."""
        self.model = model
        self.optimizer = optimizer
        self.context = context

    def loss_weights(self) -> dict[str, float]:
        """Weight of each loss term: ``"mm"`` and one per modality."""
        return {MM: 1.0, **dict.fromkeys(self.model.modalities, 1.0)}

    def on_train_epoch_start(self, epoch: int) -> None:
        pass

    def extra_losses(self, step: TrainStep) -> dict[str, torch.Tensor]:
        """Loss terms of the method's own, each already weighted, added to the step's loss."""
        return {}

    def backward(self, step: TrainStep) -> None:
        """Fill every parameter's ``.grad`` for the optimizer step (the loop zeroed them)."""
        step.loss.backward()

    def on_after_backward(self, output: ModelOutput, labels: torch.Tensor, epoch: int, step: int) -> None:
        pass

    def on_epoch_end(self, evaluation: EpochEvaluation) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def record_extra(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass
