"""MLflow: one parent run per search, one child run per trial, one metric step per epoch.

Logging happens inside each trial (not in a driver callback), and is idempotent: a
trial logs every epoch record past the last step already in its run. A retried or
restored trial finds its own run again (its id is in the trial checkpoint; failing
that, the run tagged with its trial id under the same parent), so runs are never
duplicated and none is left RUNNING.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from miles_tune.records import EpochRecord

PARENT_TAG = "miles_tune.search"
TRIAL_TAG = "miles_tune.trial_id"
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call


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


def client(tracking_uri: str):  # -> mlflow.MlflowClient
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """Create the experiment on the driver (trials racing to create it is a known MLflow bug)."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if tracking_uri.startswith("sqlite:"):
        db = Path(tracking_uri[len("sqlite:///") :])
        artifact_location = (db.parent / "mlartifacts").as_uri()
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
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{search_name}'", max_results=1
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


class TrialRun:
    """The child run of one trial."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        trial_id: str,
        trial_name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        run_id: str | None = None,
    ) -> None:
        self.client = client(tracking_uri)
        if run_id is None:
            runs = self.client.search_runs(
                [experiment_id],
                filter_string=(
                    f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`mlflow.parentRunId` = '{parent_run_id}'"
                ),
                max_results=1,
            )
            run_id = runs[0].info.run_id if runs else None
        if run_id is None:
            run = self.client.create_run(
                experiment_id,
                run_name=trial_name,
                tags={"mlflow.parentRunId": parent_run_id, TRIAL_TAG: trial_id, **tags},
            )
            run_id = run.info.run_id
            _log_params(self.client, run_id, flatten(params))
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        history = self.client.get_metric_history(run_id, "epoch")
        self.logged_through = max((int(m.step) for m in history), default=-1)

    def log_records(self, records: list[EpochRecord]) -> None:
        """Log every record past the last logged epoch (step = epoch)."""
        for record in records:
            if record.epoch > self.logged_through:
                _log_metrics(self.client, self.run_id, record.flat(), step=record.epoch)
                self.logged_through = record.epoch

    def finish(self, records: list[EpochRecord], summary: dict[str, Any] | None = None) -> None:
        log_trial_artifacts(self.client, self.run_id, records, summary)
        self.client.set_terminated(self.run_id, status="FINISHED")

    def fail(self, error: BaseException) -> None:
        self.client.set_tag(self.run_id, "error", f"{type(error).__name__}: {error}"[:5000])
        self.client.set_terminated(self.run_id, status="FAILED")


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


def terminate_if_running(
    tracking_uri: str, run_id: str, status: str, records: list[EpochRecord] | None
) -> bool:
    """Close a trial's run from the driver (a trial stopped by ASHA never reaches its own end)."""
    c = client(tracking_uri)
    if c.get_run(run_id).info.status != "RUNNING":
        return False
    if records and status == "FINISHED":
        log_trial_artifacts(c, run_id, records, None)
    c.set_terminated(run_id, status=status)
    return True
