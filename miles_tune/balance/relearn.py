"""Diagnosing & Re-learning: soft re-initialisation of the encoders that over-fit.

Paper: Wei, Li, Feng & Hu, "Diagnosing and Re-learning for Balanced Multimodal Learning",
ECCV 2024. Official code: ``GeWu-Lab/Diagnosing_Relearning_ECCV2024`` (``code/ours.py``);
also BalanceBenchmark's ``ReLearning_trainer.py``. Semantics follow the official code:

1. **Diagnosis**, at the end of every ``every``-th epoch (not epoch 0), at most ``times``
   times: each encoder's features z_m on the training split and on a held-out split, in eval
   mode; per split, each feature scaled to [−1, 1] on that split alone, then k-means with
   as many clusters as classes; the **purity** of the clusters (each cluster labelled with
   its majority class, ties to the lower class) on each split, P_train and P_val.
2. **Strength** α_m = tanh(λ · |P_train − P_val|): an encoder whose representation separates
   the training data much better than held-out data has over-fitted and is re-initialised
   more; one that learned little (chance purity on both) is left alone.
3. **Soft re-initialisation**: every parameter of encoder m (and its projection) becomes
   (1 − α_m)·θ + α_m·θ_init, with θ_init the encoder's initial weights. BatchNorm's running
   statistics, the heads, the fusion and the optimizer's state are left as they are.

Readings chosen where the sources differ or are silent:

- The held-out split is the run's validation split (the official code carves its own
  validation split from the training set). It only sets the re-initialisation's strength.
- The re-initialisation is applied at the start of the next epoch, not at the end of the
  diagnosed one: the epoch's record and its saved best weights belong to the model that was
  evaluated (the official script also evaluates and saves before it re-initialises;
  BalanceBenchmark evaluates the re-initialised model). A diagnosis at the last epoch waits
  in the checkpoint, so a run resumed with more epochs continues exactly as a longer one.
- k-means (scikit-learn is not a dependency): k-means++ seeding from a generator seeded by
  the run's seed and the epoch, ``restarts`` runs (the lowest inertia wins), at most 300
  Lloyd iterations each, as scikit-learn's defaults.
- θ_init is the weights the encoder was built with: the model is rebuilt from the run's seed
  before a checkpoint is loaded, so a resumed run re-initialises towards the same weights.
- Loss: the official code trains on L_mm only, so ``aux_losses=False`` by default (unimodal
  heads are probes); ``aux_losses=True`` adds Eq. 3's unimodal terms.
- Multiclass only: cluster purity needs one class per sample. Any number of modalities.

State for an exact resume: the number of re-initialisations done and the strengths waiting
for the next epoch. Every epoch records ``relearn/alpha_<m>`` (0 when
there is no diagnosis), a diagnosed one also ``relearn/purity_train_<m>`` and ``relearn/purity_val_<m>``.

Hyper-parameters and default search ranges (``SEARCH_SPACE``): ``lam`` (λ) log-uniform in
[0.5, 10] (official 3), ``every`` in [5, 20] epochs (official 20 of 90; BalanceBenchmark 15
of 30), ``times`` in [1, 4] (official 3; BalanceBenchmark 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from miles_tune.balance import register_method
from miles_tune.balance.base import BalancingMethod, EpochEvaluation
from miles_tune.errors import ConfigError


def scale_to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Each column mapped to [−1, 1] by its min and max (a constant column: its min to −1)."""
    lo, hi = x.min(0).values, x.max(0).values
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return 2 * (x - lo) / span - 1


def kmeans(
    x: torch.Tensor, k: int, generator: torch.Generator, restarts: int = 1, iters: int = 300
) -> torch.Tensor:
    """Cluster labels of the rows of ``x`` (float64): k-means++ seeding, Lloyd's iterations until
    no centre moves by more than 1e-4 of the data's variance; the run with the lowest inertia."""
    x = x.double().cpu()
    n = len(x)
    k = min(k, n)
    tol = 1e-4 * x.var(0).mean().item() if n > 1 else 0.0
    best, best_inertia = None, math.inf
    for _ in range(restarts):
        centres = x[torch.randint(n, (1,), generator=generator)]
        while len(centres) < k:
            d2 = torch.cdist(x, centres).min(1).values.pow(2)
            weights = d2 if d2.sum() > 0 else torch.ones(n, dtype=x.dtype)
            centres = torch.cat([centres, x[torch.multinomial(weights, 1, generator=generator)]])
        for _ in range(iters):
            labels = torch.cdist(x, centres).argmin(1)
            new = torch.stack(
                [x[labels == j].mean(0) if (labels == j).any() else centres[j] for j in range(k)]
            )
            shift = (new - centres).pow(2).sum(1).max().item()
            centres = new
            if shift <= tol:
                break
        labels = torch.cdist(x, centres).argmin(1)
        inertia = (x - centres[labels]).pow(2).sum().item()
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def purity(clusters: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of samples whose cluster's majority class (ties: the lower class) is theirs."""
    clusters, labels = clusters.long().cpu(), labels.long().cpu()
    hits = 0
    for c in clusters.unique():
        members = labels[clusters == c]
        hits += int((members == torch.bincount(members).argmax()).sum())
    return hits / len(labels)


@register_method("relearn")
class Relearn(BalancingMethod):
    SEARCH_SPACE: ClassVar[dict[str, tuple[Any, ...]]] = {
        "lam": ("loguniform", 0.5, 10.0),
        "every": ("randint", 5, 20),
        "times": ("randint", 1, 4),
    }
    tasks: ClassVar[tuple[str, ...]] = ("multiclass",)

    def __init__(
        self, lam: float = 3.0, every: int = 20, times: int = 3, restarts: int = 10, aux_losses: bool = False
    ) -> None:
        if not lam > 0:
            raise ConfigError(f"lam: must be > 0 (the re-initialisation's sharpness λ), got {lam}")
        if every < 1:
            raise ConfigError(f"every: must be ≥ 1 epoch, got {every}")
        if times < 0:
            raise ConfigError(f"times: must be ≥ 0, got {times}")
        if restarts < 1:
            raise ConfigError(f"restarts: must be ≥ 1, got {restarts}")
        self.lam = float(lam)
        self.every = int(every)
        self.times = int(times)
        self.restarts = int(restarts)
        self.aux_losses = bool(aux_losses)
        self.done = 0  # diagnoses so far
        self.pending: dict[str, float] = {}  # strengths to apply at the next epoch's start
        self.diagnosis: dict[str, float] = {}  # what the last epoch's diagnosis found (for its record)

    @classmethod
    def example_args(cls, modalities: Sequence[str]) -> dict[str, Any]:
        return {"every": 1, "times": 2, "restarts": 2}

    def attach(self, model, optimizer, context=None) -> None:  # noqa: ANN001
        super().attach(model, optimizer, context)
        self.initial = {
            m: [p.detach().clone() for p in model.modality_parameters(m)] for m in model.modalities
        }

    def on_train_epoch_start(self, epoch: int) -> None:
        self.diagnosis = {}
        with torch.no_grad():
            for m, alpha in self.pending.items():
                for p, p0 in zip(self.model.modality_parameters(m), self.initial[m], strict=True):
                    p.lerp_(p0, alpha)
        self.pending = {}

    def on_epoch_end(self, evaluation: EpochEvaluation) -> None:
        epoch = evaluation.epoch
        if epoch == 0 or epoch % self.every or self.done >= self.times:
            return
        self.done += 1
        ctx = self.context
        generator = torch.Generator().manual_seed(ctx.seed * 1_000_003 + epoch)
        found = {}
        for split in ("train", "val"):
            feats, labels = ctx.features(self.model, split)
            k = self.model.num_classes
            for m in self.model.modalities:
                clusters = kmeans(scale_to_unit_range(feats[m].double()), k, generator, self.restarts)
                found[f"purity_{split}_{m}"] = purity(clusters, labels)
        for m in self.model.modalities:
            alpha = math.tanh(self.lam * abs(found[f"purity_train_{m}"] - found[f"purity_val_{m}"]))
            found[f"alpha_{m}"] = alpha
            self.pending[m] = alpha
        self.diagnosis = found

    def record_extra(self) -> dict[str, float]:
        """Every epoch the strength decided at its end (0: none); at a diagnosis, the purities."""
        alphas = {f"alpha_{m}": 0.0 for m in self.model.modalities}
        return {f"relearn/{k}": v for k, v in {**alphas, **self.diagnosis}.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done, "pending": dict(self.pending)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.done = int(state["done"])
        self.pending = {m: float(a) for m, a in state["pending"].items()}
