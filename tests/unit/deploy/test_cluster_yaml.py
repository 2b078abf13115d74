"""cluster.yaml is a valid Ray cluster-launcher config with the three node types we document."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[3]


def test_cluster_yaml_validates_against_rays_schema():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    schema = json.loads(resources.files("ray.autoscaler").joinpath("ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert set(types) == {"head", "gpu_worker", "data_worker"}
    assert config["head_node_type"] == "head"
    assert any("pip install" in c and "-e ." in c for c in config["setup_commands"])


def test_schema_check_is_not_vacuous():
    schema = json.loads(resources.files("ray.autoscaler").joinpath("ray-schema.json").read_text())
    bad = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    bad["available_node_types"]["gpu_worker"]["resources"] = {"GPU": -1}
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        return
    raise AssertionError("a negative GPU count passed Ray's schema")


def test_node_types_carry_the_role_labels_placement_selects_on():
    """gpu_worker / data_worker carry the labels medmix.placement looks for; the launcher passes
    `labels` to `ray start` itself (RAY_OVERRIDE_LABELS), so no start command sets other ones."""
    from medmix.placement import DATA, ROLE_LABEL, TRAIN
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types = config["available_node_types"]
    assert types["gpu_worker"]["labels"] == {ROLE_LABEL: TRAIN}
    assert types["data_worker"]["labels"] == {ROLE_LABEL: DATA}
    assert "labels" not in types["head"]  # the head runs drivers only: no role
    # a stage that finds no data node runs anywhere and asks the autoscaler for none
    assert types["data_worker"]["min_workers"] >= 1
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert not any("--labels" in c for c in starts)


def test_the_launcher_hands_node_type_labels_to_ray_start(monkeypatch):
    """What the comment in cluster.yaml relies on: Ray's updater exports a node type's `labels`
    as RAY_OVERRIDE_LABELS, which `ray start` reads as the node's labels."""
    import inspect

    from ray._private import ray_constants
    from ray._private.resource_and_label_spec import ResourceAndLabelSpec
    from ray.autoscaler._private import updater
    assert ray_constants.LABELS_ENVIRONMENT_VARIABLE == "RAY_OVERRIDE_LABELS"
    assert "env_vars[LABELS_ENVIRONMENT_VARIABLE] = self.node_labels" in inspect.getsource(updater)
    monkeypatch.setenv("RAY_OVERRIDE_LABELS", json.dumps({"medmix-role": "data"}))
    assert ResourceAndLabelSpec._load_env_labels() == {"medmix-role": "data"}
