"""The model registry: exported checkpoints as versions of the registered model `medmix`.

`medmix export` writes safetensors + config + tokenizer into a directory; `register_export`
stores that directory as an MLflow 3 LoggedModel (plain artifacts, no flavor, nothing
pickled) whose source run is the training run, and registers it as a new version tagged
with the lineage: run id, checkpoint path, step, shard-store digest. `serve` and `evaluate`
turn `medmix@champion`, `medmix/3` or a plain path into a local export directory with
`resolve_model_uri`.

    version = register_export(cfg.lineage, "exports/step-20", run_id,
                              {"checkpoint": ckpt, "step": 20, "store_digest": digest})
    set_alias(cfg.lineage, "medmix", "champion", version)
    path = resolve_model_uri("medmix@champion", cfg.lineage)
"""

from __future__ import annotations

import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Mapping

from medmix.lineage import backend
from medmix.lineage.backend import LineageError
from medmix.lineage.config import TrackerConfig
from medmix.storage import local_dir

# model-version tags `medmix lineage` follows (callers pass them to `register_export`)
TAG_RUN_ID = "run_id"
TAG_CHECKPOINT = "checkpoint"
TAG_STEP = "step"
TAG_STORE_DIGEST = "store_digest"
TAG_MODEL_ID = "model_id"
TAG_FORMAT = "medmix.format"
"""What the version's files are: medmix-model (medmix's export), hf (transformers' LLaVA), hf-adapter (peft)."""

_REF = re.compile(r"^(?:models:/)?(?P<name>[A-Za-z0-9_.\-]+)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_\-]+))$")


@dataclass(frozen=True)
class ModelRef:
    """`medmix/3` (a version) or `medmix@champion` (an alias)."""

    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return f"{self.name}/{self.version}" if self.version else f"{self.name}@{self.alias}"


def parse_model_ref(text: str) -> ModelRef | None:
    """`medmix/3`, `medmix@champion`, optionally prefixed `models:/`; None if it is neither."""
    m = _REF.match(text.strip())
    if not m:
        return None
    return ModelRef(m["name"], m["version"], m["alias"])


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version, as medmix sees it (no MLflow types leak out of lineage/)."""

    name: str
    version: str
    run_id: str | None
    source: str
    """Where its files are (the LoggedModel's artifact location)."""
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    created: int = 0
    """Creation time, ms since the epoch."""

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"


def register_export(cfg: TrackerConfig, export_dir: str | Path, run_id: str,
                    tags: Mapping[str, Any] | None = None, name: str | None = None) -> str:
    """Register `export_dir` as a new version of `name` (default `cfg.registered_model`).

    Args:
        cfg: where the tracking store and registry are.
        export_dir: the directory `medmix export` wrote (every file in it is stored).
        run_id: the training run the weights come from; the version's source run.
        tags: lineage tags; use keys `checkpoint`, `step`, `store_digest` (see TAG_*) so
            that `medmix lineage` can follow them. `run_id` is added here.

    Returns:
        The new version number, as a string ("3").
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir() or not any(export_dir.iterdir()):
        raise LineageError(f"cannot register {export_dir}: not a directory with exported files "
                           f"(run `medmix export` first)")
    name = name or cfg.registered_model
    client = backend.existing_client(cfg)
    run = _get_run(client, run_id)
    str_tags = {k: str(v) for k, v in (tags or {}).items()}
    str_tags[TAG_RUN_ID] = run_id
    _ensure_registered_model(client, name)
    # The export becomes a LoggedModel (MLflow 3's model entity): its files live under the
    # experiment's models/ folder, linked to the source run, with no flavor and no pickle.
    model = client.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id,
                                       tags=str_tags)
    client.log_model_artifacts(model.model_id, str(export_dir))
    client.finalize_logged_model(model.model_id, "READY")
    str_tags[TAG_MODEL_ID] = model.model_id
    # Pass the artifact location rather than `models:/<id>`: MLflow 3.17's sqlite registry
    # resolves `models:/` URIs through the process-global tracking URI, not this client's.
    source = client.get_logged_model(model.model_id).artifact_location
    mv = client.create_model_version(name, source=source, run_id=run_id, tags=str_tags,
                                     model_id=model.model_id)
    client.set_tag(run_id, f"medmix.registered.{name}.{mv.version}", model.model_id)
    return str(mv.version)


def set_alias(cfg: TrackerConfig, name: str, alias: str, version: str | int) -> None:
    """Point `name@alias` (e.g. `medmix@champion`) at `version`, moving it if it exists."""
    client = backend.existing_client(cfg)
    get_version(cfg, name, str(version))  # a clear error for an unknown version
    client.set_registered_model_alias(name, alias, str(version))


def get_version(cfg: TrackerConfig, name: str, version_or_alias: str | int) -> ModelVersionInfo:
    """A version by number (`3`) or by alias (`champion`)."""
    client = backend.existing_client(cfg)
    ref = str(version_or_alias)
    try:
        mv = (client.get_model_version(name, ref) if ref.isdigit()
              else client.get_model_version_by_alias(name, ref))
    except Exception as exc:  # noqa: BLE001 - MlflowException; re-raised with what to do
        if not backend.is_not_found(exc):
            raise
        what = f"{name}/{ref}" if ref.isdigit() else f"{name}@{ref}"
        raise LineageError(f"no model version {what} in the registry at {backend.tracking_uri(cfg)} "
                           f"({exc}); list versions with `mlflow ui` or register one with "
                           f"`medmix export`") from None
    return ModelVersionInfo(name=mv.name, version=str(mv.version), run_id=mv.run_id or None,
                            source=mv.source, tags=dict(mv.tags or {}), aliases=tuple(mv.aliases or ()),
                            created=int(mv.creation_timestamp or 0))


def find_versions(cfg: TrackerConfig, tag: str, values: Collection[str],
                  name: str | None = None) -> list[ModelVersionInfo]:
    """Versions of `name` whose tag `tag` is one of `values` (e.g. registered from a checkpoint)."""
    name = name or cfg.registered_model
    client = backend.existing_client(cfg)
    try:
        found = client.search_model_versions(f"name = '{name}'")
    except Exception as exc:  # noqa: BLE001
        if backend.is_not_found(exc):
            return []
        raise
    return [get_version(cfg, name, mv.version) for mv in found if (mv.tags or {}).get(tag) in values]


def resolve_model_uri(uri: str | Path, cfg: TrackerConfig | None = None,
                      dst: str | Path | None = None) -> Path:
    """A local export directory for `medmix@champion`, `medmix/3`, `models:/…` or a path.

    An existing path wins (write `models:/medmix/3` to force the registry). Registry
    versions are downloaded once to `dst` (default `<lineage.root>/models/<name>/<version>`)
    and reused after: a version's files never change.
    """
    path = Path(uri)
    if path.exists():
        if not path.is_dir():
            raise LineageError(f"{path} is a file; a model is an export directory (safetensors + config)")
        return path
    ref = parse_model_ref(str(uri))
    if ref is None:
        raise LineageError(f"{uri!r} is neither an existing export directory nor a model reference "
                           f"like medmix/3 or medmix@champion")
    cfg = cfg or TrackerConfig()
    info = get_version(cfg, ref.name, ref.version or ref.alias)
    dst = Path(dst) if dst else local_dir(cfg.root, "models", info.name, info.version)
    done = dst / ".medmix-complete"
    if done.exists():
        return dst
    client = backend.existing_client(cfg)
    mlflow = backend._import_mlflow()
    download_uri = client.get_model_version_download_uri(info.name, info.version)
    tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        got = Path(mlflow.artifacts.download_artifacts(artifact_uri=download_uri, dst_path=str(tmp),
                                                       tracking_uri=backend.tracking_uri(cfg)))
        (got / done.name).write_text(f"{info}\n")
        if dst.exists():  # an incomplete earlier download
            shutil.rmtree(dst)
        got.rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _get_run(client, run_id: str):
    try:
        return client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001
        if backend.is_not_found(exc):
            raise LineageError(f"no MLflow run {run_id!r} at {client.tracking_uri}: the export must "
                               f"come from a run recorded in this store") from None
        raise


def _ensure_registered_model(client, name: str) -> None:
    try:
        client.get_registered_model(name)
    except Exception as exc:  # noqa: BLE001
        if not backend.is_not_found(exc):
            raise
        try:
            client.create_registered_model(name, description="medmix generalist biomedical models")
        except Exception as exc2:  # noqa: BLE001 - created concurrently by another process
            if "already exists" not in str(exc2).lower():
                raise
