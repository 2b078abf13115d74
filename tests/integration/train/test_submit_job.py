"""`medmix submit train` against a real Ray head on 127.0.0.1, started and stopped by the test.

The head runs in its own process group with its own temp dir and ports (every port Ray would
otherwise take from its fixed defaults included: a second node agent on the default 52365 of
the session's in-process Ray never comes up, and the Jobs API then answers "No available
agent"), so it neither sees nor disturbs the session's in-process Ray; the job (jobs/train.py) trains the debug model for
two steps on the tiny suite and must reach SUCCEEDED.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def ray_head(tmp_path):
    gcs, dash = free_port(), free_port()
    own_ports = [f"--{flag}={free_port()}" for flag in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "metrics-export-port", "node-manager-port", "object-manager-port", "ray-client-server-port")]
    ray_bin = Path(sys.executable).with_name("ray")
    temp = Path("/tmp") / f"mmx-head-{os.getpid()}"  # unix socket paths must stay short
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         "--num-cpus=4", f"--temp-dir={temp}", "--disable-usage-stats", *own_ports],
        stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "RAY_ADDRESS": ""})
    address = f"http://127.0.0.1:{dash}"
    try:
        from ray.job_submission import JobSubmissionClient

        from medmix.commands.submit import auth_headers
        deadline = time.time() + 120
        while True:
            try:
                JobSubmissionClient(address, headers=auth_headers()).list_jobs()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"Ray head did not come up:\n{(tmp_path / 'head.log').read_text()[-3000:]}")
                time.sleep(2)
        yield address
    finally:
        # the head and everything it started share one process group, and nothing of it
        # outlives the test: kill it hard rather than wait for `ray start --block` to drain
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(temp)], check=False)


def test_submit_train_reaches_succeeded(ray_head, tmp_path, tiny_suite):
    import io

    from medmix.commands.submit import submit
    out = io.StringIO()
    job_args = ["--preset", "debug", "--set", f'data.root="{tiny_suite}"',
                "--set", f'train.storage_path="{tmp_path}/ckpt"', "--set", f'lineage.root="{tmp_path}/runs"',
                "--set", "train.steps=2", "--set", "train.checkpoint_every=2", "--set", "train.num_workers=1",
                "--set", "name=submitted"]
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        job_id, status = submit("train", job_args, address=ray_head, python=sys.executable, timeout=600, out=out)
    finally:
        os.chdir(cwd)
    log = out.getvalue()
    assert status == "SUCCEEDED", log[-4000:]
    assert "run submitted: finished" in log
    assert (tmp_path / "ckpt" / "submitted" / "step-000002" / "medmix.json").is_file()
