"""`medmix train`: run (or resume) a training job on a local or remote Ray cluster."""

from __future__ import annotations

import argparse

from medmix.cli import add_config_args, resolve_config
from medmix.train.launcher import train


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train the multimodal model on the task mixture (Ray Train + FSDP2)",
        description="Train MultimodalLM on the mixture of tasks in the shard store. Uses the Ray "
                    "cluster named by RAY_ADDRESS, else starts a local one. Checkpoints go to "
                    "train.storage_path/<name>/step-NNNNNN; metrics, params, dataset digests and "
                    "checkpoint records go to MLflow (lineage.*). Re-running with the same --set "
                    "name=... and storage resumes from the latest checkpoint.")
    add_config_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    result = train(cfg)
    print(summary(cfg, result))
    return 0 if result.error is None else 1


def summary(cfg, result) -> str:
    m = result.metrics
    lines = [f"run {cfg.name}: {'FAILED: ' + result.error if result.error else 'finished'}",
             f"  step {int(m.get('step', 0))}  loss {m.get('loss', float('nan')):.4f}  "
             f"val_loss {m.get('val_loss', float('nan')):.4f}",
             f"  checkpoint: {result.checkpoint}",
             f"  MLflow run: {result.run_id}  (browse: mlflow ui --backend-store-uri "
             f"sqlite:///{cfg.lineage.root}/mlflow.db)"]
    return "\n".join(lines)
