"""Conversation JSON (LLaVA / LLaVA-Med, ShareGPT as LLaMA-Factory reads it) -> rows of any
registered task.

    medmix ingest conversations llava_med_vqa.json --task vqa_rad --images-root images/
    medmix ingest conversations sharegpt.jsonl --task pubmedqa

Layouts:
- LLaVA / LLaVA-Med: a JSON list of `{"id", "image": "rel/path.jpg", "conversations":
  [{"from": "human", "value": "<image>\\nQuestion"}, {"from": "gpt", "value": "Answer"}, ...]}`.
- ShareGPT (LLaMA-Factory's `sharegpt` formatting, data/README.md there): `{"conversations":
  [{"from": "human"|"gpt"|"system"|..., "value"}], "images": ["path", ...]}`, or with OpenAI-style
  tags `{"messages": [{"role": "user"|"assistant"|"system", "content"}], "images": [...]}`.
A file is a JSON list (.json) or one record per line (.jsonl).

Mapping: every user turn followed by an assistant turn is one example — the user text (its
`<image>` tokens removed) is the context `question`, the assistant text the target (tasks with
options: the answer must name an option — text, letter or index). System turns are skipped. A
record's image(s) go with each of its turns; a one-image task takes records with exactly one
image, and `<image>` tokens, when present, must match the images in number. Image paths are
relative to --images-root (default: the JSON file's folder). Split: the record's `split`, else
a hash of its image path (or id), so one image never straddles splits. Example id: the
record's `id` (else `<file stem>:<record>`), `#k` for its k-th turn when it has several.
Every bad record is an error naming the file, the record (1-based) and the field.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Sequence

from medmix.data.images import encode_png, square_resize
from medmix.data.ingest.common import (IngestError, IngestSummary, ItemResult, check_prompt, check_split,
                                       guarded, hash_split, resolve_option, run_parallel, write_ingest)
from medmix.data.ingest.image_folder import decode_file
from medmix.data.schema import Example
from medmix.data.store import ShardStore
from medmix.tasks import get_task
from medmix.tasks.spec import TaskSpec

KIND = "conversations"
USER = {"human", "user"}
ASSISTANT = {"gpt", "assistant", "model"}
SYSTEM = {"system"}
IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class Record:
    source: str
    index: int
    data: Any
    images_root: str
    stem: str


def read_records(path: Path) -> list[Any]:
    """The records of a .json list or a .jsonl file (a bad line is an error naming it)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise IngestError(f"cannot read as UTF-8 text ({exc})", source=str(path)) from None
    if path.suffix.lower() == ".jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise IngestError(f"not valid JSON ({exc.msg} at column {exc.colno})",
                                      source=str(path), row=n) from None
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IngestError(f"not valid JSON ({exc.msg} at line {exc.lineno}); a .json file holds "
                          f"one list of records (use .jsonl for one record per line)",
                          source=str(path)) from None
    if not isinstance(data, list):
        raise IngestError(f"expected a JSON list of records, got {type(data).__name__}", source=str(path))
    return data


def turns(rec: dict, where: dict) -> list[tuple[str, str]]:
    """(user text, assistant text) pairs of a record, system turns skipped."""
    key = "conversations" if "conversations" in rec else "messages"
    msgs = rec.get(key)
    if not isinstance(msgs, list) or not msgs:
        raise IngestError("missing or empty: a record needs `conversations` (or `messages`)",
                          **where, field="conversations")
    pairs, pending = [], None
    for i, m in enumerate(msgs):
        field = f"{key}[{i}]"
        if not isinstance(m, dict):
            raise IngestError(f"expected an object, got {type(m).__name__}", **where, field=field)
        role = str(m.get("from", m.get("role", ""))).strip().lower()
        text = m.get("value", m.get("content"))
        if role in SYSTEM:
            continue
        if not isinstance(text, str):
            raise IngestError(f"no text (got {text!r}); the turn needs `value` (or `content`)",
                              **where, field=field)
        if role in USER and pending is None:
            pending = text
        elif role in ASSISTANT and pending is not None:
            pairs.append((pending, text))
            pending = None
        else:
            want = "a user turn (human/user)" if pending is None else "an assistant turn (gpt/assistant)"
            raise IngestError(f"role {role!r} where {want} belongs; turns alternate user, assistant",
                              **where, field=f"{field}.from" if "from" in m else f"{field}.role")
    if pending is not None:
        raise IngestError("the last user turn has no assistant answer", **where, field=key)
    if not pairs:
        raise IngestError("no user/assistant pair", **where, field=key)
    return pairs


def process_record(spec: TaskSpec, image_size: int, item: Record) -> ItemResult:
    where = {"source": item.source, "row": item.index}
    rec = item.data
    if not isinstance(rec, dict):
        raise IngestError(f"expected an object, got {type(rec).__name__}", **where)
    pairs = turns(rec, where)
    images = rec.get("images", rec.get("image"))
    images = [] if images in (None, "", []) else [images] if isinstance(images, str) else images
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        raise IngestError(f"expected an image path or a list of them, got {images!r}", **where,
                          field="images" if "images" in rec else "image")
    tokens = sum(u.count(IMAGE_TOKEN) for u, _ in pairs)
    if tokens and tokens != len(images):
        raise IngestError(f"{tokens} {IMAGE_TOKEN} token(s) for {len(images)} image(s)", **where,
                          field="images")
    want = 1 if spec.has_image else 0
    if len(images) != want and not spec.multi_image:
        raise IngestError(f"task {spec.name} takes {want} image(s) per example; the record has "
                          f"{len(images)}", **where, field="images")
    pngs, digest = [], hashlib.sha256(json.dumps(rec, sort_keys=True).encode())
    for p in images:
        path = Path(p) if Path(p).is_absolute() else Path(item.images_root) / p
        try:
            data = path.read_bytes()
            pixels = decode_file(data)
        except OSError as exc:
            raise IngestError(f"image {path} cannot be read ({exc.strerror or exc}); set "
                              f"--images-root to the folder the paths start from", **where,
                              field="images") from None
        except Exception as exc:  # noqa: BLE001 - PIL raises many types
            raise IngestError(f"image {path} does not decode ({type(exc).__name__}: {exc})",
                              **where, field="images") from None
        digest.update(data)
        pngs.append(encode_png(square_resize(pixels, image_size)))
    base = str(rec.get("id") or f"{item.stem}:{item.index}")
    split = check_split(rec.get("split"), **where) or hash_split(images[0] if images else base)
    result = ItemResult(name=f"{item.source}#{item.index}", digest=digest.hexdigest())
    for k, (user, answer) in enumerate(pairs):
        question = " ".join(user.replace(IMAGE_TOKEN, " ").split())
        answer = answer.strip()
        if not answer:
            raise IngestError("empty assistant answer", **where, field="conversations")
        context: dict[str, Any] = {"question": question} if question else {}
        label = None
        if spec.options:
            label = resolve_option(spec.options, answer, task=spec.name, field="conversations",
                                   **where)
            answer = spec.options[label]
        check_prompt(spec, context, len(pngs), **where)
        result.examples.append(Example(
            example_id=base if len(pairs) == 1 else f"{base}#{k}", task=spec.name, split=split,
            context=context, target=answer, label=label, source=f"{item.source}#{item.index}",
            images=list(pngs), image_format="png" if pngs else None))
    return result


def ingest_conversations(store: ShardStore, paths: Sequence[str], *, task: str,
                         images_root: str | None = None, on_error: str = "raise",
                         replace: bool = False, parallel: str = "auto",
                         progress: bool = True) -> IngestSummary:
    """Conversation JSON/JSONL files into `task` (see the module docstring)."""
    started = time.perf_counter()
    spec = get_task(task)
    if spec.multi_image:
        raise IngestError(f"task {task} takes several images per example; conversation ingest "
                          f"fills one-image and text tasks", field="task")
    items: list[Record] = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise IngestError("conversation file not found", source=str(path))
        root = images_root or str(path.parent)
        items += [Record(str(path), i, rec, root, path.stem)
                  for i, rec in enumerate(read_records(path), start=1)]
    if not items:
        raise IngestError("empty source: no records", source=", ".join(map(str, paths)))
    results = run_parallel(partial(_process, spec, store.config.image_size), items, desc=KIND,
                           parallel=parallel, progress=progress)
    return write_ingest(store, kind=KIND, task=spec.name, results=results,
                        source={"path": [str(p) for p in paths], "images_root": images_root,
                                "image_size": store.config.image_size},
                        on_error=on_error, replace=replace, unit="records", started=started)


def _process(spec: TaskSpec, image_size: int, item: Record) -> ItemResult:
    return guarded(partial(process_record, spec, image_size), item, f"{item.source}#{item.index}")
