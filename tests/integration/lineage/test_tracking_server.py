"""Tracking-server mode: `medmix tracking-server` (a real `mlflow server`, sqlite backend,
artifacts proxied to a local S3 server), one URI pinned by the driver and used by a Ray worker
that has no MLflow variable of its own, and an unreachable server failing before any work.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from medmix.config import load_config, to_dict

pytestmark = pytest.mark.slow(minutes=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, s3_server):
    """`medmix tracking-server` on 127.0.0.1 with artifacts in a fresh bucket."""
    tmp = tmp_path_factory.mktemp("tracking")
    bucket = s3_server.bucket("mlflow")
    port = free_port()
    log = open(tmp / "server.log", "w")
    env = {**os.environ, **s3_server.env}
    proc = subprocess.Popen([sys.executable, "-m", "medmix.cli", "tracking-server", "--root", str(tmp / "store"),
                             "--artifacts", f"s3://{bucket}/mlflow", "--port", str(port), "--workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            if urllib.request.urlopen(uri + "/health", timeout=2).status == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None and time.time() < deadline, (tmp / "server.log").read_text()[-3000:]
        time.sleep(0.5)
    yield {"uri": uri, "bucket": bucket, "tmp": tmp, "s3": s3_server}
    os.killpg(proc.pid, 15)
    proc.wait(timeout=20)
    log.close()


def test_runs_and_artifacts_go_through_the_server_to_the_bucket(server, tmp_path, monkeypatch, ray_local):
    from medmix.lineage.backend import client
    from medmix.storage import location
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    for k in server["s3"].env:          # the client needs no S3 credentials: the server proxies
        monkeypatch.delenv(k, raising=False)
    cfg = load_config("debug", [f'lineage.root="{tmp_path}/runs"'])
    from medmix.lineage.tracker import build_tracker
    tracker = build_tracker(cfg.lineage)
    assert cfg.lineage.tracking_uri == server["uri"]     # pinned into the config workers get
    run_id = tracker.start_run("tracked", tags={"medmix.kind": "train"}).run_id
    note = tmp_path / "note.txt"
    note.write_text("proxied to s3\n")
    tracker.log_artifact(note, "notes")

    # a Ray worker with no MLflow variable uses exactly the driver's server
    @ray_local.remote(num_cpus=0)
    def log_from_worker(cfg_dict: dict, run_id: str) -> str:
        """In a Ray worker without MLflow variables: the tracker built from the driver's config."""
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from medmix.config import config_from_dict
        from medmix.lineage.tracker import build_tracker
        wcfg = config_from_dict(cfg_dict)
        worker = build_tracker(wcfg.lineage)
        worker.start_run("tracked", run_id=run_id)   # as a Ray Train worker re-opens the driver's run
        worker.log_metrics({"worker_metric": 7.0}, step=1)
        return wcfg.lineage.tracking_uri

    used = ray_local.get(log_from_worker.remote(to_dict(cfg), run_id))
    assert used == server["uri"]
    tracker.end_run("FINISHED")

    c = client(cfg.lineage)
    run = c.get_run(run_id)
    assert run.data.metrics["worker_metric"] == 7.0
    assert [a.path for a in c.list_artifacts(run_id, "notes")] == ["notes/note.txt"]
    for k, v in server["s3"].env.items():
        monkeypatch.setenv(k, v)
    objects = [p.path for p in location(f"s3://{server['bucket']}/mlflow").files()]
    assert any(p.endswith(f"{run_id}/artifacts/notes/note.txt") for p in objects), objects
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("mlflow.db"))


def test_unreachable_tracking_server_fails_before_training_and_writes_nothing(tmp_path, tiny_suite):
    dead = f"http://127.0.0.1:{free_port()}"
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-m", "medmix.cli", "train", "--set", f'data.root="{tiny_suite}"',
                           "--set", f'train.storage_path="{work}/checkpoints"', "--set", f'lineage.root="{work}/runs"',
                           "--set", f'lineage.tracking_uri="{dead}"'],
                          capture_output=True, text=True, timeout=120, cwd=work)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and dead in lines[0] and "unreachable" in lines[0], proc.stderr[-2000:]
    assert list(work.iterdir()) == []
