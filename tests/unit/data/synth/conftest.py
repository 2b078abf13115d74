"""One tiny suite per test session, built the way `medmix synth --size tiny` builds it."""

from __future__ import annotations

import time

import pytest


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory):
    from medmix.data.store import ShardStore
    from medmix.data.synth import SynthConfig, build_suite
    root = tmp_path_factory.mktemp("synth") / "store"
    store = ShardStore(root)
    wall, cpu = time.perf_counter(), time.process_time()
    summary = build_suite(SynthConfig(size="tiny"), store, image_size=224, progress=False)
    summary["wall_s"], summary["cpu_s"] = time.perf_counter() - wall, time.process_time() - cpu
    return store, summary
