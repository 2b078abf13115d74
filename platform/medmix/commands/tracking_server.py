"""`medmix tracking-server`: an MLflow tracking server for the runs of a cluster (or a laptop).

    medmix tracking-server --root /srv/medmix-tracking --artifacts s3://bucket/mlflow
    export MLFLOW_TRACKING_URI=http://HEAD:5000        # on the machine that submits jobs

It runs `mlflow server` with a sqlite backend under --root and *proxied* artifacts: clients
send artifacts to the server, which writes them to --artifacts (a local folder or an s3://
URI, with the standard AWS variables of the server's environment). Workers then need no
object-store credentials for lineage, only the server's URL, which the driver pins into every
job's config (medmix.lineage.backend.pin_tracking_uri).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from medmix.storage import check_reachable, is_uri


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tracking-server", help="run an MLflow tracking server (sqlite backend, proxied artifacts)",
        description="Start `mlflow server` with its run store in <root>/mlflow.db and artifacts proxied "
                    "to --artifacts (default <root>/artifacts; an s3:// URI uses the AWS_* variables of "
                    "this environment). Point jobs at it with MLFLOW_TRACKING_URI=http://HOST:PORT or "
                    "--set lineage.tracking_uri=http://HOST:PORT; every Ray worker, trial and replica "
                    "of a job then writes to this server. Runs in the foreground until interrupted.")
    p.add_argument("--root", default="medmix-tracking", help="folder for the sqlite run store (default: ./medmix-tracking)")
    p.add_argument("--artifacts", default=None, metavar="PATH|s3://BUCKET/PREFIX",
                   help="where the server stores artifacts (default: <root>/artifacts)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for a cluster's nodes to reach it)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    p.add_argument("--jobs", action="store_true",
                   help="also start MLflow's job runner (the huey consumer processes behind MLflow's GenAI "
                        "evaluation jobs). medmix does not use it, so by default it is off: five fewer "
                        "processes, about 1 GB less memory and a faster start")
    p.add_argument("--dry-run", action="store_true", help="print the mlflow command and exit")
    p.set_defaults(func=run)


def server_command(root: str | Path, artifacts: str | None, host: str, port: int, workers: int) -> list[str]:
    """The `mlflow server` command line for a sqlite store under `root` and proxied artifacts."""
    root = Path(root).resolve()
    dest = artifacts or str(root / "artifacts")
    if not is_uri(dest):
        dest = Path(dest).resolve().as_uri()
    exe = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow") or "mlflow"
    cmd = [exe, "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--serve-artifacts", "--artifacts-destination", dest,
           "--host", host, "--port", str(port), "--workers", str(workers)]
    if host not in ("127.0.0.1", "localhost"):
        cmd += ["--allowed-hosts", "*"]   # reached by the cluster's nodes under any name
    return cmd


def server_env(base: dict[str, str] | os._Environ, jobs: bool) -> dict[str, str]:
    """The server's environment: telemetry off unless asked for, and MLflow's job runner only
    with --jobs (a variable the user set wins either way)."""
    env = dict(base)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true" if jobs else "false")
    return env


def run(args: argparse.Namespace) -> int:
    cmd = server_command(args.root, args.artifacts, args.host, args.port, args.workers)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    if args.artifacts and is_uri(args.artifacts):
        check_reachable(args.artifacts)   # endpoint, credentials, bucket: before the server starts
    Path(args.root).mkdir(parents=True, exist_ok=True)
    env = server_env(os.environ, jobs=args.jobs)
    print(f"medmix: MLflow tracking server on http://{args.host}:{args.port} "
          f"(runs: {Path(args.root).resolve() / 'mlflow.db'}, artifacts: {cmd[cmd.index('--artifacts-destination') + 1]})",
          flush=True)
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 130
