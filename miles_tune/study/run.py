"""``python -m miles_tune.study``: run a study's searches in order, resumably, then its report.

Flow: plan and validate every search (:func:`miles_tune.study.plan.plan_study`, before Ray);
print the plan; open the folder's manifest (a folder holding another study, or this one
with other settings, is refused); connect to Ray once; measure one epoch on a worker with a
trial's resources and print the estimate; run each search that has not finished, in stage
order, through the search's own planner and runner (an interrupted one with ``--resume``);
print one line per finished search; write every analysis artefact into the report folder,
with a copy of the manifest. A study whose searches have all finished only re-makes its
report, without starting Ray.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from miles_tune.errors import ConfigError
from miles_tune.study.manifest import DONE, FILE, REFUSED, RUNNING, SKIPPED, Manifest
from miles_tune.study.plan import SearchSpec, StudyPlan, estimate_lines, plan_lines, plan_study, search_argv


def measure_epoch(config: dict[str, Any]) -> dict[str, Any]:
    """Seconds of one epoch (training and evaluation) of ``config``, where a trial would run:
    data and model built first (not timed), the first epoch (so warm-up included)."""
    from miles_tune.config import TrainConfig
    from miles_tune.train import Trainer
    from miles_tune.trainable import pick_device, set_threads_from_resources

    set_threads_from_resources()
    cfg = TrainConfig.from_dict({**config, "epochs": 1, "device": pick_device()})
    trainer = Trainer(cfg)
    record = trainer.run_epoch()
    return {"epoch_seconds": record.epoch_seconds, "device": str(trainer.device)}


def connect(plan: StudyPlan) -> tuple[float, float]:
    """Ray, once for the whole study; returns the (cpus, gpus) a trial will hold."""
    import ray

    from miles_tune.resources import check_trial_resources
    from miles_tune.search import quiet_ray_defaults

    quiet_ray_defaults()
    if plan.args.verbose == 0:  # the study prints one line per search instead of Tune's tables
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        logging.getLogger("ray.tune").setLevel(logging.WARNING)
    if not ray.is_initialized():
        ray.init(address=plan.args.address, log_to_driver=plan.args.verbose > 1)
    first = plan_search_of(plan, first_method_search(plan), validating=True)
    plan.resources = check_trial_resources(first.cpus_per_trial, first.gpus_per_trial)
    return plan.resources


def first_method_search(plan: StudyPlan) -> SearchSpec:
    """The search whose trial resources and epoch stand for the study's (connect, measure)."""
    return next(s for s in plan.searches if s.stage == "methods")


def plan_search_of(plan: StudyPlan, spec: SearchSpec, validating: bool = False, resume: bool = False):  # noqa: ANN201
    from miles_tune.search import plan_search

    return plan_search(search_argv(plan, spec, validating) + (["--resume"] if resume else []))


def measure(plan: StudyPlan, manifest: Manifest, cpus: float, gpus: float) -> list[str]:
    """The estimate's lines, from one epoch measured on a worker (once per study)."""
    import ray

    from miles_tune.spaces import trial_config

    if not manifest.measured:
        spec = first_method_search(plan)
        splan = plan_search_of(plan, spec, validating=True)
        ms = splan.space.method(spec.arm.method)
        point = ms.points[0] if ms.points else {k: p.candidates()[0] for k, p in ms.params.items()}
        config = trial_config(splan.base, point).to_dict()
        task = ray.remote(num_cpus=cpus, num_gpus=gpus)(measure_epoch)
        manifest.measured = {**ray.get(task.remote(config)), "method": spec.arm.method}
        manifest.save()
    m = manifest.measured
    share = gpus if gpus > 0 else cpus
    capacity = ray.cluster_resources().get("GPU" if gpus > 0 else "CPU", 1.0)
    slots = capacity // share if share > 0 else 1.0
    if plan.args.max_concurrent:
        slots = min(slots, plan.args.max_concurrent)
    where = f"{m['method']} on {m['device']}, {share:g} {'GPU' if gpus > 0 else 'CPU'} per trial"
    return estimate_lines(plan, float(m["epoch_seconds"]), where, share, slots)


def clean_leftovers(plan: StudyPlan, spec: SearchSpec) -> None:
    """What a search killed before Tune saved anything left behind: its MLflow runs, its
    results folder, its local Tune folder; so that it starts afresh with no duplicate."""
    from miles_tune import tracking
    from miles_tune.search import is_remote

    try:
        c = tracking.client(plan.tracking_uri)
        experiment = c.get_experiment_by_name(plan.name)
        parent = (
            tracking.find_parent_run(plan.tracking_uri, experiment.experiment_id, spec.name)
            if experiment
            else None
        )
        if parent is not None:
            children = c.search_runs(
                [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
            )
            for run in children:
                c.delete_run(run.info.run_id)
            c.delete_run(parent)
    except Exception as exc:  # a leftover run is a cosmetic problem, not a reason to stop
        print(f"warning: MLflow: cannot remove the leftovers of {spec.name} ({tracking.first_line(exc)})")
    shutil.rmtree(plan.results / spec.name, ignore_errors=True)
    if not is_remote(plan.storage):
        shutil.rmtree(Path(plan.storage) / spec.name, ignore_errors=True)


def can_resume(plan: StudyPlan, spec: SearchSpec) -> bool:
    from ray import tune

    from miles_tune.search import storage_join

    return tune.Tuner.can_restore(storage_join(plan.storage, spec.name))


def blocked(plan: StudyPlan, manifest: Manifest, spec: SearchSpec) -> str | None:
    """Why ``spec`` cannot run yet: a search it builds on did not finish with a best trial."""
    from miles_tune.balance import METHODS
    from miles_tune.study.plan import unimodal_search

    needs = list(spec.needs)
    if METHODS.get(spec.arm.method).from_unimodal is not None and spec.kind != "unimodal":
        needs += [unimodal_search(plan.name, m) for m in plan.modalities]
    for name in needs:
        if manifest.status(name) != DONE or not (plan.results / name / "best_config.yaml").exists():
            return f"{name} has no best configuration"
    return None


class Progress:
    """One line per finished search: its best metric, the elapsed time and the time left
    (seconds per planned trial-epoch so far × the trial-epochs still planned)."""

    def __init__(self, plan: StudyPlan, todo: list[SearchSpec]) -> None:
        self.plan, self.todo = plan, todo
        self.started = time.monotonic()
        self.done_epochs = 0

    def line(self, index: int, spec: SearchSpec, status: str, detail: str) -> str:
        self.done_epochs += self.plan.trial_epochs(spec)
        elapsed = time.monotonic() - self.started
        left_epochs = sum(self.plan.trial_epochs(s) for s in self.todo[index + 1 :])
        left = elapsed / max(self.done_epochs, 1) * left_epochs
        return (
            f"[{index + 1}/{len(self.todo)}] {spec.stage:<11} {spec.name}: {status}{detail} | "
            f"{elapsed / 60:.1f} min so far, about {left / 60:.0f} min left"
        )


def run_one(plan: StudyPlan, manifest: Manifest, spec: SearchSpec) -> tuple[str, str, bool]:
    """Run (or resume) one search; returns (status, detail, interrupted)."""
    from miles_tune.search import interrupted, run_search, summarise

    resume = manifest.status(spec.name) == RUNNING and can_resume(plan, spec)
    if not resume:
        clean_leftovers(plan, spec)
    manifest.update(spec.name, status=RUNNING, stage=spec.stage, arm=spec.arm.label, fusion=spec.fusion)
    started = time.monotonic()
    try:
        splan = plan_search_of(plan, spec, resume=resume)
        results = run_search(splan)
    except ConfigError as exc:
        manifest.update(spec.name, status=REFUSED, reason=str(exc))
        return REFUSED, f": {exc}", False
    if interrupted(results, splan):
        return RUNNING, "", True
    summary = summarise(results, splan)
    best = summary.get("best_metrics", {}).get(splan.metric)
    manifest.update(
        spec.name,
        status=DONE,
        trials=summary["trials"],
        errors=summary["errors"],
        metric=splan.metric,
        best=best,
        best_trial=summary.get("best_trial"),
        seconds=round(time.monotonic() - started, 1),
        resumed=resume or manifest.searches[spec.name].get("resumed", False),
    )
    shown = f"{splan.metric.removeprefix('best/')} {best:.4f}" if isinstance(best, float) else "no best trial"
    return DONE, f": {summary['trials']} trials ({summary['errors']} errored), best {shown}", False


def write_study_report(plan: StudyPlan, manifest: Manifest) -> dict[str, Any]:
    from miles_tune.analysis.report import Inputs, write_report
    from miles_tune.analysis.trials import load_mlflow

    trials = load_mlflow(plan.tracking_uri, [plan.name])
    inputs = Inputs(
        trials,
        tracking_uri=plan.tracking_uri,
        spaces=dict(trials.attrs.get("spaces", {})),
        source=f"the study {plan.name} (MLflow experiment {plan.name})",
    )
    done = write_report(inputs, plan.report_dir)
    manifest.report = {
        "folder": str(plan.report_dir),
        "written": {k: [p.name for p in v] for k, v in done.items() if not isinstance(v, str)},
        "skipped": {k: v for k, v in done.items() if isinstance(v, str)},
    }
    manifest.save()
    shutil.copyfile(manifest.path, plan.report_dir / FILE)
    return done


def run_study(plan: StudyPlan) -> int:
    manifest = Manifest.open(plan.out, plan.name, plan.settings)
    for line in plan_lines(plan):
        print(line)
    if plan.args.plan:
        return 0
    manifest.save()
    todo = [s for s in plan.searches if manifest.status(s.name) != DONE]
    finished = len(plan.searches) - len(todo)
    if finished:
        print(f"  {finished} of {len(plan.searches)} searches finished earlier: skipped")
    if todo:
        import ray

        ours = not ray.is_initialized()
        try:
            cpus, gpus = connect(plan)
            for line in measure(plan, manifest, cpus, gpus):
                print(line, flush=True)
            progress = Progress(plan, todo)
            for i, spec in enumerate(todo):
                why = blocked(plan, manifest, spec)
                if why is not None:
                    manifest.update(spec.name, status=SKIPPED, reason=why)
                    print(progress.line(i, spec, SKIPPED, f": {why}"), flush=True)
                    continue
                status, detail, stopped = run_one(plan, manifest, spec)
                if stopped:
                    print(
                        f"interrupted in {spec.name}: run the same command again to resume it",
                        file=sys.stderr,
                    )
                    return 130
                print(progress.line(i, spec, status, detail), flush=True)
        finally:
            if ours and ray.is_initialized():
                ray.shutdown()
    done = write_study_report(plan, manifest)
    skipped = sum(isinstance(v, str) for v in done.values())
    print(f"report: {plan.report_dir / 'index.md'} ({len(done) - skipped} artefacts, {skipped} skipped)")
    failed = {n: s["status"] for n, s in manifest.searches.items() if s.get("status") in (REFUSED, SKIPPED)}
    for name, status in failed.items():
        print(f"  {status}: {name}: {manifest.searches[name].get('reason', '')}", file=sys.stderr)
    print(f"MLflow: mlflow ui --backend-store-uri {plan.tracking_uri} (experiment {plan.name})")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    try:
        plan = plan_study(argv)
        return run_study(plan)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue", file=sys.stderr)
        return 130
