"""MLflow: one parent run per search, one child run per trial, one metric step per epoch.

**Tracking never stops training.** A trial logs through :class:`TrialRun`, whose every call
may fail: the trial warns, keeps training and checkpointing, and catches up on the missing
epochs at a later epoch once the store answers again (logging is idempotent: a run gets
every epoch past the last one it holds). If the store is still down when the trial ends,
the search driver brings the run up to date from the trial's checkpoint (history, summary,
run id), at the trial's end or at the end of the search; failing that, ``--resume`` of the
search does. A run is complete when it carries the tag :data:`SYNCED_TAG`.

MLflow's HTTP client is bounded here (at most 2 retries, 10 s per request, unless the
``MLFLOW_HTTP_REQUEST_*`` variables say otherwise), so one call cannot block for minutes,
and :func:`prepare_store` refuses an unreachable store in seconds, before Ray starts.

Logging happens inside each trial (not in a driver callback); a retried or restored trial
finds its own run again (its id is in the trial checkpoint; failing that, the run tagged with
its trial id under the same parent), so runs are never duplicated.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miles_tune.errors import ConfigError
from miles_tune.records import EpochRecord, best_metrics, is_better, short_value

log = logging.getLogger("miles_tune.tracking")

PARENT_TAG = "miles_tune.search"
TRIAL_TAG = "miles_tune.trial_id"
SYNCED_TAG = "miles_tune.synced"  # the run holds every epoch, its artifacts and its final status
#: PBT: ``<donor trial id>@<epochs done>``, the member whose weights a trial's run continues
LINEAGE_TAG = "pbt.lineage"
#: PBT: on a trial's earlier run, retired when the trial took over another member's weights
RETIRED_TAG = "pbt.retired_trial_id"
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
#: MLflow's own defaults retry for about 4 minutes, 2 minutes per request: far too long to block a trial
BOUNDED_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
RETRY_DELAYS = (10.0, 30.0, 60.0, 120.0, 300.0)  # seconds a trial waits before trying MLflow again
#: A trial's epochs wait to be logged together until they hold this many seconds of training
#: (one epoch that long is logged at once). MLflow's SQL store pays most of a ``log_batch`` per
#: call, not per metric, so epochs of a fraction of a second are logged a few at a time.
SYNC_EVERY_S = 2.0


def default_tracking_uri() -> str:
    return f"sqlite:///{Path('mlflow.db').resolve()}"


def normalise_tracking_uri(uri: str | None) -> str:
    """Absolute paths for local stores: trials run in other working directories."""
    if not uri:
        return default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///') :]).resolve()}"
    if "://" not in uri:  # a bare path: a sqlite file
        return f"sqlite:///{Path(uri).resolve()}"
    return uri


def sqlite_path(tracking_uri: str) -> Path | None:
    return Path(tracking_uri[len("sqlite:///") :]) if tracking_uri.startswith("sqlite:///") else None


def client(tracking_uri: str):  # -> mlflow.MlflowClient
    for key, value in BOUNDED_HTTP.items():
        os.environ.setdefault(key, value)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def quote(value: str) -> str:
    """``value`` as a string literal of an MLflow filter. MLflow's filter grammar has no escapes:
    a literal is quoted with the quote character it does not contain."""
    value = str(value)
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ConfigError(f"cannot search MLflow for {value!r}: it holds both kinds of quote")


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def prepare_store(tracking_uri: str, timeout: float = 5.0) -> None:
    """Before Ray starts: the store must answer within ``timeout`` seconds, and a new sqlite
    store is created here, once, under a file lock (MLflow's schema migration is not safe when
    two processes run it at once: the second one fails in alembic)."""
    from miles_tune.locks import exclusive

    db = sqlite_path(tracking_uri)
    try:
        if db is not None:
            if not db.parent.is_dir():
                raise ConfigError(f"--tracking-uri {tracking_uri}: the folder {db.parent} does not exist")
            with exclusive(db.with_name(f".{db.name}.lock")):  # hidden, beside the store
                client(tracking_uri).search_experiments(max_results=1)
            return
        with _environ(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(int(timeout))):
            client(tracking_uri).search_experiments(max_results=1)
    except ConfigError:
        raise
    except Exception as exc:
        reason = first_line(exc)
        if any(s in reason for s in ("401", "403", "Unauthorized", "credentials", "Permission")):
            raise ConfigError(
                f"the MLflow tracking server {tracking_uri} refused this client ({reason}); set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or pass --no-tracking"
            ) from None
        raise ConfigError(
            f"the MLflow tracking store {tracking_uri} did not answer within {timeout:g} s ({reason}); "
            "start it, fix --tracking-uri, or pass --no-tracking"
        ) from None


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """Create the experiment on the driver (trials racing to create it is a known MLflow bug)."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    db = sqlite_path(tracking_uri)
    artifact_location = (db.parent / "mlartifacts").as_uri() if db is not None else None
    try:
        return c.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # created meanwhile by someone else
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def run_name(trial_name: str, sampled: dict[str, Any]) -> str:
    """A trial's run name: its Tune name (method and number) and what was sampled, e.g.
    ``miles-003 lr=1.2e-3 tau=0.21 mu=0.65``."""
    return " ".join([trial_name, *(f"{k}={short_value(v)}" for k, v in sampled.items())])


def run_params(searched: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """What a run logs as params: the searched parameters under their names in the search
    space (``lr``, ``tau``, ``mu``), and the full training config under ``config.`` (the same
    naming on the search's parent run, which logs its fixed part)."""
    return {**{k: str(v) for k, v in searched.items()}, **flatten(config, "config.")}


def source_tags() -> dict[str, str]:
    """What MLflow's own runs would carry (the UI's Source and User columns), and this host
    (a trial's own ``host`` tag, from where it ran, overrides it when the driver closes its run)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = ""
    tags = {
        "mlflow.source.name": "miles_tune.search",
        "mlflow.source.type": "LOCAL",
        "mlflow.user": user,
        "host": socket.gethostname(),
    }
    return non_empty(tags)


def non_empty(tags: dict[str, Any]) -> dict[str, str]:
    """Tags worth writing: an empty tag (``gpu_ids`` on a CPU) only clutters the UI."""
    return {k: str(v) for k, v in tags.items() if v is not None and str(v) != ""}


def ui_links(tracking_uri: str, experiment_id: str, parent_run_id: str, metric: str) -> dict[str, str]:
    """Where a user sees a search in the MLflow UI. MLflow 3 opens on its GenAI page; these
    open the runs table of its "Model training" view: the experiment's, and this search's
    trials alone, best first (by ``metric``). For a sqlite store, the UI of ``make mlflow-ui``."""
    from urllib.parse import quote as url_quote

    base = (
        tracking_uri.rstrip("/")
        if tracking_uri.startswith(("http://", "https://"))
        else "http://127.0.0.1:5000"
    )
    runs = f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    trials = (
        f"{runs}&searchFilter={url_quote(f'tags.mlflow.parentRunId = {quote(parent_run_id)}', safe='')}"
        f"&orderByKey={url_quote(f'metrics.`{metric}`', safe='')}&orderByAsc=false"
    )
    return {"runs": runs, "trials": trials}


def find_parent_run(tracking_uri: str, experiment_id: str, search_name: str) -> str | None:
    runs = client(tracking_uri).search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = {quote(search_name)}", max_results=1
    )
    return runs[0].info.run_id if runs else None


def start_parent_run(
    tracking_uri: str,
    experiment_id: str,
    search_name: str,
    tags: dict[str, str],
    params: dict[str, str],
    artifacts: list[Path] = (),  # type: ignore[assignment]
) -> str:
    """The search's parent run; a resumed search continues the one it started."""
    c = client(tracking_uri)
    run_id = find_parent_run(tracking_uri, experiment_id, search_name)
    if run_id is None:
        run = c.create_run(
            experiment_id, run_name=search_name, tags={PARENT_TAG: search_name, **non_empty(tags)}
        )
        run_id = run.info.run_id
        _log_params(c, run_id, params)
        for path in artifacts:
            c.log_artifact(run_id, str(path))
    else:
        c.update_run(run_id, status="RUNNING")
    return run_id


def finish_parent_run(
    tracking_uri: str,
    run_id: str,
    metrics: dict[str, float],
    status: str = "FINISHED",
    tags: dict[str, Any] | None = None,
    artifacts: list[Path] = (),  # type: ignore[assignment]
) -> None:
    """The best trial's metrics and run id, the search's result files, then the final status."""
    from mlflow.entities import RunTag

    c = client(tracking_uri)
    _log_metrics(c, run_id, metrics, step=0)
    tags = non_empty(tags or {})
    if "best_run_id" in tags:  # the way from the search to its best trial, in words and a link
        best = c.get_run(tags["best_run_id"])
        tags["best_run_name"] = best.info.run_name
        name = next((k.rsplit("/", 1)[1] for k in metrics if k.startswith("best/val/")), "")
        figures = ", ".join(  # the selection metric on every split and head, not every figure
            f"{k.removeprefix('best/')} {v:.4g}"
            for k, v in sorted(metrics.items(), key=lambda kv: not kv[0].startswith("best/val/"))
            if k.startswith("best/") and k.endswith(f"/{name}")
        )
        tags["mlflow.note.content"] = (
            f"Best trial: [{best.info.run_name}](#/experiments/{best.info.experiment_id}/runs/"
            f"{best.info.run_id}?workflowType=machine_learning), selected at epoch "
            f"{metrics.get('best_epoch', '?')}: {figures}"
        )
    if tags:
        c.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    for path in artifacts:
        if Path(path).is_file():
            c.log_artifact(run_id, str(path))
    c.set_terminated(run_id, status=status)


def _log_params(c, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i : i + 100])


def _metrics(values: dict[str, Any], step: int, timestamp_ms: int) -> list:  # -> list[mlflow Metric]
    from mlflow.entities import Metric

    return [Metric(k, float(v), timestamp_ms, step) for k, v in values.items() if isinstance(v, (int, float))]


def _log_metrics(c, run_id: str, values: dict[str, float], step: int) -> None:
    _log_batches(c, run_id, _metrics(values, step, int(time.time() * 1000)))


def _log_batches(c, run_id: str, items: list) -> None:  # noqa: ANN001
    for i in range(0, len(items), MAX_BATCH):
        c.log_batch(run_id, metrics=items[i : i + MAX_BATCH])


@dataclass
class RunSpec:
    """Who a trial's child run is: enough to find it again, or to create it, from anywhere."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    trial_id: str
    run_name: str  # what the UI lists: see :func:`run_name`
    config: dict[str, Any] = field(default_factory=dict)  # the trial's full TrainConfig
    searched: dict[str, Any] = field(default_factory=dict)  # what the searcher sampled
    selection: str | None = None  # the flat key that selects the best epoch, e.g. "val/mm/acc"
    tags: dict[str, str] = field(default_factory=dict)
    #: epochs wait to be logged together until they hold this many seconds of training (0: each
    #: at once). PBT needs 0: its exploit retires a trial's run without the trial's own history.
    sync_every_s: float = 0.0


class TrialRun:
    """The child run of one trial. :meth:`sync` brings it up to date and never raises.

    Per epoch (step = epoch) it logs the record's flat metrics; at each epoch that improves
    the selection metric, the ``best/`` figures too (so the latest ``best/...`` value of a
    run is its best epoch's, in the runs table and in charts). A group's learning rate gets a
    metric line only once it moves, with its earlier epochs filled in: constant rates are not
    drawn as flat lines. A starting rate other than α (the param ``lr``) is a param ``lr/<group>``.

    Short epochs are logged a few at a time, in one ``log_batch`` per sync, once they hold
    ``spec.sync_every_s`` of training; each metric keeps the time its epoch was first seen.
    Whoever ends the run (the trial, or the driver from the trial's checkpoint) logs the rest.
    """

    def __init__(self, spec: RunSpec, run_id: str | None = None) -> None:
        self.spec = spec
        self.run_id = run_id
        self.logged_through: int | None = None  # last epoch in the run; None until first contact
        self.synced = False  # complete: every epoch, artifacts, final status
        self.failures = 0
        self.retry_at = 0.0
        self.lr_lines: set[str] = set()  # groups whose rate moved: logged as metric lines
        self.lr_params = False  # the starting rates are logged as params
        self.seen_ms: dict[int, int] = {}  # epoch -> when this process first saw it (its metrics' time)

    def sync(
        self,
        records: list[EpochRecord],
        *,
        status: str | None = None,
        summary: dict[str, Any] | None = None,
        error: str | None = None,
        tags: dict[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Log every record past the last logged epoch; with ``status``, also the artifacts
        (history, summary, figure), ``tags`` and the error tag, then end the run.

        Returns True when the run is up to date, or its new epochs wait for a later sync (they
        hold less than ``spec.sync_every_s`` of training). On failure it warns, returns False and
        waits (10 s, then longer, up to 5 min) before it contacts MLflow again, unless ``force``.
        """
        if self.synced or (not force and time.monotonic() < self.retry_at):
            return self.synced
        self._stamp(records)
        if status is None and not force and self._may_wait(records):
            return True
        try:
            c = client(self.spec.tracking_uri)
            self._connect(c)
            if self.synced:  # completed earlier (by the trial, or by the driver)
                return True
            self._log_epochs(c, records)
            if status is not None:
                from mlflow.entities import RunTag

                log_trial_artifacts(c, self.run_id, records, summary, self.spec)
                seconds = (summary or {}).get("seconds")
                if isinstance(seconds, (int, float)):  # compute per method, from search_runs alone
                    _log_metrics(c, self.run_id, {"train_seconds": seconds}, step=0)
                final = non_empty({**(tags or {}), "error": (error or "")[:5000]})
                final[SYNCED_TAG] = "true"
                # ended first, marked complete last: a close cut short in between (its worker
                # stopped) leaves an ended run without the mark, which the driver completes
                c.set_terminated(self.run_id, status=status)
                c.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in final.items()])
                self.synced = True
        except Exception as exc:
            delay = RETRY_DELAYS[min(self.failures, len(RETRY_DELAYS) - 1)]
            self.failures += 1
            self.retry_at = time.monotonic() + delay
            log.warning(
                "MLflow logging failed for trial %s (%s); training goes on, next try in %.0f s",
                self.spec.trial_id,
                first_line(exc),
                delay,
            )
            return False
        if self.failures:
            log.warning(
                "MLflow is back: trial %s logged through epoch %s", self.spec.trial_id, self.logged_through
            )
            self.failures = 0
        return status is None or self.synced

    def continue_lineage(self, donor: str, epochs_done: int) -> None:
        """PBT's exploit: from here this trial trains on member ``donor``'s weights after its
        epoch ``epochs_done``. The trial's run so far is retired (ended, tagged ``stopped_by``
        pbt and :data:`RETIRED_TAG`, its trial tag removed, so the analysis does not count
        it), and the trial's run becomes a new one that logs the donor's epochs first: each
        trial's run holds how its final weights were trained, epoch by epoch, rates included.
        A run of this very lineage (a restart after a crash) is kept. Never raises."""
        from mlflow.entities import RunTag

        lineage = f"{donor}@{epochs_done}"
        spec = self.spec
        spec.tags = {
            **spec.tags,
            LINEAGE_TAG: lineage,
            "pbt.donor": donor,
            "pbt.from_epoch": str(epochs_done),
        }
        self.run_id, self.logged_through, self.lr_lines, self.lr_params = None, None, set(), False
        try:
            c = client(spec.tracking_uri)
            found = c.search_runs(
                [spec.experiment_id],
                filter_string=(
                    f"tags.`{TRIAL_TAG}` = {quote(spec.trial_id)} "
                    f"and tags.`mlflow.parentRunId` = {quote(spec.parent_run_id)}"
                ),
            )
            for run in found:
                if run.data.tags.get(LINEAGE_TAG) == lineage:
                    self.run_id = run.info.run_id
                    continue
                retired = {
                    RETIRED_TAG: spec.trial_id,
                    "stopped_by": "pbt",
                    "pbt.replaced_at": str(epochs_done),
                }
                c.log_batch(run.info.run_id, tags=[RunTag(k, v) for k, v in retired.items()])
                c.delete_tag(run.info.run_id, TRIAL_TAG)
                if run.info.status == "RUNNING":
                    c.set_terminated(run.info.run_id, status="FINISHED")
        except Exception as exc:
            log.warning(
                "MLflow: cannot retire the earlier run of trial %s (%s); training goes on",
                spec.trial_id,
                first_line(exc),
            )

    def _stamp(self, records: list[EpochRecord]) -> None:
        now = int(time.time() * 1000)
        for record in records:
            self.seen_ms.setdefault(record.epoch, now)

    def _may_wait(self, records: list[EpochRecord]) -> bool:
        """Connected, and the epochs not yet logged hold less than ``sync_every_s`` of training."""
        if self.logged_through is None:
            return False  # first contact: the run exists (and its id is checkpointed) from the start
        pending = sum(r.epoch_seconds for r in records if r.epoch > self.logged_through)
        return pending < self.spec.sync_every_s

    def _log_epochs(self, c, records: list[EpochRecord]) -> None:  # noqa: ANN001
        """Every record past the last logged epoch, in one ``log_batch`` (more past 1000 metrics)."""
        selection, best, items, last = self.spec.selection, None, [], self.logged_through
        for record in records:
            improved = selection is not None and is_better(record, best, selection)
            best = record if improved else best
            if record.epoch <= self.logged_through:
                continue
            values = self._epoch_values(c, records, record, items)
            if improved:
                values.update(best_metrics(record, selection))
            items += _metrics(values, record.epoch, self.seen_ms[record.epoch])  # stamped by sync
            last = record.epoch
        _log_batches(c, self.run_id, items)
        self.logged_through = last

    def _epoch_values(
        self,
        c,
        records: list[EpochRecord],
        record: EpochRecord,
        items: list,  # noqa: ANN001
    ) -> dict[str, float]:
        """The record's flat metrics, learning rates only for groups whose rate has moved (a
        rate's line starts with its earlier epochs, added to ``items``)."""
        start, alpha = records[0].lr, self.spec.config.get("lr")
        if not self.lr_params:  # a rate that starts at α is already the param `lr`
            _log_params(c, self.run_id, {f"lr/{g}": str(v) for g, v in start.items() if v != alpha})
            self.lr_params = True
        moved = {g for g, v in record.lr.items() if g not in self.lr_lines and v != start.get(g)}
        if moved:  # a new line: its earlier epochs first, so the chart starts at epoch 0
            for r in records:
                if r.epoch < record.epoch:
                    lrs = {f"lr/{g}": r.lr[g] for g in sorted(moved) if g in r.lr}
                    items += _metrics(lrs, r.epoch, self.seen_ms[r.epoch])
            self.lr_lines |= moved
        return {k: v for k, v in record.flat().items() if not k.startswith("lr/") or k[3:] in self.lr_lines}

    def _connect(self, c) -> None:  # noqa: ANN001
        """Find the run (by id, else by trial tag) or create it; learn what it already holds."""
        if self.logged_through is not None:
            return
        spec = self.spec
        run = c.get_run(self.run_id) if self.run_id else None
        if run is None:
            found = c.search_runs(
                [spec.experiment_id],
                filter_string=(
                    f"tags.`{TRIAL_TAG}` = {quote(spec.trial_id)} "
                    f"and tags.`mlflow.parentRunId` = {quote(spec.parent_run_id)}"
                ),
                max_results=1,
            )
            run = found[0] if found else None
        tags = non_empty(spec.tags)
        created = run is None
        if created:
            run = c.create_run(
                spec.experiment_id,
                run_name=spec.run_name,
                tags={"mlflow.parentRunId": spec.parent_run_id, TRIAL_TAG: spec.trial_id, **tags},
            )
        self.run_id = run.info.run_id
        if SYNCED_TAG in run.data.tags:
            self.synced = True
            return
        moved = {k: v for k, v in tags.items() if run.data.tags.get(k) != v}
        if moved:  # a retried trial may run on another node now: the tags say where it runs
            from mlflow.entities import RunTag

            c.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in moved.items()])
        if not run.data.params:
            _log_params(c, self.run_id, run_params(spec.searched, spec.config))
        self.lr_params = any(k.startswith("lr/") for k in run.data.params)
        self.lr_lines = {k[3:] for k in run.data.metrics if k.startswith("lr/")}
        if run.info.status != "RUNNING":
            c.update_run(self.run_id, status="RUNNING")
        history = [] if created else c.get_metric_history(self.run_id, "epoch")  # a new run holds none
        self.logged_through = max((int(m.step) for m in history), default=-1)


def figure_trace(records: list[EpochRecord], summary: dict[str, Any] | None, spec: RunSpec) -> dict[str, Any]:
    """The per-run figure's data: titled with the run name, with MILES's τ on the δ panel."""
    from miles_tune.plots import utilisation_trace

    config = (summary or {}).get("config") or spec.config
    metric = (summary or {}).get("metric") or config.get("metric") or "acc"
    tau = config.get("method_args", {}).get("tau") if config.get("method") == "miles" else None
    return utilisation_trace(records, metric, title=spec.run_name, tau=tau, base_lr=config.get("lr"))


def log_trial_artifacts(
    c,  # noqa: ANN001
    run_id: str,
    records: list[EpochRecord],
    summary: dict[str, Any] | None,
    spec: RunSpec,
) -> None:
    """history.parquet, summary.json and the utilisation-trace plot."""
    import json

    from miles_tune.plots import utilisation_figure
    from miles_tune.train import write_history

    if not records:
        return
    with tempfile.TemporaryDirectory() as d:
        write_history(records, Path(d) / "history.parquet")
        c.log_artifact(run_id, str(Path(d) / "history.parquet"))
        if summary is not None:
            (Path(d) / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            c.log_artifact(run_id, str(Path(d) / "summary.json"))
        figure = utilisation_figure(figure_trace(records, summary, spec))
        c.log_figure(run_id, figure, "plots/utilisation.png")


def synced_trials(tracking_uri: str, experiment_id: str, parent_run_id: str) -> set[str]:
    """Trial ids whose child runs are complete (one paged search, not one call per trial)."""
    c = client(tracking_uri)
    done: set[str] = set()
    token = None
    while True:
        page = c.search_runs(
            [experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = {quote(parent_run_id)}",
            max_results=1000,
            page_token=token,
        )
        done |= {
            r.data.tags[TRIAL_TAG] for r in page if SYNCED_TAG in r.data.tags and TRIAL_TAG in r.data.tags
        }
        token = page.token
        if not token:
            return done
