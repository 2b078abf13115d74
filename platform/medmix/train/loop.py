"""The training loop that runs inside every Ray Train worker.

`train_loop_per_worker(config)` is what `TorchTrainer` calls on each rank. It builds the model,
shards it with FSDP2, restores the latest checkpoint if Ray hands one back (after a worker
failure or a re-submitted run), and then runs `Trainer.train_step` until `train.steps`:

    batch -> forward -> loss / grad_accum -> backward -> clip -> AdamW step -> metrics

Every `log_every` steps metrics are reduced across ranks and rank 0 reports them; every
`checkpoint_every` steps all ranks save one DCP checkpoint together and report it to Ray Train
(which merges the ranks' shards into one directory on the run's storage), and rank 0 records it
in the lineage tracker. Each rank appends the example ids it trained on to a ledger, which is
how tests prove a recovered run saw exactly the examples an uninterrupted one did.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from medmix.observability.metrics import record_train_metrics
from medmix.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from medmix.train.fsdp import apply_ac, apply_compile, apply_fsdp
from medmix.train.metrics import StepTimer, gpu_peak_flops, reduce_sums
from medmix.train.optim import build_optimizer, lr_at, set_lr

FAULT_MARKER = ".medmix-fault-injected"


class Trainer:
    """Owns model, optimizer and data stream on one rank; `fit()` runs the whole job."""

    def __init__(self, cfg: Any, run_id: str | None, run_dir: str):
        import ray.train
        from medmix.data.tokenizer import load_tokenizer
        from medmix.model import build_model

        self.cfg = cfg
        self.run_id = run_id
        self.run_dir = Path(run_dir)
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.attempt = _attempt_number(self.run_dir, self.rank)
        self.device = ray.train.torch.get_device()
        self.on_gpu = self.device.type == "cuda"
        if not self.on_gpu:
            torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
            if cfg.train.deterministic:
                torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg.seed)  # same init on every rank before sharding

        self.tokenizer = load_tokenizer(cfg)
        model = build_model(cfg.model, vocab_size=len(self.tokenizer),
                            image_token_id=self.tokenizer.image_token_id, pad_token_id=self.tokenizer.pad_id)
        self.flops_per_token = model.flops_per_token(cfg.stream.max_seq_len)
        model.to(self.device)
        if cfg.train.activation_checkpointing:
            apply_ac(model)
        if cfg.train.compile:
            apply_compile(model)
        apply_fsdp(model, self.device, bf16=self.on_gpu)
        self.model = model
        self.optimizer = build_optimizer(model, cfg.train, fused=self.on_gpu)
        self.step = 0
        self.parent_checkpoint: str | None = None
        self.tracker = None
        if self.rank == 0 and run_id:
            from medmix.lineage.tracker import build_tracker
            self.tracker = build_tracker(cfg.lineage)
            self.tracker.start_run(cfg.name, run_id=run_id)  # re-open the driver's run

        from medmix.data.stream import build_rank_stream
        self.stream = build_rank_stream(cfg, self.tokenizer, rank=self.rank, world_size=self.world)
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as path:
                self._restore(path)
            self.parent_checkpoint = _checkpoint_uri(self.run_dir, self.step)
        self.val_batches = self.stream.validation_batches(cfg.train.eval_batches)

    # -- one step ------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Forward/backward over `grad_accum` micro-batches, clip, step. Returns local sums."""
        cfg = self.cfg.train
        set_lr(self.optimizer, lr_at(self.step, cfg))
        micro = split_micro_batches(batch, cfg.grad_accum)
        target_tokens = sum(int((m["labels"] != -100).sum()) for m in micro)
        total_tokens = dist_sum(target_tokens, self.device)
        sums = defaultdict(float)
        for m in micro:
            out = self.model(**to_device(m, self.device))
            # normalise by the global target-token count so every token weighs the same
            # whatever the rank, micro-batch or task it came from
            loss = out.example_loss.sum() * self.world / max(total_tokens, 1)
            loss.backward()
            for t, l, n in zip(m["task_ids"].tolist(), out.example_loss.detach().tolist(),
                               out.example_tokens.tolist()):
                sums[f"loss_sum/{t}"] += l
                sums[f"tokens/{t}"] += n
            sums["input_tokens"] += float(m["attention_mask"].sum())
        grad_norm = (torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                     if cfg.grad_clip > 0 else torch.tensor(0.0))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        sums["samples"] += len(batch["example_ids"])
        sums["grad_norm"] = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        return sums

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss per task on the held-out rows this rank owns, reduced over ranks."""
        self.model.eval()
        sums: dict[str, float] = defaultdict(float)
        for batch in self.val_batches:
            out = self.model(**to_device(batch, self.device))
            for t, l, n in zip(batch["task_ids"].tolist(), out.example_loss.tolist(), out.example_tokens.tolist()):
                sums[f"loss_sum/{t}"] += l
                sums[f"tokens/{t}"] += n
        self.model.train()
        total = reduce_sums(sums, self.device)
        out = {}
        for key in sorted(total):
            if key.startswith("loss_sum/"):
                task = self.stream.task_name(int(key.split("/")[1]))
                out[f"val_loss/{task}"] = total[key] / max(total[f"tokens/{key.split('/')[1]}"], 1)
        if out:
            out["val_loss"] = sum(out.values()) / len(out)  # mean over tasks: small tasks count
        return out

    # -- the loop ------------------------------------------------------------------------
    def fit(self) -> None:
        import ray.train
        cfg = self.cfg
        timer = StepTimer()
        window: dict[str, float] = defaultdict(float)
        batches = iter(self.stream.batches(start_step=self.step))
        ledger = open(self.run_dir / "ledger" / f"rank{self.rank}-attempt{self.attempt}.jsonl", "a")
        while self.step < cfg.train.steps:
            with timer.waiting():
                batch = next(batches)
            with timer.computing():
                sums = self.train_step(batch)
            ledger.write(json.dumps({"step": self.step, "ids": batch["example_ids"]}) + "\n")
            ledger.flush()
            for k, v in sums.items():
                window[k] = v if k == "grad_norm" else window[k] + v
            last = self.step == cfg.train.steps
            metrics = {}
            if self.step % cfg.train.log_every == 0 or last:
                metrics = self._metrics(window, timer)
                window.clear()
                timer.reset()
            want_eval = (cfg.train.eval_every and self.step % cfg.train.eval_every == 0)
            want_ckpt = self.step % cfg.train.checkpoint_every == 0 or last
            if want_eval or want_ckpt:
                metrics.update(self.evaluate())
            if metrics:
                metrics["step"] = self.step  # every report carries it (ASHA's time attribute)
            if want_ckpt:
                self._save_and_report(metrics)
            elif metrics:
                self._log(metrics)  # before reporting: a scheduler may stop the trial on this report
                ray.train.report(metrics)
            self._maybe_inject_fault()
        ledger.close()

    def _metrics(self, window: dict[str, float], timer: StepTimer) -> dict[str, float]:
        total = reduce_sums(window, self.device)
        out: dict[str, float] = {"step": self.step, "lr": lr_at(self.step - 1, self.cfg.train),
                                 "grad_norm": window.get("grad_norm", 0.0)}
        loss_sum = sum(v for k, v in total.items() if k.startswith("loss_sum/"))
        tokens = sum(v for k, v in total.items() if k.startswith("tokens/"))
        out["loss"] = loss_sum / max(tokens, 1)
        for key, value in total.items():
            if key.startswith("loss_sum/"):
                tid = key.split("/")[1]
                task = self.stream.task_name(int(tid))
                out[f"loss/{task}"] = value / max(total[f"tokens/{tid}"], 1)
        elapsed = max(timer.total, 1e-9)
        out["samples_per_s"] = total["samples"] / elapsed
        out["tokens_per_s"] = total["input_tokens"] / elapsed
        out["data_wait_frac"] = timer.wait / elapsed
        if self.on_gpu:
            peak = gpu_peak_flops(self.device)
            out["mfu"] = self.flops_per_token * out["tokens_per_s"] / (peak * self.world) if peak else 0.0
            out["gpu_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        for task, frac in self.stream.realised_mixture().items():
            out[f"mix/{task}"] = frac
        return out

    def _log(self, metrics: dict[str, float]) -> None:
        record_train_metrics(self.cfg.name, metrics, rank=self.rank)  # Prometheus, via Ray's metrics agent
        if self.rank == 0 and "loss" in metrics:
            val = f"  val {metrics['val_loss']:.4f}" if "val_loss" in metrics else ""
            print(f"[medmix] step {self.step}/{self.cfg.train.steps}  loss {metrics['loss']:.4f}{val}  "
                  f"{metrics['samples_per_s']:.1f} samples/s  data wait {100 * metrics['data_wait_frac']:.0f}%"
                  + (f"  MFU {100 * metrics['mfu']:.1f}%" if "mfu" in metrics else ""), flush=True)
        if self.tracker is not None:
            self.tracker.log_metrics({k: v for k, v in metrics.items() if k != "step"}, step=self.step)

    def _save_and_report(self, metrics: dict[str, float]) -> None:
        import ray.train
        from ray.train import Checkpoint
        name = f"step-{self.step:06d}"
        meta = {
            "step": self.step, "config": _config_dict(self.cfg), "data_state": self.stream.state_dict(),
            "rng": rng_state(), "world_size": self.world, "run_id": self.run_id,
            "store_digest": self.stream.store_digest, "task_digests": self.stream.task_digests,
            "tokenizer_digest": self.tokenizer.digest, "parent_checkpoint": self.parent_checkpoint,
            "metrics": {k: float(v) for k, v in metrics.items()},
        }
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="medmix-ckpt-") as tmp:
            save_checkpoint(tmp, self.model, self.optimizer, meta, rank=self.rank)
            metrics = {**metrics, "checkpoint_save_s": time.perf_counter() - t0}
            # lineage first: a scheduler (ASHA) may stop the trial on this very report
            self._log(metrics)
            if self.tracker is not None:
                self.tracker.record_checkpoint(path=_checkpoint_uri(self.run_dir, self.step), step=self.step,
                                               metrics=meta["metrics"], data_state=meta["data_state"],
                                               parent_checkpoint=self.parent_checkpoint)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp), checkpoint_dir_name=name)
        self.parent_checkpoint = _checkpoint_uri(self.run_dir, self.step)

    def _restore(self, path: str) -> None:
        meta = load_checkpoint(path, self.model, self.optimizer)
        self.step = int(meta["step"])
        self.stream.load_state_dict(meta["data_state"])
        if meta.get("world_size") == self.world:
            set_rng_state(meta["rng"])

    def _maybe_inject_fault(self) -> None:
        """Test hook: `debug.fail_at_step` kills one worker process once per run."""
        dbg = self.cfg.debug
        if not dbg.fail_at_step or self.step != dbg.fail_at_step or self.rank != dbg.fail_rank:
            return
        marker = self.run_dir / FAULT_MARKER
        if marker.exists():
            return
        marker.write_text(f"killed rank {self.rank} after step {self.step}\n")
        os._exit(1)


def train_loop_per_worker(loop_config: dict) -> None:
    """Entry point Ray Train runs on every worker."""
    import logging
    from medmix.config import config_from_dict
    # Ray Train logs every report with its whole metrics dict, and every checkpoint upload;
    # rank 0's one-line progress says the same
    import ray.train.v2._internal.execution.context as _ctx
    import ray.train.v2._internal.execution.storage as _storage
    for name in ("ray.train", _ctx.__file__, _storage.logger.name):
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = config_from_dict(loop_config["config"])
    run_dir = Path(loop_config["run_dir"])
    (run_dir / "ledger").mkdir(parents=True, exist_ok=True)
    Trainer(cfg, loop_config.get("run_id"), str(run_dir)).fit()


# --- helpers ------------------------------------------------------------------------------

def split_micro_batches(batch: dict[str, Any], n: int) -> list[dict[str, Any]]:
    if n == 1:
        return [batch]
    rows = len(batch["example_ids"])
    if rows % n:
        raise ValueError(f"per-rank batch of {rows} rows does not split into grad_accum = {n} micro-batches")
    size = rows // n
    images = batch["image_counts"].tolist()
    out, img_start = [], 0
    for i in range(n):
        lo, hi = i * size, (i + 1) * size
        n_img = sum(images[lo:hi])
        m = {k: (v[lo:hi] if k != "pixel_values" else v[img_start:img_start + n_img]) for k, v in batch.items()}
        img_start += n_img
        out.append(m)
    return out


MODEL_INPUTS = ("input_ids", "attention_mask", "labels", "pixel_values")


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: batch[k].to(device, non_blocking=True) for k in MODEL_INPUTS
            if k in batch and batch[k] is not None}


def dist_sum(value: float, device: torch.device) -> float:
    t = torch.tensor([float(value)], device=device, dtype=torch.float64 if device.type == "cpu" else torch.float32)
    dist.all_reduce(t)
    return float(t.item())


def _attempt_number(run_dir: Path, rank: int) -> int:
    return len(list((run_dir / "ledger").glob(f"rank{rank}-attempt*.jsonl")))


def _checkpoint_uri(run_dir: Path, step: int) -> str:
    return str(run_dir / f"step-{step:06d}")


def _config_dict(cfg: Any) -> dict:
    from medmix.config import to_dict
    return to_dict(cfg)
