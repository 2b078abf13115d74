"""What every ingest source shares: errors, the on-error policy, splits, labels, Ray fan-out, writing.

An ingest is: list the items of a source (files, CSV rows, reports) -> turn each into
`Example`s with a per-item function, in parallel Ray tasks for folders -> add them to ONE
store transaction in input order -> commit. On a cluster with nodes labelled
`medmix-role=data` alive, the Ray tasks run only there (`medmix.placement`; else anywhere). Bad items raise `IngestError` (the default,
`--on-error raise`) or, with `--on-error skip`, are quarantined: counted, left out, and
listed in `<root>/quarantine/<timestamp>-<kind>.jsonl`. Any failure rolls the transaction
back, so the manifest and the listed shards are exactly what they were before.

    results = run_parallel(partial(process_file, opts), files, desc="dicom")
    summary = write_ingest(store, kind="dicom", task="cxr_report", results=results,
                           source={"path": "scans/"}, on_error="skip")
    print(summary.render())
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from medmix.data.schema import SPLITS, Example, RowError
from medmix.data.store import ShardStore
from medmix.placement import DATA, place
from medmix.runtime import ensure_ray
from medmix.tasks import get_task, render_prompt, task_names
from medmix.tasks.prompts import LETTERS
from medmix.tasks.spec import TaskSpec

ON_ERROR = ("raise", "skip")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
"""train / val / test shares of the deterministic hash split."""
RAY_MIN_ITEMS = 8
"""Below this many items `parallel="auto"` stays in-process: a Ray start costs seconds."""


class IngestError(ValueError):
    """Bad input, with where it is: `labels.csv, row 4, field 'label': ...`.

    `row` is the 1-based line number in the file (a CSV's header is row 1).
    """

    def __init__(self, detail: str, *, source: str | None = None, row: int | None = None,
                 field: str | None = None):
        self.detail, self.source, self.row, self.field = detail, source, row, field
        where = ", ".join(p for p in (source, f"row {row}" if row is not None else None,
                                      f"field {field!r}" if field else None) if p)
        super().__init__(f"{where}: {detail}" if where else detail)

    def __reduce__(self):  # keyword-only attributes (and subclasses) survive pickling: Ray tasks
        return (_rebuild_error, (type(self), self.detail, self.source, self.row, self.field))

    def record(self) -> dict[str, Any]:
        """The quarantine report line for this error."""
        return {"source": self.source, "row": self.row, "field": self.field, "error": self.detail}


def _rebuild_error(cls, detail, source, row, field):
    err = cls.__new__(cls)  # a subclass may have another __init__ signature
    IngestError.__init__(err, detail, source=source, row=row, field=field)
    return err


@dataclass
class ItemResult:
    """What one item (a file, a CSV row, a report) became."""

    name: str
    """The item's name in the source digest (a relative path or archive member)."""
    examples: list[Example] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    """`IngestError.record()`s: bad parts of this item (quarantined under `skip`)."""
    digest: str | None = None
    """sha256 of the item's bytes, folded into the ingest's source digest."""
    notes: dict[str, int] = field(default_factory=dict)
    """Counted, expected omissions that are not errors (`missing IMPRESSION: 1`)."""


def guarded(fn: Callable[[Any], ItemResult], item: Any, name: str) -> ItemResult:
    """Run `fn(item)`; an `IngestError` becomes a quarantinable error of this item."""
    try:
        return fn(item)
    except IngestError as exc:
        return ItemResult(name=name, errors=[exc.record()])


# --- tasks, labels, splits -----------------------------------------------------------------

def image_task(name: str) -> TaskSpec:
    """The TaskSpec for an ingest that produces one image per row."""
    spec = get_task(name)
    if not spec.has_image or spec.multi_image:
        fit = [t for t in task_names() if get_task(t).has_image and not get_task(t).multi_image]
        raise IngestError(f"task {name!r} does not take one image per example; image ingest "
                          f"fits: {', '.join(fit)}", field="task")
    return spec


def hash_split(key: str, fractions: Sequence[float] = SPLIT_FRACTIONS) -> str:
    """train/val/test from a stable hash of `key`: same key, same split, on every machine."""
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for split, share in zip(SPLITS, fractions):
        edge += share
        if u < edge:
            return split
    return SPLITS[-1]


def check_split(value: Any, *, source: str, row: int | None) -> str | None:
    if value in (None, ""):
        return None
    s = str(value).strip().lower()
    if s not in SPLITS:
        raise IngestError(f"split {value!r} must be one of {', '.join(SPLITS)} (or empty for the "
                          f"hash split)", source=source, row=row, field="split")
    return s


def resolve_option(options: Sequence[str], value: Any, *, task: str, source: str,
                   row: int | None, field: str) -> int:
    """An answer given as option text (case-insensitive), letter (`B`, `(B)`) or 0-based index."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(options):
            return value
    elif value is not None:
        text = str(value).strip()
        folded = [o.strip().lower() for o in options]
        if text.lower() in folded:
            return folded.index(text.lower())
        spaced = " ".join(text.replace("_", " ").lower().split())  # CBIS-DDSM: BENIGN_WITHOUT_CALLBACK
        if spaced in folded:
            return folded.index(spaced)
        letter = text.strip("()").upper()
        if len(letter) == 1 and letter in LETTERS[:len(options)]:
            return LETTERS.index(letter)
        if text.isdigit() and int(text) < len(options):
            return int(text)
    listed = "; ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
    raise IngestError(f"{value!r} is not an option of task {task}; give the option text, its "
                      f"letter or its 0-based index: {listed}", source=source, row=row, field=field)


def target_and_label(spec: TaskSpec, values: dict[str, Any], *, source: str,
                     row: int | None) -> tuple[str, int | None]:
    """(target text, label) of a row: tasks with fixed options read `label`, others `target`."""
    if spec.options:
        if values.get("label") in (None, ""):
            raise IngestError(f"no label; task {spec.name} needs one of: {', '.join(spec.options)}",
                              source=source, row=row, field="label")
        idx = resolve_option(spec.options, values["label"], task=spec.name, source=source,
                             row=row, field="label")
        return spec.options[idx], idx
    text = str(values.get("target") or "").strip()
    if not text:
        raise IngestError(f"no target text; task {spec.name} ({spec.kind}) needs the answer text",
                          source=source, row=row, field="target")
    return text, None


def check_prompt(spec: TaskSpec, context: dict[str, Any], num_images: int, *, source: str,
                 row: int | None) -> None:
    """Render the prompt once so a missing context field fails here, naming the field."""
    try:
        render_prompt(spec, context, num_images)
    except ValueError as exc:
        found = re.search(r"lacks field '([^']+)'", str(exc))  # prompts.py's wording
        missing = found.group(1) if found else None
        raise IngestError(f"{exc}; add a {missing!r} column or --context {missing}=VALUE"
                          if missing else str(exc), source=source, row=row, field=missing) from None


def auto_type(text: str) -> Any:
    """CSV/CLI text -> int or float where it is one (ages, diameters), else the text."""
    t = text.strip()
    for cast in (int, float):
        try:
            v = cast(t)
            return v if not (isinstance(v, float) and not math.isfinite(v)) else t
        except ValueError:
            pass
    return t


def parse_context_args(pairs: Sequence[str]) -> dict[str, Any]:
    """`--context view=PA --context condition=edema` -> {"view": "PA", "condition": "edema"}."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise IngestError(f"--context {pair!r} must look like KEY=VALUE", field="--context")
        out[key.strip()] = auto_type(value)
    return out


# columns of a labels CSV with a fixed meaning; any other column goes into the row's context
RESERVED_COLUMNS = ("file", "label", "target", "split", "id", "group")


@dataclass(frozen=True)
class LabelRow:
    """One row of a labels CSV (or the `--target` constant) before it meets its file."""

    source: str
    row: int | None
    values: dict[str, Any]

    def context(self) -> dict[str, Any]:
        return {k: auto_type(v) if isinstance(v, str) else v for k, v in self.values.items()
                if k not in RESERVED_COLUMNS and v not in (None, "")}


def read_labels_csv(path: str | os.PathLike, required: Sequence[str]) -> list[LabelRow]:
    """Rows of a labels CSV; a missing file or column is an error naming it."""
    p = Path(path)
    if not p.is_file():
        raise IngestError("labels CSV not found", source=str(p))
    with open(p, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if not columns:
            raise IngestError("labels CSV is empty (no header row)", source=str(p), row=1)
        reader.fieldnames = columns
        for col in required:
            if col not in columns:
                raise IngestError(f"missing column {col!r} (columns: {', '.join(columns)})",
                                  source=str(p), row=1, field=col)
        rows = []
        for values in reader:
            if not any((v or "").strip() for v in values.values() if isinstance(v, str)):
                continue  # blank line
            clean = {k: (v.strip() if isinstance(v, str) else v) for k, v in values.items() if k}
            # the line the record starts on: quoted values may span lines (CBIS-DDSM's paths end
            # in a newline), and line_num is where the record ends
            start = reader.line_num - sum(v.count("\n") for v in values.values() if isinstance(v, str))
            rows.append(LabelRow(str(p), start, clean))
    if not rows:
        raise IngestError("labels CSV has a header but no rows", source=str(p))
    return rows


def occurrence_ids(rows: Sequence[LabelRow], base: Callable[[LabelRow], str]) -> list[str]:
    """Example ids for label rows: the `id` column, else `base(row)`, `#k`-suffixed when one
    file has several rows (one image, several per-condition questions)."""
    counts = Counter(base(r) for r in rows if not r.values.get("id"))
    seen: Counter = Counter()
    out = []
    for r in rows:
        if r.values.get("id"):
            out.append(str(r.values["id"]))
            continue
        b = base(r)
        out.append(b if counts[b] == 1 else f"{b}#{seen[b]}")
        seen[b] += 1
    return out


# --- parallel map ---------------------------------------------------------------------------

def _run_chunk(fn: Callable[[Any], ItemResult], chunk: list) -> list[ItemResult]:
    return [fn(item) for item in chunk]


def run_parallel(fn: Callable[[Any], ItemResult], items: Sequence[Any], *, desc: str,
                 parallel: str = "auto", chunk_size: int | None = None, num_cpus: float = 0.5,
                 progress: bool = True) -> Iterator[ItemResult]:
    """Yield `fn(item)` for every item, in input order, with a progress bar.

    Args:
        fn: a picklable function (module level or a `functools.partial` of one) returning an
            `ItemResult`; it should turn bad input into `IngestError` (see `guarded`).
        parallel: "ray" = Ray tasks; "local" = this process; "auto" = Ray from
            `RAY_MIN_ITEMS` items on (a folder), in-process below that.
        chunk_size: items per Ray task (default: about four tasks per CPU slot, at most 64).
        num_cpus: logical CPUs each Ray task asks for.
    """
    from tqdm import tqdm
    mode = parallel if parallel != "auto" else ("ray" if len(items) >= RAY_MIN_ITEMS else "local")
    if mode not in ("ray", "local"):
        raise ValueError(f"parallel must be auto, ray or local, got {parallel!r}")
    bar = tqdm(total=len(items), desc=desc, unit="item", disable=not progress, leave=False)
    try:
        if mode == "local":
            for item in items:
                result = fn(item)
                bar.update(1)
                yield result
        else:
            yield from _run_ray(fn, list(items), bar, chunk_size, num_cpus)
    finally:
        bar.close()


def _run_ray(fn, items: list, bar, chunk_size: int | None, num_cpus: float) -> Iterator[ItemResult]:
    import ray
    ensure_ray(worker_logs=False)
    placement = place(DATA, "ingest tasks")
    slots = max(1, int((placement.cpus or 1) / num_cpus))
    if len(ray.nodes()) == 1:
        # one machine: a local Ray advertises logical CPUs (to avoid data/train deadlocks), but
        # decoding is CPU-bound and each worker process pays a start-up import, so run no more
        # tasks at once than there are cores
        slots = min(slots, os.cpu_count() or 1)
    if chunk_size is None:
        chunk_size = max(1, min(64, math.ceil(len(items) / (4 * slots))))
    chunks = [items[i:i + chunk_size] for i in range(0, len(items), chunk_size)]
    task = ray.remote(num_cpus=num_cpus, max_retries=0)(_run_chunk)
    if placement.selector is not None:
        task = task.options(label_selector=placement.selector)
    fn_ref = ray.put(fn)  # the options travel once, not once per chunk
    pending: dict[Any, int] = {}
    done: dict[int, list[ItemResult]] = {}
    submitted = emitted = 0
    # tasks in flight = tasks running: bounded so results wait in order with flat memory
    max_in_flight = slots
    try:
        while emitted < len(chunks):
            while submitted < len(chunks) and len(pending) < max_in_flight:
                pending[task.remote(fn_ref, chunks[submitted])] = submitted
                submitted += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                idx = pending.pop(ref)
                done[idx] = ray.get(ref)
                bar.update(len(chunks[idx]))
            while emitted in done:
                yield from done.pop(emitted)
                emitted += 1
    finally:
        for ref in pending:  # the consumer stopped (an error): don't leave work running
            ray.cancel(ref)  # not force: keep the (warm) worker processes


# --- writing --------------------------------------------------------------------------------

@dataclass
class IngestSummary:
    kind: str
    task: str
    root: str
    items: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    quarantine_path: str | None = None
    notes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    shards: list[str] = field(default_factory=list)
    source_sha256: str = ""
    unit: str = "items"
    """What one item is, for the summary line (files, reports, lines)."""

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def render(self) -> str:
        splits = ", ".join(f"{s} {self.rows.get(s, 0):,}" for s in SPLITS)
        rate = self.items / self.seconds if self.seconds > 0 else float("inf")
        lines = [f"ingested {self.total_rows:,} rows of task {self.task} into {self.root} "
                 f"({splits}; {len(self.shards)} new shards)",
                 f"{self.items:,} {self.unit} in {self.seconds:.1f} s ({rate:,.1f} {self.unit}/s)"]
        for note, n in sorted(self.notes.items()):
            lines.append(f"skipped {n:,}: {note}")
        if self.quarantined:
            lines.append(f"quarantined {self.quarantined:,} bad items: {self.quarantine_path}")
        else:
            lines.append("quarantined 0 items")
        return "\n".join(lines)


def input_digest(named: Iterable[tuple[str, str | None]]) -> str:
    """sha256 over (name, sha256) pairs in input order: the ingest's source digest."""
    h = hashlib.sha256()
    for name, digest in named:
        h.update(f"{name}\t{digest or '-'}\n".encode())
    return h.hexdigest()


def write_ingest(store: ShardStore, *, kind: str, task: str, results: Iterable[ItemResult],
                 source: dict[str, Any], on_error: str = "raise", replace: bool = False,
                 extra_digests: Sequence[tuple[str, str]] = (), unit: str = "items",
                 plan_errors: Sequence[dict] = (), started: float | None = None) -> IngestSummary:
    """Add every result's examples in ONE transaction; quarantine or raise on bad items.

    Args:
        source: what the manifest records about the input (path, labels, ...); `kind`, `task`
            and `sha256` (of every input item, plus `extra_digests` such as the labels CSV)
            are added here.
        replace: drop the task's existing rows on commit (re-ingesting a changed source).
        plan_errors: bad items found while listing the source (a CSV row naming a missing
            file); under `raise` they fail the ingest before any result is consumed.
        started: `time.perf_counter()` when the ingest began (listing the source counts too).
    """
    if on_error not in ON_ERROR:
        raise IngestError(f"--on-error must be one of {', '.join(ON_ERROR)}, got {on_error!r}",
                          field="on_error")
    t0 = time.perf_counter() if started is None else started
    summary = IngestSummary(kind=kind, task=task, root=str(store.root), unit=unit)
    quarantine: list[dict] = []
    digests: list[tuple[str, str | None]] = list(extra_digests)
    src = {"kind": kind, "task": task, **source}
    # the transaction records `src` when it commits, so what is added to it below lands in
    # the manifest: the digest of every input, the item count
    tx = store.transaction(source=src, known_tasks=set(task_names()),
                           replace_tasks={task} if replace else None)
    existed = {d: d.exists() for d in _folders_a_write_may_create(store, task)}
    try:
        with tx:
            for err in plan_errors:
                _bad(err, on_error, quarantine)
            first_source: dict[str, str] = {}  # example_id -> where this ingest first saw it
            for result in results:
                _add_result(tx, result, summary, quarantine, on_error, first_source)
                digests.append((result.name, result.digest))
            summary.quarantined = len(quarantine)
            summary.source_sha256 = src["sha256"] = input_digest(digests)
            src["items"] = summary.items
            if quarantine:
                src["quarantined"] = len(quarantine)
            if summary.items == 0:
                raise IngestError(f"empty source: no {unit} found", source=str(source.get("path", "")))
            if tx.rows_added == 0:
                _nothing_to_ingest(store, kind, summary, quarantine, source)
    except BaseException:
        _prune_new_empty_folders(existed)
        raise
    finally:
        close = getattr(results, "close", None)
        if close is not None:  # on failure, stop a Ray fan-out now rather than at GC
            close()
    summary.shards = list(store.manifest()["sources"][-1].get("shards", []))
    if quarantine:
        summary.quarantine_path = write_quarantine(store, kind, quarantine)
    summary.seconds = time.perf_counter() - t0
    return summary


def _folders_a_write_may_create(store: ShardStore, task: str) -> list[Path]:
    """Local folders only: object storage has no folders to leave behind."""
    if not store.loc.is_local:
        return []
    root = store.loc.local_path()
    return [root / task / s for s in SPLITS] + [root / task, root]


def _prune_new_empty_folders(existed: dict[Path, bool]) -> None:
    """After a rollback, remove the (empty) folders this ingest created: the store is as it was."""
    for folder, was_there in existed.items():  # deepest first
        if not was_there and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _add_result(tx, result: ItemResult, summary: IngestSummary, quarantine: list[dict],
                on_error: str, first_source: dict[str, str]) -> None:
    summary.items += 1
    for note, n in result.notes.items():
        summary.notes[note] = summary.notes.get(note, 0) + n
    for err in result.errors:
        _bad(err, on_error, quarantine)
    for ex in result.examples:
        if ex.example_id in first_source:
            _bad({**_where(ex.source), "field": "example_id",
                  "error": f"duplicate example_id {ex.example_id!r}: also from "
                           f"{first_source[ex.example_id]}"}, on_error, quarantine)
            continue
        first_source[ex.example_id] = ex.source
        try:
            tx.add(ex)
        except RowError as exc:  # duplicate id, bad split...: the row is bad, not the store
            detail = str(exc).split(": ", 1)[-1]
            _bad({**_where(ex.source),
                  "field": "example_id" if "duplicate example_id" in detail else None,
                  "error": detail}, on_error, quarantine)
            continue
        summary.rows[ex.split] = summary.rows.get(ex.split, 0) + 1


def _where(source: str) -> dict[str, Any]:
    """`data/q.jsonl:12` -> source data/q.jsonl, row 12 (other sources pass whole)."""
    head, sep, tail = source.rpartition(":")
    if sep and tail.isdigit() and head:
        return {"source": head, "row": int(tail)}
    return {"source": source, "row": None}


def _nothing_to_ingest(store: ShardStore, kind: str, summary: IngestSummary,
                       quarantine: list[dict], source: dict) -> None:
    if quarantine:
        summary.quarantine_path = write_quarantine(store, kind, quarantine)
        why = f"all {summary.items} {summary.unit} were bad (quarantine report: {summary.quarantine_path})"
    else:
        why = "every item was skipped (" + ", ".join(f"{k}: {v}" for k, v in summary.notes.items()) + ")"
    raise IngestError(f"no rows to ingest: {why}", source=str(source.get("path", "")))


def _bad(err: dict, on_error: str, quarantine: list[dict]) -> None:
    if on_error == "raise":
        raise IngestError(err["error"], source=err.get("source"), row=err.get("row"),
                          field=err.get("field"))
    quarantine.append(err)


def write_quarantine(store: ShardStore, kind: str, records: list[dict]) -> str:
    """`<root>/quarantine/<UTC timestamp>-<kind>.jsonl`, one bad item per line."""
    folder = store.loc.join("quarantine")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = folder.join(f"{stamp}-{kind}.jsonl")
    n = 1
    while path.exists():
        n += 1
        path = folder.join(f"{stamp}-{kind}-{n}.jsonl")
    path.write_text("".join(json.dumps({k: r.get(k) for k in ("source", "row", "field", "error")}) + "\n"
                            for r in records))
    return str(path)


def list_files(paths: Sequence[str | os.PathLike], pattern: str = "*",
               skip: Sequence[str | os.PathLike] = ()) -> list[tuple[Path, str]]:
    """(file, name) for files and folders given; folders are walked in sorted order.

    `name` is the path relative to the folder given (the file name for a file given
    directly); hidden files are left out, and so are the paths in `skip`.
    """
    skipped = {Path(s).resolve() for s in skip}
    out: list[tuple[Path, str]] = []
    for given in paths:
        p = Path(given)
        if p.is_file():
            out.append((p, p.name))
        elif p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for fname in sorted(filenames):
                    f = Path(dirpath) / fname
                    if fname.startswith(".") or not fnmatch.fnmatch(fname, pattern) or f.resolve() in skipped:
                        continue
                    out.append((f, f.relative_to(p).as_posix()))
        else:
            raise IngestError("no such file or folder", source=str(p))
    return out
