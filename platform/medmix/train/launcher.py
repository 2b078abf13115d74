"""Launch a training run on Ray Train (V2) and record it in the lineage tracker.

    from medmix.config import load_config
    from medmix.train.launcher import train
    result = train(load_config("debug"))

`train(cfg)` is what `medmix train`, `jobs/train.py` (for `ray job submit`) and the tests call.
On the driver it checks the store and tokenizer, opens (or re-opens) the MLflow run, connects
to Ray (`RAY_ADDRESS` / `ray job submit`, else a local cluster sized so Ray Data and the train
workers cannot deadlock on a small machine), and runs a `TorchTrainer`. A run re-submitted
with the same `name` and `train.storage_path` resumes from its latest checkpoint: Ray Train
restores its checkpoint manager from storage, and medmix re-opens the same MLflow run.

On a cluster with nodes labelled `medmix-role=train` alive when the run starts, the train
workers run only there (`ScalingConfig(label_selector=...)`, the rule in `medmix.placement`);
else anywhere. Each rank records the node it runs on under `<run dir>/ranks/`, and the run
info (`medmix-run.json`) lists them as `ranks`: rank, node id, IP, host name and role label.

`train.storage_path` and `data.root` may be local paths (made absolute, for workers that run
elsewhere) or `s3://` URIs (medmix.storage): checkpoints then go to the bucket through Ray
Train's `storage_filesystem`, and every node reads the store from there — no shared disk.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medmix.config import to_dict
from medmix.data.tokenizer import ensure_tokenizer, load_tokenizer
from medmix.lineage.backend import pin_tracking_uri
from medmix.lineage.tracker import build_tracker
from medmix.model.paths import PKG_PREFIX
from medmix.model.preprocess import image_preprocess
from medmix.model.resolve import resolve
from medmix.options import ConfigError
from medmix.placement import ROLE_LABEL, TRAIN, place
from medmix.runtime import ensure_ray, open_run
from medmix.storage import Location, check_reachable, is_uri, location, normalize

if TYPE_CHECKING:
    from medmix.config import MedmixConfig
    from medmix.lineage.tracker import Tracker

RUN_INFO = "medmix-run.json"
RANKS = "ranks"
"""Folder of the run directory where each rank of the latest attempt writes where it runs."""


@dataclass
class TrainResult:
    run_dir: str
    checkpoint: str | None
    metrics: dict[str, float]
    run_id: str | None
    error: str | None = None


def use_gpu(cfg: MedmixConfig) -> bool:
    """train.use_gpu resolved against the connected cluster."""
    if cfg.train.use_gpu == "auto":
        import ray
        return ray.cluster_resources().get("GPU", 0) >= 1
    return cfg.train.use_gpu == "true"


def prepare(cfg: MedmixConfig) -> dict[str, str]:
    """Check inputs before any worker starts: the storage answers, the store exists, the
    tokenizer is there, the tracking server answers, the model can be built, `train.init_from`
    resolves to weights that fit it. Each failure is one error naming the path or URI, before
    anything is written. A run and a sweep both come through here, so `train.init_from` reaches
    their workers as a local export directory; returns its lineage tags ({} without one)."""
    from medmix.data.store import ShardStore
    if cfg.lineage.enabled:   # the tracking server answers, and every worker gets its URI
        pin_tracking_uri(cfg.lineage)
    check_reachable(cfg.train.storage_path)  # endpoint, credentials, bucket: before any work
    ShardStore(check_reachable(cfg.data.root)).manifest()  # clear error if the store is missing
    ensure_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    check_model(cfg)
    return resolve_init_from(cfg)


def check_model(cfg: MedmixConfig) -> None:
    """A vision tower or decoder that cannot be built (a directory that is not a model, an
    unsupported architecture, an image size it cannot take), projector weights whose sizes do not
    fit the tower's and decoder's hidden sizes, a LoRA target or a `train.trainable` glob that
    matches nothing: each fails here, naming it, before any worker starts. The model is built
    on the meta device (shapes only, no weights read). The default model trained whole has
    nothing to check, and the driver then never imports torch."""
    m = cfg.model
    if cfg.train.trainable == "all" and not (m.vision_path or m.vision_timm or m.decoder_path or m.projector_path):
        return
    # torch and transformers: only for this check
    from medmix.model.projector import projector_weights
    from medmix.model.summary import build_on_meta, trainable_summary
    try:
        trainable_summary(cfg.model, cfg.train.trainable, cfg.train.lora, vocab_size=cfg.tokenizer.vocab_size,
                          world_size=cfg.train.num_workers)
        image_preprocess(cfg.model)  # the tower's preprocessor_config.json agrees with model.image_size
        if m.projector_path:  # its tensors fit the tower's and the decoder's hidden sizes
            projector_weights(build_on_meta(m, cfg.tokenizer.vocab_size).projector, m.projector_path)
    except ConfigError:
        raise
    except (ValueError, FileNotFoundError) as exc:  # a tower or decoder that cannot be built
        raise ConfigError(str(exc)) from None


def absolutize(cfg: MedmixConfig) -> Location:
    """Make every path in cfg absolute (workers may run elsewhere; URIs stay as they are);
    return the run directory."""
    cfg.train.storage_path = normalize(cfg.train.storage_path)
    cfg.data.root = normalize(cfg.data.root)
    cfg.lineage.root = normalize(cfg.lineage.root)
    if cfg.tokenizer.path:
        cfg.tokenizer.path = normalize(cfg.tokenizer.path)
    # model files given relative to where the command ran: a worker's working directory is another
    m = cfg.model
    for key in ("vision_path", "decoder_path", "projector_path", "vision_checkpoint", "llava_path"):
        value = getattr(m, key, "")
        if value and not value.startswith(PKG_PREFIX):
            setattr(m, key, normalize(value))
    return location(cfg.train.storage_path).join(cfg.name)


def checkpoint_location(run_dir: Location, path: str) -> str:
    """A checkpoint path Ray Train returns (a path on the run's filesystem) as a path or URI;
    a path that already is a URI is returned as it is."""
    return path if run_dir.is_local or is_uri(path) else f"s3://{path.lstrip('/')}"


def build_torch_trainer(cfg: MedmixConfig, run_id: str | None, run_dir: Location, *, use_gpu: bool,
                        callbacks: list | None = None):
    """The TorchTrainer for one run: what `train()` fits, and what each sweep trial fits."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    placement = place(TRAIN, f"train workers of {cfg.name}")
    # label_selector is Train V2's (the ScalingConfig `ray.train` exports at run time); mypy
    # reads the V1 class that ray/train/__init__.py imports first
    scaling = ScalingConfig(  # type: ignore[call-arg]
        num_workers=cfg.train.num_workers, use_gpu=use_gpu,
        resources_per_worker={"CPU": cfg.train.cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        label_selector=placement.selector)
    return TorchTrainer(
        train_loop_on_node,
        train_loop_config={"config": to_dict(cfg), "run_id": run_id, "run_dir": run_dir.uri},
        scaling_config=scaling,
        run_config=RunConfig(
            name=run_dir.name, storage_path=run_dir.parent.path, callbacks=callbacks or [],
            storage_filesystem=None if run_dir.is_local else run_dir.fs,
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
            # Ray keeps the `keep_last` checkpoints with the lowest validation loss, and always
            # the latest one (the one a resumed run continues from).
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_last,
                                               checkpoint_score_attribute="val_loss",
                                               checkpoint_score_order="min")),
    )


def train_loop_on_node(loop_config: dict) -> None:
    """Ray Train's entry point: record where this rank runs (`<run dir>/ranks/`), then train."""
    import ray  # only on Ray Train workers
    import ray.train

    from medmix.train.loop import train_loop_per_worker  # torch: workers only, not the driver
    rank = ray.train.get_context().get_world_rank()
    ctx = ray.get_runtime_context()
    record = {"rank": rank, "node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
              "hostname": socket.gethostname(), "role": ctx.get_node_labels().get(ROLE_LABEL)}
    location(loop_config["run_dir"]).join(RANKS, f"rank-{rank:05d}.json").write_text(json.dumps(record))
    train_loop_per_worker(loop_config)


def read_ranks(run_dir: Location | Path | str) -> list[dict]:
    """Where each rank of the run's latest attempt ran, by rank (see `train_loop_on_node`)."""
    files = location(run_dir).join(RANKS).files(recursive=False)
    return sorted((json.loads(f.read_text()) for f in files if f.name.endswith(".json")),
                  key=lambda r: r["rank"])


def train(cfg: MedmixConfig) -> TrainResult:
    """Run (or resume) the training job described by `cfg` and wait for it to finish."""

    parent = prepare(cfg)
    run_dir = absolutize(cfg)
    tracker = build_tracker(cfg.lineage)
    run_id = _open_train_run(tracker, cfg, run_dir, parent)
    ensure_ray(cfg.train.num_workers * cfg.train.cpus_per_worker)
    trainer = build_torch_trainer(cfg, run_id, run_dir, use_gpu=use_gpu(cfg))
    run_dir.join(RANKS).delete()  # a resumed run may have fewer ranks than the last attempt
    t0 = time.time()
    try:
        result = trainer.fit()
    except BaseException:  # failed for good (max_failures exhausted) or interrupted
        tracker.end_run(status="FAILED")
        raise
    metrics = dict(result.metrics or {})
    checkpoint = checkpoint_location(run_dir, result.checkpoint.path) if result.checkpoint else None
    commit_registered(run_dir, [c.path for c, _ in (result.best_checkpoints or [])])
    error = str(result.error) if result.error else None
    if checkpoint:
        tracker.set_tags({"medmix.final_checkpoint": checkpoint})
    tracker.end_run(status="FINISHED" if error is None else "FAILED")
    info = {"run_id": run_id, "checkpoint": checkpoint, "seconds": time.time() - t0,
            "ranks": read_ranks(run_dir)}
    run_dir.join(RUN_INFO).write_text(json.dumps({**_read_info(run_dir), **info}, indent=1))
    return TrainResult(run_dir=run_dir.uri, checkpoint=checkpoint, metrics=metrics, run_id=run_id,
                       error=error)


def commit_registered(run_dir: Location, paths: list[str]) -> None:
    """Commit the checkpoints Ray Train registered (every rank reported its part, so each is
    whole) that lack a COMMITTED: a trial that Tune stopped right after a report, before its
    workers' own commit, keeps its last checkpoint usable."""
    from medmix.train.checkpoint import COMMIT_FILE, META_FILE  # torch: only once a run has ended
    for path in paths:
        ckpt = location(checkpoint_location(run_dir, path))
        if ckpt.join(META_FILE).is_file() and not ckpt.join(COMMIT_FILE).is_file():
            ckpt.join(COMMIT_FILE).write_text("registered by Ray Train: every rank reported its part\n")


def _read_info(run_dir: Location | Path | str) -> dict:
    p = location(run_dir).join(RUN_INFO)
    return json.loads(p.read_text()) if p.is_file() else {}


def resolve_init_from(cfg: MedmixConfig) -> dict[str, str]:
    """`train.init_from` resolved on the driver to a local export directory (a registry version is
    fetched, a checkpoint exported), which replaces the reference in `cfg` for the workers; its
    tensors are checked against the model on the meta device, so a name or shape mismatch fails
    here, naming the tensor. Returns the lineage tags naming the parent model ({} without one)."""
    ref = cfg.train.init_from
    if not ref:
        return {}
    # torch and transformers: only for a warm start
    from medmix.model.summary import build_on_meta
    from medmix.model.warm_start import check_init_weights
    try:
        export = resolve(ref, cfg.lineage)
    except FileNotFoundError as exc:
        raise ConfigError(f"train.init_from = {ref!r}: {exc}") from None
    vocab = len(load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path))
    try:
        check_init_weights(build_on_meta(cfg.model, vocab), export.path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    cfg.train.init_from = str(export.path)
    tags = {"medmix.init_from": ref, "medmix.init_from_export": str(export.path)}
    if export.version:
        tags["medmix.init_from_version"] = export.version
    if export.run_id:
        tags["medmix.init_from_run"] = export.run_id
    if export.checkpoint:
        tags["medmix.init_from_checkpoint"] = export.checkpoint
    return tags


def _open_train_run(tracker: Tracker, cfg: MedmixConfig, run_dir: Location,
                    parent: dict[str, str] | None = None) -> str | None:
    """The training run's MLflow run: the one `run_dir`'s run.json names (a re-submitted run),
    else a new one, whose id run.json then keeps. `parent` tags name a warm start's model."""
    run_dir.mkdirs()
    run_id, resumed = open_run(tracker, cfg, kind="train", name=cfg.name,
                               tags={"medmix.run_dir": run_dir.uri, **(parent or {})},
                               resume_run_id=_read_info(run_dir).get("run_id"))
    if run_id is not None and not resumed:
        run_dir.join(RUN_INFO).write_text(json.dumps({"run_id": run_id, "name": cfg.name}, indent=1))
    return run_id
