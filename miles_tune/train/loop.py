"""The joint-fusion training loop, usable without Ray.

    trainer = Trainer(TrainConfig(method="miles", method_args={"tau": 0.2, "mu": 0.5}))
    for record in trainer.run():          # one EpochRecord per epoch
        trainer.save_checkpoint(path)     # optional; load_checkpoint(path) resumes exactly
    print(trainer.summary())

Each epoch: train on Eq. 3's loss (terms weighted by the balancing method), evaluate
every head on train, val and test, compute u and δ (Eq. 4-5) on ``u_source``, let the
method react (MILES changes the encoders' learning rates), and yield the record.
Evaluation also records the fused head with each modality missing (``mm_zero_<m>``,
``mm_mean_<m>``; :mod:`miles_tune.records`), from the same encoder pass; the training means
come from the train split, evaluated first.
The best epoch is the one with the best validation metric of the method's selection
head (the multimodal head, except for ``unimodal``), ties going to the lower validation
loss of that head, then to the later epoch (:func:`~miles_tune.records.is_better`); its test
metrics are the result.

Command line: ``python -m miles_tune.train --dataset synthetic --method miles --out runs/x``
(:mod:`miles_tune.cli`; this module knows nothing of it).
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from miles_tune.balance import (
    BalancingMethod,
    EpochEvaluation,
    check_lr_mult,
    check_step_decay,
    check_task,
    create_method,
)
from miles_tune.balance.base import RunContext, TrainStep
from miles_tune.balance.miles import conditional_utilization, imbalance
from miles_tune.config import TrainConfig
from miles_tune.data import MultimodalData, TensorSplit, create_dataset, iterate_batches
from miles_tune.data.base import input_bytes, on_device
from miles_tune.errors import ConfigError
from miles_tune.metrics import check_metric, compute_metrics, loss_function, probabilities
from miles_tune.models import JointFusionModel, create_encoder
from miles_tune.records import (
    MM,
    SPLITS,
    EpochRecord,
    is_better,
    mean_head,
    metric_key,
    without_head,
    zeroed_head,
)

CHECKPOINT_VERSION = 2  # 2: RNG states as tensors and plain containers (read with weights_only)
# settings a resumed run may change without changing its results
RESUMABLE_CHANGES = {"epochs", "device", "num_workers", "eval_batch_size", "data_on_device"}
#: what ``load_state_dict(..., retune=True)`` may also change: the rates PBT mutates when a
#: member takes over another's checkpoint (the loaded optimizer's rates are then rescaled)
RETUNABLE_CHANGES = {"lr", "lr_mult"}
#: splits larger than this (bytes, as model input) stay on the host with data_on_device=None
DEVICE_DATA_LIMIT = 6 * 2**30  # LUMA at the paper's settings: 4.9 GB; CREMA-D at 224 px: far more


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


class CheckpointError(ConfigError):
    """A checkpoint cannot be used: unreadable, not plain data, another version or another config."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_model(data: MultimodalData, config: TrainConfig) -> JointFusionModel:
    encoders = {}
    for m in data.modalities:
        spec = dict(data.encoders[m].kwargs)
        name = data.encoders[m].name
        override = dict(config.encoders.get(m, {}))
        if "name" in override and override["name"] != name:
            name, spec = override.pop("name"), {}
        override.pop("name", None)
        spec.update(override)
        encoders[m] = create_encoder(name, **spec)
    unknown = set(config.encoders) - set(data.modalities)
    if unknown:
        raise ValueError(
            f"encoder overrides for unknown modalities {sorted(unknown)}; have {data.modalities}"
        )
    return JointFusionModel(encoders, data.num_classes, config.fusion, config.fusion_width)


def build_optimizer(groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def split_holdout(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """Set ``fraction`` of the training set aside (a seeded permutation): (rest, held out)."""
    if fraction <= 0:
        return train, None
    n = len(train)
    n_out = int(round(fraction * n))
    if not 1 <= n_out < n:
        raise ValueError(f"a hold-out fraction of {fraction} leaves no usable split of {n} training samples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    keep, out = order[n_out:].sort().values, order[:n_out].sort().values
    if isinstance(train, TensorSplit):
        return train.subset(keep), train.subset(out)
    return Subset(train, keep.tolist()), Subset(train, out.tolist())


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``amp="bf16"`` (no loss scaling needed: bf16 has fp32's range); else nothing."""
    if amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_pass(
    model: JointFusionModel,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[dict[str, torch.Tensor], torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    weights: Mapping[str, float],
    *,
    detach_unimodal: bool = False,
    epoch: int = 0,
    method: BalancingMethod | None = None,
    amp: str = "off",
) -> tuple[torch.Tensor, int]:
    """One pass over ``batches`` with loss Σ_t weights[t]·L_t (terms: mm, then one per modality).

    With a ``method``, its step hooks run (:mod:`miles_tune.balance.base`): ``extra_losses``
    (added to the loss), ``backward`` (instead of ``loss.backward()``) and
    ``on_after_backward``, between backward and step. Without, the pass is plain (G-Blend's
    side trainings). Returns the sample-weighted sums (total, mm, per modality) and the
    number of samples.

    **No host sync per step** (a GPU runs ahead of Python): each step's loss terms and the
    norm of every parameter before the step stay on the device, and are read once when the
    pass ends (or when an update raises). The first step s whose loss is non-finite is then
    named exactly, with its cause when it is a parameter that the update of step s−1 made
    non-finite (a norm that is not finite: NaN, infinite, or too large to square in float32,
    which breaks the loss just the same). The steps after s ran on NaN; the run stops there.
    """
    modalities = model.modalities
    names = (MM, *modalities)  # the loss terms, in order
    term_weights = [float(weights[t]) for t in names]
    if not any(term_weights):
        raise ValueError("every loss weight is 0: nothing would train")
    named = [(name, p) for name, p in model.named_parameters()]
    params = [p.detach() for _, p in named]
    rows: list[torch.Tensor] = []  # per step: (total, mm, per modality) losses, on the device
    norms: list[torch.Tensor] = []  # per step: ‖p‖ of every parameter before the update, on the device
    sizes: list[int] = []
    device = next(iter(params)).device if params else torch.device("cpu")
    step = -1

    def first_fault() -> None:
        """Raise for the first non-finite loss among the steps so far (one sync), naming its cause
        when that is a parameter."""
        if not rows:
            return
        hits = (~torch.stack(rows).isfinite()).any(1).nonzero().flatten().tolist()  # the sync
        if not hits:
            return
        s = hits[0]
        bad_param = ~norms[s].isfinite() if norms else None
        if bad_param is not None and bool(bad_param.any()):
            name = named[int(bad_param.nonzero()[0])][0]
            where = f"the update at epoch {epoch}, step {s - 1}" if s else f"the start of epoch {epoch}"
            raise NonFiniteLossError(f"non-finite parameter {name} after {where}")
        raise NonFiniteLossError(f"non-finite training loss ({rows[s][0].item()}) at epoch {epoch}, step {s}")

    for step, (inputs, labels) in enumerate(batches):  # noqa: B007  (the last step is reported below)
        if params:
            norms.append(torch.stack(torch._foreach_norm(params)))
        with autocast(device, amp):
            out = model(inputs, detach_unimodal=detach_unimodal)
            terms = [loss_fn(out.logits, labels)] + [
                loss_fn(out.unimodal[m], labels) for m in modalities
            ]  # mm, then one per modality
        terms = [t.float() for t in terms]
        # Σ_t w_t·L_t without no-op ops: weight 1 adds the term as is, weight 0 leaves it out
        # (its parameters then get no gradient at all, rather than a zero one)
        weighted = [t if w == 1.0 else w * t for w, t in zip(term_weights, terms, strict=True) if w != 0.0]
        step_view = None
        if method is not None:
            step_view = TrainStep(
                inputs, out, labels, dict(zip(names, terms, strict=True)), weights, epoch, step
            )
            step_view.extra = method.extra_losses(step_view)
            weighted += [t.float() for t in step_view.extra.values()]
        loss = weighted[0]
        for t in weighted[1:]:
            loss = loss + t
        rows.append(torch.stack([loss.detach(), *(t.detach() for t in terms)]))
        optimizer.zero_grad(set_to_none=True)
        if step_view is None:
            loss.backward()
        else:
            step_view.loss = loss
            method.backward(step_view)
            method.on_after_backward(out, labels, epoch, step)
        try:
            optimizer.step()
        except RuntimeError as exc:  # e.g. Adam with lr 1e38: "value cannot be converted ... overflow"
            if "overflow" not in str(exc):
                raise
            first_fault()  # an earlier fault is the real first one
            lrs = sorted({g["lr"] for g in optimizer.param_groups})
            raise NonFiniteLossError(
                f"non-finite parameter update at epoch {epoch}, step {step} (learning rates {lrs}): {exc}"
            ) from None
        sizes.append(len(labels))
    first_fault()
    check_parameters(model, f"the update at epoch {epoch}, step {step}")
    sums = [0.0] * (len(modalities) + 2)  # total, mm, per modality: float64, summed in step order
    for n, values in zip(sizes, torch.stack(rows).tolist() if rows else [], strict=True):
        sums = [acc + n * v for acc, v in zip(sums, values, strict=True)]
    return torch.tensor(sums, dtype=torch.float64), sum(sizes)


def sample_split(split: Dataset, fraction: float, seed: int) -> Dataset:
    """A seeded ``fraction`` of ``split`` (at least one sample), in the split's order; all of it at 1."""
    if fraction >= 1.0:
        return split
    n = len(split)
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: max(1, round(fraction * n))]
    keep = keep.sort().values
    return split.subset(keep) if isinstance(split, TensorSplit) else Subset(split, keep.tolist())


@torch.no_grad()
def encode_split(
    model: JointFusionModel,
    split: Dataset,
    batch_size: int,
    device: torch.device,
    *,
    amp: str = "off",
    memory_format: torch.memory_format | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Every modality's features z_m (float32) and the labels of ``split``, in eval mode, on
    ``device``; every module is left in the mode it was in (methods call this between steps)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    feats: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities}
    labels = []
    for inputs, y in iterate_batches(split, batch_size, device=device, memory_format=memory_format):
        with autocast(torch.device(device), amp):
            z = model.encode(inputs)
        for m in model.modalities:
            feats[m].append(z[m].float())
        labels.append(y)
    for module, training in modes:
        module.train(training)
    return {m: torch.cat(v) for m, v in feats.items()}, torch.cat(labels)


def check_parameters(model: torch.nn.Module, where: str) -> None:
    """Raise :class:`NonFiniteLossError` naming the first parameter that is NaN or infinite (one
    device sync for the whole model)."""
    params = [(name, p) for name, p in model.named_parameters()]
    if not params:
        return
    finite = torch.stack([p.detach().isfinite().all() for _, p in params]).tolist()
    bad = next((name for (name, _), ok in zip(params, finite, strict=True) if not ok), None)
    if bad is not None:
        raise NonFiniteLossError(f"non-finite parameter {bad} after {where}")


def mean_losses(sums: torch.Tensor, n_seen: int, modalities: tuple[str, ...]) -> dict[str, float]:
    means = (sums / max(n_seen, 1)).tolist()
    losses = {"total": means[0], MM: means[1]}
    losses.update(dict(zip(modalities, means[2:], strict=True)))
    return losses


@dataclass
class SplitEvaluation:
    """What one evaluation pass gives: the metrics and, when the missing-modality heads were
    computed, the split's feature means (what val and test use when this is the train split)."""

    metrics: dict[str, dict[str, float]]  # head -> metric -> value
    feature_means: dict[str, torch.Tensor]  # modality -> (d_m,) float64 on the CPU; {} when not computed


@torch.no_grad()
def evaluate_split(
    model: JointFusionModel,
    split: Dataset,
    task: str,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch_size: int,
    device: torch.device,
    *,
    missing_modality: bool = True,
    train_means: Mapping[str, torch.Tensor] | None = None,
    amp: str = "off",
    memory_format: torch.memory_format | None = None,
) -> SplitEvaluation:
    """Loss and every metric of every head on one split (eval mode), in one encoder pass.

    With ``missing_modality``, also the fused head with each modality m missing:
    ``mm_zero_<m>`` (z_m := 0) and ``mm_mean_<m>`` (z_m := the training mean μ_m).
    ``train_means`` are the μ_m (the train split's :attr:`SplitEvaluation.feature_means`
    under the same weights); None means ``split`` is the training split, whose own means are
    used. Per batch only the zeroed fused logits and the feature sums are kept: as the fusion
    is affine, the μ-substituted logits are the zeroed ones plus one offset per modality,
    f(0, …, μ_m, …, 0) − f(0, …, 0), known once the means are (see
    :mod:`miles_tune.models.fusion`).
    """
    modalities = model.modalities
    if missing_modality and not getattr(model.fusion, "affine", False):
        raise TypeError(
            f"missing-modality metrics need an affine fusion; {type(model.fusion).__name__} is not "
            "(set its `affine` class attribute only if f(z) = Σ W_m z_m + b)"
        )
    model.eval()
    logits: dict[str, list[torch.Tensor]] = {h: [] for h in (MM, *modalities)}
    zeroed: dict[str, list[torch.Tensor]] = {m: [] for m in modalities} if missing_modality else {}
    labels: list[torch.Tensor] = []
    batch_sums: dict[str, list[torch.Tensor]] = {m: [] for m in modalities}
    # everything stays on the device until the pass ends: one copy to the host, not one per batch
    for inputs, y in iterate_batches(split, batch_size, device=device, memory_format=memory_format):
        with autocast(torch.device(device), amp):
            out = model(inputs)
            logits[MM].append(out.logits.float())
            for m in modalities:
                logits[m].append(out.unimodal[m].float())
            if missing_modality:
                for m in modalities:
                    zeroed[m].append(model.fuse_without(out.features, [m]).float())
                    batch_sums[m].append(out.features[m].float().sum(0))
        labels.append(y)
    y_all = torch.cat(labels).cpu()
    # per-batch sums on the device, their sum in float64 here: exact enough for any N
    sums = {m: torch.stack(b).cpu().double().sum(0) for m, b in batch_sums.items() if b}
    n = len(y_all)
    cat = {h: torch.cat(v).cpu() for h, v in logits.items()}
    means: dict[str, torch.Tensor] = {}
    if missing_modality:
        means = {m: sums[m] / n for m in modalities}  # n > 0: torch.cat above refuses an empty split
        reference = means if train_means is None else train_means
        if set(reference) != set(modalities):
            raise ValueError(f"training feature means for {sorted(reference)}, need {sorted(modalities)}")
        offsets = fusion_offsets(model, reference)
        for m in modalities:
            cat[zeroed_head(m)] = torch.cat(zeroed[m]).cpu()
            cat[mean_head(m)] = cat[zeroed_head(m)] + offsets[m]
    probs = {h: probabilities(v, task) for h, v in cat.items()}
    result = {}
    for head, lg in cat.items():
        result[head] = compute_metrics(probs[head], y_all, task)
        result[head]["loss"] = loss_fn(lg, y_all).item()
    if len(modalities) > 2:
        for m in modalities:
            others = torch.stack([probs[o] for o in modalities if o != m]).mean(0)
            result[without_head(m)] = compute_metrics(others, y_all, task)
    return SplitEvaluation(result, means)


@torch.no_grad()
def fusion_offsets(model: JointFusionModel, means: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per modality m, f(0, …, μ_m, …, 0) − f(0, …, 0) as a (1, C) float32 CPU tensor: what
    setting z_m from 0 to μ_m adds to an affine fusion's logits, whatever the other features."""
    param = next(model.fusion.parameters())
    zeros = {
        m: torch.zeros(1, model.feature_dims[m], device=param.device, dtype=param.dtype)
        for m in model.modalities
    }
    base = model.fusion(list(zeros.values()))
    return {m: (model.fuse_without(zeros, [m], fill=means) - base).float().cpu() for m in model.modalities}


def keep_on_device(splits: Mapping[str, Dataset], device: torch.device, setting: bool | None) -> bool:
    """Whether the run holds its splits on ``device`` (``data_on_device``): never on the CPU
    (they are there already); with None, on an accelerator when they fit in
    :data:`DEVICE_DATA_LIMIT` bytes as model input."""
    if device.type == "cpu" or setting is False:
        return False
    return setting is True or sum(input_bytes(s) for s in splits.values()) <= DEVICE_DATA_LIMIT


def weights_version(model: torch.nn.Module) -> tuple[tuple[int, int, int], ...]:
    """A fingerprint that changes whenever the model's parameters or buffers change: each tensor's
    identity, storage and in-place version counter (bumped by optimizer steps, ``load_state_dict``
    and BatchNorm's ``num_batches_tracked``). Tells whether cached training means are still valid."""
    tensors = [*model.parameters(), *model.buffers()]
    return tuple((id(t), t.data_ptr(), t._version) for t in tensors)


class Trainer:
    """Owns data, model, optimizer and method for one run; :meth:`run` yields epoch records."""

    def __init__(self, config: TrainConfig, data: MultimodalData | None = None) -> None:
        config.validate()
        self.config = config
        # the method first: a bad τ or μ is refused before any data is built
        self.method: BalancingMethod = create_method(config.method, **config.method_args)
        check_step_decay(config.method, config.lr_step_size)
        self.data = data if data is not None else create_dataset(config.dataset, **config.data)
        self.metric = config.metric or self.data.default_metric
        check_metric(self.metric, self.data.task)
        self.method.check(self.data.modalities, config.fusion)
        check_task(config.method, self.data.task)
        check_lr_mult(config.method, config.lr_mult, self.data.modalities)
        self.device = resolve_device(config.device)

        train_split, holdout = split_holdout(self.data.train, self.method.train_holdout, config.seed)
        splits: dict[str, Dataset] = {"train": train_split, "val": self.data.val, "test": self.data.test}
        if holdout is not None:
            splits["holdout"] = holdout
        if keep_on_device(splits, self.device, config.data_on_device):
            splits = {name: on_device(split, self.device) for name, split in splits.items()}
        self.splits = splits
        self.train_split = splits["train"]
        self.memory_format = torch.channels_last if config.channels_last else None

        seed_everything(config.seed)
        self.model = build_model(self.data, config).to(self.device)
        if self.memory_format is not None:  # only 4-D tensors (conv weights) change layout
            self.model = self.model.to(memory_format=self.memory_format)
        groups = self.method.param_groups(self.model, config.lr, config.heads_with_encoders)
        for group in groups:  # before attach: a method's own scaling (MILES's μ) applies on top
            if "modality" in group:
                group["lr"] *= config.lr_mult.get(group["modality"], 1.0)
        self.optimizer = build_optimizer(groups, config)
        self.loss_fn = loss_function(self.data.task)
        self.context = self.build_context()
        self.method.attach(self.model, self.optimizer, self.context)

        self.epoch = 0  # the next epoch to run
        self.history: list[EpochRecord] = []
        self.best_epoch: int | None = None
        self.best_value = -math.inf
        self.stopped_early = False
        # (weights_version, modality -> mean z_m over the train split): see train_feature_means
        self._train_means: tuple[tuple[tuple[int, int, int], ...], dict[str, torch.Tensor]] | None = None

    def build_context(self) -> RunContext:
        """What a method may use beyond the hooks: settings, splits, side-training helpers."""
        cfg = self.config

        def train_epoch(
            model: JointFusionModel,
            optimizer: torch.optim.Optimizer,
            weights: Mapping[str, float],
            *,
            seed: int,
            split: str = "train",
            detach_unimodal: bool = False,
        ) -> dict[str, float]:
            model.train()
            batches = iterate_batches(
                self.splits[split],
                cfg.batch_size,
                shuffle=True,
                seed=seed,
                device=self.device,
                memory_format=self.memory_format,
            )
            sums, n = train_pass(
                model, optimizer, batches, self.loss_fn, weights, detach_unimodal=detach_unimodal, amp=cfg.amp
            )
            return mean_losses(sums, n, model.modalities)

        def evaluate(model: JointFusionModel, split: str) -> dict[str, dict[str, float]]:
            # methods read no missing-modality heads: their side evaluations stay as cheap as before
            return evaluate_split(
                model,
                self.splits[split],
                self.data.task,
                self.loss_fn,
                cfg.eval_batch_size,
                self.device,
                missing_modality=False,
                amp=cfg.amp,
                memory_format=self.memory_format,
            ).metrics

        def features(
            model: JointFusionModel, split: str, *, fraction: float = 1.0, seed: int = 0
        ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
            return encode_split(
                model,
                sample_split(self.splits[split], fraction, seed),
                cfg.eval_batch_size,
                self.device,
                amp=cfg.amp,
                memory_format=self.memory_format,
            )

        return RunContext(
            modalities=self.data.modalities,
            task=self.data.task,
            metric=self.metric,
            epochs=cfg.epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            device=self.device,
            heads_with_encoders=cfg.heads_with_encoders,
            splits=self.splits,
            loss_fn=self.loss_fn,
            make_optimizer=lambda groups: build_optimizer(groups, cfg),
            train_epoch=train_epoch,
            evaluate=evaluate,
            features=features,
        )

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> Iterator[EpochRecord]:
        while self.epoch < self.config.epochs and not self.stopped_early:
            yield self.run_epoch()

    def run_epoch(self) -> EpochRecord:
        epoch, started = self.epoch, time.perf_counter()
        self.step_decay(epoch)
        lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
        losses, train_seconds = self.train_one_epoch(epoch)
        metrics = {split: self.evaluate(split) for split in SPLITS}

        multimodal = metrics[self.config.u_source][MM][self.metric]
        without = {
            m: metrics[self.config.u_source][self.without_head(m)][self.metric] for m in self.modalities
        }
        u = conditional_utilization(multimodal, without)
        evaluation = EpochEvaluation(
            epoch, metrics, self.metric, self.config.u_source, multimodal, without, u, imbalance(u)
        )
        self.method.on_epoch_end(evaluation)  # may change learning rates for the next epoch

        record = EpochRecord(
            epoch=epoch,
            losses=losses,
            metrics=metrics,
            u=u,
            delta=evaluation.delta,
            lr=lrs,
            epoch_seconds=time.perf_counter() - started,
            samples_per_second=len(self.train_split) / max(train_seconds, 1e-9),
            extra=self.method.record_extra(),
        )
        if is_better(record, self.best_record(), self.selection_key):
            self.best_value, self.best_epoch = record.metric_value(self.selection_key), epoch
        self.history.append(record)
        self.epoch += 1
        self.stopped_early = self.method.should_stop()
        return record

    def step_decay(self, epoch: int) -> None:
        """StepLR: at the start of every ``lr_step_size``-th epoch, every group's rate × ``lr_gamma``.
        The rates live in the optimizer's state, so a resumed run decays exactly as an
        uninterrupted one."""
        step = self.config.lr_step_size
        if step is not None and epoch > 0 and epoch % step == 0:
            for group in self.optimizer.param_groups:
                group["lr"] *= self.config.lr_gamma

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.data.modalities

    def without_head(self, modality: str) -> str:
        """The head that predicts without ``modality``: the other unimodal head, or their average."""
        if len(self.modalities) == 2:
            return next(m for m in self.modalities if m != modality)
        return without_head(modality)

    def train_one_epoch(self, epoch: int) -> tuple[dict[str, float], float]:
        """One pass over the training set; returns mean loss per term and seconds spent."""
        cfg, model, method = self.config, self.model, self.method
        model.train()
        method.on_train_epoch_start(epoch)  # may set parts to eval mode, or run side trainings
        started = time.perf_counter()
        batches = iterate_batches(
            self.train_split,
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed * 1_000_003 + epoch,
            num_workers=cfg.num_workers,
            device=self.device,
            memory_format=self.memory_format,
        )
        sums, n_seen = train_pass(
            model,
            self.optimizer,
            batches,
            self.loss_fn,
            method.loss_weights(),
            detach_unimodal=not method.aux_losses,
            epoch=epoch,
            method=method,
            amp=cfg.amp,
        )
        return mean_losses(sums, n_seen, self.modalities), time.perf_counter() - started

    def evaluate(self, split: str) -> dict[str, dict[str, float]]:
        """Loss and every metric of every head on one split (eval mode), the missing-modality
        heads included (``mm_zero_<m>``, ``mm_mean_<m>``).

        ``mm_mean_<m>`` uses the training split's feature means under the current weights.
        Evaluating ``train`` computes and keeps them (the loop evaluates it first, so val and
        test reuse them at no cost); any other split takes them from
        :meth:`train_feature_means`, which recomputes them if the weights changed since."""
        version = weights_version(self.model)
        train_means = None if split == "train" else self.train_feature_means()
        evaluation = evaluate_split(
            self.model,
            self.splits[split],
            self.data.task,
            self.loss_fn,
            self.config.eval_batch_size,
            self.device,
            train_means=train_means,
            amp=self.config.amp,
            memory_format=self.memory_format,
        )
        if split == "train":
            self._train_means = (version, evaluation.feature_means)
        return evaluation.metrics

    def train_feature_means(self) -> dict[str, torch.Tensor]:
        """Mean fused features z_m per modality over the training split under the current weights
        (eval mode), float64 on the CPU: from the latest ``train`` evaluation if the weights have
        not changed since (:func:`weights_version`), else from a fresh one (never stale ones)."""
        if self._train_means is None or self._train_means[0] != weights_version(self.model):
            self.evaluate("train")
        assert self._train_means is not None
        return self._train_means[1]

    # -- results ----------------------------------------------------------------------
    @property
    def selection_key(self) -> str:
        return metric_key("val", self.method.selection_head, self.metric)

    def best_record(self) -> EpochRecord | None:
        if self.best_epoch is None:
            return None
        return next(r for r in self.history if r.epoch == self.best_epoch)

    def summary(self) -> dict[str, Any]:
        best = self.best_record()
        flat = best.flat() if best else {}
        return {
            "config": self.config.to_dict(),
            "dataset": self.data.name,
            "modalities": list(self.modalities),
            "metric": self.metric,
            "selection": self.selection_key,
            "epochs_run": self.epoch,
            "stopped_early": self.stopped_early,
            "best_epoch": self.best_epoch,
            "best": {k: v for k, v in flat.items() if k.split("/")[0] in ("val", "test")},
            "seconds": sum(r.epoch_seconds for r in self.history),
        }

    # -- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "history": [r.flat() for r in self.history],
            "best_epoch": self.best_epoch,
            "best_value": self.best_value,
            "stopped_early": self.stopped_early,
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any], *, retune: bool = False) -> None:
        """Resume exactly from ``state``. With ``retune`` (PBT's exploit), ``lr`` and ``lr_mult``
        may differ from the checkpoint's: every rate the checkpoint's optimizer and method hold
        is rescaled by new/old (the global ratio, times the encoder's multiplier ratio), so a
        schedule in progress (MILES's μ, a step decay) carries on at the new rates."""
        if state.get("version") != CHECKPOINT_VERSION:
            found = state.get("version")
            raise CheckpointError(f"checkpoint version {found}: this miles_tune reads {CHECKPOINT_VERSION}")
        saved, current = state["config"], self.config.to_dict()
        defaults = TrainConfig().to_dict()  # a setting added since the checkpoint was written had its default
        allowed = RESUMABLE_CHANGES | (RETUNABLE_CHANGES if retune else set())
        changed = sorted(
            k for k in current if k not in allowed and saved.get(k, defaults.get(k)) != current[k]
        )
        if changed:
            raise CheckpointError(f"checkpoint was written with a different config; differs in {changed}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        if retune:
            self.rescale_rates(float(saved["lr"]), saved.get("lr_mult") or {})
        self.epoch = int(state["epoch"])
        self.history = [EpochRecord.from_flat(r) for r in state["history"]]
        self.best_epoch, self.best_value = state["best_epoch"], state["best_value"]
        self.stopped_early = bool(state["stopped_early"])
        set_rng_state(state["rng"])

    def rescale_rates(self, old_lr: float, old_mult: Mapping[str, float]) -> None:
        """Every group's rate (and ``initial_lr``, the base a method's multiplier applies to)
        × the new/old ratio of ``lr``, and of ``lr_mult`` for an encoder's group."""
        cfg = self.config
        for group in self.optimizer.param_groups:
            ratio = cfg.lr / old_lr
            modality = group.get("modality")
            if modality is not None:
                ratio *= cfg.lr_mult.get(modality, 1.0) / float(old_mult.get(modality, 1.0))
            for key in ("lr", "initial_lr"):
                if key in group:
                    group[key] *= ratio

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Atomic write: a crash mid-save never leaves a truncated checkpoint behind."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: str | os.PathLike, *, retune: bool = False) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        try:
            self.load_state_dict(read_checkpoint(path, self.device), retune=retune)
        except CheckpointError as exc:
            message = str(exc)
            raise CheckpointError(message if str(path) in message else f"{path}: {message}") from None


def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors and plain containers (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }


def set_rng_state(rng: Mapping[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(rng["python"])


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint as plain data only (``weights_only=True``): tensors, numbers, strings and
    containers. A file that needs anything else to unpickle (a crafted one that would run code,
    or a foreign one) is refused with a one-line error naming it, and nothing in it is executed."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        needs = next((ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln), "")
        raise CheckpointError(
            f"refusing checkpoint {path}: it is not plain data ({needs or 'unsupported content'}); "
            "only load checkpoints written by miles_tune, from a source you trust"
        ) from None
    except Exception as exc:  # truncated, or not a torch file at all
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a trainer state")
    return state


def write_history(records: list[EpochRecord], path: str | os.PathLike) -> None:
    """Per-epoch records as Parquet, one column per flat key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [r.flat() for r in records]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = pa.table({k: [row.get(k) for row in rows] for k in columns})
    pq.write_table(table, path)


def read_history(path: str | os.PathLike) -> list[EpochRecord]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return [
        EpochRecord.from_flat({k: v for k, v in row.items() if v is not None}) for row in table.to_pylist()
    ]
