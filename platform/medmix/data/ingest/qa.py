"""JSONL multiple-choice questions -> MCQ rows of a text task (MedQA, MedMCQA; PubMedQA too).

    medmix ingest qa medqa_train.jsonl medqa_test.jsonl --task medqa
    medmix ingest qa questions/ --task medmcqa            # every *.jsonl under the folder

One JSON object per line:

    {"id": "q1", "question": "...", "options": ["...", "..."], "answer": "B", "split": "test"}

- `id`: unique within the task (a duplicate names both lines);
- `options`: two or more distinct, non-empty strings (tasks with fixed options, such as
  PubMedQA's yes/no/maybe, may leave it out);
- `answer`: the option text (case-insensitive), its letter (`B`, `(B)`) or its 0-based index;
- `split` (optional): train/val/test, else a hash of the id;
- the task's context fields (PubMedQA's `abstract`) are read when present.

Errors name the file, the line number and the field.
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from medmix.data.ingest.common import (IngestError, IngestSummary, ItemResult, check_prompt,
                                       check_split, guarded, hash_split, list_files,
                                       resolve_option, run_parallel, write_ingest)
from medmix.data.schema import Example
from medmix.data.store import ShardStore
from medmix.tasks import get_task, task_names
from medmix.tasks.spec import TaskSpec

KIND = "qa"


def qa_task(name: str) -> TaskSpec:
    spec = get_task(name)
    if spec.has_image or spec.kind not in ("mcq", "qa") or (spec.kind == "qa" and not spec.options):
        fit = [t for t in task_names() if not get_task(t).has_image and get_task(t).kind in ("mcq", "qa")]
        raise IngestError(f"task {name!r} ({spec.kind}) is not a text multiple-choice task; "
                          f"qa ingest fits: {', '.join(fit)}", field="task")
    return spec


def parse_line(spec: TaskSpec, text: str, *, source: str, line: int) -> Example:
    """One JSONL line -> one example, or IngestError naming the line and field."""
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IngestError(f"not valid JSON ({exc.msg} at column {exc.colno})", source=source,
                          row=line) from None
    if not isinstance(rec, dict):
        raise IngestError(f"expected a JSON object, got {type(rec).__name__}", source=source, row=line)

    def need_text(key: str) -> str:
        value = rec.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "id":
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise IngestError(f"missing or empty (got {value!r}); every line needs a text {key!r}",
                              source=source, row=line, field=key)
        return value.strip()

    example_id, question = need_text("id"), need_text("question")
    options = rec.get("options")
    if options is None and spec.options:
        options = list(spec.options)
    if (not isinstance(options, list) or len(options) < 2
            or not all(isinstance(o, str) and o.strip() for o in options)):
        raise IngestError(f"must be a list of at least 2 non-empty strings, got {options!r}",
                          source=source, row=line, field="options")
    options = [o.strip() for o in options]
    if len({o.lower() for o in options}) != len(options):
        raise IngestError(f"options repeat: {options!r}", source=source, row=line, field="options")
    if spec.options and [o.lower() for o in options] != [o.lower() for o in spec.options]:
        raise IngestError(f"task {spec.name} has fixed options {list(spec.options)}; got {options!r}",
                          source=source, row=line, field="options")
    if "answer" not in rec:
        raise IngestError("missing; give the option text, its letter or its 0-based index",
                          source=source, row=line, field="answer")
    label = resolve_option(options, rec["answer"], task=spec.name, source=source, row=line,
                           field="answer")
    context: dict[str, Any] = {"question": question}
    if not spec.options:
        context["options"] = options
    for key, _ in spec.context_fields:
        if rec.get(key) not in (None, ""):
            context[key] = rec[key]
    check_prompt(spec, context, 0, source=source, row=line)
    split = check_split(rec.get("split"), source=source, row=line) or hash_split(example_id)
    return Example(example_id=example_id, task=spec.name, split=split, context=context,
                   target=options[label], label=label, source=f"{source}:{line}")


def process_file(spec: TaskSpec, path: str) -> ItemResult:
    """A whole JSONL file: its examples, and its bad lines as errors (in line order)."""
    return jsonl_examples(path, lambda line, n: parse_line(spec, line, source=path, line=n))


def jsonl_examples(path: str, parse: Callable[[str, int], Example]) -> ItemResult:
    """A JSON-lines file through `parse(line, line_number)`: its examples, and each bad line
    (or repeated example id) as an error naming the line; an empty file is an error."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise IngestError(f"cannot read ({exc.strerror or exc})", source=path) from None
    result = ItemResult(name=path, digest=hashlib.sha256(data).hexdigest())
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"not UTF-8 text ({exc})", source=path) from None
    first_line: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            ex = parse(line, n)
            if ex.example_id in first_line:
                raise IngestError(f"duplicate id {ex.example_id!r} (first on line "
                                  f"{first_line[ex.example_id]})", source=path, row=n, field="id")
        except IngestError as exc:
            result.errors.append(exc.record())
            continue
        first_line[ex.example_id] = n
        result.examples.append(ex)
    if not result.examples and not result.errors:
        raise IngestError("empty file: no questions", source=path)
    return result


def ingest_qa(store: ShardStore, paths: Sequence[str], *, task: str, on_error: str = "raise",
              replace: bool = False, parallel: str = "auto", progress: bool = True) -> IngestSummary:
    """Ingest JSONL files (or folders of *.jsonl) of multiple-choice questions into `task`."""
    started = time.perf_counter()
    spec = qa_task(task)
    files = [str(f) for f, _ in list_files(paths, pattern="*.jsonl")]
    if not files:
        raise IngestError("empty source: no .jsonl files", source=", ".join(map(str, paths)))
    results = run_parallel(partial(_process_guarded, spec), files, desc="qa", parallel=parallel,
                           progress=progress)
    return write_ingest(store, kind=KIND, task=spec.name, results=results,
                        source={"path": [str(p) for p in paths]}, on_error=on_error,
                        replace=replace, unit="files", started=started)


def _process_guarded(spec: TaskSpec, path: str) -> ItemResult:
    return guarded(partial(process_file, spec), path, path)
