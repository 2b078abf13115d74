"""Where a medmix process finds its Ray cluster — one rule for train, sweep, evaluate, ingest, serve.

    from medmix.runtime import ensure_ray
    ensure_ray(num_cpus_needed=3)   # joins RAY_ADDRESS / a running Ray, else starts a local one

A named cluster (`RAY_ADDRESS`, which `ray job submit` sets) or an already initialised Ray is
used as it is. Otherwise a local cluster starts, sized by `local_num_cpus`: Ray Data's read
tasks need a CPU slot next to the train workers, and on a 2-core machine the default
`ray.init()` (2 CPUs) with 2 one-CPU workers leaves none and the run hangs, so the local
cluster advertises at least the CPUs asked for + 2 logical CPUs (and never fewer than 4).

The dashboard is on (127.0.0.1:8265, or the next free port): Ray Train's placement-group
cleaner asks the State API, which the dashboard serves, whether the run's controller is
alive; without it the cleaner cannot clean up after a dead driver and logs a warning every
second for as long as the run lasts. Starting it costs no measurable init time.
"""

from __future__ import annotations

import math
import os


def local_num_cpus(num_cpus_needed: float) -> int:
    """Logical CPUs a local cluster advertises: the machine's, or what is needed + 2, at least 4."""
    return max(os.cpu_count() or 1, math.ceil(num_cpus_needed) + 2, 4)


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
        ray.init(log_to_driver=worker_logs, configure_logging=False)
        return
    ray.init(num_cpus=local_num_cpus(num_cpus_needed), include_dashboard=True, configure_logging=False,
             log_to_driver=worker_logs)
