"""A folder of PNG/JPEG images + a labels CSV -> image rows of one task (classification first).

    medmix ingest images photos/ --task derm_pad                  # reads photos/labels.csv
    medmix ingest images patches/ --labels patches.csv --task mammo_cbis_mass

The CSV drives the ingest, one example per row:
- `file` (required): the image's path relative to the folder (or absolute);
- `label` for tasks with options (option text, letter or 0-based index), `target` for
  free-text tasks (VQA answers, reports);
- optional `split` (train/val/test; else a hash of `group` or of the file, so rows of one
  image never straddle splits), `id` (else the file path, `#k`-suffixed for a file listed
  k+1 times), `group` (e.g. a patient id);
- every other column is a context field (`age`, `region`, `question`, `condition`, ...).

Each image is decoded (EXIF rotation applied: phone photos), padded to a square, resized to the
store's image size (`square_resize`) and stored as PNG. Images in the folder that the CSV does
not list are counted, not ingested.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps

from medmix.data.images import encode_png, square_resize, to_uint8_rgb
from medmix.data.ingest.common import (IngestError, IngestSummary, ItemResult, LabelRow, check_prompt, check_split,
                                       guarded, hash_split, image_task, list_files, occurrence_ids,
                                       parse_context_args, read_labels_csv, run_parallel, target_and_label,
                                       write_ingest)
from medmix.data.schema import Example
from medmix.data.store import ShardStore, sha256_file
from medmix.tasks.spec import TaskSpec

KIND = "images"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageItem:
    path: str
    """The image file on disk."""
    row: LabelRow
    example_id: str


@dataclass(frozen=True)
class ImageOptions:
    spec: TaskSpec
    image_size: int


def decode_file(data: bytes) -> Any:
    """Image bytes -> HxW or HxWx3 uint8, upright (EXIF orientation applied). Raises anything PIL does."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return to_uint8_rgb(np.asarray(im))  # 16-bit grey: stretch to 8 bits
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")  # palette, alpha, CMYK
        return np.asarray(im)


def process_row(opts: ImageOptions, item: ImageItem) -> ItemResult:
    """One CSV row -> one example; a missing or undecodable file names the file and the row."""
    row, spec = item.row, opts.spec
    target, label = target_and_label(spec, row.values, source=row.source, row=row.row)
    context = row.context()
    check_prompt(spec, context, 1, source=row.source, row=row.row)
    split = check_split(row.values.get("split"), source=row.source, row=row.row)
    path = Path(item.path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"image {path} cannot be read ({exc.strerror or exc})",
                          source=row.source, row=row.row, field="file") from None
    try:
        pixels = decode_file(data)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes
        raise IngestError(f"image {path} does not decode ({type(exc).__name__}: {exc})",
                          source=row.source, row=row.row, field="file") from None
    if split is None:
        split = hash_split(str(row.values.get("group") or row.values["file"]))
    ex = Example(example_id=item.example_id, task=spec.name, split=split, context=context,
                 target=target, label=label, source=f"{path} ({row.source}:{row.row})",
                 images=[encode_png(square_resize(pixels, opts.image_size))], image_format="png")
    return ItemResult(name=str(row.values["file"]), examples=[ex],
                      digest=hashlib.sha256(data).hexdigest())


def plan_items(folder: str, labels: str | None, spec: TaskSpec,
               context: dict[str, Any]) -> tuple[list[ImageItem], str, int]:
    """(one item per CSV row, the CSV path, images in the folder that no row names)."""
    root = Path(folder)
    if not root.is_dir():
        raise IngestError("image folder not found", source=str(root))
    csv_path = str(Path(labels) if labels else root / "labels.csv")
    needed = ["file", "label" if spec.options else "target"]
    rows = read_labels_csv(csv_path, required=needed)
    rows = [LabelRow(r.source, r.row, {**context, **r.values}) for r in rows]
    ids = occurrence_ids(rows, lambda r: str(r.values.get("file", "")))
    items, named = [], set()
    for r, example_id in zip(rows, ids):
        rel = str(r.values.get("file") or "")
        p = Path(rel) if Path(rel).is_absolute() else root / rel
        named.add(p.resolve())
        items.append(ImageItem(str(p), r, example_id))
    on_disk = [f for f, _ in list_files([root]) if f.suffix.lower() in IMAGE_SUFFIXES]
    unlisted = sum(1 for f in on_disk if f.resolve() not in named)
    return items, csv_path, unlisted


def _process_guarded(opts: ImageOptions, item: ImageItem) -> ItemResult:
    return guarded(partial(process_row, opts), item, str(item.row.values.get("file")))


def ingest_images(store: ShardStore, folder: str, *, task: str, labels: str | None = None,
                  context: Sequence[str] | dict = (), on_error: str = "raise",
                  replace: bool = False, parallel: str = "auto",
                  progress: bool = True) -> IngestSummary:
    """Ingest a folder of images described by a labels CSV (see the module docstring)."""
    started = time.perf_counter()
    spec = image_task(task)
    ctx = context if isinstance(context, dict) else parse_context_args(context)
    items, csv_path, unlisted = plan_items(folder, labels, spec, ctx)
    opts = ImageOptions(spec=spec, image_size=store.config.image_size)
    results = run_parallel(partial(_process_guarded, opts), items, desc="images",
                           parallel=parallel, progress=progress)
    summary = write_ingest(store, kind=KIND, task=spec.name, results=results,
                           source={"path": str(folder), "labels": csv_path,
                                   "image_size": opts.image_size},
                           on_error=on_error, replace=replace, unit="rows",
                           extra_digests=[("labels.csv", sha256_file(csv_path))],
                           started=started)
    if unlisted:
        summary.notes["images in the folder that the labels CSV does not list"] = unlisted
    return summary
