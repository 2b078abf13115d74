"""MedQA, MedMCQA and PubMedQA as they are published -> rows of `medqa`, `medmcqa`, `pubmedqa`.

    medmix ingest medqa data_clean/questions/US/4_options/      # phrases_no_exclude_{train,dev,test}.jsonl
    medmix ingest medmcqa medmcqa_data/                          # train.json, dev.json
    medmix ingest pubmedqa data/ori_pqal.json                    # test_ground_truth.json beside it

Layouts (as documented by each dataset):

- MedQA (Jin et al. 2021; github.com/jind11/MedQA, `data_clean/questions/US/`): JSON lines
  `{"question", "options": {"A": ..., "D"|"E": ...}, "answer": text, "answer_idx": "C",
  "meta_info": "step1", ...}`; the 4-option files are `4_options/phrases_no_exclude_<split>.jsonl`,
  the 5-option ones `<split>.jsonl`. Split from the file name: train, dev -> val, test. No id in
  the records: the id is `<file stem>:<line>`. One ingest takes one variant (4 or 5 options).
- MedMCQA (Pal et al. 2022; github.com/medmcqa/medmcqa README): JSON lines (files named .json)
  `{"id", "question", "opa", "opb", "opc", "opd", "cop", "choice_type", "exp",
  "subject_name", "topic_name"}` with `cop` the correct option 1-4 (opa = 1), as the README's
  example shows. Hugging Face exports number it 0-3 (a ClassLabel): `--cop-base 0`. A cop
  outside the base's range names the row and the flag. Split: `dev.json` -> test (the 4,183
  questions papers report; the test file's answers are withheld), `train.json` -> train, with
  5% of it (by a hash of the id) as val.
- PubMedQA PQA-L (Jin et al. 2019; github.com/pubmedqa/pubmedqa `data/ori_pqal.json`): one JSON
  object `{pmid: {"QUESTION", "CONTEXTS": [...], "LABELS": [...], "MESHES", "YEAR",
  "reasoning_required_pred", "reasoning_free_pred", "final_decision", "LONG_ANSWER"}}`. The
  abstract is the CONTEXTS, each after its LABEL ("BACKGROUND: ..."); the answer is
  final_decision (yes/no/maybe). Split: the pmids of `test_ground_truth.json` (next to the
  file, or `--test-ids`) are test, the rest train/val (90/10 by a hash of the pmid); without
  it, 80/10/10 by the pmid.

Every bad record is an error naming the file, the line (or pmid) and the field; `--on-error
skip` quarantines it and ingests the rest.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from medmix.data.ingest.common import (IngestError, IngestSummary, ItemResult, check_prompt, guarded,
                                       hash_split, list_files, run_parallel, write_ingest)
from medmix.data.ingest.qa import jsonl_examples
from medmix.data.schema import Example
from medmix.data.store import ShardStore
from medmix.tasks import get_task
from medmix.tasks.prompts import LETTERS

TRAIN_VAL = (0.9, 0.1, 0.0)


def file_split(path: str) -> str | None:
    """train / val / test from a published file name (`dev` is val), None if it names none."""
    words = set(re.split(r"[^a-z]+", Path(path).name.lower()))
    for word, split in (("train", "train"), ("dev", "val"), ("val", "val"), ("validation", "val"),
                        ("validate", "val"), ("test", "test")):
        if word in words:
            return split
    return None


def _text(rec: dict, key: str, *, source: str, row: int | None, name: str | None = None) -> str:
    value = rec.get(key)
    if not isinstance(value, str) or not value.strip():
        raise IngestError(f"missing or empty (got {value!r})", source=source, row=row, field=name or key)
    return value.strip()


def _distinct(options: list[str], *, source: str, row: int | None, field: str) -> None:
    if len({o.lower() for o in options}) != len(options):
        raise IngestError(f"options repeat: {options!r}; the answer would be ambiguous",
                          source=source, row=row, field=field)


def _json_lines(path: str, parse: Callable[[dict, int], Example]) -> ItemResult:
    """A JSON-lines file -> its examples; each bad line is an error naming the line."""
    def record(line: str, n: int) -> Example:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise IngestError(f"not valid JSON ({exc.msg} at column {exc.colno}); one JSON "
                              f"object per line", source=path, row=n) from None
        if not isinstance(rec, dict):
            raise IngestError(f"expected a JSON object, got {type(rec).__name__}", source=path, row=n)
        return parse(rec, n)
    return jsonl_examples(path, record)


def _mcq(task: str, example_id: str, split: str, question: str, options: list[str], label: int,
         source: str, row: int | None, extra: dict[str, Any]) -> Example:
    spec = get_task(task)
    context = {"question": question, "options": options,
               **{k: v for k, v in extra.items() if v not in (None, "")}}
    check_prompt(spec, context, 0, source=source, row=row)
    return Example(example_id=example_id, task=task, split=split, context=context,
                   target=options[label], label=label, source=f"{source}:{row}")


# --- MedQA -----------------------------------------------------------------------------------

def medqa_record(rec: dict, line: int, *, path: str) -> Example:
    question = _text(rec, "question", source=path, row=line)
    opts = rec.get("options")
    if not isinstance(opts, dict) or not 2 <= len(opts) <= len(LETTERS):
        raise IngestError(f"expected an object of lettered options {{\"A\": ..., \"B\": ...}}, got "
                          f"{opts!r}", source=path, row=line, field="options")
    letters = sorted(opts)
    if letters != list(LETTERS[:len(letters)]):
        raise IngestError(f"option keys {letters} are not A, B, C, ... in order", source=path,
                          row=line, field="options")
    options = [_text(opts, k, source=path, row=line, name=f"options.{k}") for k in letters]
    _distinct(options, source=path, row=line, field="options")
    idx = str(rec.get("answer_idx", "")).strip().upper()
    if idx not in letters:
        raise IngestError(f"{rec.get('answer_idx')!r} is not one of the option letters "
                          f"{', '.join(letters)}", source=path, row=line, field="answer_idx")
    label = letters.index(idx)
    answer = rec.get("answer")
    if isinstance(answer, str) and answer.strip() and answer.strip().lower() != options[label].lower():
        raise IngestError(f"answer {answer!r} is not option {idx} ({options[label]!r}); the file "
                          f"disagrees with itself", source=path, row=line, field="answer")
    split = file_split(path)
    example_id = f"{Path(path).stem}:{line}"
    return _mcq("medqa", example_id, split or hash_split(example_id), question, options, label,
                path, line, {"meta_info": rec.get("meta_info")})


def ingest_medqa(store: ShardStore, paths: Sequence[str], *, task: str = "medqa",
                 on_error: str = "raise", replace: bool = False, parallel: str = "auto",
                 progress: bool = True) -> IngestSummary:
    """MedQA (US) JSON-lines files, or folders of them, into `medqa` (see the module doc)."""
    started = time.perf_counter()
    _only(task, "medqa")
    files = _files(paths, "*.jsonl")
    results = list(run_parallel(_medqa_file, files, desc="medqa", parallel=parallel, progress=progress))
    sizes = {len(ex.context["options"]) for r in results for ex in r.examples}
    if len(sizes) > 1:
        raise IngestError(f"questions with {' and '.join(map(str, sorted(sizes)))} options: MedQA "
                          f"ships a 4-option and a 5-option copy of the same questions; ingest one "
                          f"(the 4_options/ files, or the 5-option <split>.jsonl)",
                          source=", ".join(map(str, paths)), field="options")
    return _write(store, "medqa", results, paths, on_error, replace, started=started)


def _medqa_file(path: str) -> ItemResult:
    return guarded(lambda p: _json_lines(p, partial(medqa_record, path=p)), path, path)


# --- MedMCQA ---------------------------------------------------------------------------------

def medmcqa_record(rec: dict, line: int, *, path: str, cop_base: int) -> Example:
    example_id = _text(rec, "id", source=path, row=line)
    question = _text(rec, "question", source=path, row=line)
    options = [_text(rec, k, source=path, row=line) for k in ("opa", "opb", "opc", "opd")]
    _distinct(options, source=path, row=line, field="opa..opd")
    cop = rec.get("cop")
    if cop is None or cop == "" or (isinstance(cop, int) and cop < 0):
        raise IngestError("no answer: MedMCQA's test.json ships without answers (cop); ingest "
                          "train.json and dev.json", source=path, row=line, field="cop")
    try:
        value = int(cop)
        if isinstance(cop, float) and cop != value:
            raise ValueError
    except (TypeError, ValueError):
        raise IngestError(f"{cop!r} is not an option number", source=path, row=line, field="cop") from None
    if not cop_base <= value <= cop_base + 3:
        other = 0 if cop_base == 1 else 1
        raise IngestError(f"{value} is outside {cop_base}-{cop_base + 3} (--cop-base {cop_base}: "
                          f"{'the published files, opa = 1' if cop_base == 1 else 'Hugging Face exports, opa = 0'}); "
                          f"if this file numbers options from {other}, pass --cop-base {other}",
                          source=path, row=line, field="cop")
    split = file_split(path)
    split = ("test" if split == "val" else split) or "train"  # dev.json is the reported test set
    if split == "train":
        split = hash_split(example_id, (0.95, 0.05, 0.0))
    return _mcq("medmcqa", example_id, split, question, options, value - cop_base, path, line,
                {"subject": rec.get("subject_name"), "topic": rec.get("topic_name"),
                 "explanation": rec.get("exp")})


def ingest_medmcqa(store: ShardStore, paths: Sequence[str], *, task: str = "medmcqa",
                   cop_base: int = 1, on_error: str = "raise", replace: bool = False,
                   parallel: str = "auto", progress: bool = True) -> IngestSummary:
    """MedMCQA JSON-lines files (train.json, dev.json), or their folder, into `medmcqa`."""
    started = time.perf_counter()
    _only(task, "medmcqa")
    if cop_base not in (0, 1):
        raise IngestError(f"--cop-base {cop_base}: use 1 (published files) or 0 (Hugging Face exports)",
                          field="--cop-base")
    files = _files(paths, "*.json*")
    results = run_parallel(partial(_medmcqa_file, cop_base=cop_base), files, desc="medmcqa",
                           parallel=parallel, progress=progress)
    return _write(store, "medmcqa", results, paths, on_error, replace, started=started,
                  extra={"cop_base": cop_base})


def _medmcqa_file(path: str, cop_base: int) -> ItemResult:
    return guarded(lambda p: _json_lines(p, partial(medmcqa_record, path=p, cop_base=cop_base)), path, path)


# --- PubMedQA --------------------------------------------------------------------------------

DECISIONS = ("yes", "no", "maybe")


def pubmedqa_record(pmid: str, rec: Any, *, path: str, test_ids: set[str] | None) -> Example:
    where = f"{path}#{pmid}"
    if not isinstance(rec, dict):
        raise IngestError(f"expected an object with QUESTION, CONTEXTS, final_decision, got "
                          f"{type(rec).__name__}", source=where)
    question = _text(rec, "QUESTION", source=where, row=None)
    contexts, labels = rec.get("CONTEXTS"), rec.get("LABELS") or []
    if (not isinstance(contexts, list) or not contexts
            or not all(isinstance(c, str) and c.strip() for c in contexts)):
        raise IngestError(f"expected a list of abstract sections, got {contexts!r}", source=where,
                          field="CONTEXTS")
    if not isinstance(labels, list) or (labels and len(labels) != len(contexts)):
        raise IngestError(f"{len(labels) if isinstance(labels, list) else labels!r} labels for "
                          f"{len(contexts)} CONTEXTS; one label per section", source=where, field="LABELS")
    abstract = "\n".join(f"{str(lab).strip().upper()}: {c.strip()}" if lab else c.strip()
                         for c, lab in zip(contexts, labels or [None] * len(contexts)))
    decision = str(rec.get("final_decision", "")).strip().lower()
    if decision not in DECISIONS:
        raise IngestError(f"{rec.get('final_decision')!r} is not yes, no or maybe", source=where,
                          field="final_decision")
    if test_ids is None:
        split = hash_split(pmid)
    else:
        split = "test" if pmid in test_ids else hash_split(pmid, TRAIN_VAL)
    spec = get_task("pubmedqa")
    context = {"question": question, "abstract": abstract}
    for key, name in (("LONG_ANSWER", "long_answer"), ("YEAR", "year")):
        if isinstance(rec.get(key), str) and rec[key].strip():
            context[name] = rec[key].strip()
    check_prompt(spec, context, 0, source=where, row=None)
    label = list(spec.options).index(decision)
    return Example(example_id=f"pubmedqa-{pmid}", task="pubmedqa", split=split, context=context,
                   target=spec.options[label], label=label, source=where)


def read_test_ids(path: str | Path) -> set[str]:
    """The pmids of PubMedQA's `test_ground_truth.json` ({pmid: decision})."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IngestError(f"unreadable test-id file ({exc})", source=str(path)) from None
    if not isinstance(data, dict) or not data:
        raise IngestError("expected a JSON object {pmid: decision}", source=str(path))
    return {str(k) for k in data}


def pubmedqa_file(path: str, test_ids: set[str] | None) -> ItemResult:
    data = Path(path).read_bytes()
    result = ItemResult(name=path, digest=hashlib.sha256(data).hexdigest())
    try:
        records = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IngestError(f"not a JSON file ({exc}); PQA-L is one object {{pmid: record}}",
                          source=path) from None
    if not isinstance(records, dict) or not records:
        raise IngestError("expected one JSON object {pmid: {QUESTION, CONTEXTS, final_decision, ...}}",
                          source=path)
    for pmid, rec in records.items():
        try:
            result.examples.append(pubmedqa_record(str(pmid), rec, path=path, test_ids=test_ids))
        except IngestError as exc:
            result.errors.append(exc.record())
    return result


def ingest_pubmedqa(store: ShardStore, paths: Sequence[str], *, task: str = "pubmedqa",
                    test_ids: str | None = None, on_error: str = "raise", replace: bool = False,
                    parallel: str = "auto", progress: bool = True) -> IngestSummary:
    """PubMedQA PQA-L (`ori_pqal.json`, or a folder holding it) into `pubmedqa`."""
    _only(task, "pubmedqa")
    started = time.perf_counter()
    files = [f for f in _files(paths, "*.json") if Path(f).name != "test_ground_truth.json"]
    if test_ids is None:
        beside = {Path(f).parent / "test_ground_truth.json" for f in files}
        found = [p for p in beside if p.is_file()]
        test_ids = str(found[0]) if len(found) == 1 else None
    ids = read_test_ids(test_ids) if test_ids else None
    results = [guarded(partial(pubmedqa_file, test_ids=ids), f, f) for f in files]
    return _write(store, "pubmedqa", results, paths, on_error, replace, started=started,
                  extra={"test_ids": test_ids})


# --- shared ----------------------------------------------------------------------------------

def _only(task: str, name: str) -> None:
    if task != name:
        raise IngestError(f"the {name} layout fills task {name}, not {task!r}; for other tasks "
                          f"use `medmix ingest qa` (medmix JSONL)", field="task")


def _files(paths: Sequence[str], pattern: str) -> list[str]:
    files = [str(f) for f, _ in list_files(paths, pattern=pattern)]
    if not files:
        raise IngestError(f"empty source: no {pattern} files", source=", ".join(map(str, paths)))
    return files


def _write(store, task, results, paths, on_error, replace, *, started, extra=None) -> IngestSummary:
    return write_ingest(store, kind=task, task=task, results=results,
                        source={"path": [str(p) for p in paths], "layout": task, **(extra or {})},
                        on_error=on_error, replace=replace, unit="files", started=started)
