"""What a training run does around the plain-torch loop, one `Callback` per concern.

In the order the Trainer calls them (lower `order` first):

  10 ExampleLedger     each rank appends the example ids of every step to ledger/rank<r>-attempt<a>.jsonl
                       (how tests prove a recovered run saw exactly an uninterrupted run's examples)
  20 ConsoleLog        rank 0's one-line progress
  30 PrometheusExport  every report as `ray_medmix_*` gauges (through Ray's metrics agent)
  40 MLflowLog         rank 0 logs metrics and records each checkpoint in the lineage tracker
  90 RayTrainReport    `ray.train.report` of every report, with the checkpoint when there is one
  99 FaultInjection    test-only: `debug.fail_in_checkpoint_at_step` kills one worker,
                       `debug.pause_at_step` holds rank 0, each once per run
 100 CheckpointCommit  after every rank stored its part, rank 0 writes the checkpoint's COMMITTED

`train/loop.py` assembles them for a Ray Train worker; a run in one process without Ray uses
any subset (`Trainer(..., callbacks=[ConsoleLog(...)])`).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from medmix.observability.metrics import record_train_metrics
from medmix.storage import Location, location
from medmix.train.checkpoint import COMMIT_FILE, META_FILE, write_meta
from medmix.train.config import DebugConfig
from medmix.train.trainer import Callback, Trainer

FAULT_MARKER = ".medmix-fault-injected"
PAUSE_MARKER = ".medmix-paused"


def checkpoint_uri(run_dir: Path | Location | str, step: int) -> str:
    """Where Ray Train stores the checkpoint of `step` in the run directory (path or URI)."""
    return location(run_dir).join(f"step-{step:06d}").uri


class ExampleLedger(Callback):
    """`{"step", "ids"}` per trained step; one file per rank and attempt.

    Locally the line is appended and flushed every step. Object storage has no append: there
    the lines since the last write go out as one more write-once object,
    `rank<r>-attempt<a>-part<k>.jsonl`, at every checkpoint and at the end — so what a killed
    worker loses is only what it trained after its last checkpoint, which the resumed run
    trains again."""

    order = 10

    def __init__(self, run_dir: Path | Location | str, rank: int):
        self.folder = location(run_dir).join("ledger")
        self.folder.mkdirs()
        attempt_of = re.compile(rf"rank{rank}-attempt(\d+)(?:-part\d+)?\.jsonl")
        attempts = {m.group(1) for p in self.folder.children() if (m := attempt_of.fullmatch(p.name))}
        self.attempt = len(attempts)
        self.path = self.folder.join(f"rank{rank}-attempt{self.attempt}.jsonl")
        self._file: Any = None
        self._pending: list[str] = []
        self._parts = 0

    def pre_fit(self, trainer: Trainer) -> None:
        if self.folder.is_local:
            self._file = open(self.path.local_path(), "a")

    def post_train_batch(self, trainer: Trainer, batch: dict[str, Any], sums: dict[str, float]) -> None:
        line = json.dumps({"step": trainer.step, "ids": batch["example_ids"]}) + "\n"
        if self._file is not None:
            self._file.write(line)
            self._file.flush()
        else:
            self._pending.append(line)

    def _write_pending(self) -> None:
        if self._pending:
            stem = self.path.name[:-len(".jsonl")]
            self.folder.join(f"{stem}-part{self._parts:05d}.jsonl").write_text("".join(self._pending))
            self._parts += 1
            self._pending = []

    def post_checkpoint(self, trainer: Trainer, path: str, meta: dict[str, Any], metrics: dict[str, float]) -> None:
        self._write_pending()

    def post_fit(self, trainer: Trainer) -> None:
        self._write_pending()
        if self._file is not None:
            self._file.close()


def read_ledger(run_dir: Path | Location | str, rank: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """The ledger of a run, local or on object storage: `{"rank<r>-attempt<a>": [lines…]}`, the
    parts of an attempt joined in order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for p in location(run_dir).join("ledger").files():
        if not p.name.endswith(".jsonl") or (rank is not None and not p.name.startswith(f"rank{rank}-")):
            continue
        key = p.name[:-len(".jsonl")].split("-part")[0]
        out.setdefault(key, []).extend(json.loads(x) for x in p.read_text().splitlines() if x.strip())
    return out


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

    def __init__(self, tracker: Any, run_dir: Path | Location | str):
        self.tracker = tracker
        self.run_dir = location(run_dir)

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

    def __init__(self, run_dir: Path | Location | str):
        self.run_dir = location(run_dir)

    def report(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        import ray.train  # only a Ray Train worker has this callback
        ray.train.report(metrics)

    def post_checkpoint(self, trainer: Trainer, path: str, meta: dict[str, Any], metrics: dict[str, float]) -> None:
        import ray.train
        from ray.train import Checkpoint
        local_meta = Path(path) / META_FILE
        if local_meta.exists():   # rank 0: whole only with the COMMIT_FILE that CheckpointCommit writes
            write_meta(path, {**json.loads(local_meta.read_text()), "commit": True})
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(path),
                         checkpoint_dir_name=f"step-{trainer.step:06d}")
        trainer.parent_checkpoint = checkpoint_uri(self.run_dir, trainer.step)


class CheckpointCommit(Callback):
    """Once every rank has stored its part of a checkpoint (a barrier after each rank's upload),
    rank 0 writes the checkpoint's COMMIT_FILE: export, serve and `find_latest_checkpoint` take
    only committed checkpoints, so a worker killed mid-upload leaves nothing they would pick."""

    order = 100

    def __init__(self, run_dir: Path | Location | str):
        self.run_dir = location(run_dir)

    def post_checkpoint(self, trainer: Trainer, path: str, meta: dict[str, Any], metrics: dict[str, float]) -> None:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        if trainer.rank == 0:
            self.run_dir.join(f"step-{trainer.step:06d}", COMMIT_FILE).write_text(
                f"step {trainer.step}: every rank's part is stored\n")


class FaultInjection(Callback):
    """Test hooks: kill this worker process inside the checkpoint of
    `debug.fail_in_checkpoint_at_step` (its part stored, the checkpoint not yet committed), or
    hold rank 0 for `debug.pause_s` right after `debug.pause_at_step`; each once per run."""

    order = 99

    def __init__(self, debug: DebugConfig, run_dir: Path | Location | str):
        self.debug = debug
        self.marker = location(run_dir).join(FAULT_MARKER)

    def post_checkpoint(self, trainer: Trainer, path: str, meta: dict[str, Any], metrics: dict[str, float]) -> None:
        d = self.debug
        if d.fail_in_checkpoint_at_step == trainer.step and trainer.rank == d.fail_rank:
            self._fail(trainer, "after storing its part of the checkpoint, before the commit")

    def post_step(self, trainer: Trainer) -> None:
        d = self.debug
        if d.pause_at_step and trainer.step == d.pause_at_step and trainer.rank == 0:
            self._pause(trainer)

    def _fail(self, trainer: Trainer, when: str) -> None:
        if self.marker.exists():
            return
        self.marker.write_text(f"killed rank {trainer.rank} {when}\n")
        os._exit(1)

    def _pause(self, trainer: Trainer) -> None:
        """Sleep once per run (the other ranks wait in the next step's collectives); the
        marker, written first, tells a test that the run is holding still."""
        marker = self.marker.with_name(PAUSE_MARKER)
        if marker.exists():
            return
        marker.write_text(f"rank 0 paused after step {trainer.step}\n")
        time.sleep(self.debug.pause_s)
