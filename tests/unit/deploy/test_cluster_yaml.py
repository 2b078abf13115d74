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
