"""The training loop in plain torch: one rank's model, optimizer and data stream.

`Trainer` owns the step math and the loop and nothing else; it never imports Ray. What a run
does around the loop — the console line, Prometheus, MLflow, `ray.train.report`, the example
ledger, the test-only fault hook — are `Callback`s (train/callbacks.py), called in `order`:

    trainer = Trainer(model, optimizer, stream, cfg.train, device=torch.device("cpu"),
                      callbacks=[ConsoleCallback(cfg.name, cfg.train.steps)])
    trainer.fit()

One step is

    batch -> forward -> loss / global target tokens -> backward -> clip -> AdamW step

and every `log_every` steps the window's sums are reduced across ranks into metrics; every
`eval_every` steps (and at every checkpoint) validation loss per task is added (and, given a
`scorer`, each task's score on its fixed validation subset with confidence intervals); every
`checkpoint_every` steps (and at the end) all ranks save one DCP checkpoint together into a
temporary directory that the callbacks' `post_checkpoint` persist (Ray Train uploads it).

The Ray Train worker entry point that builds a Trainer is `train/loop.py`. Without a process
group (one process, no Ray) the collectives are skipped: world size 1.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from typing import Any, Callable, Iterable, Protocol, Sequence

import torch
import torch.distributed as dist

from medmix.tasks.files import carried
from medmix.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from medmix.train.config import TrainConfig
from medmix.train.metrics import StepTimer, gpu_peak_flops, reduce_sums
from medmix.train.optim import lr_at, set_lr

MODEL_INPUTS = ("input_ids", "attention_mask", "labels", "pixel_values")


class TrainStream(Protocol):
    """What the Trainer needs of a rank's data (medmix.data.stream.RankStream provides it)."""

    store_digest: str
    task_digests: dict[str, str]

    def batches(self, start_step: int | None = None) -> Iterable[dict[str, Any]]: ...
    def validation_batches(self, num_batches: int) -> Sequence[dict[str, Any]]: ...
    def task_name(self, task_id: int) -> str: ...
    def realised_mixture(self) -> dict[str, float]: ...
    def realised_classes(self) -> dict[str, dict[str, float]]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict, strict: bool = True) -> None: ...


class Callback:
    """Hooks around the loop. Override what you need; lower `order` runs first."""

    order: int = 50

    def pre_fit(self, trainer: "Trainer") -> None:
        """Before the first step (after any restore)."""

    def post_train_batch(self, trainer: "Trainer", batch: dict[str, Any], sums: dict[str, float]) -> None:
        """Right after an optimizer step; `trainer.step` is the step just trained."""

    def log_metrics(self, trainer: "Trainer", metrics: dict[str, float]) -> None:
        """A step's reduced metrics (on every rank; the numbers are job-wide)."""

    def report(self, trainer: "Trainer", metrics: dict[str, float]) -> None:
        """After `log_metrics`, on a step that reported metrics but saved no checkpoint."""

    def post_checkpoint(self, trainer: "Trainer", path: str, meta: dict[str, Any],
                        metrics: dict[str, float]) -> None:
        """A checkpoint was written to `path` (a temporary directory: persist it now)."""

    def post_step(self, trainer: "Trainer") -> None:
        """The end of a step, after its metrics and checkpoint."""

    def post_fit(self, trainer: "Trainer") -> None:
        """After the last step."""


class Trainer:
    """One rank's model, optimizer and data stream; `fit()` trains to `train_cfg.steps`."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, stream: TrainStream,
                 train_cfg: TrainConfig, *, device: torch.device, rank: int = 0, world_size: int = 1,
                 callbacks: Iterable[Callback] = (), flops_per_token: float = 0.0,
                 checkpoint_meta: Callable[[], dict[str, Any]] | None = None,
                 scorer: Callable[[torch.nn.Module], dict[str, float]] | None = None):
        self.model = model
        self.optimizer = optimizer
        self.stream = stream
        self.cfg = train_cfg
        self.device = device
        self.on_gpu = device.type == "cuda"
        self.rank, self.world = rank, world_size
        self.callbacks = sorted(callbacks, key=lambda c: c.order)
        self.flops_per_token = flops_per_token
        self.checkpoint_meta = checkpoint_meta or (lambda: {})
        self.scorer = scorer
        """Per-task scores on a fixed validation subset, added to every evaluation (sweep trials)."""
        self.step = 0
        self.parent_checkpoint: str | None = None
        self.val_batches = stream.validation_batches(train_cfg.eval_batches)

    def _emit(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    # -- one step ------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """Forward/backward over `grad_accum` micro-batches, clip, step. Returns local sums."""
        cfg = self.cfg
        set_lr(self.optimizer, lr_at(self.step, cfg))
        micro = split_micro_batches(batch, cfg.grad_accum)
        target_tokens = sum(int((m["labels"] != -100).sum()) for m in micro)
        total_tokens = dist_sum(target_tokens, self.device)
        sums: dict[str, float] = defaultdict(float)
        for m in micro:
            out = self.model(**to_device(m, self.device))
            # normalise by the global target-token count so every token weighs the same
            # whatever the rank, micro-batch or task it came from
            loss = out.example_loss.sum() * self.world / max(total_tokens, 1)
            loss.backward()
            add_task_sums(sums, m["task_ids"], out)
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
            add_task_sums(sums, batch["task_ids"], self.model(**to_device(batch, self.device)))
        self.model.train()
        total = reduce_sums(sums, self.device)
        out = {f"val_loss/{task}": value for task, value in self._per_task_loss(total).items()}
        if out:
            out["val_loss"] = sum(out.values()) / len(out)  # mean over tasks: small tasks count
        if self.scorer is not None:
            out.update(self.scorer(self.model))
        return out

    # -- the loop ------------------------------------------------------------------------
    def fit(self) -> None:
        steps = self.cfg.steps
        timer = StepTimer()
        window: dict[str, float] = defaultdict(float)
        batches = iter(self.stream.batches(start_step=self.step))
        self._emit("pre_fit")
        while self.step < steps:
            with timer.waiting():
                batch = next(batches)
            with timer.computing():
                sums = self.train_step(batch)
            self._emit("post_train_batch", batch, sums)
            for k, v in sums.items():
                window[k] = v if k == "grad_norm" else window[k] + v
            last = self.step == steps
            metrics: dict[str, float] = {}
            if self.step % self.cfg.log_every == 0 or last:
                metrics = self.window_metrics(window, timer)
                window.clear()
                timer.reset()
            want_eval = bool(self.cfg.eval_every) and self.step % self.cfg.eval_every == 0
            want_ckpt = self.step % self.cfg.checkpoint_every == 0 or last
            if want_eval or want_ckpt:
                metrics.update(self.evaluate())
            if metrics:
                metrics["step"] = self.step  # every report carries it (ASHA's time attribute)
            if want_ckpt:
                self._checkpoint(metrics)
            elif metrics:
                # logged before reported: a scheduler may stop the trial on the report
                self._emit("log_metrics", metrics)
                self._emit("report", metrics)
            self._emit("post_step")
        self._emit("post_fit")

    def window_metrics(self, window: dict[str, float], timer: StepTimer) -> dict[str, float]:
        """The job-wide metrics of the steps since the last report."""
        total = reduce_sums(window, self.device)
        out: dict[str, float] = {"step": self.step, "lr": lr_at(self.step - 1, self.cfg),
                                 "grad_norm": window.get("grad_norm", 0.0)}
        loss_sum = sum(v for k, v in total.items() if k.startswith("loss_sum/"))
        tokens = sum(v for k, v in total.items() if k.startswith("tokens/"))
        out["loss"] = loss_sum / max(tokens, 1)
        out.update({f"loss/{task}": value for task, value in self._per_task_loss(total).items()})
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
        # class-balanced tasks (`mixture.class_balance`): the realised share of each class
        for task, classes in self.stream.realised_classes().items():
            out.update({f"class_mix/{task}/{name}": frac for name, frac in classes.items()})
        return out

    def _per_task_loss(self, total: dict[str, float]) -> dict[str, float]:
        """`loss_sum/<id>` / `tokens/<id>` per task, keyed by task name."""
        out = {}
        for key in sorted(total):
            if key.startswith("loss_sum/"):
                tid = key.split("/")[1]
                out[self.stream.task_name(int(tid))] = total[key] / max(total[f"tokens/{tid}"], 1)
        return out

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint_state(self, metrics: dict[str, float]) -> dict[str, Any]:
        """Everything but the tensors that a resume needs (medmix.json)."""
        return {"step": self.step, "data_state": self.stream.state_dict(), "rng": rng_state(),
                "world_size": self.world, "store_digest": self.stream.store_digest,
                "task_digests": self.stream.task_digests, "parent_checkpoint": self.parent_checkpoint,
                # definitions of the tasks trained on that are not built in: exports carry them
                "tasks": carried(list(self.stream.task_digests)),
                "metrics": {k: float(v) for k, v in metrics.items()}, **self.checkpoint_meta()}

    def _checkpoint(self, metrics: dict[str, float]) -> None:
        meta = self.checkpoint_state(metrics)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="medmix-ckpt-") as tmp:
            save_checkpoint(tmp, self.model, self.optimizer, meta, rank=self.rank)
            metrics = {**metrics, "checkpoint_save_s": time.perf_counter() - t0}
            self._emit("log_metrics", metrics)
            self._emit("post_checkpoint", tmp, meta, metrics)

    def restore(self, path: str) -> dict[str, Any]:
        """Load a checkpoint (collective): weights, optimizer, step, data cursor, RNG."""
        meta = load_checkpoint(path, self.model, self.optimizer)
        self.step = int(meta["step"])
        self.stream.load_state_dict(meta["data_state"])
        if meta.get("world_size") == self.world:
            set_rng_state(meta["rng"])
        return meta


# --- helpers ------------------------------------------------------------------------------

def add_task_sums(sums: dict[str, float], task_ids: torch.Tensor, out: Any) -> None:
    """Accumulate per-task loss and target-token sums of one forward (`loss_sum/<id>`, `tokens/<id>`)."""
    for t, loss, n in zip(task_ids.tolist(), out.example_loss.detach().tolist(), out.example_tokens.tolist()):
        sums[f"loss_sum/{t}"] += loss
        sums[f"tokens/{t}"] += n


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


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: batch[k].to(device, non_blocking=True) for k in MODEL_INPUTS
            if k in batch and batch[k] is not None}


def dist_sum(value: float, device: torch.device) -> float:
    """Sum over ranks; the value itself without a process group."""
    if not dist.is_initialized():
        return float(value)
    t = torch.tensor([float(value)], device=device, dtype=torch.float64 if device.type == "cpu" else torch.float32)
    dist.all_reduce(t)
    return float(t.item())
