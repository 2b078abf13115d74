"""What every synthetic task generator shares: seeding, sizes, the generator registry.

A generator is a function `Key -> Sample`. The `Key` names one example (seed, task, split,
index) and hands out random generators seeded from exactly that, so an example never depends
on which other examples were built, in what order, or at what size: the `small` suite's
train rows are the first rows of the `medium` suite's train split.

    @generator("derm_pad")
    def derm(key: Key) -> Sample:
        rng = key.rng()
        ...

Another module adds a task to the suite the same way (`@generator("my_task")`) and is listed
in `medmix.data.synth.suite.GENERATOR_MODULES`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from medmix.data.schema import SPLITS

# rows per split for each suite size; `small` learns in a few hundred debug steps, `medium`
# is ~10x for benchmarks, `tiny` is for unit tests (every task and split, in about a second)
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"train": 6, "val": 3, "test": 3},
    "small": {"train": 300, "val": 50, "test": 100},
    "medium": {"train": 3000, "val": 500, "test": 1000},
}


def stable_hash(text: str) -> int:
    """A process-independent 32-bit hash (Python's `hash` is salted per process)."""
    return zlib.crc32(text.encode("utf-8"))


@dataclass(frozen=True)
class Key:
    """One example of the suite: every random choice about it is seeded from these fields."""

    seed: int
    task: str
    split: str
    index: int
    raw_size: int = 256
    """Longest side of the drawn image before the store's pad/resize, px."""

    @property
    def example_id(self) -> str:
        return f"{self.task}-{self.split}-{self.index:06d}"

    @property
    def source(self) -> str:
        return f"synth:{self.task}:{self.seed}:{self.split}-{self.index:06d}"

    def rng(self, stream: str = "") -> np.random.Generator:
        """The example's generator; `stream` names an independent one (e.g. a shared study)."""
        return self.rng_for(stream or self.task)

    def rng_for(self, namespace: str, index: int | None = None) -> np.random.Generator:
        """A generator for (seed, namespace, split, index): tasks that share a namespace share
        draws — the CXR report and classification tasks read the same study this way."""
        entropy = [self.seed, stable_hash(namespace), SPLITS.index(self.split),
                   self.index if index is None else index]
        return np.random.default_rng(np.random.SeedSequence(entropy))

    def balanced(self, num_classes: int, namespace: str | None = None) -> int:
        """A class label balanced within every block of `num_classes` consecutive indices."""
        block = self.index // num_classes
        rng = self.rng_for(f"{namespace or self.task}/labels", block)
        return int(rng.permutation(num_classes)[self.index % num_classes])


@dataclass
class Sample:
    """What a generator returns: the row's content before encoding."""

    context: dict[str, Any]
    target: str
    label: int | None = None
    images: list[np.ndarray] = field(default_factory=list)
    """uint8 images: HxW (grayscale, stored as 8-bit gray PNG) or HxWx3 (RGB)."""


Generator = Callable[[Key], Sample]
GENERATORS: dict[str, Generator] = {}


def generator(task: str) -> Callable[[Generator], Generator]:
    """Register the synthetic generator of `task` (a registered TaskSpec name)."""
    def wrap(fn: Generator) -> Generator:
        if task in GENERATORS and GENERATORS[task] is not fn:
            raise ValueError(f"a synthetic generator for task {task!r} is already registered")
        GENERATORS[task] = fn
        return fn
    return wrap


def pick(rng: np.random.Generator, items: tuple | list) -> Any:
    return items[int(rng.integers(len(items)))]


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def option_label(options: tuple[str, ...] | list[str], answer: str) -> int:
    return list(options).index(answer)


def choose_qa(rng: np.random.Generator, pairs: list[tuple[str, str]], want: int) -> tuple[str, str]:
    """Pick a question: want 0 = open, 1 = closed 'yes', 2 = closed 'no' (falling back in turn)."""
    groups = ([p for p in pairs if p[1] not in ("yes", "no")], [p for p in pairs if p[1] == "yes"],
              [p for p in pairs if p[1] == "no"])
    for g in (groups[want], groups[0], groups[1], groups[2]):
        if g:
            return g[int(rng.integers(len(g)))]
    raise ValueError("no question pairs")
