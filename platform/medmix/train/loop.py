"""Ray Train's entry point: build one rank's `Trainer` and fit it.

`train_loop_per_worker(config)` is what `TorchTrainer` calls on each rank. `build_trainer`
builds the tokenizer and model, applies activation checkpointing / compile / FSDP2, the
optimizer, the rank's data stream and the run's callbacks (train/callbacks.py), and restores
the checkpoint Ray hands back after a worker failure or to a re-submitted run. The loop itself
is `medmix.train.trainer.Trainer`, plain torch, which also runs without Ray.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from medmix.config import MedmixConfig, config_from_dict, to_dict
from medmix.data.stream import build_rank_stream
from medmix.data.tokenizer import load_tokenizer
from medmix.evaluate.trial import TrialScorer
from medmix.lineage.tracker import build_tracker
from medmix.model import build_model
from medmix.model.trainable import apply_trainable
from medmix.model.warm_start import load_init_weights
from medmix.storage import Location, location
from medmix.train.callbacks import (CheckpointCommit, ConsoleLog, ExampleLedger, FaultInjection, MLflowLog,
                                    PrometheusExport, RayTrainReport, checkpoint_uri)
from medmix.train.fsdp import apply_ac, apply_compile, apply_fsdp
from medmix.train.optim import build_optimizer
from medmix.train.trainer import Callback, Trainer


def build_trainer(cfg: MedmixConfig, *, rank: int, world_size: int, device: torch.device,
                  callbacks: list[Callback] | None = None, checkpoint: str | None = None,
                  run_id: str | None = None, use_ray_data: bool | None = None) -> Trainer:
    """One rank's Trainer from the root config: model (+ AC, compile, FSDP2), optimizer, stream.

    Collective when `world_size` > 1 (FSDP, checkpoint load): every rank calls it together.
    Without a process group (one process, no Ray) FSDP is skipped and the plain model trains.
    `run_id` (the MLflow run) goes into every checkpoint's medmix.json.
    """
    on_gpu = device.type == "cuda"
    if not on_gpu:
        torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True)
    torch.manual_seed(cfg.seed)  # same init on every rank before sharding
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path)
    model = build_model(cfg.model, vocab_size=len(tokenizer), image_token_id=tokenizer.image_token_id,
                        pad_token_id=tokenizer.pad_id)
    flops_per_token = model.flops_per_token(cfg.stream.max_seq_len)
    if cfg.train.init_from and checkpoint is None:  # a resumed run takes everything from its checkpoint
        load_init_weights(model, cfg.train.init_from)
    # adapters and requires_grad before FSDP (which keeps each parameter's flag) and before the
    # optimizer (which then holds state for the trainable parameters only)
    apply_trainable(model, cfg.train.trainable, cfg.train.lora)
    model.to(device)
    if cfg.train.activation_checkpointing:
        apply_ac(model)
    if cfg.train.compile:
        apply_compile(model)
    if torch.distributed.is_initialized():
        apply_fsdp(model, device, bf16=on_gpu)
    optimizer = build_optimizer(model, cfg.train, fused=on_gpu)
    stream = build_rank_stream(cfg, tokenizer, rank=rank, world_size=world_size, use_ray=use_ray_data)
    config = to_dict(cfg)
    scorer = (TrialScorer.build(cfg, tokenizer, stream.store, stream.spec, list(stream.plan.active))
              if cfg.train.eval_scores else None)
    trainer = Trainer(model, optimizer, stream, cfg.train, device=device, rank=rank, world_size=world_size,
                      callbacks=callbacks or [], flops_per_token=flops_per_token,
                      checkpoint_meta=lambda: {"config": config, "run_id": run_id,
                                               "tokenizer_digest": tokenizer.digest},
                      scorer=scorer)
    if checkpoint is not None:
        trainer.restore(checkpoint)
    return trainer


def run_callbacks(cfg: MedmixConfig, run_id: str | None, run_dir: Location, rank: int) -> list[Callback]:
    """What a Ray Train worker does around the loop, in order (see train/callbacks.py)."""
    callbacks: list[Callback] = [ExampleLedger(run_dir, rank), ConsoleLog(cfg.train.steps),
                                 PrometheusExport(cfg.name), RayTrainReport(run_dir),
                                 FaultInjection(cfg.debug, run_dir), CheckpointCommit(run_dir)]
    if rank == 0 and run_id:
        tracker = build_tracker(cfg.lineage)
        tracker.start_run(cfg.name, run_id=run_id)  # re-open the driver's run
        callbacks.append(MLflowLog(tracker, run_dir))
    return callbacks


def train_loop_per_worker(loop_config: dict) -> None:
    """Entry point Ray Train runs on every worker."""
    import ray.train
    import ray.train.torch
    # Ray Train logs every report with its whole metrics dict, and every checkpoint upload;
    # rank 0's one-line progress says the same
    import ray.train.v2._internal.execution.context as _ctx
    import ray.train.v2._internal.execution.storage as _storage
    for name in ("ray.train", _ctx.__file__, _storage.logger.name):
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = config_from_dict(loop_config["config"])
    run_dir = location(loop_config["run_dir"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    run_id = loop_config.get("run_id")
    callbacks = run_callbacks(cfg, run_id, run_dir, rank)
    device = ray.train.torch.get_device()
    restored = ray.train.get_checkpoint()
    if restored is None:
        trainer = build_trainer(cfg, rank=rank, world_size=world, device=device, callbacks=callbacks, run_id=run_id)
    else:
        with restored.as_directory() as path:
            trainer = build_trainer(cfg, rank=rank, world_size=world, device=device, callbacks=callbacks,
                                    checkpoint=path, run_id=run_id)
        trainer.parent_checkpoint = checkpoint_uri(run_dir, trainer.step)
    trainer.fit()
