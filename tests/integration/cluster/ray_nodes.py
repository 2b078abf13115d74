"""A multi-node Ray cluster on one machine: each node its own `ray start --block` raylet, in its
own process group, with its own temp dir and ports, so that one node can be killed hard (SIGKILL
of its process group: raylet, agents and the workers it started) while the others run on.

    nodes = RayNodes(tmp, env)            # env: what every node's processes see
    nodes.start_head()                    # no CPUs: the Jobs API and drivers, no training
    nodes.add(("train-1", 1, "train"), ("data-1", 2, "data"))
    nodes.kill("train-1")
    nodes.shutdown()

The head's GCS declares a node dead about 3 s after its raylet stops answering (health checks
every 1 s, 3 misses) instead of Ray's default ~30 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

FAST_NODE_DEATH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "1000",
                   "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before by this process (the OS may offer a port
    it just released again, and one Ray node given one port twice refuses to start)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


class RayNodes:
    def __init__(self, logs: Path, env: dict[str, str]):
        self.logs = logs
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self.temps: list[Path] = []
        self.gcs = self.dashboard = ""
        self.last_seen: set[str] = set()
        self.starts: dict[str, tuple[list[str], dict[str, str] | None]] = {}
        self.tries: dict[str, int] = {}
        self.ray_bin = str(Path(sys.executable).with_name("ray"))

    def _start(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> None:
        self.starts[name] = (args, extra_env)
        self.tries[name] = self.tries.get(name, 0) + 1
        temp = Path("/tmp") / f"mmx-{os.getpid()}-{name}-{self.tries[name]}"   # socket paths stay short
        self.temps.append(temp)
        own_ports = [f"--{flag}={free_port()}" for flag in (
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
            "metrics-export-port", "node-manager-port", "object-manager-port")]
        cmd = [self.ray_bin, "start", "--block", "--node-ip-address=127.0.0.1", f"--node-name={name}",
               f"--temp-dir={temp}", "--disable-usage-stats", "--min-worker-port=0", "--max-worker-port=0",
               "--object-store-memory=150000000", *own_ports, *args]
        self.procs[name] = subprocess.Popen(cmd, stdout=open(self.logs / f"{name}.log", "a"),
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**self.env, **(extra_env or {}), "RAY_ADDRESS": ""})

    def start_head(self, timeout: float = 120) -> None:
        port, dash = free_port(), free_port()
        self._start("head", ["--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=true",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                             f"--ray-client-server-port={free_port()}"], FAST_NODE_DEATH)
        self.gcs, self.dashboard = f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}"
        self._wait(lambda: self._jobs_api_up(), timeout, "the head's Jobs API")

    def add(self, *specs: tuple[str, float, str], timeout: float = 240) -> None:
        """Start nodes (name, CPUs, medmix-role) side by side; return once all are alive."""
        for name, cpus, role in specs:
            # the head enabled token auth (Ray 2.60's default) and wrote ~/.ray/auth_token: read it
            self._start(name, [f"--address={self.gcs}", f"--num-cpus={cpus:g}", f"--labels=medmix-role={role}"],
                        {"RAY_AUTH_MODE": "token"})
        names = {name for name, _, _ in specs}
        self._wait(lambda: names <= self._alive_names(), timeout, f"nodes {', '.join(sorted(names))} to join",
                   restart=names)

    def nodes(self) -> list[dict]:
        """Alive nodes, as the State API lists them (node_id, node_name, labels, ...)."""
        from medmix.commands.submit import auth_headers
        req = urllib.request.Request(f"{self.dashboard}/api/v0/nodes?limit=100&detail=true",
                                     headers=auth_headers())
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read())
        rows = body["data"]["result"]["result"]
        return [r for r in rows if r.get("state") == "ALIVE"]

    def _alive_names(self) -> set[str]:
        try:
            self.last_seen = {n.get("node_name") for n in self.nodes()}
        except (OSError, KeyError, ValueError) as exc:   # the dashboard is busy or starting
            self.last_seen = {f"(State API: {exc})"}
        return self.last_seen

    def name_of(self, node_id: str) -> str:
        return next(n["node_name"] for n in self.nodes() if n["node_id"] == node_id)

    def kill(self, name: str) -> None:
        """SIGKILL the node's whole process group: no graceful drain, as when a machine dies."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def shutdown(self) -> None:
        for name in list(self.procs)[::-1]:
            try:
                self.kill(name)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        for temp in self.temps:
            shutil.rmtree(temp, ignore_errors=True)

    def _jobs_api_up(self) -> bool:
        from ray.job_submission import JobSubmissionClient

        from medmix.commands.submit import auth_headers
        try:
            JobSubmissionClient(self.dashboard, headers=auth_headers()).list_jobs()
            return True
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def _wait(self, ready, timeout: float, what: str, restart: set[str] = frozenset()) -> None:
        """Poll `ready`; a node of `restart` whose `ray start` gave up (Ray allows a raylet 30 s to
        register, which a loaded 2-core machine can exceed) is started again, up to 3 times."""
        deadline = time.time() + timeout
        while not ready():
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            for name in [n for n in dead if n in restart and self.tries[n] < 3]:
                try:   # whatever the failed attempt left running (its raylet) goes first
                    os.killpg(self.procs[name].pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._start(name, *self.starts[name])
                dead.remove(name)
            if dead or time.time() > deadline:
                log = self.logs / f"{(dead or ['head'])[0]}.log"
                raise RuntimeError(f"waiting for {what}: {'exited: ' + ', '.join(dead) if dead else 'timed out'} "
                                   f"(alive: {sorted(map(str, self.last_seen))})\n"
                                   f"{log.read_text()[-3000:] if log.exists() else ''}")
            time.sleep(0.5)
