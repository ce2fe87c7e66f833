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
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miles_tune.errors import ConfigError
from miles_tune.records import EpochRecord

log = logging.getLogger("miles_tune.tracking")

PARENT_TAG = "miles_tune.search"
TRIAL_TAG = "miles_tune.trial_id"
SYNCED_TAG = "miles_tune.synced"  # the run holds every epoch, its artifacts and its final status
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
#: MLflow's own defaults retry for about 4 minutes, 2 minutes per request: far too long to block a trial
BOUNDED_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
RETRY_DELAYS = (10.0, 30.0, 60.0, 120.0, 300.0)  # seconds a trial waits before trying MLflow again


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


def find_parent_run(tracking_uri: str, experiment_id: str, search_name: str) -> str | None:
    runs = client(tracking_uri).search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = {quote(search_name)}", max_results=1
    )
    return runs[0].info.run_id if runs else None


def start_parent_run(
    tracking_uri: str, experiment_id: str, search_name: str, tags: dict[str, str], params: dict[str, Any]
) -> str:
    """The search's parent run; a resumed search continues the one it started."""
    c = client(tracking_uri)
    run_id = find_parent_run(tracking_uri, experiment_id, search_name)
    if run_id is None:
        run = c.create_run(experiment_id, run_name=search_name, tags={PARENT_TAG: search_name, **tags})
        run_id = run.info.run_id
        _log_params(c, run_id, flatten(params))
    else:
        c.update_run(run_id, status="RUNNING")
    return run_id


def finish_parent_run(
    tracking_uri: str, run_id: str, metrics: dict[str, float], status: str = "FINISHED"
) -> None:
    c = client(tracking_uri)
    _log_metrics(c, run_id, metrics, step=0)
    c.set_terminated(run_id, status=status)


def _log_params(c, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=items[i : i + 100])


def _log_metrics(c, run_id: str, values: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in values.items() if isinstance(v, (int, float))]
    for i in range(0, len(items), MAX_BATCH):
        c.log_batch(run_id, metrics=items[i : i + MAX_BATCH])


@dataclass
class RunSpec:
    """Who a trial's child run is: enough to find it again, or to create it, from anywhere."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    trial_id: str
    trial_name: str
    params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class TrialRun:
    """The child run of one trial. :meth:`sync` brings it up to date and never raises."""

    def __init__(self, spec: RunSpec, run_id: str | None = None) -> None:
        self.spec = spec
        self.run_id = run_id
        self.logged_through: int | None = None  # last epoch in the run; None until first contact
        self.synced = False  # complete: every epoch, artifacts, final status
        self.failures = 0
        self.retry_at = 0.0

    def sync(
        self,
        records: list[EpochRecord],
        *,
        status: str | None = None,
        summary: dict[str, Any] | None = None,
        error: str | None = None,
        force: bool = False,
    ) -> bool:
        """Log every record past the last logged epoch (step = epoch); with ``status``, also the
        artifacts (for FINISHED), the error tag (for FAILED) and the end of the run.

        Returns True when the run is up to date. On failure it warns, returns False and waits
        (10 s, then longer, up to 5 min) before it contacts MLflow again, unless ``force``.
        """
        if self.synced or (not force and time.monotonic() < self.retry_at):
            return self.synced
        try:
            c = client(self.spec.tracking_uri)
            self._connect(c)
            if self.synced:  # completed earlier (by the trial, or by the driver)
                return True
            for record in records:
                if record.epoch > self.logged_through:
                    _log_metrics(c, self.run_id, record.flat(), step=record.epoch)
                    self.logged_through = record.epoch
            if status is not None:
                if status == "FINISHED":
                    log_trial_artifacts(c, self.run_id, records, summary)
                if error:
                    c.set_tag(self.run_id, "error", error[:5000])
                c.set_tag(self.run_id, SYNCED_TAG, "true")
                c.set_terminated(self.run_id, status=status)
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
        if run is None:
            run = c.create_run(
                spec.experiment_id,
                run_name=spec.trial_name,
                tags={"mlflow.parentRunId": spec.parent_run_id, TRIAL_TAG: spec.trial_id, **spec.tags},
            )
        self.run_id = run.info.run_id
        if SYNCED_TAG in run.data.tags:
            self.synced = True
            return
        moved = {k: v for k, v in spec.tags.items() if run.data.tags.get(k) != v}
        if moved:  # a retried trial may run on another node now: the tags say where it runs
            from mlflow.entities import RunTag

            c.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in moved.items()])
        if not run.data.params:
            _log_params(c, self.run_id, flatten(spec.params))
        if run.info.status != "RUNNING":
            c.update_run(self.run_id, status="RUNNING")
        history = c.get_metric_history(self.run_id, "epoch")
        self.logged_through = max((int(m.step) for m in history), default=-1)


def log_trial_artifacts(c, run_id: str, records: list[EpochRecord], summary: dict[str, Any] | None) -> None:
    """history.parquet, summary.json and the utilisation-trace plot."""
    import json

    from miles_tune.plots import utilisation_figure, utilisation_trace
    from miles_tune.train import write_history

    if not records:
        return
    with tempfile.TemporaryDirectory() as d:
        write_history(records, Path(d) / "history.parquet")
        c.log_artifact(run_id, str(Path(d) / "history.parquet"))
        if summary is not None:
            (Path(d) / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            c.log_artifact(run_id, str(Path(d) / "summary.json"))
        metric = (summary or {}).get("metric", "acc")
        c.log_figure(run_id, utilisation_figure(utilisation_trace(records, metric)), "plots/utilisation.png")


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
