"""Configuration of `medmix evaluate`: which split, how many examples, how answers are produced."""

from __future__ import annotations

from dataclasses import dataclass

from medmix.config import option


@dataclass
class EvalConfig:
    """Batch evaluation of a checkpoint or registered model over each task's held-out rows."""

    split: str = option("test", "split to evaluate on", choices=("train", "val", "test"))
    max_examples_per_task: int = option(0, "evaluate at most this many examples per task (0 = all)", ge=0)
    max_new_tokens: int = option(64, "generation budget per free-text answer, in tokens", ge=1)
    batch_size: int = option(16, "examples per inference batch (per actor)", ge=1)
    blank_images: bool = option(False, "replace every image by a blank one (proves answers depend on the image)")
    report_dir: str = option("medmix-runs/eval", "where the Markdown report and the bar chart are written")
