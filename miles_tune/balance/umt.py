"""UMT: distillation from uni-modal teachers.

Paper: Du, Teng, Li, Liu, Yuan, Wang, Yuan & Zhao, "On Uni-Modal Feature Learning in
Supervised Multi-Modal Learning", ICML 2023 (UMT, Uni-Modal Teacher; UME, Uni-Modal
Ensemble). No official code was found; BalanceBenchmark's ``UMT_trainer.py`` is the public
implementation read for facts.

Each encoder is trained to keep the features its modality's unimodal model learned: with
h_m the encoder's output (before any projection to the fused width) and t_m the frozen
teacher encoder's output on the same input, the step's loss is Eq. 3's (or L_mm alone) plus
λ · Σ_m mean((h_m − t_m)²) (the ``extra_losses`` hook). BalanceBenchmark: λ = 10, the MSE's
mean over elements, the features after pooling.

**Teachers** are the ``unimodal`` runs a study already makes (the unimodal stage, one search
per modality): ``teachers={modality: path}`` with each path a ``best_model.pt`` (the weights a
search keeps of its best trial's best epoch, ``--keep-checkpoints best``), or that search's
``best_config.yaml`` (or its results folder), whose ``best_model`` names the file. The study
passes its unimodal searches on by itself. The teacher of m is the student's own encoder m,
loaded with the ``encoders.<m>.*`` weights of that model, in eval mode, without gradients.

Readings chosen where the sources are silent or differ:

- Teachers in eval mode (BalanceBenchmark leaves them in train mode, so their BatchNorm
  statistics drift with the student's batches).
- The student is not initialised from the teachers (as BalanceBenchmark).
- UME (averaging the unimodal models' predictions, no joint training) is not a training
  method; it is not included.
- Loss: the distillation term is added to the fused loss only by default
  (``aux_losses=False``: unimodal heads are probes), as BalanceBenchmark; ``aux_losses=True``
  keeps Eq. 3's unimodal terms.
- ``teachers="initial"``: every encoder's own initial weights as its teacher, the placeholder
  the shipped search spaces hold. Distilling towards untrained features is not UMT, so it is
  refused (as MSLR's placeholder rates are) unless ``allow_initial_teachers=true``: for smoke
  runs, and for a study's check of its plan before its unimodal searches exist.
- Any number of modalities, multiclass or multilabel: the rule only needs each modality's
  encoder output.

State: none beyond the model (the teachers are read from their files again on resume).
Each epoch records ``umt/distill_<m>``, the mean squared distance to the teacher over its
steps.

Hyper-parameters and default search ranges (``SEARCH_SPACE``): ``lam`` log-uniform in
[0.1, 100] (BalanceBenchmark: 10). ``teachers`` is a path per modality (not searched).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from miles_tune.balance import register_method
from miles_tune.balance.base import (
    BalancingMethod,
    EpochMeans,
    TrainStep,
    check_unimodal_source,
    read_settings_file,
)
from miles_tune.errors import ConfigError

INITIAL = "initial"  # the encoders' own initial weights as teachers (smoke runs, plan checks)


def teacher_file(spec: str | Path, modality: str) -> Path:
    """The ``best_model.pt`` a teacher spec names: the file itself, a ``best_config.yaml`` (its
    ``best_model``), or a search's results folder holding one."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "best_config.yaml"
    if path.suffix in (".yaml", ".yml", ".json"):
        who = f"umt: teachers.{modality}"
        content = read_settings_file(path, who)
        check_unimodal_source(content, path, modality, who)
        model = content.get("best_model") if isinstance(content, Mapping) else None
        if not model:
            raise ConfigError(
                f"{who}: {path} names no best_model (its search kept no weights: "
                "run it with --keep-checkpoints best, the default)"
            )
        path = Path(model)
    if not path.is_file():
        raise ConfigError(f"umt: teachers.{modality}: {path} does not exist")
    return path


@register_method("umt")
class UMT(BalancingMethod):
    SEARCH_SPACE: ClassVar[dict[str, tuple[Any, ...]]] = {"lam": ("loguniform", 0.1, 100.0)}
    from_unimodal: ClassVar[str | None] = "teachers"
    until_unimodal: ClassVar[dict[str, Any]] = {"allow_initial_teachers": True}

    def __init__(
        self,
        teachers: Mapping[str, str] | str | None = None,
        lam: float = 10.0,
        aux_losses: bool = False,
        allow_initial_teachers: bool = False,
    ) -> None:
        if teachers is None or (isinstance(teachers, Mapping) and not teachers):
            raise ConfigError(
                "umt needs a teacher per modality: teachers={modality: best_model.pt, or the "
                "best_config.yaml of its unimodal search} (python -m miles_tune.study passes them on)"
            )
        if isinstance(teachers, str) and teachers != INITIAL:
            raise ConfigError(f"teachers: a {{modality: path}} mapping or {INITIAL!r}, got {teachers!r}")
        if not lam > 0:
            raise ConfigError(f"lam: must be > 0 (the distillation's weight), got {lam}")
        self.teachers = (
            teachers if isinstance(teachers, str) else {str(m): str(p) for m, p in teachers.items()}
        )
        self.lam = float(lam)
        self.aux_losses = bool(aux_losses)
        self.allow_initial_teachers = bool(allow_initial_teachers)
        self.distance = EpochMeans("umt/distill")

    @classmethod
    def example_args(cls, modalities: Sequence[str]) -> dict[str, Any]:
        return {"teachers": INITIAL, "allow_initial_teachers": True}

    def check(self, modalities: Sequence[str], fusion: str) -> None:
        if self.teachers == INITIAL:
            if not self.allow_initial_teachers:
                raise ConfigError(
                    "umt: teachers='initial' distils towards untrained encoders, a placeholder: give each "
                    "modality's best_config.yaml of a `--method unimodal` search (python -m miles_tune.study "
                    "passes them on), or set method_args.allow_initial_teachers=true to run on it anyway"
                )
            return
        missing = [m for m in modalities if m not in self.teachers]
        unknown = [m for m in self.teachers if m not in modalities]
        if missing or unknown:
            raise ConfigError(
                f"umt: teachers for {sorted(self.teachers)}; this dataset's modalities are {list(modalities)}"
            )
        for m in modalities:
            teacher_file(self.teachers[m], m)

    def attach(self, model, optimizer, context=None) -> None:  # noqa: ANN001
        super().attach(model, optimizer, context)
        device = next(model.parameters()).device
        self.teacher_encoders = {}
        for m in model.modalities:
            teacher = copy.deepcopy(model.encoders[m])
            if self.teachers != INITIAL:
                path = teacher_file(self.teachers[m], m)
                state = torch.load(path, map_location=device, weights_only=True)
                prefix = f"encoders.{m}."
                mine = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                try:
                    teacher.load_state_dict(mine)
                except RuntimeError as exc:
                    first = str(exc).strip().splitlines()[0]
                    raise ConfigError(
                        f"umt: teachers.{m}: {path} does not fit this encoder ({first})"
                    ) from None
            self.teacher_encoders[m] = teacher.eval().requires_grad_(False)

    def on_train_epoch_start(self, epoch: int) -> None:
        self.distance.reset()

    def extra_losses(self, step: TrainStep) -> dict[str, torch.Tensor]:
        terms = []
        for m in self.model.modalities:
            with torch.no_grad():
                target = self.teacher_encoders[m](step.inputs[m]).float()
            terms.append(torch.mean((step.output.encoded[m].float() - target) ** 2))
        self.distance.add(torch.stack(terms))
        return {"umt": self.lam * sum(terms)}

    def record_extra(self) -> dict[str, float]:
        return self.distance.record(self.model.modalities)
