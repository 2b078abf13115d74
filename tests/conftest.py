"""Shared fixtures: the debug config in a temp dir, the bundled suite built once, one Ray."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none here)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def debug_config(tmp_path, *overrides: str):
    """The `debug` preset with every output under tmp_path, plus overrides."""
    from medmix.config import load_config
    base = [f'data.root="{tmp_path}/data"',
            f'train.storage_path="{tmp_path}/runs/checkpoints"',
            f'lineage.root="{tmp_path}/runs"']
    return load_config("debug", base + list(overrides))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session, with logical CPUs so data + train can't deadlock."""
    import ray
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=6, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()
