"""Trial requests no node can hold are refused at once; on an autoscaling cluster the driver waits instead.

The decision is tested without Ray; then on real local clusters (one ``ray.init`` with a fake GPU,
one two-node ``cluster_utils.Cluster``), each started once for all of its tests.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from miles_tune.errors import ConfigError
from miles_tune.resources import (
    NodeShape,
    _monitor_config_path,
    check_trial_resources,
    decide,
    node_types_from_config,
    node_wait_s,
)

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
HEAD = NodeShape("", 0, 0)  # the a100.yaml head: no CPUs for trials
A100 = NodeShape("a100", 96, 8)


# --- the decision, without Ray ---------------------------------------------------------------


def test_a_request_larger_than_every_node_is_refused_naming_the_largest() -> None:
    alive = [NodeShape("", 2, 0), NodeShape("", 1, 0)]
    with pytest.raises(ConfigError, match=r"^--cpus-per-trial 64 exceeds every node of the Ray cluster "
                       r"\(largest: 2 CPU, 0 GPU\); lower it or add a bigger node$"):  # fmt: skip
        decide(64, 0, alive, None)


def test_gpus_no_node_can_have_are_dropped_and_the_rest_must_still_fit() -> None:
    d = decide(1, 0.5, [NodeShape("", 2, 0)], None)
    assert (d.cpus, d.gpus, d.dropped_gpus, d.wait_for) == (1, 0.0, 0.5, [])
    with pytest.raises(ConfigError, match="--cpus-per-trial 4 exceeds"):
        decide(4, 0.5, [NodeShape("", 2, 0)], [])  # known: nothing to launch


def test_cpus_and_gpus_that_fit_only_on_different_nodes_are_refused() -> None:
    alive = [NodeShape("", 4, 0), NodeShape("", 1, 1)]
    with pytest.raises(
        ConfigError, match=r"^--cpus-per-trial 2 with --gpus-per-trial 1 exceeds .*: 1 CPU, 1"
    ):
        decide(2, 1, alive, None)


def test_an_autoscaling_cluster_waits_for_a_node_type_that_fits() -> None:
    d = decide(0.25, 0.25, [HEAD], [NodeShape("cpu", 8, 0), A100])
    assert (d.cpus, d.gpus, d.dropped_gpus) == (0.25, 0.25, 0)  # the GPU request is kept
    assert d.wait_for == [A100]
    expected = (
        r"--gpus-per-trial 16 exceeds every node of the Ray cluster and every node type its autoscaler "
        r"can launch \(largest: a100 with 96 CPU, 8 GPU\); lower it or add a bigger node type"
    )
    with pytest.raises(ConfigError, match=expected):
        decide(1, 16, [HEAD, NodeShape("", 96, 8)], [A100])  # a live a100 ties: the type is named


def test_unknown_node_types_mean_a_fixed_cluster_with_a_hint() -> None:
    with pytest.raises(ConfigError, match=r"largest: 0 CPU, 0 GPU\).*\(an autoscaler runs"):
        decide(1, 0, [HEAD], None, hint="an autoscaler runs but its node types cannot be read")


def test_the_wait_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("MILES_TUNE_NODE_WAIT_S", raising=False)
    assert node_wait_s() == 1800
    monkeypatch.setenv("MILES_TUNE_NODE_WAIT_S", "90")
    assert node_wait_s() == 90
    for bad in ("soon", "0", "-5", "nan", "inf"):
        monkeypatch.setenv("MILES_TUNE_NODE_WAIT_S", bad)
        with pytest.raises(ConfigError, match=r"^MILES_TUNE_NODE_WAIT_S must be a positive number"):
            node_wait_s()


@pytest.mark.parametrize("name", ["a100.yaml", "gcp-a2.yaml"])
def test_node_types_of_the_cluster_files(name: str) -> None:
    config = yaml.safe_load((CLUSTER / name).read_text())
    assert node_types_from_config(config) == [A100]  # the head (max_workers 0 by default) is not launchable
    config["max_workers"] = 0
    assert node_types_from_config(config) == []


def test_the_monitor_of_this_cluster_is_found_by_its_gcs_port(tmp_path) -> None:
    def process(pid: int, *argv: str) -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    monitor = "/venv/lib/python3.11/site-packages/ray/autoscaler/v2/monitor.py"
    process(10, "/venv/bin/python", "-u", monitor, "--gcs-address=10.0.0.1:6379",
            "--autoscaling-config=~/ray_bootstrap_config.yaml")  # fmt: skip
    process(11, "/venv/bin/python", "-u", monitor, "--gcs-address=10.0.0.1:6380")
    process(12, "/bin/sleep", "--autoscaling-config=/elsewhere.yaml", "--gcs-address=10.0.0.1:6381")
    found = _monitor_config_path("10.0.0.1:6379", proc=tmp_path)
    assert found == Path("~/ray_bootstrap_config.yaml").expanduser()
    assert _monitor_config_path("127.0.0.1:6380", proc=tmp_path) is None  # a monitor without a config
    assert _monitor_config_path("10.0.0.1:6381", proc=tmp_path) is None  # not a monitor


# --- real local clusters ---------------------------------------------------------------------


@pytest.fixture(scope="class")
def one_node_one_gpu():
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.usefixtures("one_node_one_gpu")
class TestOneNodeOneGpu:
    """One Ray start for these tests, shut down before the two-node cluster starts."""

    def test_64_cpus_on_a_2_cpu_machine_are_refused_at_once(self) -> None:
        start = time.monotonic()
        with pytest.raises(ConfigError) as info:
            check_trial_resources(64, 0)
        assert time.monotonic() - start < 5
        assert str(info.value) == (
            "--cpus-per-trial 64 exceeds every node of the Ray cluster (largest: 2 CPU, 1 GPU); "
            "lower it or add a bigger node"
        )

    def test_two_gpus_on_one_gpu_nodes_are_refused_and_a_fitting_request_passes(self) -> None:
        with pytest.raises(ConfigError, match=r"^--gpus-per-trial 2 exceeds .*\(largest: 2 CPU, 1 GPU\)"):
            check_trial_resources(1, 2)
        assert check_trial_resources(1, 0.25) == (1, 0.25)
        assert check_trial_resources(2, 1) == (2, 1)

    def test_a_node_type_reported_to_the_gcs_is_waited_for_not_dropped(self, capsys) -> None:
        """An autoscaler's ClusterConfig in the GCS makes the cluster autoscaling: wait, with progress."""
        import ray
        from ray._raylet import GcsClient
        from ray.core.generated import autoscaler_pb2

        gcs = GcsClient(ray.get_runtime_context().gcs_address)
        group = autoscaler_pb2.NodeGroupConfig(name="a100", resources={"CPU": 96, "GPU": 8}, max_count=4)
        gcs.report_cluster_config(
            autoscaler_pb2.ClusterConfig(node_group_configs=[group]).SerializeToString()
        )
        try:
            with pytest.raises(
                ConfigError, match=r"^no node of type a100 with 96 CPU, 8 GPU came up within 2 s"
            ):
                check_trial_resources(1, 4, wait_s=2)  # nothing launches it here
            assert (
                "asking the autoscaler for a node of type a100 with 96 CPU, 8 GPU" in capsys.readouterr().err
            )
            with pytest.raises(
                ConfigError, match=r"every node type its autoscaler can launch \(largest: a100"
            ):
                check_trial_resources(128, 0)
        finally:
            gcs.report_cluster_config(autoscaler_pb2.ClusterConfig().SerializeToString())
        with pytest.raises(ConfigError, match="--gpus-per-trial 4 exceeds every node of the Ray cluster "):
            check_trial_resources(1, 4)


def test_two_nodes_the_request_must_fit_one_of_them() -> None:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, num_gpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        assert check_trial_resources(4, 0) == (4, 0)
        assert check_trial_resources(1, 1) == (1, 1)
        expected = (
            r"^--cpus-per-trial 2 with --gpus-per-trial 1 exceeds every node .*\(largest: 1 CPU, 1 GPU\)"
        )
        with pytest.raises(ConfigError, match=expected):
            check_trial_resources(2, 1)
    finally:
        ray.shutdown()
        cluster.shutdown()
