"""Configuration of the bundled synthetic suite."""

from __future__ import annotations

from dataclasses import dataclass, field

from medmix.config import option


@dataclass
class SynthConfig:
    """The bundled synthetic counterpart of MultiMedBench (`medmix synth`)."""

    size: str = option("small", "suite size: small (seconds, tests and demo) or medium (minutes, benchmarks)",
                       choices=("tiny", "small", "medium"))
    seed: int = option(0, "seed of every random choice in the suite (same seed, same bytes)", ge=0)
    tasks: list[str] = option(default_factory=list, help="tasks to generate; empty = every task the suite knows")
    image_size: int = option(256, "longest side of generated images before the store's pad/resize, px", ge=32, le=2048)
