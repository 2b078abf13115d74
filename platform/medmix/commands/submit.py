"""`medmix submit <job>`: send a job to a Ray cluster through the Jobs API and follow its logs.

`build_job` is the one place that turns a job name and its arguments into what Ray runs (the
entrypoint and its runtime_env); `medmix deploy kuberay` writes the same job into a manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JOBS = {"train": "jobs/train.py", "sweep": "jobs/sweep.py", "evaluate": "jobs/evaluate.py", "serve": "jobs/serve.py"}
EXCLUDES = [".venv", ".git", "medmix-data", "medmix-runs", "**/__pycache__", ".pytest_cache", ".whl"]
TRACKING_ENV = "MLFLOW_TRACKING_URI"
HIDDEN = "***"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "submit", help="submit a train/sweep/evaluate/serve job to a Ray cluster (Jobs API) and follow it",
        description="Submit `python jobs/<job>.py ARGS` to the Ray cluster at --address with this "
                    "directory as the job's working_dir (without .venv, .git and local data), "
                    "then stream its logs until it ends. Everything after the job name that "
                    "medmix does not know is passed to the job, e.g. --preset base --set train.steps=1000; "
                    "arguments after `--` always go to the job (`-- --dry-run` asks the job for its config). "
                    "Exit status: 0 if the job SUCCEEDED.",
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        epilog="examples:\n"
               "  medmix submit train --preset base --dry-run        # print the job as JSON, contact nothing\n"
               "  medmix submit train --address http://HEAD:8265 --tracking-uri http://HEAD:5000 \\\n"
               "      --env AWS_ACCESS_KEY_ID --env AWS_SECRET_ACCESS_KEY --preset base\n"
               "  medmix submit serve --address http://HEAD:8265 --model medmix@champion --host 0.0.0.0 --detach")
    p.add_argument("job", choices=sorted(JOBS), help="which entry point under jobs/ to run")
    p.add_argument("--address", default=None,
                   help="Ray dashboard address, e.g. http://HEAD:8265 (default: $RAY_ADDRESS)")
    p.add_argument("--working-dir", default=".", help="directory uploaded as the job's working_dir")
    p.add_argument("--python", default="python", help="interpreter on the cluster (default: python)")
    add_job_env_args(p)
    p.add_argument("--pip", action="append", default=[], metavar="PKG",
                   help="pip package Ray installs into the job's environment (repeatable)")
    p.add_argument("--uv", action="append", default=[], metavar="PKG",
                   help="the same, installed with uv (repeatable; not together with --pip)")
    p.add_argument("--image-uri", default=None, metavar="IMAGE",
                   help="container image the job's workers run in; Ray takes only env_vars beside it, so "
                        "no --pip/--uv and no working_dir upload: the image must hold medmix and jobs/")
    p.add_argument("--dry-run", action="store_true",
                   help="print the job (entrypoint, submission id, runtime_env with --env values as ***) "
                        "as JSON and exit; no cluster is contacted")
    p.add_argument("--no-follow", action="store_true", help="print the job id and return at once")
    p.add_argument("--timeout", type=float, default=0, help="give up following after N seconds (0 = never)")
    p.add_argument("--agent-wait", type=float, default=120.0,
                   help="keep retrying for N seconds while a freshly started cluster has no job agent yet")
    p.set_defaults(func=run)


ENV_HELP = ("copy this shell's value of environment variable NAME into the job (repeatable), "
            "e.g. --env AWS_SECRET_ACCESS_KEY; values are never printed (shown as ***)")


def add_job_env_args(p: argparse.ArgumentParser, env_help: str = ENV_HELP) -> None:
    """--tracking-uri and --env: what every process of a job must see, for submit and deploy alike."""
    p.add_argument("--tracking-uri", default=None, metavar="URI",
                   help=f"MLflow tracking server the job records to, carried as ${TRACKING_ENV} (default: "
                        f"this shell's ${TRACKING_ENV}). It must be reachable from the cluster: an http(s) "
                        f"`mlflow server` URI (`medmix tracking-server`); a sqlite file or local path is "
                        f"refused. --tracking-uri '' carries none, and the job's driver then uses the "
                        f"cluster's own ${TRACKING_ENV}, else a sqlite file under lineage.root on its node")
    p.add_argument("--env", action="append", default=[], metavar="NAME", help=env_help)


@dataclass(frozen=True)
class Job:
    """What Ray runs: `ray job submit --submission-id ID --runtime-env-json ENV -- ENTRYPOINT`.

    `runtime_env` holds the secret values copied by --env (Ray needs them); their names are in
    `secrets`, and `shown()` is the only form of the job that is ever printed or logged.
    """

    entrypoint: str
    submission_id: str
    runtime_env: dict[str, Any] = field(repr=False)
    secrets: tuple[str, ...] = ()

    def shown(self) -> dict[str, Any]:
        """The job as JSON-able data with every secret value replaced by ***."""
        env = dict(self.runtime_env)
        if "env_vars" in env:
            env["env_vars"] = {k: HIDDEN if k in self.secrets else v for k, v in env["env_vars"].items()}
        return {"entrypoint": self.entrypoint, "submission_id": self.submission_id, "runtime_env": env}


def build_job(job: str, job_args: Sequence[str], *, working_dir: str | None = ".", python: str = "python",
              tracking_uri: str | None = None, env: Sequence[str] = (), pip: Sequence[str] = (),
              uv: Sequence[str] = (), image_uri: str | None = None,
              environ: Mapping[str, str] = os.environ, submission_id: str | None = None) -> Job:
    """The job `medmix submit` sends and `medmix deploy kuberay` writes; ValueError names bad input.

    The submission id is chosen here, once, so a retried submission cannot start the job twice.
    """
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}: choose one of {', '.join(sorted(JOBS))}")
    if pip and uv:
        raise ValueError("--pip and --uv together: Ray installs a job's packages with one of them; use one")
    if image_uri and (pip or uv):
        raise ValueError(f"--image-uri {image_uri} together with --pip/--uv: Ray runs an image_uri job with "
                         f"only env_vars beside it; install the packages in the image instead")
    runtime_env: dict[str, Any] = {}
    if working_dir and not image_uri:
        runtime_env.update(working_dir=working_dir, excludes=EXCLUDES)
    env_vars = {TRACKING_ENV: uri} if (uri := cluster_tracking_uri(tracking_uri, environ)) else {}
    env_vars.update(copied_env(env, environ))
    if env_vars:
        runtime_env["env_vars"] = env_vars
    if pip:
        runtime_env["pip"] = list(pip)
    if uv:
        runtime_env["uv"] = list(uv)
    if image_uri:
        runtime_env["image_uri"] = image_uri
    return Job(entrypoint=" ".join([python, JOBS[job], *map(shlex.quote, job_args)]),
               submission_id=submission_id or f"medmix-{uuid.uuid4().hex[:12]}",
               runtime_env=runtime_env, secrets=tuple(env))


def cluster_tracking_uri(tracking_uri: str | None, environ: Mapping[str, str]) -> str:
    """--tracking-uri, else the submitter's $MLFLOW_TRACKING_URI; '' = none. A store that is a file
    of this machine is refused: every node of the cluster would open a different, empty one."""
    uri = environ.get(TRACKING_ENV, "") if tracking_uri is None else tracking_uri
    if uri and is_machine_local(uri):
        source = f"${TRACKING_ENV}" if tracking_uri is None else "--tracking-uri"
        raise ValueError(f"tracking URI {uri} ({source}) is a file on this machine that the cluster cannot "
                         f"read: pass the http(s) URI of an `mlflow server` (`medmix tracking-server`), "
                         f"e.g. --tracking-uri http://HEAD:5000, or --tracking-uri '' to let the job use "
                         f"the cluster's own default")
    return uri


def is_machine_local(uri: str) -> bool:
    """sqlite files, file: URIs and plain paths: stores only the machine they name can open."""
    return uri.startswith(("sqlite:", "file:")) or ("://" not in uri and uri != "databricks")


def copied_env(names: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """NAME -> this shell's value for each --env NAME; an unset one is an error naming it."""
    unset = [n for n in names if n not in environ]
    if unset:
        raise ValueError(f"--env {', '.join(unset)}: not set in this environment; export "
                         f"{'it' if len(unset) == 1 else 'them'} first (values are copied, never printed)")
    return {n: environ[n] for n in names}


def submit(job: str, job_args: list[str], *, address: str | None, follow: bool = True, timeout: float = 0,
           agent_wait: float = 120.0, out=sys.stdout, **build: Any) -> tuple[str, str]:
    """Submit `build_job(job, job_args, **build)` and (optionally) follow. Returns (submission_id, final status)."""
    from ray.job_submission import JobStatus, JobSubmissionClient
    spec = build_job(job, job_args, **build)
    client = JobSubmissionClient(address, headers=auth_headers())
    job_id = submit_with_retry(client, spec.entrypoint, spec.runtime_env, wait=agent_wait, out=out,
                               submission_id=spec.submission_id)
    print(f"submitted {job_id}: {spec.entrypoint}", file=out, flush=True)
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


def submit_with_retry(client, entrypoint: str, runtime_env: dict, *, wait: float, out,
                      submission_id: str | None = None) -> str:
    """submit_job, retried while the cluster says its job agent is not up yet.

    A head that has just started answers the Jobs API before its per-node agent is ready and
    refuses submissions with "No available agent ... try again later". The submission id is
    chosen once (by `build_job`, else here), so a retry after an ambiguous failure cannot start
    the job twice. Any other error is raised at once.
    """
    job_id = submission_id or f"medmix-{uuid.uuid4().hex[:12]}"
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

    Ray clusters enable token auth by default and write the token to ~/.ray/auth_token. Ray's
    own clients add it only when RAY_AUTH_MODE=token is set in the process — which Ray itself
    does on any `ray.init()` that finds a token, so the variable says nothing about who else
    sends one; plain HTTP calls (the State API, a health check) never get it. An explicit
    header works for both (Ray's clients keep a header the caller gave). Only
    RAY_AUTH_MODE=disabled, the user's word, sends none.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not token and path.is_file():
        token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def run(args: argparse.Namespace) -> int:
    build = dict(working_dir=args.working_dir, python=args.python, tracking_uri=args.tracking_uri, env=args.env,
                 pip=args.pip, uv=args.uv, image_uri=args.image_uri)
    if args.dry_run:
        print(json.dumps(build_job(args.job, args.job_args, **build).shown(), indent=2))
        return 0
    _, status = submit(args.job, args.job_args, address=args.address, follow=not args.no_follow,
                       timeout=args.timeout, agent_wait=args.agent_wait, **build)
    return 0 if status in ("SUCCEEDED",) or args.no_follow else 1
