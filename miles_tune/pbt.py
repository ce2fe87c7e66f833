"""``--scheduler pbt``: population-based training of each encoder's learning rate.

A learned alternative to MILES's hand-written rule: a population of ``--num-samples`` members
trains side by side; every ``--perturbation-interval`` epochs the bottom quarter (by the
searched metric, the best-so-far validation figure) takes over the weights, optimizer and
method state of a member of the top quarter (exploit) and perturbs its rates (explore): the
global ``lr`` (when searched) and each encoder's multiplier ``lr_mult.<modality>`` (the
encoder trains at ``lr × lr_mult``), each × 1.2 or × 0.8, or with probability 0.25 drawn
afresh from its range, then clipped to it. Ray Tune's :class:`PopulationBasedTraining` does
the bookkeeping; what this module adds:

- **synchronous** rounds (``synch=True``): every member reaches the boundary before any
  decision, so each round ranks the whole population at the same epoch;
- **its own RNG** (seeded by ``--seed``, saved with the search) for every draw Ray's PBT makes
  (it uses the module-global ``random``), and ties in score broken by trial id, so the same
  seed gives the same exploits, and a ``--resume``\\d search continues where it stopped: the
  scheduler's state travels in Tune's experiment state through :class:`KeepPBTState` (Tune
  itself restores a fresh, empty PBT);
- no round at the last epoch (nothing is left to train for its winner);
- checkpoints: Tune keeps ``interval + 3`` per member while the search runs (a donor's round
  checkpoint must outlive the epochs until its exploiter restarts), and the search sweeps
  the older ones once it has finished (:func:`sweep_older_checkpoints`, then
  ``--keep-checkpoints``; an interrupted search keeps them all for ``--resume``).

The trial side (a restored checkpoint that is another member's: rates rescaled, a new MLflow
run for the new lineage) is in :mod:`miles_tune.trainable`. The budget is the population ×
epochs, as for any other search of ``--num-samples`` trials.
"""

from __future__ import annotations

import math
import random
from typing import Any

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers import pbt as ray_pbt

#: the multipliers' range when ``--lr-mult-range`` is not given: slowing an encoder 100×
#: (MILES's μ searches 0.01..1) to speeding it 10×
LR_MULT_RANGE = (0.01, 10.0)
QUANTILE_FRACTION = 0.25
RESAMPLE_PROBABILITY = 0.25
PERTURBATION_FACTORS = (1.2, 0.8)


def default_interval(epochs: int) -> int:
    """Every fifth of the run (20 epochs: rounds at 4, 8, 12 and 16)."""
    return max(1, round(epochs / 5))


def checkpoints_to_keep(interval: int) -> int:
    """A donor's round checkpoint must survive the ``interval`` epochs it may train before its
    exploiter restarts, plus the round's own save and its duplicate registration."""
    return interval + 3


class LogUniformDraw:
    """A fresh value for PBT's resampling, log-uniform in [low, high], from the scheduler's RNG
    (a Tune ``Domain`` would draw from numpy's global one)."""

    def __init__(self, low: float, high: float, rng: random.Random) -> None:
        self.low, self.high, self.rng = low, high, rng

    def __call__(self) -> float:
        return math.exp(self.rng.uniform(math.log(self.low), math.log(self.high)))


class ClipToRange:
    """PBT's ``custom_explore_fn``: × 1.2 repeated must not leave a parameter's range."""

    def __init__(self, ranges: dict[str, tuple[float, float]]) -> None:
        self.ranges = ranges

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for name, (low, high) in self.ranges.items():
            if name in config:
                config[name] = min(max(float(config[name]), low), high)
        return config


class SeededPBT(PopulationBasedTraining):
    """Synchronous PBT with its own RNG and a state that survives ``--resume`` (module doc)."""

    def __init__(self, *, seed: int, final_time: int, ranges: dict[str, tuple[float, float]], **kwargs: Any):
        self.rng = random.Random(seed)
        mutations = {name: LogUniformDraw(low, high, self.rng) for name, (low, high) in ranges.items()}
        super().__init__(
            time_attr="training_iteration",
            hyperparam_mutations=mutations,
            custom_explore_fn=ClipToRange(ranges),
            quantile_fraction=QUANTILE_FRACTION,
            resample_probability=RESAMPLE_PROBABILITY,
            perturbation_factors=PERTURBATION_FACTORS,
            synch=True,
            **kwargs,
        )
        self.final_time = final_time
        self.exploits: list[dict[str, Any]] = []  # every exploit: who, from whom, at which epoch
        self._restored: dict[str, dict[str, Any]] = {}  # per trial id, until Tune adds the trial

    def _seeded(self, call, *args):  # noqa: ANN001, ANN202
        """Run a PBT method with its module-global ``random`` swapped for this scheduler's."""
        module_random = ray_pbt.random
        ray_pbt.random = self.rng
        try:
            return call(*args)
        finally:
            ray_pbt.random = module_random

    def on_trial_add(self, tune_controller, trial: Trial) -> None:  # noqa: ANN001
        self._seeded(super().on_trial_add, tune_controller, trial)
        self._apply_saved(trial)

    def _apply_saved(self, trial: Trial) -> None:
        """A restored trial's round times, score and tag, from :meth:`restore`."""
        for key, value in self._restored.pop(trial.trial_id, {}).items():
            setattr(self._trial_state[trial], key, value)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:  # noqa: ANN001
        if result.get(self._time_attr, 0) >= self.final_time:
            return TrialScheduler.CONTINUE  # the last epoch: no round, the member just finishes
        return self._seeded(super().on_trial_result, tune_controller, trial, result)

    def _quantiles(self) -> tuple[list[Trial], list[Trial]]:
        """Ray's quantiles, with ties in score ranked by trial id (not by the order in which
        trials were added, which a resume changes)."""
        order = {t: t.trial_id for t in self._trial_state}
        saved = dict(self._trial_state)
        self._trial_state = dict(sorted(saved.items(), key=lambda item: order[item[0]]))
        try:
            return super()._quantiles()
        finally:
            self._trial_state = saved

    def _exploit(self, tune_controller, trial: Trial, trial_to_clone: Trial) -> None:  # noqa: ANN001
        epoch = self._trial_state[trial_to_clone].last_train_time
        super()._exploit(tune_controller, trial, trial_to_clone)
        self.exploits.append({"trial": trial.trial_id, "donor": trial_to_clone.trial_id, "epoch": epoch})

    # -- what Tune's experiment state carries for it (KeepPBTState) ------------------------
    def snapshot(self) -> dict[str, Any]:
        return {
            "rng": self.rng.getstate(),
            "next_sync": self._next_perturbation_sync,
            "num_checkpoints": self._num_checkpoints,
            "num_perturbations": self._num_perturbations,
            "exploits": list(self.exploits),
            "trials": {
                t.trial_id: {
                    "orig_tag": s.orig_tag,
                    "last_score": s.last_score,
                    "last_perturbation_time": s.last_perturbation_time,
                    "last_train_time": s.last_train_time,
                }
                for t, s in self._trial_state.items()
            },
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.rng.setstate(snapshot["rng"])
        self._next_perturbation_sync = snapshot["next_sync"]
        self._num_checkpoints = snapshot["num_checkpoints"]
        self._num_perturbations = snapshot["num_perturbations"]
        self.exploits = list(snapshot["exploits"])
        self._restored = dict(snapshot["trials"])
        for trial in list(self._trial_state):  # trials Tune added already
            self._apply_saved(trial)


class KeepPBTState(tune.Callback):
    """Saves the scheduler's state in every experiment snapshot and gives it back on
    ``--resume``: Tune pickles the scheduler before the search and restores that empty one."""

    def __init__(self, scheduler: SeededPBT) -> None:
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any]:
        return {"pbt": self.scheduler.snapshot()}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("pbt"):
            self.scheduler.restore(state["pbt"])


def sweep_older_checkpoints(checkpoints: list[Any]) -> None:
    """Once a PBT search has finished (not when it is interrupted: a ``--resume`` may need
    them), every member keeps only its last checkpoint, then ``--keep-checkpoints`` applies:
    drop the weights of the older ones PBT needed while it ran, and of those an exploited
    member wrote and never registered. ``checkpoints``: every member's last one."""
    from miles_tune.storage import older_checkpoints, remove_files
    from miles_tune.trainable import BEST_MODEL_FILE, TRAINER_FILE

    # a member that took over a donor and ended before its own first epoch still points into
    # the donor's folder: every member's last checkpoint stays whole
    current = {c.path.rstrip("/") for c in checkpoints}
    for checkpoint in checkpoints:
        for old in older_checkpoints(checkpoint):
            if old.path.rstrip("/") not in current:
                remove_files(old, (TRAINER_FILE, BEST_MODEL_FILE))


def make_pbt(
    *, seed: int, epochs: int, interval: int, ranges: dict[str, tuple[float, float]]
) -> tuple[SeededPBT, KeepPBTState]:
    """The scheduler and the callback that carries its state (metric and mode come from the
    TuneConfig, as for every search)."""
    scheduler = SeededPBT(seed=seed, final_time=epochs, ranges=ranges, perturbation_interval=interval)
    return scheduler, KeepPBTState(scheduler)
