"""The epoch record: one structure, one flat naming scheme, used everywhere.

The loop produces :class:`EpochRecord`; ``history.parquet``, Ray Tune reports,
MLflow metrics and the analysis scripts all read :meth:`EpochRecord.flat` keys:

    epoch, loss/<term>, <split>/<head>/<metric>, u/<modality>, delta, lr/<group>,
    epoch_seconds, samples_per_second, <method>/<name> (method extras)

Heads are ``mm`` (the fusion head), each modality name (its unimodal head),
with three or more modalities ``no_<modality>`` (the averaged other unimodal heads), and
for every modality m the fusion head with m missing (:func:`zeroed_head`,
:func:`mean_head`), which the loop records for train, val and test:

- ``mm_zero_<m>``: the fusion head with z_m (m's fused features) set to 0;
- ``mm_mean_<m>``: the fusion head with z_m set to its mean over the training split, under
  the same weights (what the model predicts when m carries no per-sample information).

They carry every metric of ``mm``, loss included (e.g. ``test/mm_zero_audio/acc``,
``val/mm_mean_video/loss``). A unimodal head predicts from m alone; these show what the
fused head loses without m.

Also here, as every layer above reads records: the rule that selects an epoch
(:func:`is_better`: higher value, then lower loss of the same head, then the later epoch;
:func:`rank_key` orders whole trials by the same rule), the names of its figures
(:func:`best_metrics`), and how a value is shown in names and labels (:func:`short_value`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "val", "test")
MM = "mm"


def metric_key(split: str, head: str, metric: str) -> str:
    return f"{split}/{head}/{metric}"


def without_head(modality: str) -> str:
    return f"no_{modality}"


ZEROED_PREFIX = "mm_zero_"
MEAN_PREFIX = "mm_mean_"


def zeroed_head(modality: str) -> str:
    """The fusion head with ``modality``'s features set to 0: ``mm_zero_<m>``."""
    return f"{ZEROED_PREFIX}{modality}"


def mean_head(modality: str) -> str:
    """The fusion head with ``modality``'s features set to their training mean: ``mm_mean_<m>``."""
    return f"{MEAN_PREFIX}{modality}"


def is_missing_modality_head(head: str) -> bool:
    """Whether ``head`` is a fusion head with one modality missing (not a modality's own head:
    readers that find modalities among head names must skip these)."""
    return head.startswith((ZEROED_PREFIX, MEAN_PREFIX))


@dataclass
class EpochRecord:
    epoch: int
    losses: dict[str, float]  # training loss per term: "total", "mm", <modality>
    metrics: dict[str, dict[str, dict[str, float]]]  # split -> head -> metric -> value
    u: dict[str, float]  # conditional utilisation per modality (Eq. 4)
    delta: float  # imbalance (Eq. 5)
    lr: dict[str, float]  # learning rate per param group, as used in this epoch
    epoch_seconds: float
    samples_per_second: float
    extra: dict[str, float] = field(default_factory=dict)  # method-specific, keys "<method>/<name>"

    def flat(self) -> dict[str, float]:
        out: dict[str, Any] = {"epoch": self.epoch}
        out.update({f"loss/{k}": v for k, v in self.losses.items()})
        for split, heads in self.metrics.items():
            for head, values in heads.items():
                out.update({metric_key(split, head, k): v for k, v in values.items()})
        out.update({f"u/{m}": v for m, v in self.u.items()})
        out["delta"] = self.delta
        out.update({f"lr/{g}": v for g, v in self.lr.items()})
        out["epoch_seconds"] = self.epoch_seconds
        out["samples_per_second"] = self.samples_per_second
        out.update(self.extra)
        return out

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> EpochRecord:
        rec = cls(
            epoch=int(flat["epoch"]),
            losses={},
            metrics={},
            u={},
            delta=float(flat["delta"]),
            lr={},
            epoch_seconds=float(flat["epoch_seconds"]),
            samples_per_second=float(flat["samples_per_second"]),
        )
        for key, value in flat.items():
            parts = key.split("/")
            if key in ("epoch", "delta", "epoch_seconds", "samples_per_second"):
                continue
            if parts[0] == "loss":
                rec.losses[parts[1]] = float(value)
            elif parts[0] in SPLITS and len(parts) == 3:
                rec.metrics.setdefault(parts[0], {}).setdefault(parts[1], {})[parts[2]] = float(value)
            elif parts[0] == "u":
                rec.u[parts[1]] = float(value)
            elif parts[0] == "lr":
                rec.lr[parts[1]] = float(value)
            else:
                rec.extra[key] = float(value)
        return rec

    def metric(self, split: str, head: str, metric: str) -> float:
        return self.metrics[split][head][metric]

    def metric_value(self, key: str) -> float:
        """The value of a ``<split>/<head>/<metric>`` key, NaN when the record lacks it (no
        flat copy of the record: selection asks this of every epoch)."""
        split, head, metric = key.split("/")
        return self.metrics.get(split, {}).get(head, {}).get(metric, math.nan)


def tie_break_key(selection: str) -> str:
    """The key that breaks a tie of ``selection`` (``<split>/<head>/<metric>``): the same head's
    loss on the same split, ``<split>/<head>/loss``. Lower is better."""
    parts = selection.split("/")
    if len(parts) != 3:
        raise ValueError(f"a selection key is <split>/<head>/<metric>, got {selection!r}")
    return metric_key(parts[0], parts[1], "loss")


def rank_key(value: float, loss: float) -> tuple[float, float]:
    """Sort key for an epoch (or a trial, by its best epoch) with selection ``value`` and
    tie-break ``loss``: ascending order puts the best first. Higher value first; on equal value
    lower loss first; a NaN value sorts last, a NaN loss after every finite one (NaN compares
    unordered, so it is mapped to +inf rather than left to break ``sorted``)."""
    v = math.inf if math.isnan(value) else -value
    return v, math.inf if math.isnan(loss) else loss


def is_better(candidate: EpochRecord, best: EpochRecord | None, selection: str) -> bool:
    """Whether ``candidate`` replaces ``best`` as the selected epoch. ``candidate`` is the later
    epoch (records are offered in epoch order).

    The rule (:func:`rank_key`): a higher value of ``selection`` (a flat key such as
    ``val/mm/acc``) wins; on an equal value the lower loss of the same head and split
    (:func:`tie_break_key`, e.g. ``val/mm/loss``) wins, a NaN loss losing to a finite one; on a
    tie of both (or both losses missing/NaN) the later epoch, ``candidate``, wins. A NaN value
    never wins. Why: on saturated data the metric ties often (val acc 1.0 from an early epoch on)
    while the model still improves, which the loss shows. The loop, the searcher's metric and
    every MLflow run select epochs with this one rule."""
    value = candidate.metric_value(selection)
    if math.isnan(value):
        return False
    if best is None:
        return True
    loss = tie_break_key(selection)
    return rank_key(value, candidate.metric_value(loss)) <= rank_key(
        best.metric_value(selection), best.metric_value(loss)
    )


def best_metrics(best: EpochRecord, selection: str) -> dict[str, float]:
    """The selected epoch's figures under their ``best/`` names: ``best/<selection>`` (what a
    search maximises), ``best/<tie_break_key(selection)>`` (e.g. ``best/val/mm/loss``: what breaks
    a tie between trials, NaN when the record lacks it), ``best/test/*`` (what a paper reports)
    and ``best_epoch``."""
    flat = best.flat()
    out = {f"best/{selection}": flat[selection], "best_epoch": best.epoch}
    loss = tie_break_key(selection)
    out[f"best/{loss}"] = best.metric_value(loss)
    out.update({f"best/{k}": v for k, v in flat.items() if k.startswith("test/")})
    return out


def short_value(value: Any) -> str:
    """A value as names and labels show it (run names, figure axes): 3 significant digits,
    compact exponents (1.2e-3, not 0.0012 or 1.20e-03)."""
    if not isinstance(value, float):  # ints, bools, choices
        return str(value)
    if value == 0 or not math.isfinite(value) or 1e-2 <= abs(value) < 1e4:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
