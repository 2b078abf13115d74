"""The process's runtime: where it finds its Ray cluster, and how a job opens its MLflow run —
one rule each for train, sweep trials, evaluate, ingest and serve.

    from medmix.runtime import ensure_ray, open_run
    ensure_ray(num_cpus_needed=3)   # joins RAY_ADDRESS / a running Ray, else starts a local one
    run_id, resumed = open_run(tracker, cfg, kind="train", name=cfg.name, resume_run_id=old_id)

A named cluster (`RAY_ADDRESS`, which `ray job submit` sets) or an already initialised Ray is
used as it is. Otherwise a local cluster starts, sized by `local_num_cpus`: Ray Data's read
tasks need a CPU slot next to the train workers, and on a 2-core machine the default
`ray.init()` (2 CPUs) with 2 one-CPU workers leaves none and the run hangs, so the local
cluster advertises at least the CPUs asked for + 2 logical CPUs (and never fewer than 4).

A driver that joins a running cluster (`RAY_ADDRESS`) outside `ray job submit` hands its job
the object-storage variables of its own environment (`STORAGE_ENV`: the AWS endpoint, region,
profile and credentials), so every trial and worker reaches the same bucket the same way the
driver does; a submitted job's entrypoint already runs in the runtime_env `medmix submit
--env` built, and Ray refuses a second one beside it, so nothing is added there.

The dashboard is on (127.0.0.1:8265, or the next free port): Ray Train's placement-group
cleaner asks the State API, which the dashboard serves, whether the run's controller is
alive; without it the cleaner cannot clean up after a dead driver and logs a warning every
second for as long as the run lasts. Starting it costs no measurable init time.
"""

from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from medmix.config import MedmixConfig
    from medmix.lineage.tracker import Tracker

log = logging.getLogger(__name__)


def local_num_cpus(num_cpus_needed: float) -> int:
    """Logical CPUs a local cluster advertises: the machine's, or what is needed + 2, at least 4."""
    return max(os.cpu_count() or 1, math.ceil(num_cpus_needed) + 2, 4)


# What a process needs to reach object storage as the driver does (see medmix.storage).
STORAGE_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
               "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# Ray Train's preemption watcher (cloud spot-instance notices); off on a local cluster.
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
# Set by Ray in a `ray job submit` entrypoint: the job's runtime_env is fixed there.
SUBMITTED_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def joining_runtime_env(environ: Mapping[str, str] | None = None) -> dict | None:
    """The runtime_env of a driver joining a running cluster: its storage variables, or None
    (none set, or a submitted job's entrypoint, whose runtime_env Ray already fixed)."""
    environ = os.environ if environ is None else environ
    if SUBMITTED_JOB_ENV in environ:
        return None
    env_vars = {k: environ[k] for k in STORAGE_ENV if environ.get(k)}
    return {"env_vars": env_vars} if env_vars else None


def ensure_ray(num_cpus_needed: float = 0.0, *, worker_logs: bool | None = None) -> None:
    """Connect to the named or running cluster, else start a local one with enough logical CPUs.

    `worker_logs`: stream the workers' stdout to this process (default: yes, unless
    MEDMIX_QUIET_WORKERS is set).
    """
    import ray  # start-up time: `medmix --help` and config-only commands never import Ray
    if ray.is_initialized():
        return
    if worker_logs is None:
        worker_logs = os.environ.get("MEDMIX_QUIET_WORKERS") is None
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=worker_logs, configure_logging=False, runtime_env=joining_runtime_env())
        return
    # A local cluster's one node cannot be preempted: skip Ray Train's preemption watcher, an
    # extra actor process (a Python start-up and a poll loop) for every run
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
    # address="local": a new cluster of our own, even where another `ray start` on this machine
    # left its address behind (connect to that one with RAY_ADDRESS)
    ray.init(address="local", num_cpus=local_num_cpus(num_cpus_needed), include_dashboard=True,
             configure_logging=False, log_to_driver=worker_logs)


def open_run(tracker: Tracker, cfg: MedmixConfig, *, kind: str, name: str,
             tags: Mapping[str, Any] | None = None, resume_run_id: str | None = None,
             parent_run_id: str | None = None) -> tuple[str | None, bool]:
    """Open the job's MLflow run: re-open `resume_run_id` (a re-submitted job keeps its run),
    else start a new one — a child of `parent_run_id` when given — and record the config and
    the store's datasets on it. Every run is tagged `medmix.kind` = `kind`.

    Returns (run id, resumed); the id is None when lineage is disabled. A `resume_run_id` the
    tracking store does not know (the job moved to another store) starts a new run.
    """
    tags = {"medmix.kind": kind, **(tags or {})}
    if resume_run_id:
        try:
            tracker.start_run(name, tags={**tags, "medmix.resumed": "true"}, run_id=resume_run_id)
            return tracker.run_id, True
        except Exception:  # noqa: BLE001 - the run lives in another tracking store: start anew
            log.warning("run %s not found in this tracking store; starting a new one", resume_run_id)
    tracker.start_run(name, tags=tags, parent_run_id=parent_run_id)
    if tracker.run_id is not None:
        tracker.log_config(cfg)
        tracker.log_store(cfg.data.root)
    return tracker.run_id, False
