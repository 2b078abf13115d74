"""Configuration of the bundled synthetic suite."""

from __future__ import annotations

from dataclasses import dataclass

from medmix.options import ConfigError, option
from medmix.tasks import task_names


@dataclass
class SynthConfig:
    """The bundled synthetic counterpart of MultiMedBench (`medmix synth`)."""

    size: str = option("small", "suite size: tiny (unit tests, ~1 s), small (~300 train rows per task, "
                       "seconds to build; tests and demo) or medium (~10x small, benchmarks)",
                       choices=("tiny", "small", "medium"))
    seed: int = option(0, "seed of every random choice in the suite (same seed, same bytes)", ge=0)
    tasks: list[str] = option(default_factory=list, help="tasks to generate; empty = every task the suite knows")
    image_size: int = option(256, "longest side of generated images before the store's pad/resize, px", ge=32, le=2048)
    workers: int = option(0, "processes drawing examples; 0 = one per CPU core (at most 8), 1 for tiny", ge=0, le=256)

    def validate(self) -> None:
        registered = task_names()
        for name in self.tasks:
            if name not in registered:
                raise ConfigError(f"synth.tasks: {name!r} is not a registered task; registered tasks: "
                                  f"{', '.join(registered)}")
