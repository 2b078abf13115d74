"""medmix's Prometheus metrics, defined through `ray.util.metrics`, and the calls that record them.

Ray's metrics agent on every node exports whatever a Ray process records on that node's
metrics export port (`ray start --metrics-export-port=N`, `ray.init(_metrics_export_port=N)`);
Prometheus finds the ports in the service-discovery file Ray writes
(`/tmp/ray/prom_metrics_service_discovery.json`). Names change on the way out — measured on
Ray 2.60 — and the dashboards query the exported names:

    gauge      medmix_train_loss      ->  ray_medmix_train_loss
    counter    medmix_serve_requests  ->  ray_medmix_serve_requests_total
    histogram  medmix_serve_latency   ->  ray_medmix_serve_latency_{bucket,sum,count}

Ray adds the labels Component, WorkerId, NodeAddress, SessionName and Version (Ray's own
version: why the served model's version is the tag `model_version`, never `version`). A
histogram's `_sum` is rebuilt from bucket midpoints by Ray's agent, so averages from
`_sum / _count` are approximate; the dashboards use `histogram_quantile` on the buckets.

Who calls what:

    # train loop, every report (`Trainer._log`); only rank 0 records
    record_train_metrics(cfg.name, metrics, rank=rank)
    # Serve app
    set_served_model(["medmix/3", "medmix/2"])                     # ingress: the versions it serves
    record_request("/v1/predict", "medqa", 200, 0.012, "medmix/3")  # ingress: every answered request
    record_batch(8, "medmix/3")                                     # model replica: every batch it runs

Recording is cheap (Ray batches and ships values every few seconds) and is a no-op in a
process that is not connected to Ray.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from medmix.tasks import get_task
from medmix.tasks.spec import UnknownTaskError

PREFIX = "ray_"  # what Ray's exporter puts in front of every user metric (namespace "ray")


@dataclass(frozen=True)
class MetricSpec:
    """One medmix metric: its Ray name, kind, tags and (histograms) bucket boundaries."""

    name: str
    kind: str  # gauge | counter | histogram
    description: str
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...] = ()
    gpu_only: bool = False  # only recorded when training on GPUs (MFU needs a known peak)

    @property
    def exported(self) -> str:
        """The family name Prometheus sees (counters gain `_total`)."""
        return PREFIX + self.name + ("_total" if self.kind == "counter" else "")

    @property
    def series(self) -> tuple[str, ...]:
        """Every `__name__` this metric's samples carry in Prometheus."""
        if self.kind == "histogram":
            return tuple(f"{PREFIX}{self.name}_{s}" for s in ("bucket", "sum", "count"))
        return (self.exported,)


RUN, TASK = ("run",), ("run", "task")
SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

TRAIN_METRICS = (
    MetricSpec("medmix_train_step", "gauge", "optimizer steps done", RUN),
    MetricSpec("medmix_train_loss", "gauge", "training loss per target token, all tasks", RUN),
    MetricSpec("medmix_train_task_loss", "gauge", "training loss per target token of one task", TASK),
    MetricSpec("medmix_train_val_loss", "gauge", "validation loss, mean over tasks", RUN),
    MetricSpec("medmix_train_task_val_loss", "gauge", "validation loss per target token of one task", TASK),
    MetricSpec("medmix_train_tokens_per_second", "gauge", "input tokens per second, whole job", RUN),
    MetricSpec("medmix_train_samples_per_second", "gauge", "examples per second, whole job", RUN),
    MetricSpec("medmix_train_mfu", "gauge", "model FLOPs utilisation (0-1) against the GPUs' bf16 peak",
               RUN, gpu_only=True),
    MetricSpec("medmix_train_data_wait_fraction", "gauge", "share of step time spent waiting for data (0-1)", RUN),
    MetricSpec("medmix_train_mixture_fraction", "gauge",
               "realised share of one task in the examples trained on so far (0-1)", TASK),
    MetricSpec("medmix_train_learning_rate", "gauge", "learning rate of the last step", RUN),
    MetricSpec("medmix_train_grad_norm", "gauge", "global gradient norm before clipping", RUN),
    MetricSpec("medmix_train_checkpoint_save_seconds", "histogram", "time to save one checkpoint, seconds",
               RUN, SECONDS_BUCKETS),
    MetricSpec("medmix_train_checkpoint_age_seconds", "gauge",
               "seconds since the last checkpoint (since training started if none yet), at the last report",
               RUN),
)

SERVE_METRICS = (
    MetricSpec("medmix_serve_requests", "counter", "requests answered",
               ("endpoint", "task", "status", "model_version")),
    MetricSpec("medmix_serve_request_latency_seconds", "histogram", "request latency, seconds",
               ("endpoint", "task", "model_version"), LATENCY_BUCKETS),
    MetricSpec("medmix_serve_batch_size", "histogram", "requests in each batch the model ran (continuous batching: rows of each decode step)",
               ("model_version",), BATCH_BUCKETS),
    MetricSpec("medmix_serve_model_version", "gauge",
               "1 for each model version this replica serves, 0 for versions it served before",
               ("model_version",)),
    MetricSpec("medmix_serve_model_loaded_timestamp_seconds", "gauge",
               "unix time at which this replica loaded the model version", ("model_version",)),
)

ALL_METRICS = TRAIN_METRICS + SERVE_METRICS
BY_NAME = {m.name: m for m in ALL_METRICS}


def exported_series() -> dict[str, MetricSpec]:
    """Every Prometheus series name medmix exports -> its spec (what dashboards may query)."""
    return {s: m for m in ALL_METRICS for s in m.series}


# --- Ray metric objects, one set per process ---------------------------------------------

_lock = threading.Lock()
_objects: dict[str, Any] = {}


def _metric(name: str):
    """The `ray.util.metrics` object for `name`, created on first use in this process."""
    obj = _objects.get(name)
    if obj is not None:
        return obj
    from ray.util.metrics import Counter, Gauge, Histogram
    spec = BY_NAME[name]
    with _lock:
        if name not in _objects:
            if spec.kind == "gauge":
                obj = Gauge(spec.name, description=spec.description, tag_keys=spec.tag_keys)
            elif spec.kind == "counter":
                obj = Counter(spec.name, description=spec.description, tag_keys=spec.tag_keys)
            else:
                obj = Histogram(spec.name, description=spec.description,
                                boundaries=list(spec.boundaries), tag_keys=spec.tag_keys)
            _objects[name] = obj
        return _objects[name]


# --- training -----------------------------------------------------------------------------

# key of the train loop's metrics dict -> gauge (one value per run)
RUN_KEYS = {
    "step": "medmix_train_step",
    "loss": "medmix_train_loss",
    "val_loss": "medmix_train_val_loss",
    "tokens_per_s": "medmix_train_tokens_per_second",
    "samples_per_s": "medmix_train_samples_per_second",
    "mfu": "medmix_train_mfu",
    "data_wait_frac": "medmix_train_data_wait_fraction",
    "lr": "medmix_train_learning_rate",
    "grad_norm": "medmix_train_grad_norm",
}
# "<prefix><task>" keys -> gauge with a task tag
TASK_PREFIXES = {
    "loss/": "medmix_train_task_loss",
    "val_loss/": "medmix_train_task_val_loss",
    "mix/": "medmix_train_mixture_fraction",
}
CHECKPOINT_KEY = "checkpoint_save_s"

# run -> monotonic time of its last checkpoint (or of its first report in this process)
_last_checkpoint: dict[str, float] = {}


def record_train_metrics(run: str, metrics: Mapping[str, Any], *, rank: int = 0) -> list[str]:
    """Record one report of the train loop; only rank 0 records (its numbers are job-wide).

    Args:
        run: the run name (`cfg.name`), the `run` tag of every training metric.
        metrics: the loop's metrics dict: step, loss, loss/<task>, val_loss, val_loss/<task>,
            samples_per_s, tokens_per_s, data_wait_frac, mfu, mix/<task>, lr, grad_norm,
            checkpoint_save_s. Missing keys are skipped; unknown keys are ignored.
        rank: the caller's world rank.

    Returns the metric names written (for logs and tests).
    """
    if rank != 0:
        return []
    run = str(run)
    now = time.monotonic()
    written: list[str] = []
    for key, value in metrics.items():
        if value is None:
            continue
        name, tags = RUN_KEYS.get(key), {"run": run}
        if name is None:
            prefix = next((p for p in TASK_PREFIXES if key.startswith(p)), None)
            if prefix is None:
                continue
            name, tags = TASK_PREFIXES[prefix], {"run": run, "task": key[len(prefix):]}
        _metric(name).set(float(value), tags=tags)
        written.append(name)
    if CHECKPOINT_KEY in metrics and metrics[CHECKPOINT_KEY] is not None:
        _metric("medmix_train_checkpoint_save_seconds").observe(float(metrics[CHECKPOINT_KEY]), tags={"run": run})
        written.append("medmix_train_checkpoint_save_seconds")
        _last_checkpoint[run] = now
    age = now - _last_checkpoint.setdefault(run, now)
    _metric("medmix_train_checkpoint_age_seconds").set(age, tags={"run": run})
    written.append("medmix_train_checkpoint_age_seconds")
    return written


# --- serving ------------------------------------------------------------------------------

UNKNOWN_TASK = "unknown"  # the task tag of requests naming no registered task
NO_MODEL = "none"  # the model_version tag of requests no model answered
_served: list[str] = []  # the model versions this process serves now; the first is the default


def set_served_model(version: str | int | Iterable[str | int]) -> None:
    """Mark the model version(s) this replica serves: gauge 1 for each (a multiplexed replica
    serves several), 0 for versions it served before and no longer does."""
    versions = [str(version)] if isinstance(version, (str, int)) else [str(v) for v in version]
    gauge = _metric("medmix_serve_model_version")
    for old in _served:
        if old not in versions:
            gauge.set(0.0, tags={"model_version": old})
    now = time.time()
    for v in versions:
        gauge.set(1.0, tags={"model_version": v})
        if v not in _served:
            _metric("medmix_serve_model_loaded_timestamp_seconds").set(now, tags={"model_version": v})
    _served[:] = versions


def record_request(endpoint: str, task: str | None, status: int | str, latency_s: float,
                   model_version: str | int | None = None) -> None:
    """Count one answered request and observe its latency.

    Args:
        endpoint: the route template, e.g. "/v1/predict" (never a raw URL with ids in it).
        task: the task the request named; names that are not registered tasks are recorded
            as "unknown", so that callers cannot grow Prometheus' series without bound.
        status: the HTTP status code sent back (200, 401, 422, 500, ...).
        latency_s: seconds from receiving the request to sending the answer.
        model_version: the version that answered; "" when none did (a rejected request),
            recorded as "none" (Prometheus drops empty labels); None means this replica's
            default (the first version `set_served_model` got).
    """
    tags = {"endpoint": str(endpoint), "task": _task_tag(task), "model_version": _version_tag(model_version)}
    _metric("medmix_serve_requests").inc(1.0, tags={**tags, "status": str(status)})
    if latency_s is not None and math.isfinite(latency_s) and latency_s >= 0:
        _metric("medmix_serve_request_latency_seconds").observe(float(latency_s), tags=tags)


def record_batch(size: int, model_version: str | int | None = None) -> None:
    """Observe the number of requests in one batch the model ran (model_version as above): a static
    batch once, a continuous batch at every decode step (the rows it decoded)."""
    _metric("medmix_serve_batch_size").observe(float(size), tags={"model_version": _version_tag(model_version)})


def _version_tag(model_version: str | int | None) -> str:
    if model_version is None:
        model_version = _served[0] if _served else ""
    return str(model_version) or NO_MODEL


def _task_tag(task: str | None) -> str:
    if not task:
        return UNKNOWN_TASK
    try:
        return get_task(str(task)).name
    except UnknownTaskError:
        return UNKNOWN_TASK
