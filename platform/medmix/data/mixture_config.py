"""Configuration of the task mixture (kept light: the plan itself lives in `mixture.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from medmix.config import ConfigError, option


@dataclass
class MixtureConfig:
    """Which tasks train together, in what shares, and how global batches are drawn."""

    strategy: str = option("medpalm", "where weights come from: medpalm (the paper's shares), "
                           "proportional (to train rows, with temperature/floor/cap) or explicit (`weights`)",
                           choices=("medpalm", "proportional", "explicit"))
    weights: dict[str, float] = option(default_factory=dict, help="task -> weight; with strategy=explicit the whole mixture, "
                                       "otherwise per-task replacements of the strategy's weights")
    temperature: float = option(1.0, "proportional: weight ∝ rows^(1/temperature); >1 flattens toward uniform", gt=0)
    floor: float = option(0.0, "minimum share of every included task after normalising", ge=0, lt=1)
    cap: float = option(1.0, "maximum share of any task after normalising", gt=0, le=1)
    tasks: list[str] = option(default_factory=list, help="tasks to include; empty = every task with train rows")
    exclude: list[str] = option(default_factory=list, help="tasks to leave out (ablations)")
    mode: str = option("stratified", "random: shares hold in expectation; stratified: every global batch holds "
                       "each task's share (largest remainder with carry)", choices=("random", "stratified"))
    global_batch_size: int = option(16, "examples per optimizer step across all ranks", ge=1)
    shuffle_window: int = option(1024, "rows shuffled together inside a task's epoch order", ge=1)

    def validate(self) -> None:
        for task, w in self.weights.items():
            if w < 0:
                raise ConfigError(f"weights.{task} = {w} is negative; weights must be >= 0")
        if self.strategy == "explicit" and not self.weights:
            raise ConfigError("strategy = explicit needs [mixture.weights] with at least one task")
        if self.floor > self.cap:
            raise ConfigError(f"floor = {self.floor} is above cap = {self.cap}")
