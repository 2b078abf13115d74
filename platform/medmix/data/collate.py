"""ExampleRefs -> one model-ready batch: read rows, decode images, render + tokenize, pad.

This is the row -> tensors code path every consumer shares: the Ray Data stream runs
`build_batch` inside its preprocessing tasks, the in-process stream and evaluation call it
directly. It imports neither Ray nor torch: it returns numpy arrays (the stream turns them
into torch tensors on the training side).

    spec = BatchSpec(store_root, tokenizer, image_size=224, num_image_tokens=16, max_seq_len=512,
                     task_names=plan.task_names, orders={t: o.spec() for t, o in plan.orders.items()})
    batch = build_batch(spec, refs, step=0)
    batch["input_ids"].shape     # (len(refs), longest sequence)
    batch["meta"]                # step, skipped rows, exemplars dropped, prompts truncated

Bad data: a shard that will not open, an unreadable row group, an image that will not decode
or a prompt that cannot fit. With `on_error="raise"` the batch fails with `StreamError` naming
the shard path, row and task. With `"skip"` the slot is filled deterministically with the
next readable example of the same task's order (positions +1, +2, ... of the same epoch,
rolling into the next), and the bad row is listed in `batch["meta"]["skipped"]` — the batch is
never short.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medmix.data.encode import IGNORE_INDEX, EncodedExample, EncodeError, encode_example
from medmix.data.images import ImageDecodeError, augment_image, decode_image, to_model_input
from medmix.data.mixture import ExampleRef, TaskOrder, seeded_rng
from medmix.data.store import StoreError, read_rows
from medmix.storage import location
from medmix.tasks import get_task
from medmix.tasks.files import register_carried

MAX_FILL_ATTEMPTS = 256  # skip mode: candidates tried for one bad slot before giving up


class StreamError(RuntimeError):
    """Data the stream cannot turn into a batch; the message names shard, row and task."""


class RowFailure(Exception):
    """One example that failed (internal; becomes a StreamError or a skipped entry)."""

    def __init__(self, ref: ExampleRef, reason: str):
        super().__init__(reason)
        self.ref = ref
        self.reason = reason

    def describe(self, store_root: str) -> str:
        return (f"shard {location(store_root).join(self.ref.shard)}, row {self.ref.row} (task {self.ref.task}, "
                f"epoch {self.ref.epoch}, position {self.ref.position}): {self.reason}")


@dataclass
class BatchSpec:
    """Everything a preprocessing task needs to turn refs into a batch (picklable, small)."""

    store_root: str
    tokenizer: Any
    """A `MedmixTokenizer`."""
    image_size: int
    """Side of the square image the vision encoder sees, px."""
    num_image_tokens: int
    """Decoder positions per image."""
    max_seq_len: int
    task_names: list[str]
    """The index space of `task_ids` (the plan's task list)."""
    exemplar: bool = True
    on_error: str = "raise"
    orders: dict[str, dict] = field(default_factory=dict)
    """`TaskOrder.spec()` per task: where skip mode finds a replacement example."""
    augment: bool = False
    """Apply each task's allowed `TaskSpec.augment` ops (training streams only)."""
    seed: int = 0
    """The plan's seed; augmentation draws from (seed, task, example, epoch)."""
    image_mean: tuple[float, ...] | None = None
    """Per-channel mean pixels are normalised with (the vision tower's; None = ImageNet)."""
    image_std: tuple[float, ...] | None = None
    """Per-channel std, as image_mean."""
    tasks: dict[str, dict] = field(default_factory=dict)
    """Definitions of the plan's tasks that are not built in (`medmix.tasks.files.carried`): a
    preprocessing task in a fresh Ray worker registers them before rendering a prompt."""


@dataclass
class Prepared:
    """One example ready to collate."""

    ref: ExampleRef
    example_id: str
    encoded: EncodedExample
    images: list[np.ndarray]


def read_refs(store_root: str, refs: list[ExampleRef]) -> dict[ExampleRef, dict | RowFailure]:
    """Rows for refs, one `read_rows` per shard; a failing shard is re-read row by row."""
    by_shard: dict[str, list[ExampleRef]] = defaultdict(list)
    for r in refs:
        by_shard[r.shard].append(r)
    out: dict[ExampleRef, dict | RowFailure] = {}
    for shard, group in by_shard.items():
        try:
            rows = read_rows(store_root, shard, [r.row for r in group])
            out.update(zip(group, rows))
            continue
        except (StoreError, OSError) as exc:
            if len(group) == 1:
                out[group[0]] = RowFailure(group[0], str(exc))
                continue
        for r in group:  # isolate the bad rows so the message (and skip) is exact
            try:
                out[r] = read_rows(store_root, shard, [r.row])[0]
            except (StoreError, OSError) as exc:
                out[r] = RowFailure(r, str(exc))
    return out


def _prepare(spec: BatchSpec, ref: ExampleRef, row: dict) -> Prepared:
    if row.get("task") != ref.task:
        raise RowFailure(ref, f"row holds task {row.get('task')!r}, the manifest lists the shard under "
                              f"{ref.task!r} (store changed under the plan?)")
    task = get_task(ref.task)
    try:
        context = json.loads(row["context"])
    except (TypeError, json.JSONDecodeError) as exc:
        raise RowFailure(ref, f"field context is not valid JSON ({exc})") from None
    images = []
    rng = seeded_rng(spec.seed, "augment", ref.task, ref.example_index, ref.epoch) \
        if spec.augment and task.augment else None
    for i, data in enumerate(row.get("images") or []):
        try:
            pixels = decode_image(data, row.get("image_format"))
            if rng is not None:
                pixels = augment_image(pixels, task.augment, rng)
            images.append(to_model_input(pixels, spec.image_size, spec.image_mean, spec.image_std))
        except ImageDecodeError as exc:
            raise RowFailure(ref, f"image {i} of example {row.get('example_id')!r}: {exc}") from None
    try:
        encoded = encode_example(spec.tokenizer, task, context, row["target"], len(images),
                                 spec.num_image_tokens, spec.max_seq_len, exemplar=spec.exemplar)
    except (EncodeError, ValueError) as exc:
        raise RowFailure(ref, f"example {row.get('example_id')!r}: {exc}") from None
    return Prepared(ref, row["example_id"], encoded, images)


def prepare_refs(spec: BatchSpec, refs: list[ExampleRef]) -> tuple[list[Prepared], list[dict]]:
    """Prepared examples in ref order, plus the skipped entries (skip mode)."""
    rows = read_refs(spec.store_root, refs)
    out: list[Prepared | RowFailure] = []
    for ref in refs:
        got = rows[ref]
        if not isinstance(got, RowFailure):
            try:
                got = _prepare(spec, ref, got)
            except RowFailure as failure:
                got = failure
        out.append(got)
    skipped: list[dict] = []
    for i, item in enumerate(out):
        if not isinstance(item, RowFailure):
            continue
        if spec.on_error != "skip":
            raise StreamError(item.describe(spec.store_root))
        skipped.append({"task": item.ref.task, "shard": item.ref.shard, "row": item.ref.row,
                        "reason": item.reason})
        out[i] = _fill(spec, item.ref, skipped)
    return out, skipped  # type: ignore[return-value]


def _fill(spec: BatchSpec, bad: ExampleRef, skipped: list[dict]) -> Prepared:
    """The next readable example after `bad` in its task's order (deterministic)."""
    if bad.task not in spec.orders:
        raise StreamError(f"skip mode cannot replace {bad}: no order for task {bad.task}")
    order = TaskOrder(**spec.orders[bad.task])
    for k in range(1, min(MAX_FILL_ATTEMPTS, order.num_rows) + 1):
        cand = order.ref(bad.epoch, bad.position + k)
        got = read_refs(spec.store_root, [cand])[cand]
        if not isinstance(got, RowFailure):
            try:
                return _prepare(spec, cand, got)
            except RowFailure as failure:
                got = failure
        skipped.append({"task": cand.task, "shard": cand.shard, "row": cand.row, "reason": got.reason,
                        "while_filling": True})
    raise StreamError(f"skip mode found no readable example of task {bad.task} in the "
                      f"{min(MAX_FILL_ATTEMPTS, order.num_rows)} positions after "
                      f"{RowFailure(bad, '').describe(spec.store_root)}; the task's shards look damaged "
                      f"(run `medmix data verify`)")


def collate(spec: BatchSpec, items: list[Prepared]) -> dict[str, Any]:
    """Pad right to the longest sequence; images stacked in row order."""
    tok = spec.tokenizer
    n = len(items)
    width = max((len(p.encoded) for p in items), default=0)
    input_ids = np.full((n, width), tok.pad_id, dtype=np.int64)
    attention_mask = np.zeros((n, width), dtype=np.int64)
    labels = np.full((n, width), IGNORE_INDEX, dtype=np.int64)
    for i, p in enumerate(items):
        k = len(p.encoded)
        input_ids[i, :k] = p.encoded.input_ids
        attention_mask[i, :k] = 1
        labels[i, :k] = p.encoded.labels if p.encoded.labels is not None else IGNORE_INDEX
    images = [im for p in items for im in p.images]
    s = spec.image_size
    pixel_values = np.stack(images).astype(np.float32, copy=False) if images else np.zeros((0, 3, s, s), np.float32)
    index = {t: i for i, t in enumerate(spec.task_names)}
    return {
        "input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
        "pixel_values": pixel_values,
        "image_counts": np.array([len(p.images) for p in items], dtype=np.int64),
        "task_ids": np.array([index.get(p.ref.task, -1) for p in items], dtype=np.int64),
        "example_ids": [p.example_id for p in items],
        "tasks": [p.ref.task for p in items],
        "meta": {"exemplar_dropped": sum(not p.encoded.exemplar for p in items),
                 "truncated": sum(p.encoded.truncated for p in items)},
    }


def build_batch(spec: BatchSpec, refs: list[ExampleRef], step: int = -1) -> dict[str, Any]:
    """refs -> a collated batch (numpy); `meta` holds the step and the skipped entries."""
    if spec.tasks:
        register_carried(spec.tasks, "the stream's batch spec")
    try:
        items, skipped = prepare_refs(spec, refs)
    except StreamError as exc:
        raise StreamError(f"step {step}: {exc}" if step >= 0 else str(exc)) from None
    batch = collate(spec, items)
    batch["meta"].update(step=step, skipped=skipped)
    return batch
