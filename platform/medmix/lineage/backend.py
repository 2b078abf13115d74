"""Where MLflow lives for a `TrackerConfig`: the tracking URI, the client, the experiment.

The only module besides the rest of `lineage/` that imports mlflow. Resolution order for the
tracking URI: `lineage.tracking_uri` if set, else `$MLFLOW_TRACKING_URI` (an `mlflow server`),
else a sqlite file `<lineage.root>/mlflow.db` with artifacts under `<lineage.root>/artifacts`.

Everything goes through an explicit `MlflowClient(uri, uri)`, never MLflow's process-global
"current" URI: MLflow 3 defaults that to `sqlite:///mlflow.db` in the working directory, and
two stores in one process (tests, a sweep driver) must not leak into each other.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from medmix.lineage.config import TrackerConfig

if TYPE_CHECKING:
    from mlflow import MlflowClient


class LineageError(ValueError):
    """A model version, alias, run or checkpoint that cannot be found or read; says which."""


def _import_mlflow():
    # A training platform on a private cluster should not phone home, and progress bars
    # garble logs; a user who wants either sets the variable explicitly.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    return mlflow


def tracking_uri(cfg: TrackerConfig) -> str:
    if cfg.tracking_uri:
        return cfg.tracking_uri
    env = os.environ.get("MLFLOW_TRACKING_URI", "")
    if env:
        return env
    if "://" in cfg.root and not cfg.root.startswith("file:"):
        raise LineageError(f"lineage.root = {cfg.root} is on object storage, where no sqlite store can "
                           f"live: point lineage.tracking_uri (or $MLFLOW_TRACKING_URI) at an `mlflow "
                           f"server` (`medmix tracking-server`), or make lineage.root a local folder")
    return f"sqlite:///{Path(cfg.root).resolve() / 'mlflow.db'}"


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


_CHECKED: set[str] = set()


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Fail at once, naming the URI, when the tracking server does not answer `GET /health`.

    Without this a job would start its workers and the first MLflow call would retry for
    minutes (MLflow's HTTP retries) before failing, burning Ray Train's restarts on the way.
    """
    if not is_server(uri) or uri in _CHECKED:
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            ok = resp.status == 200
    except urllib.error.HTTPError as err:
        raise LineageError(f"MLflow tracking server {uri} answered /health with HTTP {err.code}: is it an "
                           f"`mlflow server` (`medmix tracking-server`)?") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise LineageError(f"MLflow tracking server {uri} is unreachable ({reason}): start it "
                           f"(`medmix tracking-server`) or fix lineage.tracking_uri / $MLFLOW_TRACKING_URI") from None
    if not ok:
        raise LineageError(f"MLflow tracking server {uri} is not healthy (GET /health did not answer 200)")
    _CHECKED.add(uri)


def pin_tracking_uri(cfg: TrackerConfig) -> str:
    """Resolve the tracking URI once, on the driver, check it answers, and write it into `cfg`.

    The config travels to every process of the job (Ray Train workers, Tune trials, Serve
    replicas, evaluate tasks), so each of them uses exactly this URI — never its own
    environment's, and never a sqlite file of its own on a node that has no such variable.
    """
    uri = tracking_uri(cfg)
    check_tracking_server(uri)
    cfg.tracking_uri = uri
    return uri


def is_local_store(uri: str) -> bool:
    """sqlite files and plain directories: we choose where their artifacts go."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def artifact_location(cfg: TrackerConfig, uri: str) -> str | None:
    """`<root>/artifacts` for a local store; None lets a tracking server choose (proxied)."""
    if not is_local_store(uri):
        return None
    return (Path(cfg.root).resolve() / "artifacts").as_uri()


_CLIENTS: dict[str, "MlflowClient"] = {}


def client(cfg: TrackerConfig) -> "MlflowClient":
    """One client per URI per process (the first use of a new sqlite file creates its tables, ~8 s)."""
    uri = tracking_uri(cfg)
    if uri not in _CLIENTS:
        mlflow = _import_mlflow()
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        check_tracking_server(uri)
        _CLIENTS[uri] = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    return _CLIENTS[uri]


def existing_client(cfg: TrackerConfig) -> "MlflowClient":
    """The client of a store that must already exist (readers: lineage, registry lookups)."""
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise LineageError(f"no MLflow store at {uri[len('sqlite:///'):]}: train a model first "
                           f"(`medmix train`), or point lineage.root / lineage.tracking_uri / "
                           f"$MLFLOW_TRACKING_URI at the store that has the runs")
    pin_tracking_uri(cfg)
    return client(cfg)


def experiment_id(cfg: TrackerConfig) -> str:
    """Id of `cfg.experiment`, created (with our artifact location) on first use."""
    c = client(cfg)
    exp = c.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise LineageError(f"MLflow experiment {cfg.experiment!r} at {tracking_uri(cfg)} is deleted; "
                               f"restore it or set lineage.experiment to another name")
        return exp.experiment_id
    from mlflow.exceptions import MlflowException
    try:
        return c.create_experiment(cfg.experiment,
                                   artifact_location=artifact_location(cfg, tracking_uri(cfg)))
    except MlflowException:
        # another process (a sweep trial) created it between our get and create
        exp = c.get_experiment_by_name(cfg.experiment)
        if exp is None:
            raise
        return exp.experiment_id


def is_not_found(exc: BaseException) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()
