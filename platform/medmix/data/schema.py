"""The one Arrow schema every task's shards share, and the row type ingest code produces.

A row is one example: its task and split, zero or more encoded images (a volume is a list of
slices, a pileup is one image), the task's context fields as a JSON string, the target text,
an optional class label, and where it came from. Ingest code builds `Example`s; the store
turns them into Arrow; the stream decodes them back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
IMAGE_FORMATS = ("png", "jpeg", "npy")

SCHEMA = pa.schema([
    pa.field("example_id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("images", pa.list_(pa.binary()), nullable=False),
    pa.field("image_format", pa.string()),
    pa.field("context", pa.string(), nullable=False),
    pa.field("target", pa.string(), nullable=False),
    pa.field("label", pa.int32()),
    pa.field("source", pa.string(), nullable=False),
], metadata={"medmix.schema_version": str(SCHEMA_VERSION)})


@dataclass
class Example:
    """One row of the shard store, before it becomes Arrow."""

    example_id: str
    task: str
    split: str
    context: dict[str, Any]
    target: str
    source: str
    images: list[bytes] = field(default_factory=list)
    image_format: str | None = None
    label: int | None = None

    def to_row(self) -> dict[str, Any]:
        return {
            "example_id": self.example_id, "task": self.task, "split": self.split,
            "images": list(self.images), "image_format": self.image_format,
            "context": json.dumps(self.context, sort_keys=True, ensure_ascii=False),
            "target": self.target, "label": self.label, "source": self.source,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Example":
        return cls(example_id=row["example_id"], task=row["task"], split=row["split"],
                   context=json.loads(row["context"]), target=row["target"], source=row["source"],
                   images=list(row["images"] or []), image_format=row["image_format"],
                   label=row["label"])


class RowError(ValueError):
    """A row that cannot be stored; the message names the field and the source."""


def check_example(ex: Example, known_tasks: set[str] | None = None) -> None:
    where = f"{ex.source or '<unknown source>'} (example {ex.example_id!r})"
    if not ex.example_id:
        raise RowError(f"{where}: field example_id is empty")
    if known_tasks is not None and ex.task not in known_tasks:
        raise RowError(f"{where}: field task = {ex.task!r} is not a registered task "
                       f"(see `medmix tasks`)")
    if ex.split not in SPLITS:
        raise RowError(f"{where}: field split = {ex.split!r} must be one of {', '.join(SPLITS)}")
    if ex.images and ex.image_format not in IMAGE_FORMATS:
        raise RowError(f"{where}: field image_format = {ex.image_format!r} must be one of "
                       f"{', '.join(IMAGE_FORMATS)} when images are present")
    if not isinstance(ex.context, dict):
        raise RowError(f"{where}: field context must be a mapping of the task's fields")
    if not isinstance(ex.target, str):
        raise RowError(f"{where}: field target must be text, got {type(ex.target).__name__}")
