"""The paper's selection rule, applied to a trials frame (:mod:`miles_tune.analysis.trials`).

For each group (dataset × fusion × method, or dataset × modality for the unimodal
references), among the trials of the stage that selects (``search``; ``unimodal`` for the
references), the configuration with the best *validation* metric wins:

1. trials that differ only in their training seed form one configuration, ranked by its
   mean validation metric over seeds;
2. ties break on the mean validation loss of the same head (lower wins), then on the
   configuration that started first: :func:`miles_tune.records.rank_key`, the rule the
   loop uses between epochs;
3. its *test* metrics are reported, as mean ± std over the seeds it ran with. When a
   ``seeds`` search re-ran that configuration (``--from-best`` its ``best_config.yaml``, or
   the same parameters), those seeds are reported instead, and the table says so.

Grids, seed re-runs and other stages never enter the selection: counting them would give
their method extra budget. Test metrics are never looked at to select.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

JOINT_KEYS = ("dataset", "fusion", "method")
UNIMODAL_KEYS = ("dataset", "modality")


@dataclass
class Selected:
    """One group's selected configuration: the trials reported, and the budget spent."""

    key: dict[str, Any]
    trials: Any  # pandas.DataFrame: the trials whose test metrics are reported (one per seed)
    searched: Any  # pandas.DataFrame: every trial of the selecting stage in the group (the budget)
    reported_from: str  # "search" (the selecting trials' own seeds) or "re-run" (a seeds search)
    config_key: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.trials)

    def mean_std(self, column: str) -> tuple[float, float]:
        return mean_std(self.trials, column)


def mean_std(frame, column: str) -> tuple[float, float]:  # noqa: ANN001
    """Mean and sample standard deviation (0 for one value) of a column's finite values."""
    if column not in frame:
        return math.nan, math.nan
    return mean_sd([float(v) for v in frame[column] if v is not None])


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of the finite ``values``."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def budget(searched) -> dict[str, float]:  # noqa: ANN001
    """Trials, trial-epochs and device-hours (training time × the devices a trial held: its
    GPU share on GPU, else its CPUs; 1 when the search did not record them)."""
    if searched is None or len(searched) == 0:
        return {"trials": 0, "trial_epochs": 0, "device_hours": 0.0}
    devices = [
        g if math.isfinite(g) and g > 0 else (c if math.isfinite(c) and c > 0 else 1.0)
        for g, c in zip(searched["gpus_per_trial"], searched["cpus_per_trial"], strict=True)
    ]
    seconds = [s if math.isfinite(s) else 0.0 for s in searched["train_seconds"]]
    epochs = [e for e in searched["epochs_run"] if math.isfinite(e)]
    return {
        "trials": len(searched),
        "trial_epochs": int(sum(epochs)),
        "device_hours": sum(s * d for s, d in zip(seconds, devices, strict=True)) / 3600,
    }


def select(trials, keys: Sequence[str] = JOINT_KEYS, stage: str = "search") -> list[Selected]:  # noqa: ANN001
    """The selected configuration of every group of ``trials`` (see the module docstring)."""
    from miles_tune.records import rank_key

    if trials is None or len(trials) == 0:
        return []
    candidates = trials[(trials["stage"] == stage) & trials["value"].notna()]
    out = []
    for group_values, group in candidates.groupby(list(keys), sort=True):
        key = dict(
            zip(keys, group_values if isinstance(group_values, tuple) else (group_values,), strict=True)
        )
        configs = []
        for (search, ckey), runs in group.groupby(["search", "config_key"], sort=False):
            value, _ = mean_std(runs, "value")
            loss, _ = mean_std(runs, "tie_loss")
            configs.append((rank_key(value, loss), int(runs["trial_order"].min()), search, ckey, runs))
        configs.sort(key=lambda c: (c[0], c[1]))
        _, _, search, ckey, chosen = configs[0]
        params = {k[len("param/") :]: v for k, v in chosen.iloc[0].items() if k.startswith("param/")}
        params = {k: v for k, v in params.items() if not _missing(v)}
        rerun = seed_reruns(trials, key, chosen, params)
        out.append(
            Selected(
                key=key,
                trials=rerun if rerun is not None else chosen,
                searched=trials[(trials["stage"] == stage) & _matches(trials, key)],
                reported_from="re-run" if rerun is not None else "search",
                config_key=ckey,
                params=params,
            )
        )
    return out


def seed_reruns(trials, key: dict[str, Any], chosen, params: dict[str, Any]):  # noqa: ANN001, ANN201
    """The trials of ``seeds`` searches that re-ran the chosen configuration, or None: by
    provenance (``from_trial``), else by equal parameters."""
    reruns = trials[(trials["stage"] == "seeds") & _matches(trials, key) & trials["value"].notna()]
    if len(reruns) == 0:
        return None
    by_origin = reruns[reruns["from_trial"].isin(set(chosen["trial_id"]))]
    if len(by_origin):
        return by_origin
    same = [all(_equal(trial_value(row, k), v) for k, v in params.items()) for _, row in reruns.iterrows()]
    found = reruns[same]
    return found if len(found) else None


def trial_value(row, name: str) -> Any:  # noqa: ANN001
    """A trial's value of a setting or method argument, sampled or fixed (``tau``, ``lr``)."""
    for column in (f"param/{name}", f"config.{name}", f"config.method_args.{name}"):
        value = row.get(column)
        if not _missing(value):
            return value
    return None


def _matches(trials, key: dict[str, Any]):  # noqa: ANN001, ANN202
    mask = trials["stage"].notna()
    for k, v in key.items():
        mask &= trials[k] == v
    return mask


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b
