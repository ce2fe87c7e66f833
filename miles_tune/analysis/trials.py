"""Trials as one table: every trial of every search, from MLflow or from ``trials.parquet``.

:func:`load_mlflow` reads the runs a search leaves in MLflow (the parent run per search, a
child run per trial); :func:`load_exports` reads the ``trials.parquet`` files a search writes
beside ``best_config.yaml``, for searches run with ``--no-tracking``. Both give the same
frame, one row per trial:

=====================  =================================================================
column                 what
=====================  =================================================================
search                 the search's name (its MLflow parent run, its ``runs/`` folder)
stage                  ``search``, ``grid``, ``seeds`` or ``unimodal`` (the parent's tag)
grid                   the grid's parameter names, comma-separated ("" when not a grid)
from_trial             the trial whose config a ``--from-best`` search re-ran ("" if none)
dataset, fusion        as tagged
method                 the row's name: the registered method, or ``<method>-<variant>`` for
                       a search run with ``--variant`` (``vanilla-noaux``, ``ogm-sgd``)
base_method, variant   the registered method and the variant ("" for none)
modality               the unimodal method's modality ("" for joint methods)
trial_id, run_id,      Tune's trial id, the MLflow child run (None from Parquet), its name,
trial_name,            and the order trials started in (over all searches)
trial_order
seed                   the trial's training seed
param/<name>           each sampled parameter except ``seed``
config.<key>           the trial's full training config, flattened (``config.method_args.tau``)
config_key             the sampled parameters except ``seed``, as one string: trials that
                       differ only in their seed share it (a configuration run with seeds)
metric, selection      the model-selection metric (``acc``) and key (``val/mm/acc``)
value, tie_loss        the selected epoch's validation metric and validation loss of the
                       same head (ties between trials break on the loss, as between epochs)
best_epoch,            the selected epoch, how many epochs ran, and the trial's training
epochs_run,            seconds (sum of its epochs' ``epoch_seconds``)
train_seconds
gpus_per_trial,        the search's resources per trial (NaN when the search did not say)
cpus_per_trial
status                 FINISHED, FAILED, ... (MLflow's; ``FINISHED`` for a Parquet trial)
val/..., test/...      every head's metrics at the selected epoch (``test/audio/acc``)
=====================  =================================================================
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from miles_tune.errors import ConfigError

STAGES = ("search", "grid", "seeds", "unimodal")
CONSTANT_COLUMNS = ("search", "dataset", "method", "variant", "fusion", "stage", "grid", "from_trial")


class AnalysisError(ConfigError):
    """The runs asked for cannot be read or hold nothing to analyse; the message says which."""


def parse_value(text: Any) -> Any:
    """A param as MLflow stores it (a string: ``str(value)``) back to its value."""
    if not isinstance(text, str):
        return text
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, str, bool)) or value is None else text


def config_key(params: dict[str, Any]) -> str:
    """The identity of a configuration: its sampled parameters except ``seed``."""
    return json.dumps({k: params[k] for k in sorted(params) if k != "seed"}, default=str)


def flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def selection_of(metrics: dict[str, Any]) -> str | None:
    """The selection key a trial reported: its one ``val/<head>/<metric>`` best that is not a loss."""
    found = [k for k in metrics if k.startswith("val/") and not k.endswith("/loss")]
    return found[0] if len(found) == 1 else None


def arm_name(method: str, variant: str) -> str:
    """A table row's name: the method, or ``<method>-<variant>`` (``vanilla-noaux``)."""
    return f"{method}-{variant}" if variant else method


def finish_row(row: dict[str, Any], best: dict[str, float]) -> dict[str, Any]:
    """Add the columns every source computes alike: the selection, value, loss and metrics."""
    selection = selection_of({k: v for k, v in best.items() if k.startswith("val/")})
    metric = selection.rsplit("/", 1)[1] if selection else str(row.get("config.metric") or "")
    row.update(best)
    row["selection"] = selection or ""
    row["metric"] = metric
    row["value"] = float(best.get(selection, math.nan)) if selection else math.nan
    head = selection.split("/")[1] if selection else ""
    row["tie_loss"] = float(best.get(f"val/{head}/loss", math.nan))
    method, variant = row.get("method", ""), row.get("variant") or ""
    row["base_method"], row["variant"] = method, variant
    row["method"] = arm_name(method, variant)
    row["modality"] = str(row.get("config.method_args.modality") or "") if method == "unimodal" else ""
    params = {k[len("param/") :]: v for k, v in row.items() if k.startswith("param/")}
    if row.get("seed") is not None:
        params["seed"] = row["seed"]
    row["config_key"] = config_key(params)
    return row


def frame(rows: list[dict[str, Any]]):  # noqa: ANN201 -> pandas.DataFrame
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in ("gpus_per_trial", "cpus_per_trial", "train_seconds", "best_epoch", "epochs_run", "value"):
        if col not in df:
            df[col] = math.nan
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df = df.sort_values(["start_time", "search", "trial_name"], kind="stable").reset_index(drop=True)
    df["trial_order"] = range(len(df))
    return df


# -- MLflow -------------------------------------------------------------------------------
def experiment_ids(client, names: Sequence[str], uri: str) -> list[str]:  # noqa: ANN001
    ids = []
    for name in names:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            known = sorted(e.name for e in client.search_experiments())
            raise AnalysisError(f"no MLflow experiment {name!r} at {uri}; it has {known}")
        ids.append(exp.experiment_id)
    return ids


def all_runs(client, ids: list[str], filter_string: str) -> list:  # noqa: ANN001
    runs, token = [], None
    while True:
        page = client.search_runs(ids, filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def load_mlflow(
    tracking_uri: str,
    experiments: Sequence[str],
    *,
    datasets: Iterable[str] = (),
    fusions: Iterable[str] = (),
    methods: Iterable[str] = (),
    searches: Iterable[str] = (),
):  # noqa: ANN201 -> pandas.DataFrame
    """Every trial of the searches in ``experiments``, optionally only some datasets,
    fusions, methods or searches (by name)."""
    from miles_tune.tracking import PARENT_TAG, TRIAL_TAG, client, normalise_tracking_uri

    uri = normalise_tracking_uri(tracking_uri)
    try:
        c = client(uri)
        ids = experiment_ids(c, experiments, uri)
        parents = all_runs(c, ids, f"tags.`{PARENT_TAG}` LIKE '%'")
        children = all_runs(c, ids, f"tags.`{TRIAL_TAG}` LIKE '%'")
    except AnalysisError:
        raise
    except Exception as exc:
        from miles_tune.tracking import first_line

        raise AnalysisError(f"cannot read MLflow at {uri}: {first_line(exc)}") from None
    by_id = {p.info.run_id: p for p in parents}
    rows = []
    for run in children:
        parent = by_id.get(run.data.tags.get("mlflow.parentRunId", ""))
        if parent is None:
            continue
        rows.append(mlflow_row(run, parent))
    keep = _filters(datasets=datasets, fusions=fusions, methods=methods, searches=searches)
    df = frame([r for r in rows if keep(r)])
    df.attrs["spaces"] = {p.data.tags.get(PARENT_TAG, ""): searched_space(p.data.params) for p in parents}
    return df


def searched_space(params: dict[str, str]) -> dict[str, Any]:
    """The searched parameters of a search from its parent run's params (``tau`` =
    ``uniform(0.0, 0.5)``, as :meth:`miles_tune.spaces.Param.describe` writes them)."""
    from miles_tune.spaces import DISTRIBUTIONS, Param

    out = {}
    for name, text in params.items():
        dist, _, rest = text.partition("(")
        if dist in DISTRIBUTIONS and rest.endswith(")") and not name.startswith("config."):
            try:
                args = yaml.safe_load(f"[{rest[:-1]}]")
            except yaml.YAMLError:
                continue
            out[name] = Param(name, dist, tuple(args))
    return out


def mlflow_row(run, parent) -> dict[str, Any]:  # noqa: ANN001
    """One trial from its child run and its search's parent run."""
    from miles_tune.tracking import PARENT_TAG, TRIAL_TAG

    tags, ptags = run.data.tags, parent.data.tags
    row: dict[str, Any] = {
        "search": ptags.get(PARENT_TAG, parent.info.run_name),
        "stage": ptags.get("stage") or ("unimodal" if ptags.get("method") == "unimodal" else "search"),
        "grid": ptags.get("grid", ""),
        "from_trial": ptags.get("from_trial", ""),
        "dataset": ptags.get("dataset", ""),
        "method": ptags.get("method", ""),
        "variant": ptags.get("variant", ""),
        "fusion": ptags.get("fusion", ""),
        "trial_id": tags.get(TRIAL_TAG, ""),
        "run_id": run.info.run_id,
        "trial_name": tags.get("trial_name", run.info.run_name),
        "start_time": run.info.start_time or 0,
        "status": run.info.status,
        "epochs_run": parse_value(tags.get("epochs_run", "nan")),
        "gpus_per_trial": parse_value(parent.data.params.get("gpus_per_trial", "nan")),
        "cpus_per_trial": parse_value(parent.data.params.get("cpus_per_trial", "nan")),
    }
    params = run.data.params
    for key, text in params.items():
        if key.startswith("config."):
            row[key] = parse_value(text)
        elif not key.startswith("lr/") and key != "seed":
            row[f"param/{key}"] = parse_value(text)
    seed = params.get("seed", params.get("config.seed"))
    row["seed"] = parse_value(seed) if seed is not None else None
    metrics = run.data.metrics
    best = {k[len("best/") :]: v for k, v in metrics.items() if k.startswith("best/")}
    row["best_epoch"] = metrics.get("best_epoch", math.nan)
    row["train_seconds"] = metrics.get("train_seconds", math.nan)
    return finish_row(row, best)


def _filters(**wanted: Iterable[str]):  # noqa: ANN202
    column = {"datasets": "dataset", "fusions": "fusion", "methods": "method", "searches": "search"}
    sets = {column[k]: set(v) for k, v in wanted.items() if v}

    def keep(row: dict[str, Any]) -> bool:
        return all(row.get(col) in values for col, values in sets.items())

    return keep


# -- trials.parquet -------------------------------------------------------------------------
def export_files(paths: Iterable[str | Path]) -> list[Path]:
    """``trials.parquet`` files: given directly, in a search's results folder, or one level
    below a folder of them (``runs/``)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif (p / "trials.parquet").is_file():
            found.append(p / "trials.parquet")
        elif p.is_dir():
            found.extend(sorted(p.glob("*/trials.parquet")))
        else:
            raise AnalysisError(f"{p}: no such file or folder")
    if not found:
        raise AnalysisError(f"no trials.parquet in {', '.join(map(str, paths))}")
    return found


def load_exports(
    paths: Iterable[str | Path],
    *,
    datasets: Iterable[str] = (),
    fusions: Iterable[str] = (),
    methods: Iterable[str] = (),
    searches: Iterable[str] = (),
):  # noqa: ANN201 -> pandas.DataFrame
    """Every trial of the searches whose ``trials.parquet`` files are given (or found)."""
    from miles_tune.spaces import Param

    rows: list[dict[str, Any]] = []
    spaces: dict[str, dict[str, Any]] = {}
    for path in export_files(list(paths)):
        used = _space_used(path.parent / "search_space.yaml")
        found = export_rows(path, used)
        rows.extend(found)
        for search in {r["search"] for r in found}:
            spaces[search] = {
                name: Param(name, dist, tuple(args))
                for name, spec in used.get("space", {}).items()
                for dist, args in spec.items()
            }
    keep = _filters(datasets=datasets, fusions=fusions, methods=methods, searches=searches)
    df = frame([r for r in rows if keep(r)])
    df.attrs["spaces"] = spaces
    return df


def export_rows(path: Path, used: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per trial of one ``trials.parquet``; ``used`` is its ``search_space.yaml`` as read
    by :func:`_space_used` (the fallback for exports that predate the constant columns)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path).to_pylist()
    except Exception as exc:
        raise AnalysisError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    by_trial: dict[str, list[dict[str, Any]]] = {}
    for row in table:
        by_trial.setdefault(str(row.get("trial_id")), []).append(row)
    rows = []
    for trial_id, epochs in by_trial.items():
        epochs.sort(key=lambda r: (r.get("epoch") is None, r.get("epoch") or 0))
        last = epochs[-1]
        method = last.get("method") or used.get("method", "")
        # Tune's columns: config/<sampled> and config/miles_tune/base/<fixed TrainConfig part>
        params = {
            k[len("config/") :]: v for k, v in last.items() if k.startswith("config/") and k.count("/") == 1
        }
        base = {
            k[len(BASE_COLUMN) :]: v for k, v in last.items() if k.startswith(BASE_COLUMN) and v is not None
        }
        config = unflatten(base) if base else dict(used.get("base", {}))
        config["method_args"] = dict(config.get("method_args") or {})
        fields = _config_fields()
        for k, v in params.items():
            (config if k in fields else config["method_args"])[k] = v
        seed = params.get("seed", config.get("seed"))
        row: dict[str, Any] = {
            "search": last.get("search") or path.parent.name,
            "stage": last.get("stage") or ("unimodal" if method == "unimodal" else "search"),
            "grid": last.get("grid") or "",
            "from_trial": last.get("from_trial") or "",
            "dataset": last.get("dataset") or used.get("dataset", ""),
            "method": method,
            "variant": last.get("variant") or "",
            "fusion": last.get("fusion") or config.get("fusion", ""),
            "trial_id": trial_id,
            "run_id": last.get("mlflow_run_id"),
            "trial_name": last.get("trial_name") or trial_id,
            "start_time": min((r.get("timestamp") or 0) for r in epochs) * 1000,
            "status": "FINISHED",
            "epochs_run": len({r.get("epoch") for r in epochs}),
            "gpus_per_trial": last.get("gpus_per_trial", used.get("gpus_per_trial", math.nan)),
            "cpus_per_trial": last.get("cpus_per_trial", used.get("cpus_per_trial", math.nan)),
            "seed": seed,
            "best_epoch": last.get("best_epoch", math.nan),
            "train_seconds": sum(float(r.get("epoch_seconds") or 0.0) for r in epochs),
            **{f"param/{k}": v for k, v in params.items() if k != "seed"},
            **flatten(config, "config."),
        }
        best = {
            k[len("best/") :]: float(v)
            for k, v in last.items()
            if k.startswith("best/") and isinstance(v, (int, float))
        }
        rows.append(finish_row(row, best))
    return rows


BASE_COLUMN = "config/miles_tune/base/"


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"data/n_train": 64}`` -> ``{"data": {"n_train": 64}}`` (Tune's flattened config)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _space_used(path: Path) -> dict[str, Any]:
    """What ``search_space.yaml`` (the space as a search used it) says of every trial."""
    if not path.is_file():
        return {}
    raw = yaml.safe_load(path.read_text()) or {}
    methods = raw.get("methods") or {}
    method = next(iter(methods), "")
    base = {
        **(raw.get("train") or {}),
        "dataset": raw.get("dataset", ""),
        "method": method,
        "method_args": dict((methods.get(method) or {}).get("fixed") or {}),
    }
    return {
        "dataset": raw.get("dataset", ""),
        "method": method,
        "base": base,
        "space": dict((methods.get(method) or {}).get("space") or {}),
        **(raw.get("resources") or {}),
    }


def _config_fields() -> set[str]:
    import dataclasses

    from miles_tune.config import TrainConfig

    return {f.name for f in dataclasses.fields(TrainConfig)}


# -- one run's epochs ----------------------------------------------------------------------
def load_history(
    trial: dict[str, Any], *, tracking_uri: str | None = None, exports: Sequence[Path] = ()
) -> list:
    """A trial's epoch records: its run's ``history.parquet`` in MLflow, else its rows in a
    ``trials.parquet``."""
    from miles_tune.records import EpochRecord

    if tracking_uri and trial.get("run_id"):
        from miles_tune.tracking import client, normalise_tracking_uri
        from miles_tune.train import read_history

        c = client(normalise_tracking_uri(tracking_uri))
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            try:
                with _no_progress_bar():
                    local = c.download_artifacts(trial["run_id"], "history.parquet", d)
            except Exception as exc:
                raise AnalysisError(f"run {trial['run_id']} has no history.parquet ({exc})") from None
            return read_history(local)
    import pyarrow.parquet as pq

    for path in export_files(exports):
        rows = [r for r in pq.read_table(path).to_pylist() if str(r.get("trial_id")) == trial["trial_id"]]
        if rows:
            rows.sort(key=lambda r: r["epoch"])
            keys = ("loss/", "train/", "val/", "test/", "u/", "lr/", "epoch", "delta", "samples_per_second")
            return [
                EpochRecord.from_flat({k: v for k, v in r.items() if v is not None and k.startswith(keys)})
                for r in rows
            ]
    raise AnalysisError(f"no epochs found for trial {trial.get('trial_name') or trial.get('trial_id')}")


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a progress bar for every download; a report prints its own summary."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
