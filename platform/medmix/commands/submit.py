"""`medmix submit <job>`: send a job to a Ray cluster through the Jobs API and follow its logs."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import uuid
from pathlib import Path

JOBS = {"train": "jobs/train.py", "sweep": "jobs/sweep.py"}
EXCLUDES = [".venv", ".git", "medmix-data", "medmix-runs", "**/__pycache__", ".pytest_cache", ".whl"]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "submit", help="submit a train/sweep/serve job to a Ray cluster (Jobs API) and follow it",
        description="Submit `python jobs/<job>.py ARGS` to the Ray cluster at --address with this "
                    "directory as the job's working_dir (without .venv, .git and local data), "
                    "then stream its logs until it ends. Everything after the job name that "
                    "medmix does not know is passed to the job, e.g. --preset base --set train.steps=1000. "
                    "Exit status: 0 if the job SUCCEEDED.")
    p.add_argument("job", choices=sorted(JOBS), help="which entry point under jobs/ to run")
    p.add_argument("--address", default=None,
                   help="Ray dashboard address, e.g. http://HEAD:8265 (default: $RAY_ADDRESS)")
    p.add_argument("--working-dir", default=".", help="directory uploaded as the job's working_dir")
    p.add_argument("--python", default="python", help="interpreter on the cluster (default: python)")
    p.add_argument("--no-follow", action="store_true", help="print the job id and return at once")
    p.add_argument("--timeout", type=float, default=0, help="give up following after N seconds (0 = never)")
    p.add_argument("--agent-wait", type=float, default=120.0,
                   help="keep retrying for N seconds while a freshly started cluster has no job agent yet")
    p.set_defaults(func=run)


def submit(job: str, job_args: list[str], *, address: str | None, working_dir: str = ".",
           python: str = "python", follow: bool = True, timeout: float = 0,
           agent_wait: float = 120.0, out=sys.stdout) -> tuple[str, str]:
    """Submit and (optionally) follow. Returns (submission_id, final status)."""
    from ray.job_submission import JobStatus, JobSubmissionClient
    client = JobSubmissionClient(address, headers=auth_headers())
    entrypoint = " ".join([python, JOBS[job], *map(shlex.quote, job_args)])
    job_id = submit_with_retry(client, entrypoint, {"working_dir": working_dir, "excludes": EXCLUDES},
                               wait=agent_wait, out=out)
    print(f"submitted {job_id}: {entrypoint}", file=out, flush=True)
    if not follow:
        return job_id, str(client.get_job_status(job_id))
    printed = 0
    start = time.time()
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        if len(logs) > printed:
            out.write(logs[printed:])
            out.flush()
            printed = len(logs)
        if status in terminal:
            break
        if timeout and time.time() - start > timeout:
            print(f"\nstill {status} after {timeout:.0f} s; follow with `ray job logs -f {job_id}`", file=out)
            return job_id, str(status)
        time.sleep(1.0)
    print(f"\njob {job_id} {status}", file=out)
    return job_id, str(status.value if hasattr(status, "value") else status)


TRANSIENT = ("No available agent", "please try again later")


def submit_with_retry(client, entrypoint: str, runtime_env: dict, *, wait: float, out) -> str:
    """submit_job, retried while the cluster says its job agent is not up yet.

    A head that has just started answers the Jobs API before its per-node agent is ready and
    refuses submissions with "No available agent ... try again later". The submission id is
    chosen here, once, so a retry after an ambiguous failure cannot start the job twice.
    Any other error is raised at once.
    """
    job_id = f"medmix-{uuid.uuid4().hex[:12]}"
    deadline = time.time() + wait
    delay = 1.0
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=job_id)
        except RuntimeError as err:
            text = str(err)
            if "already exists" in text:
                return job_id  # an earlier attempt got through
            if not any(t in text for t in TRANSIENT):
                raise
            if time.time() + delay > deadline:
                raise RuntimeError(
                    f"{text.strip()} (still after {wait:.0f} s: the head's dashboard agent is not "
                    f"running; see dashboard_agent.log in the head's Ray session logs - a port "
                    f"already taken, e.g. --dashboard-agent-listen-port 52365, is the usual cause)") from err
            print(f"cluster not ready to take jobs yet ({text.strip()[:120]}); retrying in {delay:.0f} s",
                  file=out, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def auth_headers() -> dict[str, str]:
    """The cluster token as an Authorization header, when one is at hand.

    Ray clusters enable token auth by default and write the token to ~/.ray/auth_token, but
    the Jobs client sends it only when RAY_AUTH_MODE=token was set before ray was imported;
    an explicit header works either way. RAY_AUTH_MODE set by the user always wins.
    """
    if os.environ.get("RAY_AUTH_MODE"):
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not token and path.is_file():
        token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def run(args: argparse.Namespace) -> int:
    _, status = submit(args.job, args.job_args, address=args.address, working_dir=args.working_dir,
                       python=args.python, follow=not args.no_follow, timeout=args.timeout,
                       agent_wait=args.agent_wait)
    return 0 if status in ("SUCCEEDED",) or args.no_follow else 1
