"""The cluster launcher files validate against Ray's own schema (offline: no cloud SDK needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parent.parent / "cluster"


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


def test_a_typo_is_caught_by_the_schema(tmp_path) -> None:
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((CLUSTER / "a100.yaml").read_text())
    config["available_node_types"]["a100"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(config))
