"""The cluster launcher files validate against Ray's own schema (offline: no cloud SDK needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"
SECRET = "~/.miles_tune/mlflow-auth.env"


@pytest.mark.parametrize("path", sorted(CLUSTER.glob("*.yaml")), ids=lambda p: p.name)
def test_cluster_yaml_validates(path: Path) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    validate_config(prepare_config(config))
    workers = [t for name, t in config["available_node_types"].items() if name != config["head_node_type"]]
    assert any(t["resources"].get("GPU", 0) == 8 for t in workers)
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and "miles_tune" in setup and "torch==2.13.0" not in setup
    head = " ".join(config["head_setup_commands"])
    assert "mlflow server" in head and "--host 127.0.0.1" in head and "0.0.0.0" not in head
    # the server (behind the relay) is MLflow's basic-auth app, refusing anyone without the credentials
    assert "--app-name basic-auth" in head and "mlflow[auth]" in head and "socat" in head
    assert "default_permission = NO_PERMISSIONS" in head and "MLFLOW_AUTH_CONFIG_PATH=" in head
    # the credentials come from the secrets file `make cluster-secret` writes, copied to every node
    # and sourced before `ray start` (trials inherit them); never written in the YAML
    assert config["file_mounts"][SECRET] == SECRET
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[key] if "ray start" in c]
        assert start and all(c.startswith(f". {SECRET} && ") for c in start), start
    text = path.read_text()
    assert "MLFLOW_TRACKING_PASSWORD=" not in text and "admin_password" not in text
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY" not in text  # in the secrets file, not here
    # every node fills the datasets' default location from the bucket
    assert any("~/.cache/miles_tune/data" in c and "YOUR-BUCKET/data" in c for c in config["setup_commands"])


def test_make_cluster_secret_writes_the_file_once_mode_600(tmp_path) -> None:
    import shutil
    import stat
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    secret = tmp_path / "d" / "mlflow-auth.env"
    run = lambda: subprocess.run(  # noqa: E731
        ["make", "-s", "-C", str(CLUSTER.parent), "cluster-secret", f"CLUSTER_SECRET={secret}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    run()
    first = secret.read_text()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    values = dict(line.removeprefix("export ").split("=", 1) for line in first.splitlines())
    names = {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"}
    assert set(values) == names
    assert len(values["MLFLOW_TRACKING_PASSWORD"]) >= 24  # MLflow wants 12 at least
    assert "kept" in run().stdout and secret.read_text() == first  # never overwritten


def test_a_typo_is_caught_by_the_schema(tmp_path) -> None:
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "a100.yaml").read_text())
    config["available_node_types"]["a100"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(config))
