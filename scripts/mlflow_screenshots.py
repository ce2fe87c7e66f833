"""Screenshots of the MLflow 3 UI after a hyper-parameter search: what a researcher sees.

Starts ``mlflow ui`` on the given store (on a free port, in its own process group, stopped at
the end), drives Debian's headless Chromium with Playwright and writes PNGs:

    runs_table.png             the experiment's runs table ("Model training" view), the search's
                               parent run expanded, columns for the best metric and short params
    search_trials.png          the runs table filtered (by URL) to the search's trials, best first
    parallel_coordinates.png   the Compare-runs page: params against the metric, over the trials
    child_run_charts.png       the best trial's "Model metrics" tab (u, delta, lr, val curves)
    utilisation_figure.png     the best trial's ``plots/utilisation.png`` in the artifact viewer
                               (the raw file is saved next to it as utilisation_raw.png)
    parent_run.png             the parent run's overview (tags, params, metrics)
    parent_artifacts.png       the parent run's artifacts tab
    shared_view.png            only if the experiment has the tag mlflow.sharedViewState.<search>:
                               the saved view a ?viewStateShareKey=<search> link opens

At the end it prints, for each PNG, what was checked on the page, and the URLs we can print for
users (the runs table; one search's trials, best first).

Run it (CI does not; it needs ``/usr/bin/chromium`` and the ``playwright`` package)::

    make mlflow-shots
    .venv/bin/python scripts/mlflow_screenshots.py --tracking-uri sqlite:///$PWD/mlflow.db
    .venv/bin/python scripts/mlflow_screenshots.py --tracking-uri sqlite:////tmp/x/mlflow.db \\
        --search synthetic-miles-concat-20261130-043339-21f122 --out /tmp/shots

Names of what we log (metric, params, tags, artifacts) are options, so the script follows
changes in ``miles_tune.tracking``; whatever a store lacks is skipped with a message.
Exit status: 0 when every screenshot taken passed its checks (skipped ones, for data the store
lacks, do not count), 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PARENT_RUN_ID_TAG = "mlflow.parentRunId"
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # experiment tag behind a ?viewStateShareKey= link
TIMEOUT_MS = 30_000


# ----------------------------------------------------------------------------- URLs


def runs_url(base: str, experiment_id: str, search_filter: str = "", order_by_metric: str = "") -> str:
    """The runs table of an experiment in the "Model training" view. Without
    ``workflowType=machine_learning`` MLflow 3 may open its GenAI pages instead."""
    url = f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if search_filter:
        url += "&searchFilter=" + quote(search_filter, safe="")
    if order_by_metric:
        url += "&orderByKey=" + quote(f"metrics.`{order_by_metric}`", safe="") + "&orderByAsc=false"
    return url


def shared_view_url(base: str, experiment_id: str, key: str) -> str:
    return (
        f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={quote(key, safe='')}"
        "&workflowType=machine_learning"
    )


def run_url(base: str, experiment_id: str, run_id: str, tab: str = "") -> str:
    """A run's page; ``tab`` is ``model-metrics``, ``artifacts/<path>``, ... (empty: overview)."""
    tail = f"/{tab}" if tab else ""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}{tail}?workflowType=machine_learning"


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    runs = quote(json.dumps(run_ids), safe="")
    experiments = quote(json.dumps([experiment_id]), safe="")
    return f"{base}/#/compare-runs?runs={runs}&experiments={experiments}&workflowType=machine_learning"


# ----------------------------------------------------------------------------- the store


@dataclass
class Store:
    """What the screenshots show: the experiment, one search's parent run and its trials."""

    experiment_id: str
    parent: object  # mlflow.entities.Run
    children: list = field(default_factory=list)
    best_child: object | None = None
    metric: str | None = None  # the metric the trials are compared on (may be a fallback)
    params: list[str] = field(default_factory=list)  # the param keys shown (resolved)


def find_store(args: argparse.Namespace) -> Store:
    from mlflow import MlflowClient

    if args.tracking_uri.startswith("sqlite:///"):  # MLflow would create an empty store
        db = Path(args.tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():
            sys.exit(f"no such file: {db} (from --tracking-uri {args.tracking_uri})")
    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        sys.exit(f"no experiment {args.experiment!r} in {args.tracking_uri}")
    eid = experiment.experiment_id
    top_level = f"tags.`{PARENT_RUN_ID_TAG}` IS NULL"
    if args.search is None:  # the latest search
        where = [top_level]
    else:  # by its tag, else by run name (parent runs are named after the search)
        where = [f"{top_level} and tags.`{args.search_tag}` = {sql_quote(args.search)}",
                 f"{top_level} and attributes.run_name = {sql_quote(args.search)}"]  # fmt: skip
    parents = []
    for filter_string in where:
        parents = parents or client.search_runs(
            [eid], filter_string, order_by=["attributes.start_time DESC"], max_results=1
        )
    if not parents:
        sys.exit(f"no parent run {'' if args.search is None else repr(args.search)} in experiment {eid}")
    parent = parents[0]
    children = client.search_runs(
        [eid],
        filter_string=f"tags.`{PARENT_RUN_ID_TAG}` = {sql_quote(parent.info.run_id)}",
        max_results=1000,
    )
    store = Store(eid, parent, children)
    print(
        f"experiment {args.experiment} (id {eid}); parent run {parent.info.run_name} "
        f"({parent.info.run_id}); {len(children)} child runs"
    )
    if not children:
        print("  ! the parent run has no child runs: the trial screenshots are skipped")
        return store

    metric_keys = set().union(*(r.data.metrics for r in children))
    for name in (args.metric, args.fallback_metric):
        if name in metric_keys:
            store.metric = name
            break
        print(f"  ! no child run has the metric {name!r}")
    if store.metric and store.metric != args.metric:
        print(f"  using {store.metric!r} (its last value) instead of {args.metric!r}")

    param_keys = set().union(*(r.data.params for r in children))
    for name in args.params:
        key = resolve_key(name, param_keys)
        if key is None:
            print(f"  ! no child run has the param {name!r} (nor one ending in '.{name}'): not shown")
        else:
            if key != name:
                print(f"  param {name!r} is logged as {key!r}")
            store.params.append(key)

    best_id = parent.data.tags.get(args.best_run_tag)
    if best_id is None:
        print(f"  ! the parent run has no tag {args.best_run_tag!r}: best trial = highest {store.metric}")
    by_id = {r.info.run_id: r for r in children}
    if best_id in by_id:
        store.best_child = by_id[best_id]
    elif store.metric:
        store.best_child = max(children, key=lambda r: r.data.metrics.get(store.metric, float("-inf")))
    else:
        store.best_child = children[0]
    print(f"  trial shown: {store.best_child.info.run_name} ({store.best_child.info.run_id})")
    return store


def sql_quote(value: str) -> str:
    """A string literal for an MLflow search filter."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def resolve_key(name: str, keys: set[str]) -> str | None:
    """``name`` itself, else a key ending in ``.name`` (``tau`` -> ``method_args.tau``)."""
    if name in keys:
        return name
    matches = sorted(k for k in keys if k.endswith("." + name))
    if len(matches) > 1:
        print(f"  ! param {name!r}: several candidates {matches}, using {matches[0]!r}")
    return matches[0] if matches else None


# ----------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(tracking_uri: str, port: int, log_path: Path) -> Iterator[str]:
    """``mlflow ui`` in its own process group; yields its base URL once /health answers and
    stops the whole group on the way out, errors included."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"mlflow ui exited with {proc.returncode}; see {log_path}")
                if healthy(base):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow ui did not answer {base}/health in 120 s; see {log_path}")
                time.sleep(0.5)
            print(f"mlflow ui: {base} (pid {proc.pid}, log {log_path})")
            yield base
        finally:
            stop_group(proc)


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ----------------------------------------------------------------------------- page helpers


def close_assistant(page) -> None:
    """MLflow 3.17 opens an "MLflow Assistant" side panel that hides a third of the page."""
    button = page.locator('[data-component-id="mlflow.assistant.chat_panel.close"]')
    if button.count() and button.first.is_visible():
        button.first.click()
        button.first.wait_for(state="hidden")


def settle(page, ms: int = 800) -> None:
    """After the awaited content is there: no spinner left, then a moment for chart transitions
    (not "network idle": the pages poll the server while auto-refresh is on)."""
    with contextlib.suppress(Exception):
        page.wait_for_function(
            "() => !document.querySelector('[role=progressbar], .du-bois-light-spin-spinning')",
            timeout=10_000,
        )
    page.wait_for_timeout(ms)


def check_text(page, text: str, where: str = "body") -> bool:
    return page.locator(where).get_by_text(text, exact=True).count() > 0


# ----------------------------------------------------------------------------- screenshots


@dataclass
class Shot:
    path: Path
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def shot_runs_table(page, base: str, store: Store, args: argparse.Namespace, shot: Shot) -> None:
    """The runs table as the printed URL opens it, then set up by clicking: the parent expanded,
    empty attribute columns hidden, the metric and param columns ticked, Run Name widened."""
    page.set_viewport_size({"width": 1600, "height": 1000})
    page.goto(runs_url(base, store.experiment_id))
    page.get_by_text("matching runs").wait_for(timeout=TIMEOUT_MS)
    close_assistant(page)
    parent_name = store.parent.info.run_name
    row = page.locator('[role="row"]', has=page.get_by_text(parent_name, exact=True)).first
    row.wait_for(timeout=TIMEOUT_MS)
    shot.checks.append(f"{page.url.split('&')[0]} opened the runs table; parent {parent_name} listed")
    if store.children:  # expand the parent: the "+" button in its run-name cell
        row.locator('[data-component-id$="runnamecellrenderer.tsx_46"]').click()
        child = store.children[0].info.run_name
        page.get_by_text(child, exact=True).first.wait_for(timeout=TIMEOUT_MS)
        shot.checks.append(f"parent expanded: child run {child} listed under it")
    columns = [("Attributes", name, False) for name in args.hide_columns]
    columns += [("Metrics", m, True) for m in dict.fromkeys([args.metric, store.metric]) if m]
    columns += [("Parameters", p, True) for p in store.params]
    shown = []
    for group, name, on in columns:
        if set_column(page, group, name, on):
            shown += [name] if on else []
        elif on:
            print(f"  ! {group} {name!r} not in the Columns menu: no column")
    close_column_menu(page)
    if widen_column(page, "Run Name", args.name_width):
        shot.checks.append(f"Run Name column widened to {args.name_width} px")
    else:
        print("  ! could not widen the Run Name column")
    for name in shown:  # room for headers such as best/val/mm/acc
        widen_column(page, name, args.value_width)
    for name in shown:
        check_header_visible(page, name, shot)
    settle(page)
    page.screenshot(path=shot.path)


def shot_search_trials(page, base: str, store: Store, args: argparse.Namespace, shot: Shot) -> None:
    """One search's trials only, best first: a URL we can print (filter and sort are URL
    state; the columns ticked for runs_table.png are kept per experiment by the browser)."""
    if not store.children or not store.metric:
        raise Skip("needs child runs and a metric")
    page.set_viewport_size({"width": 1600, "height": 800})
    url = runs_url(base, store.experiment_id, children_filter(store), store.metric)
    page.goto(url)
    page.get_by_text(f"{len(store.children)} matching runs", exact=True).wait_for(timeout=TIMEOUT_MS)
    close_assistant(page)
    shot.checks.append(f"{len(store.children)} matching runs for the filter {children_filter(store)!r}")
    first = page.locator('[role="row"][row-index="0"]')
    best = max(store.children, key=lambda r: r.data.metrics.get(store.metric, float("-inf")))
    if first.get_by_text(best.info.run_name, exact=True).count():
        shot.checks.append(f"first row is {best.info.run_name}, the highest {store.metric}")
    else:
        shot.problems.append(f"first row is not {best.info.run_name} (highest {store.metric})")
    for name in [store.metric, *store.params]:
        check_header_visible(page, name, shot)
    settle(page)
    page.screenshot(path=shot.path)


def children_filter(store: Store) -> str:
    return f"tags.{PARENT_RUN_ID_TAG} = {sql_quote(store.parent.info.run_id)}"


def set_column(page, group: str, name: str, on: bool = True) -> bool:
    """Tick (or untick) ``name`` under ``group`` (Attributes, Metrics, Parameters, Tags) in the
    runs table's Columns menu; False if the menu has no such column."""
    menu = page.locator('[data-component-id="mlflow.experiment_page.runs_table.column_selector"]')
    if not menu.is_visible():
        page.get_by_role("button", name="Columns", exact=True).click()
        menu.wait_for()
    search = menu.get_by_placeholder("Search columns")
    search.fill(name)
    page.wait_for_timeout(300)
    nodes = menu.locator(".du-bois-light-tree-treenode:not([aria-hidden])")
    current = None
    try:
        for i in range(nodes.count()):
            node = nodes.nth(i)
            text = node.inner_text().strip()
            if re.fullmatch(r"(Attributes|Metrics|Parameters|Tags)( \(\d+\))?", text):
                current = text.split(" ")[0]
            elif current == group and text == name:
                box = node.locator(".du-bois-light-tree-checkbox")
                checked = "du-bois-light-tree-checkbox-checked" in (box.get_attribute("class") or "")
                if checked != on:
                    box.click()
                return True
        return False
    finally:
        search.fill("")


def close_column_menu(page) -> None:
    page.keyboard.press("Escape")
    menu = page.locator('[data-component-id="mlflow.experiment_page.runs_table.column_selector"]')
    menu.wait_for(state="hidden")


def widen_column(page, title: str, width: int) -> bool:
    """Drag the right edge of a column header until the column is about ``width`` px wide."""
    header = page.locator(".ag-header-cell", has=page.get_by_text(title, exact=True)).first
    for _ in range(3):
        box = header.bounding_box()
        if not box or box["width"] >= width - 10:
            return bool(box)
        handle = header.locator(".ag-header-cell-resize")
        handle.hover()
        grip = handle.bounding_box()
        x, y = grip["x"] + grip["width"] / 2, grip["y"] + grip["height"] / 2
        page.mouse.down()
        page.mouse.move(x + 20, y, steps=5)
        page.mouse.move(x + width - box["width"], y, steps=10)
        page.mouse.up()
        page.wait_for_timeout(300)
    return False


def check_header_visible(page, name: str, shot: Shot) -> None:
    header = page.locator(".ag-header-cell", has=page.get_by_text(name, exact=True)).first
    box = header.bounding_box() if header.count() else None
    size = page.viewport_size
    if box and box["x"] >= 0 and box["x"] + box["width"] <= size["width"]:
        shot.checks.append(f"column {name} in the table, on screen")
    else:
        shot.problems.append(f"column {name} not on screen (header box {box})")


def shot_parallel_coordinates(page, base: str, store: Store, args: argparse.Namespace, shot: Shot) -> None:
    if len(store.children) < 2 or not store.metric or not store.params:
        raise Skip("needs two child runs, a metric and at least one param")
    page.set_viewport_size({"width": 1600, "height": 1000})
    page.goto(compare_url(base, store.experiment_id, [r.info.run_id for r in store.children]))
    page.get_by_text(f"Comparing {len(store.children)} Runs", exact=False).wait_for(timeout=TIMEOUT_MS)
    close_assistant(page)
    page.get_by_text("Parallel Coordinates Plot", exact=True).click()
    page.get_by_role("button", name="Clear All").click()
    controls = page.locator("div:has(> div:text-is('Parameters:'))").last
    selects = controls.locator(".du-bois-light-select")
    for select, names in ((selects.nth(0), store.params), (selects.nth(1), [store.metric])):
        for name in names:
            pick_option(page, select, name)
        page.keyboard.press("Escape")
    chosen = controls.locator(".du-bois-light-select-selection-item-content").all_inner_texts()
    shot.checks.append(f"selected in the plot controls: {', '.join(chosen)}")
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for(timeout=TIMEOUT_MS)
    for name in [*store.params, store.metric]:
        if plot.get_by_text(name, exact=True).count():
            shot.checks.append(f"axis {name} drawn")
        else:
            shot.problems.append(f"no axis {name} in the plot")
    best = max(r.data.metrics.get(store.metric, float("-inf")) for r in store.children)
    if plot.get_by_text(f"{best:.5f}", exact=True).count():  # the axis's top label
        shot.checks.append(f"the {store.metric} axis tops out at {best:.5f}, the best trial's value")
    else:
        shot.problems.append(f"no {best:.5f} (highest {store.metric}) on the metric axis")
    page.get_by_text("Comparing", exact=False).first.click()  # blur the select: no focus ring
    settle(page, 1000)
    page.screenshot(path=shot.path)


def pick_option(page, select, name: str) -> None:
    select.locator(".du-bois-light-select-selector").click()
    select.locator("input").fill(name)
    dropdown = page.locator(".du-bois-light-select-dropdown:not(.du-bois-light-select-dropdown-hidden)")
    option = dropdown.locator(f'.du-bois-light-select-item-option[title="{name}"]')
    option.first.click()


def shot_child_charts(page, base: str, store: Store, args: argparse.Namespace, shot: Shot) -> None:
    child = store.best_child
    if child is None:
        raise Skip("no child run")
    page.set_viewport_size({"width": 1600, "height": args.charts_height})
    page.goto(run_url(base, store.experiment_id, child.info.run_id, "model-metrics"))
    page.get_by_text(child.info.run_name, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    close_assistant(page)
    search = page.get_by_placeholder("Search metric charts")
    search.wait_for(timeout=TIMEOUT_MS)
    if args.chart_filter:
        search.fill(args.chart_filter)
        shot.checks.append(f"chart search (a regex) set to {args.chart_filter!r}")
    keys = sorted(k for k in child.data.metrics if not args.chart_filter or re.search(args.chart_filter, k))
    # every chart's legend names its metric: "<run name> (<key>)"; charts off screen are not drawn
    page.get_by_text(f"{child.info.run_name} (", exact=False).first.wait_for(timeout=TIMEOUT_MS)
    settle(page, 1000)
    drawn = [k for k in keys if page.get_by_text(f"{child.info.run_name} ({k})", exact=True).count()]
    shot.checks.append(f"{len(drawn)} charts drawn: {', '.join(drawn)}")
    if len(drawn) < len(keys):
        print(f"  ! not drawn (below the fold? raise --charts-height): {sorted(set(keys) - set(drawn))}")
    page.screenshot(path=shot.path)


def shot_utilisation(page, base: str, store: Store, args: argparse.Namespace, shot: Shot) -> None:
    from mlflow import MlflowClient

    child = store.best_child
    if child is None:
        raise Skip("no child run")
    artifact = args.figure_artifact
    client = MlflowClient(args.tracking_uri)
    folder = os.path.dirname(artifact)
    listed = [a.path for a in client.list_artifacts(child.info.run_id, folder or None)]
    if artifact not in listed:
        raise Skip(f"run {child.info.run_name} has no artifact {artifact} (has {listed})")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(client.download_artifacts(child.info.run_id, artifact, tmp))
        raw = shot.path.with_name(shot.path.stem.replace("_figure", "") + "_raw" + local.suffix)
        raw.write_bytes(local.read_bytes())
    shot.checks.append(f"downloaded the artifact to {raw}")
    page.set_viewport_size({"width": 1600, "height": 1300})
    page.goto(run_url(base, store.experiment_id, child.info.run_id, f"artifacts/{artifact}"))
    page.get_by_text(child.info.run_name, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    close_assistant(page)
    page.get_by_text(artifact, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    image = page.locator(f'img[src*="{quote(os.path.basename(artifact))}"], img[src^="blob:"]').first
    image.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    size = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    shot.checks.append(f"artifact viewer shows {artifact} as an image {size[0]}x{size[1]} px")
    settle(page)
    page.screenshot(path=shot.path)


def shot_parent(page, base: str, store: Store, args: argparse.Namespace, shot: Shot) -> None:
    parent = store.parent
    page.set_viewport_size({"width": 1600, "height": args.parent_height})
    page.goto(run_url(base, store.experiment_id, parent.info.run_id))
    page.get_by_text(parent.info.run_name, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    close_assistant(page)
    for text in ("Child runs", "Tags", "Parameters", "Metrics"):
        page.get_by_text(re.compile(rf"^{text}( \(\d+\))?$")).first.wait_for(timeout=TIMEOUT_MS)
    shot.checks.append("overview shows Child runs, Tags, Parameters, Metrics")
    tag = parent.data.tags.get(args.best_run_tag)
    if tag is None:
        print(f"  ! parent has no tag {args.best_run_tag!r}")
    elif page.get_by_text(args.best_run_tag, exact=False).count():
        shot.checks.append(f"found tag {args.best_run_tag}")
    else:
        shot.problems.append(f"tag {args.best_run_tag} not visible")
    if args.metric in parent.data.metrics and page.get_by_text(args.metric, exact=True).count():
        shot.checks.append(f"found metric {args.metric}")
    settle(page)
    page.screenshot(path=shot.path)


def shot_parent_artifacts(page, base: str, store: Store, args: argparse.Namespace, shot: Shot) -> None:
    from mlflow import MlflowClient

    parent = store.parent
    listed = [a.path for a in MlflowClient(args.tracking_uri).list_artifacts(parent.info.run_id)]
    missing = [a for a in args.parent_artifacts if a not in listed]
    if missing:
        print(f"  ! parent run lacks artifacts {missing} (has {listed})")
    if not listed:
        raise Skip("the parent run has no artifacts")
    page.set_viewport_size({"width": 1600, "height": 1000})
    first = next((a for a in args.parent_artifacts if a in listed), listed[0])
    page.goto(run_url(base, store.experiment_id, parent.info.run_id, f"artifacts/{first}"))
    page.get_by_text(parent.info.run_name, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    close_assistant(page)
    for name in listed:
        page.get_by_text(name, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    shot.checks.append(f"artifact tree lists {', '.join(listed)}; {first} opened")
    settle(page)
    page.screenshot(path=shot.path)


def shot_shared_view(page, base: str, store: Store, args: argparse.Namespace, shot: Shot) -> None:
    """A saved view, if the store has one for this search: MLflow's "share" link
    ``?viewStateShareKey=KEY`` loads columns, filter and sort from the experiment tag
    ``mlflow.sharedViewState.KEY`` (JSON). Opened in a fresh browser context (no local state)."""
    from mlflow import MlflowClient

    key = args.shared_view_key or store.parent.info.run_name
    tags = MlflowClient(args.tracking_uri).get_experiment(store.experiment_id).tags
    if f"{SHARED_VIEW_TAG}{key}" not in tags:
        raise Skip(f"the experiment has no tag {SHARED_VIEW_TAG}{key}")
    context = page.context.browser.new_context(viewport={"width": 1600, "height": 800})
    try:
        fresh = context.new_page()
        fresh.goto(shared_view_url(base, store.experiment_id, key))
        fresh.get_by_text("matching runs").wait_for(timeout=TIMEOUT_MS)
        fresh.get_by_text("You're viewing a shared view", exact=False).wait_for(timeout=TIMEOUT_MS)
        close_assistant(fresh)
        shot.checks.append(f"shared view {key!r} loaded: {fresh.url.split('#')[1][:160]}")
        for name in [store.metric, *store.params]:
            check_header_visible(fresh, name, shot)
        settle(fresh)
        fresh.screenshot(path=shot.path)
    finally:
        context.close()


class Skip(Exception):
    """A screenshot the store cannot give (missing data); not a failure of the UI."""


SHOTS: list[tuple[str, Callable]] = [
    ("runs_table.png", shot_runs_table),
    ("search_trials.png", shot_search_trials),
    ("parallel_coordinates.png", shot_parallel_coordinates),
    ("child_run_charts.png", shot_child_charts),
    ("utilisation_figure.png", shot_utilisation),
    ("parent_run.png", shot_parent),
    ("parent_artifacts.png", shot_parent_artifacts),
    ("shared_view.png", shot_shared_view),
]


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--tracking-uri", required=True, help="e.g. sqlite:///$PWD/mlflow.db")
    p.add_argument("--experiment", default="miles_tune", help="MLflow experiment name")
    p.add_argument("--search", default=None, help="the search (parent run) to show; default: the latest")
    p.add_argument("--search-tag", default="miles_tune.search", help="parent-run tag holding the search name")
    p.add_argument("--out", type=Path, default=Path("screenshots"), help="folder for the PNGs")
    p.add_argument("--port", default="auto", help="port for mlflow ui, or 'auto' (a free one)")
    p.add_argument("--metric", default="best/val/mm/acc", help="the trials' score (a column and an axis)")
    p.add_argument("--fallback-metric", default="val/mm/acc", help="used when no trial has --metric")
    p.add_argument("--params", nargs="+", default=["lr", "tau", "mu"],
                   help="searched params; 'tau' also finds a lone 'method_args.tau'")  # fmt: skip
    p.add_argument("--best-run-tag", default="best_run_id", help="parent-run tag naming the best trial")
    p.add_argument("--figure-artifact", default="plots/utilisation.png", help="a trial's figure")
    p.add_argument("--parent-artifacts", nargs="*",
                   default=["best_config.yaml", "trials.parquet", "search_space.yaml"],
                   help="expected on the parent run (the first one present is opened)")  # fmt: skip
    p.add_argument("--hide-columns", nargs="*", default=["Dataset", "Source", "Models"],
                   help="attribute columns to untick in the runs table")  # fmt: skip
    p.add_argument("--name-width", type=int, default=340, help="Run Name column width (px)")
    p.add_argument("--value-width", type=int, default=130, help="width of metric/param columns (px)")
    p.add_argument("--chart-filter", default=r"^(u/|delta$|lr/(?!fusion|heads)|val/mm/(acc|loss)$)",
                   help="regex for the run page's metric-chart search ('' shows all charts)")  # fmt: skip
    p.add_argument("--charts-height", type=int, default=2000, help="viewport height of child_run_charts")
    p.add_argument("--parent-height", type=int, default=1600, help="viewport height of parent_run")
    p.add_argument("--shared-view-key", help="KEY of the experiment tag mlflow.sharedViewState.KEY "
                   "(default: the search's name)")  # fmt: skip
    p.add_argument("--ui-url", default="http://127.0.0.1:5000", help="base of the URLs printed for users")
    p.add_argument("--only", nargs="*", default=None, help="take only these screenshots (file names)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # stopped by Ctrl-C or kill: unwind, so that the `finally`s stop the server and the browser
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} not found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    store = find_store(args)
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port() if args.port == "auto" else int(args.port)
    shots: list[Shot] = []
    with mlflow_ui(args.tracking_uri, port, args.out / "mlflow_ui.log") as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            for name, take in SHOTS:
                if args.only is not None and name not in args.only:
                    continue
                shot = Shot(args.out / name)
                print(f"{name} ...", flush=True)
                start = time.monotonic()
                try:
                    take(page, base, store, args, shot)
                except Skip as e:
                    print(f"  skipped: {e}")
                    continue
                except Exception as e:  # keep going: one broken page should not hide the others
                    shot.problems.append(f"{type(e).__name__}: {str(e).splitlines()[0]}")
                    failed = shot.path.with_name(shot.path.stem + ".failed.png")
                    with contextlib.suppress(Exception):
                        page.screenshot(path=failed)
                        shot.problems.append(f"page at the failure: {failed}")
                shots.append(shot)
                print(f"  {time.monotonic() - start:.1f} s")
        finally:
            browser.close()

    print()
    print("URLs to print for users (MLflow 3.17; host and port of their `mlflow ui`):")
    print(f"  runs table:          {runs_url(args.ui_url, store.experiment_id)}")
    if store.children and store.metric:
        trials = runs_url(args.ui_url, store.experiment_id, children_filter(store), store.metric)
        print(f"  this search, best first: {trials}")
    print()
    ok = True
    for shot in shots:
        written = shot.path.exists() and not shot.problems
        ok &= written
        print(f"{'wrote' if written else 'FAILED'} {shot.path}")
        for check in shot.checks:
            print(f"    ok: {check}")
        for problem in shot.problems:
            print(f"    !!: {problem}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
