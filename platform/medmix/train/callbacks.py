"""What a training run does around the plain-torch loop, one `Callback` per concern.

In the order the Trainer calls them (lower `order` first):

  10 ExampleLedger     each rank appends the example ids of every step to ledger/rank<r>-attempt<a>.jsonl
                       (how tests prove a recovered run saw exactly an uninterrupted run's examples)
  20 ConsoleLog        rank 0's one-line progress
  30 PrometheusExport  every report as `ray_medmix_*` gauges (through Ray's metrics agent)
  40 MLflowLog         rank 0 logs metrics and records each checkpoint in the lineage tracker
  90 RayTrainReport    `ray.train.report` of every report, with the checkpoint when there is one
  99 FaultInjection    test-only: `debug.fail_at_step` kills one worker once per run

`train/loop.py` assembles them for a Ray Train worker; a run in one process without Ray uses
any subset (`Trainer(..., callbacks=[ConsoleLog(...)])`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medmix.observability.metrics import record_train_metrics
from medmix.train.config import DebugConfig
from medmix.train.trainer import Callback, Trainer

FAULT_MARKER = ".medmix-fault-injected"


def checkpoint_uri(run_dir: Path, step: int) -> str:
    """Where Ray Train stores the checkpoint of `step` in the run directory."""
    return str(run_dir / f"step-{step:06d}")


class ExampleLedger(Callback):
    """Append `{"step", "ids"}` per trained step; one file per rank and attempt."""

    order = 10

    def __init__(self, run_dir: Path, rank: int):
        folder = Path(run_dir) / "ledger"
        folder.mkdir(parents=True, exist_ok=True)
        self.attempt = len(list(folder.glob(f"rank{rank}-attempt*.jsonl")))
        self.path = folder / f"rank{rank}-attempt{self.attempt}.jsonl"
        self._file: Any = None

    def pre_fit(self, trainer: Trainer) -> None:
        self._file = open(self.path, "a")

    def post_train_batch(self, trainer: Trainer, batch: dict[str, Any], sums: dict[str, float]) -> None:
        self._file.write(json.dumps({"step": trainer.step, "ids": batch["example_ids"]}) + "\n")
        self._file.flush()

    def post_fit(self, trainer: Trainer) -> None:
        if self._file is not None:
            self._file.close()


class ConsoleLog(Callback):
    """`[medmix] step 10/60  loss 4.2  val 4.3  27.8 samples/s  data wait 1%` on rank 0."""

    order = 20

    def __init__(self, total_steps: int):
        self.total_steps = total_steps

    def log_metrics(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if trainer.rank != 0 or "loss" not in metrics:
            return
        val = f"  val {metrics['val_loss']:.4f}" if "val_loss" in metrics else ""
        mfu = f"  MFU {100 * metrics['mfu']:.1f}%" if "mfu" in metrics else ""
        print(f"[medmix] step {trainer.step}/{self.total_steps}  loss {metrics['loss']:.4f}{val}  "
              f"{metrics['samples_per_s']:.1f} samples/s  data wait {100 * metrics['data_wait_frac']:.0f}%{mfu}",
              flush=True)


class PrometheusExport(Callback):
    """Every report as gauges tagged with the run name (rank 0's numbers are job-wide)."""

    order = 30

    def __init__(self, run_name: str):
        self.run_name = run_name

    def log_metrics(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        # Ray's metrics API: imported here so the plain-torch Trainer never needs Ray
        record_train_metrics(self.run_name, metrics, rank=trainer.rank)


class MLflowLog(Callback):
    """Rank 0: metrics to the run, and each checkpoint as a lineage record (before Ray reports it)."""

    order = 40

    def __init__(self, tracker: Any, run_dir: Path):
        self.tracker = tracker
        self.run_dir = Path(run_dir)

    def log_metrics(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if trainer.rank == 0:
            self.tracker.log_metrics({k: v for k, v in metrics.items() if k != "step"}, step=trainer.step)

    def post_checkpoint(self, trainer: Trainer, path: str, meta: dict[str, Any], metrics: dict[str, float]) -> None:
        if trainer.rank == 0:
            self.tracker.record_checkpoint(path=checkpoint_uri(self.run_dir, trainer.step), step=trainer.step,
                                           metrics=meta["metrics"], data_state=meta["data_state"],
                                           parent_checkpoint=trainer.parent_checkpoint)


class RayTrainReport(Callback):
    """`ray.train.report` on every rank; a checkpoint goes with its report and becomes the parent."""

    order = 90

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    def report(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        import ray.train  # only a Ray Train worker has this callback
        ray.train.report(metrics)

    def post_checkpoint(self, trainer: Trainer, path: str, meta: dict[str, Any], metrics: dict[str, float]) -> None:
        import ray.train
        from ray.train import Checkpoint
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(path),
                         checkpoint_dir_name=f"step-{trainer.step:06d}")
        trainer.parent_checkpoint = checkpoint_uri(self.run_dir, trainer.step)


class FaultInjection(Callback):
    """Test hook: kill this worker process right after `debug.fail_at_step`, once per run."""

    order = 99

    def __init__(self, debug: DebugConfig, run_dir: Path):
        self.debug = debug
        self.marker = Path(run_dir) / FAULT_MARKER

    def post_step(self, trainer: Trainer) -> None:
        d = self.debug
        if not d.fail_at_step or trainer.step != d.fail_at_step or trainer.rank != d.fail_rank:
            return
        if self.marker.exists():
            return
        self.marker.write_text(f"killed rank {trainer.rank} after step {trainer.step}\n")
        os._exit(1)
