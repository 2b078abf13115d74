"""The `Tracker`: what a medmix job records about itself, with MLflow behind it.

A training run records its flattened config as params, one dataset input per task (the
shard store's per-task digest), metrics per step, and every checkpoint it reports (path,
step, metrics, data cursor, parent checkpoint) — enough for `medmix lineage` to walk from a
registered model back to the shards and their ingest sources.

    tracker = build_tracker(cfg.lineage)            # NullTracker when lineage.enabled = false
    with tracker.start_run(cfg.name, tags={"preset": "debug"}) as run:
        tracker.log_config(cfg)
        tracker.log_store(cfg.data.root)             # dataset inputs + the manifest itself
        tracker.log_metrics({"loss": 2.3}, step=5)
        tracker.record_checkpoint(path, step=10, metrics={"loss": 2.1}, data_state=state)

Only rank 0 calls it (metrics are reduced first). Runs nest (a sweep's parent and its
trials): `start_run(..., parent_run_id=parent.run_id)`; `start_run(..., run_id=...)`
re-opens a run, which is how a resumed job keeps appending to the run it started.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from medmix.config import flatten, to_toml
from medmix.lineage import backend
from medmix.lineage.config import TrackerConfig

if TYPE_CHECKING:
    from medmix.config import MedmixConfig

log = logging.getLogger(__name__)

# run tags and artifact paths that `lineage/query.py` reads back
TAG_CHECKPOINT = "medmix.checkpoint.latest"
TAG_CHECKPOINT_STEP = "medmix.checkpoint.latest_step"
TAG_STORE_DIGEST = "medmix.store_digest"
MANIFEST_ARTIFACT = "data/manifest.json"
CONFIG_ARTIFACT = "config.toml"
CHECKPOINT_DIR = "checkpoints"
MAX_PARAM_CHARS = 6000   # MLflow's limit on a param value
PARAMS_PER_BATCH = 100   # MLflow's limit on params per log_batch call
METRICS_PER_BATCH = 1000


def checkpoint_artifact(step: int) -> str:
    return f"{CHECKPOINT_DIR}/step-{step:06d}.json"


@dataclass(frozen=True)
class DatasetRecord:
    """One task's data as a run input: which shards (digest), how many rows, from where."""

    name: str
    """The task name."""
    digest: str
    """sha256 over the task's shard list (path, rows, sha256) — `ShardStore.task_digest`."""
    rows: int
    """Rows of the task across all splits."""
    source: str
    """Where the shards live: the task's folder in the store (path or URI)."""
    splits: dict[str, int] = field(default_factory=dict)
    """Rows per split."""


def store_datasets(root: str | Path) -> list[DatasetRecord]:
    """One `DatasetRecord` per task of the shard store at `root`, from its manifest."""
    from medmix.data.store import ShardStore
    store = ShardStore(root)
    counts = store.counts()
    return [DatasetRecord(name=task, digest=store.task_digest(task), rows=sum(counts[task].values()),
                          source=store.loc.join(task).uri, splits=dict(sorted(counts[task].items())))
            for task in store.tasks()]


@dataclass
class RunHandle:
    """The run a `start_run` opened; as a context manager it ends the run (FAILED on error)."""

    tracker: "Tracker"
    run_id: str | None
    name: str

    def __enter__(self) -> "RunHandle":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is KeyboardInterrupt:
            self.tracker.end_run("KILLED")
        else:
            self.tracker.end_run("FAILED" if exc_type else "FINISHED")


class Tracker:
    """Interface every back end implements; this base records nothing (see `NullTracker`).

    Methods act on the innermost open run. `log_config` and `log_store` are written here in
    terms of the primitive methods, so a back end only implements those.
    """

    @property
    def run_id(self) -> str | None:
        return None

    def start_run(self, name: str, tags: Mapping[str, Any] | None = None,
                  parent_run_id: str | None = None, run_id: str | None = None) -> RunHandle:
        """Open a run (or re-open `run_id`) and make it the current one."""
        return RunHandle(self, None, name)

    def end_run(self, status: str = "FINISHED") -> None:
        """Close the current run: FINISHED, FAILED or KILLED."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record params; values become strings (JSON for lists/maps), cut to 6000 chars."""

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record numeric metrics at `step`; non-numeric values are skipped."""

    def log_inputs(self, datasets: Sequence[DatasetRecord], context: str = "training") -> None:
        """Record one dataset input per record, with its digest, rows and source."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file or a directory into the run's artifacts (under `artifact_path`)."""

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Write `data` as JSON to `artifact_file` in the run's artifacts."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (values become strings)."""

    # -- composed from the primitives above ------------------------------------------------
    def log_config(self, cfg: MedmixConfig) -> None:
        """Params = the flattened config; the full TOML as artifact `config.toml`."""
        self.log_params(flatten(cfg))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / CONFIG_ARTIFACT
            path.write_text(to_toml(cfg))
            self.log_artifact(path)

    def log_store(self, root: str | Path, context: str = "training") -> list[DatasetRecord]:
        """Dataset inputs for every task of the store, plus its manifest (the ingest sources)."""
        from medmix.data.store import ShardStore
        store = ShardStore(root)
        records = store_datasets(root)
        self.log_inputs(records, context=context)
        with tempfile.TemporaryDirectory() as tmp:  # the manifest may live on object storage
            copy = Path(tmp) / Path(MANIFEST_ARTIFACT).name
            copy.write_bytes(store.manifest_path.read_bytes())
            self.log_artifact(copy, str(Path(MANIFEST_ARTIFACT).parent))
        self.set_tags({TAG_STORE_DIGEST: store.digest()})
        return records

    def record_checkpoint(self, path: str | Path, step: int, metrics: Mapping[str, Any] | None = None,
                          data_state: Any = None, parent_checkpoint: str | None = None) -> dict[str, Any]:
        """Record a reported checkpoint as artifact `checkpoints/step-NNNNNN.json` + run tags.

        Args:
            path: the checkpoint directory (local path or URI) as Ray Train reported it.
            step: optimizer step the checkpoint holds.
            metrics: the metrics reported with it (loss, val loss per task, ...).
            data_state: the data cursor (per-task cursors and epochs) saved inside it.
            parent_checkpoint: the checkpoint this run resumed or fine-tuned from, if any.
        """
        record = {"path": str(path), "step": int(step), "metrics": dict(metrics or {}),
                  "data_state": data_state, "parent_checkpoint": parent_checkpoint,
                  "run_id": self.run_id, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        record = json.loads(json.dumps(record, default=_jsonable))
        self.log_dict(record, checkpoint_artifact(step))
        self.set_tags({TAG_CHECKPOINT: str(path), TAG_CHECKPOINT_STEP: int(step)})
        return record


class NullTracker(Tracker):
    """Records nothing: `lineage.enabled = false`, and every rank but 0."""

    def log_config(self, cfg: MedmixConfig) -> None:
        pass

    def log_store(self, root: str | Path, context: str = "training") -> list[DatasetRecord]:
        return []  # without reading the manifest: it may not exist where nothing is recorded


class MLflowTracker(Tracker):
    """`Tracker` on an MLflow tracking store (sqlite file by default, or an `mlflow server`)."""

    def __init__(self, cfg: TrackerConfig):
        self.cfg = cfg
        self.tracking_uri = backend.tracking_uri(cfg)
        self.client = backend.client(cfg)
        self.experiment_id = backend.experiment_id(cfg)
        self._runs: list[str] = []   # open runs, innermost last

    @property
    def run_id(self) -> str | None:
        return self._runs[-1] if self._runs else None

    def _current(self) -> str:
        if not self._runs:
            raise RuntimeError("no open MLflow run: call tracker.start_run(...) first")
        return self._runs[-1]

    def start_run(self, name: str, tags: Mapping[str, Any] | None = None,
                  parent_run_id: str | None = None, run_id: str | None = None) -> RunHandle:
        tags = {k: _str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
            self._runs.append(run_id)
            self.set_tags(tags)
        else:
            run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
            self._runs.append(run_id)
        return RunHandle(self, run_id, name)

    def end_run(self, status: str = "FINISHED") -> None:
        if self._runs:
            self.client.set_terminated(self._runs.pop(), status=status)

    def log_params(self, params: Mapping[str, Any]) -> None:
        run_id = self._current()
        values = {k: _param_value(v) for k, v in params.items()}
        # Params are immutable in MLflow. A resumed run may log again: skip what is already
        # there, and record a changed value (e.g. more steps) as a tag instead of failing.
        existing = self.client.get_run(run_id).data.params
        changed = {k: v for k, v in values.items() if k in existing and existing[k] != v}
        if changed:
            log.warning("run %s already has different values for %s; recorded as medmix.changed.* tags",
                        run_id, ", ".join(sorted(changed)))
            self.set_tags({f"medmix.changed.{k}": v for k, v in changed.items()})
        from mlflow.entities import Param
        new = [Param(k, v) for k, v in values.items() if k not in existing]
        for i in range(0, len(new), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=new[i:i + PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric
        run_id = self._current()
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, int(step)) for k, v in ((k, _number(v)) for k, v in metrics.items())
                 if v is not None]
        for i in range(0, len(batch), METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=batch[i:i + METRICS_PER_BATCH])

    def log_inputs(self, datasets: Sequence[DatasetRecord], context: str = "training") -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag
        inputs = []
        for d in datasets:
            # MLflow keeps at most 36 characters of a dataset digest: the first 32 hex digits
            # (128 bits) go there, the full sha256 into the profile and an input tag.
            entity = Dataset(name=d.name, digest=d.digest[:32], source_type="local" if "://" not in d.source
                             else d.source.split("://", 1)[0], source=json.dumps({"uri": d.source}),
                             profile=json.dumps({"rows": d.rows, "splits": d.splits, "digest": d.digest}))
            inputs.append(DatasetInput(entity, tags=[InputTag("mlflow.data.context", context),
                                                     InputTag("medmix.digest", d.digest)]))
        if not inputs:
            return
        # The store finds-or-creates each dataset row, not atomically: two runs that log the same
        # dataset at the same moment (jobs started together, sweep trials) can both try to create
        # it, and the loser gets a UNIQUE-constraint error. The row exists by then; log again.
        for attempt in range(4):
            try:
                self.client.log_inputs(self._current(), datasets=inputs)
                return
            except Exception as exc:  # noqa: BLE001 - MlflowException/RestException, by message
                if attempt == 3 or "UNIQUE constraint" not in str(exc) and "IntegrityError" not in str(exc):
                    raise
                time.sleep(0.5 * (attempt + 1))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self._current(), str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(self._current(), str(path), artifact_path)
        else:
            raise FileNotFoundError(f"cannot log artifact {path}: no such file or directory")

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_text(json.dumps(data, indent=1, sort_keys=True, default=_jsonable))
            parent = str(Path(artifact_file).parent)
            self.client.log_artifact(self._current(), str(path), None if parent == "." else parent)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        run_id = self._current()
        batch = _tags({k: _str(v) for k, v in tags.items()})
        for i in range(0, len(batch), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=batch[i:i + PARAMS_PER_BATCH])


def build_tracker(cfg: TrackerConfig) -> Tracker:
    """The tracker `cfg` asks for: MLflow, or a `NullTracker` when lineage is disabled.

    The tracking URI is pinned into `cfg` here (`backend.pin_tracking_uri`): the config this
    driver sends its workers names the one store they all write to."""
    if not cfg.enabled:
        return NullTracker()
    backend.pin_tracking_uri(cfg)
    return MLflowTracker(cfg)


# -- value conversion ---------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays, paths, sets and dataclasses inside data states and metrics."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return str(value)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=_jsonable)


def _param_value(value: Any) -> str:
    text = "None" if value is None else _str(value)
    if len(text) > MAX_PARAM_CHARS:
        cut = "...[truncated]"
        text = text[:MAX_PARAM_CHARS - len(cut)] + cut
    return text


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)   # NaN/inf are kept: a diverged loss is worth recording
    except (TypeError, ValueError):
        return None


def _tags(tags: Mapping[str, str]) -> list:
    from mlflow.entities import RunTag
    return [RunTag(k, v) for k, v in tags.items()]
