"""Configuration of the per-rank data stream (kept apart from `stream.py`, which imports Ray)."""

from __future__ import annotations

from dataclasses import dataclass

from medmix.config import ConfigError, option


@dataclass
class StreamConfig:
    """How each training rank turns its slice of the mixture plan into tensors."""

    max_seq_len: int = option(512, "tokens per example after image expansion; longer prompts lose their exemplar first", ge=16)
    prefetch_batches: int = option(4, "batches each rank prepares ahead of the training loop", ge=0)
    steps_per_block: int = option(16, "plan steps handed to Ray Data at once (one Dataset per block)", ge=1)
    num_cpus_per_task: float = option(0.25, "logical CPUs one preprocessing task asks Ray for", gt=0)
    concurrency: int = option(2, "preprocessing tasks that may run at once per rank", ge=1)
    on_error: str = option("raise", "a corrupt row: `raise` (fail naming shard and row) or `skip` (count, report, replace)",
                           choices=("raise", "skip"))
    exemplar: bool = option(True, "render the one-shot exemplar in every prompt (Med-PaLM M framing)")
    augment: bool = option(False, "training images get the random flips/crops their task allows (TaskSpec.augment); seeded per example and epoch, never applied to validation")

    def validate(self) -> None:
        if self.prefetch_batches > 64:
            raise ConfigError(f"prefetch_batches = {self.prefetch_batches} holds too many batches in memory (max 64)")
