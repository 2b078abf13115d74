"""Hugging Face `datasets` data on disk -> rows of any registered task, with a column mapping.

    medmix ingest hf vqa_rad ./vqa_rad_hf --map question=question --map answer=answer --map image=image
    medmix ingest hf medqa ./medqa_parquet/ --map question=sent1 --map options=choices --map answer=label

Sources (no hub access: a hub name is never resolved; download the files first):
- a folder written by `Dataset.save_to_disk` (`state.json`, `dataset_info.json`, `data-*.arrow`)
  or `DatasetDict.save_to_disk` (`dataset_dict.json`, one such folder per split), opened with
  `datasets.load_from_disk` (memory-mapped, nothing copied);
- a folder (or file) of `.parquet` / `.arrow` files, as a hub repository ships them
  (`data/train-00000-of-00002.parquet`, `test/...`), read in record batches with pyarrow. The
  `datasets` Features stored in the files' schema metadata tell Image and ClassLabel columns.
Split: a DatasetDict's split names, else the split named in a file's path (train/training,
validation/valid/val/dev, test/testing); `--split` forces one for everything, and a mapped
`split` column wins per row. Rows with no split anywhere get the stable 80/10/10 hash split of
their `group` column (a patient or image id) if mapped, else of their image bytes (one image
never straddles splits), else of their id.

Mapping (`--map FIELD=COLUMN`, repeatable): FIELD is one of the task's fields -- `answer`
(the target; for option tasks the option text, its letter or its index; a ClassLabel column
gives its class name), `question`, `options` (MCQ: a list column), `image` (an Image column, a
list of them, image bytes or a path relative to the source folder), the task's context fields
and prompt placeholders (e.g. `condition`, `view`) -- or `id`, `split`, `group`. A field whose
name is also a column is mapped to it without `--map`. A mapped column the data lacks, a field
the task does not know, or a field the task needs with no column are errors naming the field,
the column and the columns there are, before any row is read. A bad row (no answer, an
answer that is not an option, an image that does not decode) names the source, split, row
index (`ds[i]`) and field; `--on-error skip` quarantines it.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict, Features, load_from_disk

from medmix.data.images import encode_png, square_resize
from medmix.data.ingest.common import (IngestError, ItemResult, IngestSummary, check_prompt, check_split,
                                       guarded, hash_split, resolve_option, run_parallel, write_ingest)
from medmix.data.ingest.image_folder import decode_file
from medmix.data.schema import SPLITS, Example
from medmix.data.store import ShardStore
from medmix.tasks import get_task
from medmix.tasks.spec import TaskSpec

KIND = "hf"
ROWS_PER_ITEM = 64
"""Rows one work item (a Ray task's unit) turns into examples."""
ITEMS_PER_BLOCK = 64
"""Work items handed to the parallel map at once (bounds memory on large datasets)."""
RESERVED = ("answer", "image", "options", "question", "id", "split", "group")
ANSWER_ALIASES = ("answer", "target", "label")
SPLIT_WORDS = {"train": "train", "training": "train", "validation": "val", "valid": "val", "val": "val",
               "dev": "val", "test": "test", "testing": "test"}
_SPLIT_RE = re.compile(r"(?:^|[-_./\\])(" + "|".join(sorted(SPLIT_WORDS, key=len, reverse=True)) + r")(?=$|[-_./\\])")


# --- the source: splits of record batches -------------------------------------------------

@dataclass
class Part:
    """One readable piece of the source: a loaded split, or one parquet/arrow file."""

    label: str                 # how errors name it: `folder/train`, `data/test-00000.parquet`
    split: str | None          # the medmix split its rows get (None: per row)
    columns: list[str]
    features: Any              # datasets.Features (Image / ClassLabel columns), may be empty
    rows: int
    batches: Any               # () -> iterator of pyarrow RecordBatch / Table
    base_dir: Path             # image paths are relative to it
    key: str = ""              # in default example ids: the split name or file path ('' for one dataset)


def split_from_name(name: str) -> str | None:
    """The split a file or folder path names (`data/validation-00000-of-00001.parquet` -> val)."""
    found = _SPLIT_RE.findall(Path(name).as_posix().lower())
    return SPLIT_WORDS[found[-1]] if found else None


def _features_of(schema) -> Any:
    try:
        return Features.from_arrow_schema(schema)
    except Exception:  # noqa: BLE001 - a schema datasets cannot type: plain columns then
        return {}


def open_source(path: str | Path) -> list[Part]:
    """The parts of a saved dataset, a DatasetDict, or a folder/file of parquet/arrow files."""
    root = Path(path)
    if not root.exists():
        raise IngestError("no such file or folder (a Hugging Face hub name is not fetched: download "
                          "the dataset and save it with save_to_disk, or give its parquet folder)",
                          source=str(root))
    if root.is_dir() and ((root / "dataset_dict.json").is_file() or (root / "state.json").is_file()):
        return _saved_parts(root)
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".parquet", ".arrow")
        and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise IngestError("no dataset here: expected a save_to_disk folder (dataset_dict.json or "
                          "state.json) or .parquet/.arrow files", source=str(root))
    base = root if root.is_dir() else root.parent
    return [_file_part(f, base) for f in files]


def _saved_parts(root: Path) -> list[Part]:
    try:
        loaded = load_from_disk(str(root))
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for damaged folders
        raise IngestError(f"load_from_disk failed ({type(exc).__name__}: {exc})", source=str(root)) from None
    named = loaded.items() if isinstance(loaded, DatasetDict) else [(None, loaded)]
    parts = []
    for name, ds in named:
        assert isinstance(ds, Dataset)
        split = None
        if name is not None:
            split = SPLIT_WORDS.get(name.lower())
            if split is None:
                raise IngestError(f"split {name!r} of the DatasetDict is not one medmix knows "
                                  f"({', '.join(sorted(SPLIT_WORDS))}); give --split to put every "
                                  f"row in one split", source=str(root), field="split")
        arrow = ds.with_format("arrow")
        parts.append(Part(label=f"{root}/{name}" if name else str(root), split=split,
                          columns=list(ds.column_names), features=ds.features, rows=len(ds),
                          batches=partial(arrow.iter, batch_size=ROWS_PER_ITEM), base_dir=root,
                          key=name or ""))
    return parts


def _file_part(f: Path, base: Path) -> Part:
    label = str(f)
    try:
        if f.suffix.lower() == ".parquet":
            pf = pq.ParquetFile(f)
            schema, rows = pf.schema_arrow, pf.metadata.num_rows

            def batches(f=f):
                return pq.ParquetFile(f).iter_batches(batch_size=ROWS_PER_ITEM)
        else:
            schema, rows, batches = _arrow_file(f)
    except (pa.ArrowInvalid, OSError) as exc:
        raise IngestError(f"not a readable {f.suffix} file ({exc})", source=label) from None
    rel = f.relative_to(base).as_posix() if f != base else f.name
    return Part(label=label, split=split_from_name(rel), columns=list(schema.names),
                features=_features_of(schema), rows=rows, batches=batches, base_dir=base,
                key=str(Path(rel).with_suffix("")))


def _arrow_file(f: Path):
    """An .arrow file as `datasets` writes them (IPC stream) or an IPC file (Feather v2)."""
    src = pa.memory_map(str(f))  # stays open while the batches are read (zero-copy)
    try:
        reader = pa.ipc.open_stream(src)
    except pa.ArrowInvalid:
        src.seek(0)
        reader = pa.ipc.open_file(src)
    table = reader.read_all()

    def batches():
        return iter(table.to_batches(max_chunksize=ROWS_PER_ITEM))
    return table.schema, table.num_rows, batches


# --- the mapping ----------------------------------------------------------------------------

def task_fields(spec: TaskSpec) -> list[str]:
    """Fields a column can fill for this task (besides id, split, group)."""
    names = ["answer", "question"]
    if spec.has_image:
        names.append("image")
    if spec.kind == "mcq":
        names.append("options")
    names += [f for f, _ in spec.context_fields]
    for text in (spec.question, spec.image_phrase, spec.instruction):
        names += [n for _, n, _, _ in string.Formatter().parse(text or "") if n]
    return list(dict.fromkeys(names))


def parse_map(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise IngestError(f"--map {pair!r} must look like FIELD=COLUMN", field="--map")
        key = key.strip()
        if key in ("target", "label"):
            key = "answer"
        if key in out:
            raise IngestError(f"--map {key} given twice ({out[key]!r} and {value.strip()!r})", field="--map")
        out[key] = value.strip()
    return out


def resolve_mapping(spec: TaskSpec, given: dict[str, str], columns: Sequence[str], where: str) -> dict[str, str]:
    """field -> column: the `--map` pairs checked against the task and the columns, plus the
    fields whose name is a column."""
    fields = task_fields(spec)
    allowed = set(fields) | {"id", "split", "group"}
    have = ", ".join(columns)
    for f, col in given.items():
        if f not in allowed:
            raise IngestError(f"--map {f}={col}: task {spec.name} has no field {f!r}; its fields: "
                              f"{', '.join(fields)} (and id, split, group)", source=where, field=f)
        if col not in columns:
            raise IngestError(f"--map {f}={col}: no column {col!r} in the dataset (columns: {have})",
                              source=where, field=f)
    mapping = dict(given)
    for f in sorted(allowed):
        if f not in mapping and f in columns:
            mapping[f] = f
    if "answer" not in mapping:
        alias = next((a for a in ANSWER_ALIASES if a in columns), None)
        if alias is None:
            raise IngestError(f"no column for field 'answer' (the task's target); map one with "
                              f"--map answer=COLUMN (columns: {have})", source=where, field="answer")
        mapping["answer"] = alias
    if spec.has_image and "image" not in mapping:
        raise IngestError(f"task {spec.name} takes an image: map an Image column with --map "
                          f"image=COLUMN (columns: {have})", source=where, field="image")
    if spec.kind == "mcq" and "options" not in mapping:
        raise IngestError(f"task {spec.name} is multiple choice: map the list column of options "
                          f"with --map options=COLUMN (columns: {have})", source=where, field="options")
    return mapping


# --- rows -> examples ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    spec: TaskSpec
    mapping: dict[str, str]
    image_size: int
    stem: str


@dataclass
class Chunk:
    """ROWS_PER_ITEM consecutive rows of one part (plain Python values)."""

    label: str
    split: str | None
    start: int
    rows: list[dict]
    class_names: dict[str, list[str]]
    base_dir: str
    key: str = ""
    name: str = field(default="")


def _image_bytes(value: Any, base_dir: str, where: dict, column: str) -> list[bytes]:
    """An Image feature's {bytes, path}, raw bytes, a path, or a list of those -> image bytes."""
    if value is None:
        return []
    if isinstance(value, list):
        return [b for v in value for b in _image_bytes(v, base_dir, where, column)]
    if isinstance(value, (bytes, bytearray)):
        return [bytes(value)]
    path = None
    if isinstance(value, dict):
        if value.get("bytes"):
            return [bytes(value["bytes"])]
        path = value.get("path")
    elif isinstance(value, str):
        path = value
    if not path:
        raise IngestError(f"column {column!r} holds no image (got {str(value)[:80]!r})", **where, field=column)
    p = Path(path) if Path(path).is_absolute() else Path(base_dir) / path
    try:
        return [p.read_bytes()]
    except OSError as exc:
        raise IngestError(f"image {p} cannot be read ({exc.strerror or exc}); the dataset stores a "
                          f"path, not the image, and it is resolved from the source folder",
                          **where, field=column) from None


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else json.dumps(value)


def process_chunk(opts: Options, chunk: Chunk) -> ItemResult:
    result = ItemResult(name=chunk.name)
    for k, row in enumerate(chunk.rows):
        index = chunk.start + k
        try:
            result.examples.append(process_row(opts, chunk, index, row))
        except IngestError as exc:
            result.errors.append(exc.record())
    return result


def process_row(opts: Options, chunk: Chunk, index: int, row: dict) -> Example:
    spec, m = opts.spec, opts.mapping
    where = {"source": f"{chunk.label}[{index}]", "row": None}

    def value(f: str) -> Any:
        col = m[f]
        v = row.get(col)
        names = chunk.class_names.get(col)
        if names is not None and isinstance(v, int) and not isinstance(v, bool):
            if not 0 <= v < len(names):
                raise IngestError(f"class index {v} is not one of the column's {len(names)} "
                                  f"ClassLabel names", **where, field=col)
            v = names[v]
        return v

    answer = value("answer")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise IngestError("no answer", **where, field=m["answer"])
    context: dict[str, Any] = {}
    for f in m:
        if f in ("answer", "image", "id", "split", "group", "options"):
            continue
        v = value(f)
        if v is not None and v != "":
            context[f] = _plain(v)
    label = None
    if spec.kind == "mcq":
        options = value("options")
        if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, (str, int, float)) for o in options):
            raise IngestError(f"expected a list of at least 2 options, got {options!r}"[:200], **where,
                              field=m["options"])
        options = [str(o) for o in options]
        context["options"] = options
        label = resolve_option(options, answer, task=spec.name, field=m["answer"], **where)
        target = options[label]
    elif spec.options:
        label = resolve_option(spec.options, answer, task=spec.name, field=m["answer"], **where)
        target = spec.options[label]
    else:
        target = str(answer).strip()
    raw: list[bytes] = _image_bytes(value("image"), chunk.base_dir, where, m["image"]) if "image" in m else []
    if spec.has_image and not spec.multi_image and len(raw) != 1:
        raise IngestError(f"task {spec.name} takes one image per example; the row has {len(raw)}",
                          **where, field=m.get("image"))
    if spec.multi_image and not raw:
        raise IngestError(f"task {spec.name} takes a sequence of images; the row has none", **where,
                          field=m.get("image"))
    pngs = []
    for data in raw:
        try:
            pngs.append(encode_png(square_resize(decode_file(data), opts.image_size)))
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes
            raise IngestError(f"image does not decode ({type(exc).__name__}: {exc})", **where,
                              field=m.get("image")) from None
    check_prompt(spec, context, len(pngs), **where)
    split = check_split(value("split"), **where) if "split" in m else None
    split = split or chunk.split
    ident = value("id") if "id" in m else None
    example_id = str(ident) if ident not in (None, "") else ":".join(p for p in (opts.stem, chunk.key, str(index)) if p)
    if split is None:
        group = value("group") if "group" in m else None
        key = str(group) if group not in (None, "") else (
            hashlib.sha256(raw[0]).hexdigest() if raw else example_id)
        split = hash_split(key)
    return Example(example_id=example_id, task=spec.name, split=split, context=context, target=target,
                   label=label, source=where["source"], images=pngs, image_format="png" if pngs else None)


def _chunks(parts: list[Part], forced_split: str | None) -> Iterator[Chunk]:
    for part in parts:
        names = {c: list(f.names) for c, f in (part.features or {}).items()
                 if type(f).__name__ == "ClassLabel"}
        start = 0
        for batch in part.batches():
            rows = batch.to_pylist()
            yield Chunk(part.label, forced_split or part.split, start, rows, names, str(part.base_dir),
                        key=part.key, name=f"{part.label}[{start}:{start + len(rows)}]")
            start += len(rows)


def _blocks(fn, chunks: Iterator[Chunk], parallel: str, progress: bool) -> Iterator[ItemResult]:
    block: list[Chunk] = []
    for c in chunks:
        block.append(c)
        if len(block) == ITEMS_PER_BLOCK:
            yield from run_parallel(fn, block, desc=KIND, parallel=parallel, progress=progress)
            block = []
    if block:
        yield from run_parallel(fn, block, desc=KIND, parallel=parallel, progress=progress)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ingest_hf(store: ShardStore, path: str, *, task: str, mapping: Sequence[str] | dict[str, str] = (),
              split: str = "auto", on_error: str = "raise", replace: bool = False,
              parallel: str = "auto", progress: bool = True) -> IngestSummary:
    """A Hugging Face dataset on disk into `task` (see the module docstring).

    Args:
        mapping: `FIELD=COLUMN` strings (the CLI's --map) or a field -> column dict.
        split: auto (the source's splits, else per row / hash) or one of train, val, test.
    """
    started = time.perf_counter()
    spec = get_task(task)
    if split not in ("auto",) + SPLITS:
        raise IngestError(f"--split {split!r} must be auto or one of {', '.join(SPLITS)}", field="split")
    given = dict(mapping) if isinstance(mapping, dict) else parse_map(mapping)
    given = {("answer" if k in ("target", "label") else k): v for k, v in given.items()}
    parts = open_source(path)
    maps = [resolve_mapping(spec, given, p.columns, p.label) for p in parts]
    if any(mp != maps[0] for mp in maps[1:]):
        odd = next(p.label for p, mp in zip(parts, maps) if mp != maps[0])
        raise IngestError(f"its columns differ from {parts[0].label}'s ({', '.join(parts[0].columns)}); "
                          f"ingest the parts separately", source=odd)
    root = Path(path)
    opts = Options(spec, maps[0], store.config.image_size, (root.stem if root.is_file() else root.name) or "hf")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                 and p.suffix.lower() in (".parquet", ".arrow", ".json"))
    digests = [(f.as_posix(), _file_digest(f)) for f in files]
    fn = partial(guarded, partial(process_chunk, opts))
    chunks = _chunks(parts, None if split == "auto" else split)
    results = _blocks(partial(_named, fn), chunks, parallel, progress)
    return write_ingest(store, kind=KIND, task=spec.name, results=results,
                        source={"path": str(path), "mapping": maps[0], "split": split,
                                "parts": {p.label: p.rows for p in parts},
                                "image_size": store.config.image_size},
                        extra_digests=digests, on_error=on_error, replace=replace, unit="row batches",
                        started=started)


def _named(fn, chunk: Chunk) -> ItemResult:
    return fn(chunk, chunk.name)
