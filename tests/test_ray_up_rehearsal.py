"""cluster/a100.yaml rehearsed on one machine: a CPU-less head, GPU workers launched by the autoscaler.

What runs is what ``ray up`` runs on the head (``head_start_ray_commands``): ``ray start --head
--autoscaling-config=<config>`` with the v2 autoscaler (``ray up``'s default since Ray 2.50), on a
variant of cluster/a100.yaml whose provider is Ray's fake multi-node provider: "launching" an
``a100`` worker starts a local raylet with its declared resources (1 CPU and 8 fake GPUs here).
The search is submitted with ``--address auto`` like the README's ``ray exec`` command; worker
nodes must be launched for its GPU demand (the driver waits for them instead of dropping the GPU
request) and every trial must run on one, with a quarter of a GPU.

Why not ``ray up`` itself (checked with Ray 2.60):

- ``provider: {type: fake_multinode}`` makes ``ray up`` (and the autoscaler) load the provider's
  defaults file ``fake_multi_node/example.yaml``, which the PyPI wheel does not ship
  (FileNotFoundError). The same provider class loaded as ``type: external`` avoids that file.
- Even then ``ray up`` fails: the fake provider reports a head node that ``ray start`` created,
  without launch-config tags, so ``ray up`` replaces it and ``terminate_node`` fails on it
  (KeyError 'node'). Upstream drives this provider with ``ray start --autoscaling-config`` (and
  ``ray up`` only in its Docker variant, which needs Docker images from the network).

The cluster is torn down by the ids of its own processes (its session), never with ``ray down``
(it runs ``ray stop``, which stops every Ray on the machine); the fake provider itself only stops
the worker nodes it launched, when the autoscaler scales them down.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from search_helpers import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
FAKE_PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"
FAKE_HEAD_TYPE = "ray.head.default"  # the node type the fake provider gives the head it finds
FAKE_HEAD_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"


def rehearsal_config(gcs_address: str) -> dict:
    """cluster/a100.yaml with the fake provider, scaled to this machine: 1 CPU, 8 fake GPUs per a100."""
    config = yaml.safe_load((ROOT / "cluster" / "a100.yaml").read_text())
    head = config["available_node_types"].pop(config["head_node_type"])
    assert head["resources"] == {"CPU": 0}  # as on the cluster: no trial on the head
    a100 = config["available_node_types"]["a100"]
    assert a100["resources"]["GPU"] == 8
    config["available_node_types"] = {
        FAKE_HEAD_TYPE: {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
        "a100": {
            "resources": {"CPU": 1, "GPU": 8, "object_store_memory": 200 * 1024**2},
            "node_config": {},
            "min_workers": 0,
            "max_workers": 2,
        },
    }
    config.update(
        head_node_type=FAKE_HEAD_TYPE,
        max_workers=2,
        provider={
            "type": "external",
            "module": FAKE_PROVIDER,
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,  # nothing to ssh into: no setup commands, no file mounts
            "disable_launch_config_check": True,
        },
        auth={},
        docker={},
        file_mounts={},
        cluster_synced_files=[],
        file_mounts_sync_continuously=False,
        rsync_exclude=[],
        rsync_filter=[],
        initialization_commands=[],
        setup_commands=[],
        head_setup_commands=[],
        worker_setup_commands=[],
        head_start_ray_commands=[],
        worker_start_ray_commands=[],
    )
    return config


def session_pids(sid: int) -> list[int]:
    """Live processes of one session (whatever their process group); zombies left out."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def tear_down(sid: int, grace: float = 10.0) -> list[int]:
    """SIGTERM every process of the session, SIGKILL what is left after ``grace``; returns survivors."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in session_pids(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.5)
    return session_pids(sid)


PROBE = """
import json, ray
ray.init(address="auto", log_to_driver=False)
print(json.dumps([{"id": n["NodeID"], "resources": n["Resources"]} for n in ray.nodes() if n["Alive"]]))
"""


def test_a100_yaml_rehearsed_with_fake_gpu_workers(tmp_path) -> None:
    import pyarrow.parquet as pq
    import ray._private.services
    from ray.autoscaler._private.util import prepare_config, validate_config

    ip = ray._private.services.get_node_ip_address()
    port = free_port()
    config = rehearsal_config(f"{ip}:{port}")
    validate_config(prepare_config(config))  # what the autoscaler does with it
    config_path = tmp_path / "a100-fake.yaml"
    config_path.write_text(yaml.safe_dump(config))

    ray_tmp = tempfile.mkdtemp(prefix="rayA-rh-", dir="/tmp")  # short: Ray's socket paths are limited
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, PYTHONPATH=str(ROOT))
    head_env = dict(
        env,
        RAY_FAKE_CLUSTER="1",
        RAY_enable_autoscaler_v2="1",  # what ray up exports before head_start_ray_commands
        RAY_CLOUD_INSTANCE_ID=FAKE_HEAD_ID,
        RAY_NODE_TYPE_NAME=FAKE_HEAD_TYPE,
    )
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head_cmd = [
        ray_bin, "start", "--head", f"--port={port}", f"--autoscaling-config={config_path}",
        "--num-cpus=0", "--num-gpus=0", "--include-dashboard=false", f"--dashboard-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats", "--block",
    ]  # fmt: skip
    head_log = tmp_path / "head.log"
    with open(head_log, "w") as log:
        head = subprocess.Popen(
            head_cmd, stdout=log, stderr=subprocess.STDOUT, env=head_env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in head_log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, head_log.read_text()[-3000:]
            time.sleep(0.5)

        search = [
            sys.executable, "-m", "miles_tune.search", "--num-samples", "4",
            "--gpus-per-trial", "0.25", "--cpus-per-trial", "0.25", "--address", "auto",
            "--set", "epochs=3", "--set", "data.n_train=64", "--set", "data.n_val=32",
            "--set", "data.n_test=32", "--no-tracking", "--name", "rehearsal",
            "--storage", str(tmp_path / "ray"), "--results", str(tmp_path / "runs"),
        ]  # fmt: skip
        started = time.monotonic()
        done = subprocess.run(search, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=480)
        seconds = time.monotonic() - started
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        # the driver waited for an a100 worker instead of dropping the GPU request
        assert "asking the autoscaler for a node of type a100 with 1 CPU, 8 GPU" in done.stderr, done.stderr
        assert "dropping --gpus-per-trial" not in done.stderr

        probe = subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
        )
        assert probe.returncode == 0, probe.stderr[-3000:]
        nodes = {n["id"]: n for n in json.loads(probe.stdout.strip().splitlines()[-1])}

        table = pq.read_table(tmp_path / "runs" / "rehearsal" / "trials.parquet").to_pandas()
        last = table.groupby("trial_id").last()
        assert len(last) == 4
        for trial_id, row in last.iterrows():
            assert row["node_id"] != FAKE_HEAD_ID, trial_id  # never on the head
            node = nodes[row["node_id"]]["resources"]
            assert (node.get("CPU"), node.get("GPU")) == (1.0, 8.0), node  # an a100 worker
            assert row["gpu_ids"] in {str(i) for i in range(8)}, row["gpu_ids"]  # one fake GPU, shared
        workers = [n for n in nodes.values() if n["resources"].get("GPU") == 8.0]
        assert 1 <= len(workers) <= 2  # launched for the demand, within max_workers

        from ray.tune import ExperimentAnalysis

        for trial in ExperimentAnalysis(str(tmp_path / "ray" / "rehearsal")).trials:
            assert trial.placement_group_factory.required_resources == {"CPU": 0.25, "GPU": 0.25}
        said = [line for line in done.stderr.splitlines() if line.startswith("miles_tune:")]
        print(*said, sep="\n")
        print(f"search with worker launch: {seconds:.0f} s; trials on {last['node_id'].nunique()} node(s), "
              f"GPU ids {sorted(last['gpu_ids'])}")  # fmt: skip
    finally:
        survivors = tear_down(head.pid)
        head.wait(timeout=30)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not survivors, survivors
