"""Placement by node labels on a real multi-node Ray (`ray.cluster_utils.Cluster`, one machine).

A head with no CPUs, one node labelled `medmix-role=data`, one labelled `medmix-role=train`.
Proves: a rank's stream, started on the train node, builds every batch on the data node (Ray
would otherwise prefer the stream's own node, which has CPUs free); a 1-step training run
puts its worker on the train node and says so in its run info.

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

pytestmark = pytest.mark.slow(minutes=1.2)

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

    # the train worker ran on the train node, and the run info says so
    (rank,) = got["ranks"]
    assert rank["rank"] == 0 and rank["node_id"] == nodes["train"] and rank["role"] == "train"
    assert got["error"] is None and got["seconds"] < 240, got
    print(f"placement child {time.time() - t0:.1f} s: cluster {got['cluster_s']:.1f} s, "
          f"stream pass {got['stream_s']:.1f} s, all {got['seconds']:.1f} s")


# -- the child: one cluster, two stages ----------------------------------------------------

def _child(suite_root: str, tmp: str, out: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    import medmix  # noqa: F401 - the torchvision shim, before anything imports timm
    from medmix.data.stream import build_rank_stream
    from medmix.data.tokenizer import load_tokenizer
    from medmix.placement import ROLE_LABEL
    from medmix.train.launcher import RUN_INFO, train

    stream_cfg = suite_config(Path(tmp) / "stream", suite_root, "mixture.global_batch_size=4",
                              "stream.steps_per_block=2")
    train_cfg = suite_config(Path(tmp) / "train", suite_root, "name=placed", "train.steps=1",
                             "train.warmup_steps=0", "train.num_workers=1", "train.eval_every=0",
                             "train.log_every=1", "train.checkpoint_every=1", "mixture.global_batch_size=4",
                             "lineage.enabled=false")
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

        # both stages at once (they fit: train node 0.5 + 1 CPU, data node 4 x 0.25 CPU)
        streaming = stream_pass.remote()
        result = train(train_cfg)
        streamed = ray.get(streaming, timeout=120)
        stream_s = streamed["seconds"]
        info = json.loads((Path(result.run_dir) / RUN_INFO).read_text())
        Path(out).write_text(json.dumps({
            "nodes": nodes, "stream_on": streamed["on"], "built_on": streamed["built_on"],
            "ranks": info["ranks"], "error": result.error, "seconds": time.time() - t0,
            "cluster_s": started - t0, "stream_s": stream_s}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    _child(*sys.argv[1:4])
