"""Placement by node labels on a real multi-node Ray (`ray.cluster_utils.Cluster`, one machine).

A head with no CPUs, one node labelled `medmix-role=data`, one labelled `medmix-role=train`.
Proves: a rank's stream, started on the train node, builds every batch on the data node (Ray
would otherwise prefer the stream's own node, which has CPUs free). That Ray Train's workers
go to the train nodes, and the run info says so, is proved on the multi-node cluster of
test_cluster_object_storage.py (its data node has the free CPUs; the ranks must not use them).

The cluster runs in a child process (this file, run as a script): the session's `ray_local`
Ray must stay as it is for the tests after this one, and one process holds one Ray.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import suite_config

pytestmark = pytest.mark.slow(minutes=0.7)

ROOT = Path(__file__).resolve().parents[3]
STEPS = 3


def test_stages_run_on_the_nodes_labelled_for_them(tiny_suite, tmp_path):
    out = tmp_path / "placement.json"
    # RAY_TMPDIR: the Cluster's address file stays out of /tmp/ray, where a plain `ray.init()` of
    # another test process running beside this one would find it and connect
    env = {**os.environ, "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0", "MEDMIX_QUIET_WORKERS": "1",
           "RAY_TMPDIR": f"/tmp/mmx-pl-{os.getpid()}",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, __file__, tiny_suite, str(tmp_path), str(out)], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=240)
    finally:
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    got = json.loads(out.read_text())
    nodes = got["nodes"]

    # the stream, started on the train node, built every batch on the data node
    assert got["stream_on"] == nodes["train"]
    assert got["built_on"] == {nodes["data"]: STEPS}, got["built_on"]

    assert got["seconds"] < 240, got
    print(f"placement child {time.time() - t0:.1f} s: cluster {got['cluster_s']:.1f} s, "
          f"stream pass {got['stream_s']:.1f} s, all {got['seconds']:.1f} s")


# -- the child: one cluster, one stage ------------------------------------------------------

def _child(suite_root: str, tmp: str, out: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    import medmix  # noqa: F401 - the torchvision shim, before anything imports timm
    from medmix.data.stream import build_rank_stream
    from medmix.data.tokenizer import load_tokenizer
    from medmix.placement import ROLE_LABEL

    stream_cfg = suite_config(Path(tmp) / "stream", suite_root, "mixture.global_batch_size=4",
                              "stream.steps_per_block=2")
    t0 = time.time()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        data = cluster.add_node(num_cpus=2, labels={ROLE_LABEL: "data"})
        trainer = cluster.add_node(num_cpus=2, labels={ROLE_LABEL: "train"})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        nodes = {"data": data.node_id, "train": trainer.node_id}
        started = time.time()

        @ray.remote(num_cpus=0.5, label_selector={ROLE_LABEL: "train"})
        def stream_pass() -> dict:
            t = time.time()
            tok = load_tokenizer(stream_cfg.tokenizer, stream_cfg.data.root, stream_cfg.model.decoder_path)
            rs = build_rank_stream(stream_cfg, tok, use_ray=True)
            try:
                for _ in rs.batches(end_step=STEPS):
                    pass
                return {"on": ray.get_runtime_context().get_node_id(), "built_on": rs.stats()["built_on"],
                        "seconds": time.time() - t}
            finally:
                rs.close()

        streamed = ray.get(stream_pass.remote(), timeout=120)
        Path(out).write_text(json.dumps({
            "nodes": nodes, "stream_on": streamed["on"], "built_on": streamed["built_on"],
            "seconds": time.time() - t0, "cluster_s": started - t0, "stream_s": streamed["seconds"]}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    _child(*sys.argv[1:4])
