"""Configuration of training: optimisation, workers, checkpoints, and test-only fault hooks."""

from __future__ import annotations

from dataclasses import dataclass, field

from medmix.model.config import LoraConfig, parse_trainable
from medmix.options import ConfigError, option


@dataclass
class TrainConfig:
    """The training job: steps, optimiser, Ray Train workers, metrics and checkpoint cadence."""

    steps: int = option(20, "optimizer steps to train", ge=1)
    lr: float = option(3e-4, "peak learning rate (AdamW)", gt=0, le=1)
    min_lr_ratio: float = option(0.1, "cosine decays to lr * min_lr_ratio", ge=0, le=1)
    warmup_steps: int = option(2, "linear warmup steps", ge=0)
    weight_decay: float = option(0.01, "AdamW weight decay", ge=0)
    beta2: float = option(0.95, "AdamW beta2", gt=0, lt=1)
    grad_clip: float = option(1.0, "clip the global grad norm to this (0 = off)", ge=0)
    grad_accum: int = option(1, "micro-batches per optimizer step on each rank", ge=1)
    num_workers: int = option(2, "Ray Train workers (one per GPU on a GPU cluster)", ge=1)
    use_gpu: str = option("auto", "auto (GPU if the cluster has one), true or false", choices=("auto", "true", "false"))
    cpus_per_worker: float = option(1.0, "logical CPUs each train worker asks Ray for", gt=0)
    activation_checkpointing: bool = option(False, "recompute ViT blocks and decoder layers in backward")
    compile: bool = option(False, "torch.compile each block (GPU)")
    log_every: int = option(5, "report metrics every N steps", ge=1)
    eval_every: int = option(10, "validation loss per task every N steps (0 = only at the end)", ge=0)
    eval_batches: int = option(2, "validation batches per task per evaluation", ge=1)
    eval_scores: bool = option(False, "at every evaluation also score each task on its fixed validation subset "
                                      "with bootstrap intervals (sweep.eval_rows, sweep.objective; sweep trials "
                                      "turn it on)")
    checkpoint_every: int = option(10, "save a checkpoint every N steps (and at the end)", ge=1)
    keep_last: int = option(2, "checkpoints kept besides the best", ge=1)
    storage_path: str = option("medmix-runs/checkpoints", "where Ray Train writes run directories (local, NFS or s3://)")
    max_failures: int = option(2, "worker-group restarts from the latest checkpoint before the run fails", ge=0)
    deterministic: bool = option(True, "deterministic algorithms on CPU (exact resume checks)")
    trainable: str = option("all", "what trains (the rest is frozen, with no optimizer state): all, projector "
                                   "(stage 1), projector+lora (stage 2), or +/,-joined parts (projector, vision, "
                                   "decoder, lora) and globs over module names")
    init_from: str = option("", "warm start: a new run (step 0, new optimizer) from these weights: a registry "
                                "version (medmix@champion, medmix/3), an export directory, or a checkpoint or "
                                "run directory; '' = the model's own init (a resumed run ignores it)")
    lora: LoraConfig = field(default_factory=LoraConfig,
                             metadata={"help": "LoRA adapters for train.trainable = ...+lora"})

    def validate(self) -> None:
        if self.warmup_steps > self.steps:
            raise ConfigError(f"warmup_steps = {self.warmup_steps} is more than steps = {self.steps}")
        terms = parse_trainable(self.trainable)
        if "lora" in terms and not (self.lora.target_modules or self.lora.vision_target_modules):
            raise ConfigError(f"train.trainable = {self.trainable!r} asks for LoRA but train.lora.target_modules "
                              f"and train.lora.vision_target_modules are both empty; name the Linear "
                              f"layers to adapt (e.g. [\"q_proj\", \"v_proj\"])")


@dataclass
class DebugConfig:
    """Test-only hooks: injected faults that prove recovery works. Leave at defaults in real runs."""

    fail_in_checkpoint_at_step: int = option(0, "kill a train worker inside the checkpoint of this step, after "
                                                "its part is stored and before the commit, once per run (0 = never)",
                                             ge=0)
    fail_rank: int = option(0, "which rank the injected fault kills", ge=0)
    pause_at_step: int = option(0, "rank 0 sleeps debug.pause_s right after this step (and its checkpoint), "
                                   "once per run: a window for a test to kill a node (0 = never)", ge=0)
    pause_s: float = option(60.0, "how long the debug.pause_at_step pause lasts", ge=0)
