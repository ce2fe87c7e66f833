"""Trial resource requests checked against the Ray cluster before Tune runs.

Tune never refuses a trial that no node can hold: it waits, forever (``--cpus-per-trial 64``
on a 2-core machine, or a GPU request on GPU-less nodes). :func:`check_trial_resources`,
called by the search driver right after ``ray.init``, decides once:

- a request that fits a live node goes through unchanged;
- a GPU request on a cluster with no GPUs that cannot get any is dropped with a warning
  (trials train on CPU);
- on an autoscaling cluster (``ray up``), a request that fits a node type the autoscaler can
  launch goes through unchanged: the driver asks the autoscaler for such a node and waits for
  it, saying which node type it waits for and printing progress (a ``ray up`` cluster starts
  with only its CPU head, so dropping the GPU request there would run every trial on CPU);
- anything else is refused with a :class:`~miles_tune.errors.ConfigError` naming the largest
  node (or node type).

Ray 2.60 has no public API that lists the node types an autoscaler can launch; the private
sources are read in one function, :func:`_autoscaler_node_types`. When it cannot tell (the
driver is not on the head node, another platform), the cluster is treated as fixed and the
messages say so.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miles_tune.errors import ConfigError

WAIT_ENV = "MILES_TUNE_NODE_WAIT_S"
DEFAULT_WAIT_S = 1800.0  # a GPU instance boots and runs its setup commands (pip install torch) first
PROGRESS_EVERY_S = 30.0
PROC = Path("/proc")
# the autoscaler monitors Ray starts on the head (ray/_private/services.py: start_monitor)
MONITOR_SCRIPTS = (
    os.path.join("autoscaler", "v2", "monitor.py"),
    os.path.join("autoscaler", "_private", "monitor.py"),
)
UNKNOWN_TYPES_HINT = (
    "an autoscaler runs but its node types cannot be read from this machine: run the driver on the head node"
)


@dataclass(frozen=True)
class NodeShape:
    """A live node, or a node type the autoscaler can launch, by the resources trials use."""

    name: str  # node type name; "" for a live node
    cpus: float
    gpus: float

    def fits(self, cpus: float, gpus: float) -> bool:
        return self.cpus >= cpus and self.gpus >= gpus

    def describe(self) -> str:
        shape = f"{self.cpus:g} CPU, {self.gpus:g} GPU"
        return f"{self.name} with {shape}" if self.name else shape


@dataclass
class Decision:
    """What the driver does with a request: run it, drop its GPUs, or wait for a node type first."""

    cpus: float
    gpus: float
    dropped_gpus: float = 0.0  # the GPU request dropped, if any
    wait_for: list[NodeShape] = field(default_factory=list)  # fitting node types; empty: a live node fits


def decide(
    cpus: float,
    gpus: float,
    alive: list[NodeShape],
    launchable: list[NodeShape] | None,
    hint: str = "",
) -> Decision:
    """Pure decision on one request; ``launchable`` is None when unknown (treated as a fixed cluster)."""
    types = launchable or []
    dropped = 0.0
    if gpus > 0 and not any(n.gpus > 0 for n in [*alive, *types]):
        dropped, gpus = gpus, 0.0
    if any(n.fits(cpus, gpus) for n in alive):
        return Decision(cpus, gpus, dropped)
    fitting = [t for t in types if t.fits(cpus, gpus)]
    if fitting:
        return Decision(cpus, gpus, dropped, wait_for=fitting)
    raise ConfigError(refusal(cpus, gpus, alive, types, hint))


def refusal(cpus: float, gpus: float, alive: list[NodeShape], types: list[NodeShape], hint: str = "") -> str:
    """One line naming the flag that no node (or node type) can hold, and the largest there is."""
    shapes = [*alive, *types]
    if not any(n.cpus >= cpus for n in shapes):
        what, key = f"--cpus-per-trial {cpus:g}", (lambda n: (n.cpus, n.gpus))
    elif not any(n.gpus >= gpus for n in shapes):
        what, key = f"--gpus-per-trial {gpus:g}", (lambda n: (n.gpus, n.cpus))
    else:
        what, key = f"--cpus-per-trial {cpus:g} with --gpus-per-trial {gpus:g}", (lambda n: (n.gpus, n.cpus))
    # on a tie, the node type: its name says what to change
    largest = max(shapes, key=lambda n: (*key(n), bool(n.name))).describe() if shapes else "no node"
    where = "every node of the Ray cluster"
    if types:
        where += " and every node type its autoscaler can launch"
    fix = "lower it or add a bigger node type" if types else "lower it or add a bigger node"
    return f"{what} exceeds {where} (largest: {largest}); {fix}" + (f" ({hint})" if hint else "")


def check_trial_resources(cpus: float, gpus: float, *, wait_s: float | None = None) -> tuple[float, float]:
    """Check one trial's request against the connected cluster; returns the (cpus, gpus) to request.

    Refuses (ConfigError) what can never be scheduled, drops a GPU request where no GPU can ever
    be (warning), and on an autoscaling cluster waits until a node that fits is up (at most
    ``wait_s``, default ``$MILES_TUNE_NODE_WAIT_S`` or 30 min), printing progress to stderr.
    """
    alive = alive_nodes()
    launchable = None if any(n.fits(cpus, gpus) for n in alive) else _autoscaler_node_types()
    hint = UNKNOWN_TYPES_HINT if launchable is None and _autoscaler_v2_running() else ""
    decision = decide(cpus, gpus, alive, launchable, hint)
    if decision.dropped_gpus:
        warnings.warn(
            f"the Ray cluster has no GPUs: dropping --gpus-per-trial {decision.dropped_gpus:g} "
            "(a GPU request there would never be scheduled); trials train on CPU"
            + (f" ({hint})" if hint else ""),
            stacklevel=2,
        )
    if decision.wait_for:
        wait_for_node(
            decision.cpus, decision.gpus, decision.wait_for, node_wait_s() if wait_s is None else wait_s
        )
    return decision.cpus, decision.gpus


def node_wait_s() -> float:
    """How long to wait for an autoscaled node: ``$MILES_TUNE_NODE_WAIT_S`` seconds, default 30 min."""
    value = os.environ.get(WAIT_ENV, "").strip()
    try:
        seconds = float(value) if value else DEFAULT_WAIT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{WAIT_ENV} must be a positive number of seconds, got {value!r}")
    return seconds


def alive_nodes() -> list[NodeShape]:
    import ray

    return [
        NodeShape("", float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
        for n in ray.nodes()
        if n.get("Alive")
    ]


def wait_for_node(
    cpus: float,
    gpus: float,
    node_types: list[NodeShape],
    wait_s: float,
    *,
    poll_s: float = 2.0,
    say: Callable[[str], None] | None = None,
) -> None:
    """Ask the autoscaler for a node that fits one trial and wait until one is alive.

    ``request_resources`` makes the autoscaler launch before any trial exists; the request is
    cleared afterwards (it is cluster-wide and persistent: left set, it would keep the node up
    after the search).
    """
    from ray.autoscaler.sdk import request_resources

    say = say or _say
    bundle = {k: v for k, v in (("CPU", cpus), ("GPU", gpus)) if v > 0}
    wanted = " or ".join(t.describe() for t in node_types)
    say(
        f"no node of the Ray cluster fits a trial ({cpus:g} CPU, {gpus:g} GPU) yet: "
        f"asking the autoscaler for a node of type {wanted} and waiting (at most {wait_s:g} s)"
    )
    start = time.monotonic()
    last = start
    request_resources(bundles=[bundle])
    try:
        while True:
            elapsed = time.monotonic() - start
            if any(n.fits(cpus, gpus) for n in alive_nodes()):
                say(f"a node that fits a trial is up after {elapsed:.0f} s")
                return
            if elapsed > wait_s:
                raise ConfigError(
                    f"no node of type {wanted} came up within {wait_s:g} s for a trial ({cpus:g} CPU, "
                    f"{gpus:g} GPU); check `ray status` and the autoscaler log, or raise {WAIT_ENV}"
                )
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                say(f"still waiting for a node of type {wanted} ({elapsed:.0f} s){_autoscaler_progress()}")
            time.sleep(poll_s)
    finally:
        with contextlib.suppress(Exception):  # the cluster may be gone (Ctrl-C while it shuts down)
            request_resources(bundles=[])


def _say(message: str) -> None:
    print(f"miles_tune: {message}", file=sys.stderr, flush=True)


def _autoscaler_progress() -> str:
    """The autoscaler's own view (launches pending or failed), or "" where it cannot be read."""
    try:
        import ray
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address)
    except Exception:
        return ""
    parts = [f"launch pending: {r.count} x {r.ray_node_type_name}" for r in status.pending_launches]
    parts += [f"{n.ray_node_type_name} node starting" for n in status.pending_nodes]
    parts += [f"{r.ray_node_type_name} launch failed: {r.details}" for r in status.failed_launches]
    return f": {'; '.join(parts)}" if parts else ""


def _autoscaler_v2_running() -> bool:
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        return bool(is_autoscaler_v2(fetch_from_server=True))
    except Exception:
        return False


def _autoscaler_node_types() -> list[NodeShape] | None:
    """The node types this cluster's autoscaler can launch; None when this driver cannot tell.

    PRIVATE Ray APIs, isolated here (Ray 2.60 has no public one; neither ``__autoscaling_status``
    nor ``ray.autoscaler.v2.sdk.get_cluster_status`` carries the node types' resources):

    1. the ``ClusterConfig`` an autoscaler may report to the GCS
       (``ray._private.state.state.get_cluster_config()``, which Ray Data and Train read); the
       v1 and v2 monitors shipped in the wheel never report it, so on ``ray up`` it is empty;
    2. the YAML the cluster's autoscaler monitor was started with: ``--autoscaling-config=`` in
       the command line of the monitor process whose ``--gcs-address`` is this cluster's
       (``~/ray_bootstrap_config.yaml`` on ``ray up`` clusters). Only the head node runs that
       process, and only Linux has ``/proc``.
    """
    try:
        import ray
        import ray._private.state

        config = ray._private.state.state.get_cluster_config()
        if config is not None and config.node_group_configs:
            return [
                NodeShape(g.name, float(g.resources.get("CPU", 0)), float(g.resources.get("GPU", 0)))
                for g in config.node_group_configs
                if g.max_count != 0 and g.resources
            ]
        gcs_address = ray.get_runtime_context().gcs_address
    except Exception:
        return None
    path = _monitor_config_path(gcs_address)
    if path is None:
        return None
    try:
        import yaml

        return node_types_from_config(yaml.safe_load(path.read_text()))
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _monitor_config_path(gcs_address: str, proc: Path = PROC) -> Path | None:
    """``--autoscaling-config`` of the autoscaler monitor serving ``gcs_address`` (None: none found)."""
    port = gcs_address.rsplit(":", 1)[-1]
    if not proc.is_dir():
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if not any(a.endswith(MONITOR_SCRIPTS) for a in argv[:3]):
            continue
        options = dict(a.split("=", 1) for a in argv if a.startswith("--") and "=" in a)
        if options.get("--gcs-address", "").rsplit(":", 1)[-1] != port:
            continue
        config = options.get("--autoscaling-config")
        if not config:
            return None  # a monitor without a config: a fixed (read-only) cluster
        path = Path(os.path.expanduser(config))  # the monitor expands "~" itself
        if not path.is_absolute():
            try:
                path = Path(os.readlink(entry / "cwd")) / path
            except OSError:
                return None
        return path
    return None


def node_types_from_config(config: dict[str, Any]) -> list[NodeShape]:
    """The node types a cluster launcher config can launch: max_workers > 0 and resources declared."""
    if not isinstance(config, dict) or config.get("provider", {}).get("type") == "readonly":
        return []
    global_max = config.get("max_workers")
    if global_max == 0:
        return []
    head = config.get("head_node_type")
    shapes = []
    for name, spec in _items(config.get("available_node_types")):
        default_max = 0 if name == head else (global_max if global_max is not None else 1)
        resources = spec.get("resources") or {}
        if spec.get("max_workers", default_max) and resources:
            shapes.append(NodeShape(name, float(resources.get("CPU", 0)), float(resources.get("GPU", 0))))
    return shapes


def _items(node_types: Any) -> Iterable[tuple[str, dict[str, Any]]]:
    return node_types.items() if isinstance(node_types, dict) else ()
