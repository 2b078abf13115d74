"""MIMIC radiology reports as published -> findings -> impression rows of `mimic3_summary`.

    medmix ingest mimic-notes NOTEEVENTS.csv.gz          # MIMIC-III v1.4
    medmix ingest mimic-notes note/radiology.csv.gz      # MIMIC-IV-Note

Layouts (PhysioNet; mimic.mit.edu docs): MIMIC-III `NOTEEVENTS.csv(.gz)` with `ROW_ID,
SUBJECT_ID, HADM_ID, CHARTDATE, CHARTTIME, STORETIME, CATEGORY, DESCRIPTION, CGID, ISERROR,
TEXT` -- only CATEGORY "Radiology" rows are read, ISERROR 1 rows are skipped; MIMIC-IV-Note
`radiology.csv(.gz)` with `note_id, subject_id, hadm_id, note_type, note_seq, charttime,
storetime, text`. The report text's `FINDINGS:` section is the context, its `IMPRESSION:`
section the target (a section runs to the next upper-case `HEADER:` line); reports without
both are skipped and counted, as are non-radiology notes. Split: a hash of the subject (one
patient never spans splits). Example id: `mimic3-<ROW_ID>` / `mimic4-<note_id>`. The file is
streamed (NOTEEVENTS is ~4 GB); nothing is copied out of it but the rows stored.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import re
import sys
import time
from pathlib import Path
from typing import Iterator

from medmix.data.ingest.common import (IngestError, IngestSummary, ItemResult, check_prompt, hash_split,
                                       write_ingest)
from medmix.data.schema import Example
from medmix.data.store import ShardStore
from medmix.tasks import get_task

KIND = "mimic-notes"
HEADER = re.compile(r"^\s*([A-Z][A-Z0-9 /&(),'-]{1,60}):", re.MULTILINE)
MIMIC3 = ("ROW_ID", "SUBJECT_ID", "CATEGORY", "ISERROR", "TEXT")
MIMIC4 = ("note_id", "subject_id", "text")
BATCH = 2000


def report_sections(text: str) -> dict[str, str]:
    """Upper-case `HEADER:` sections of a report -> their text (whitespace collapsed)."""
    marks = list(HEADER.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        body = " ".join(text[m.end():end].split())
        name = " ".join(m.group(1).split())
        if body and name not in out:
            out[name] = body
    return out


def _open(path: Path):
    return gzip.open(path, "rt", encoding="utf-8", newline="") if path.suffix == ".gz" else \
        open(path, encoding="utf-8", newline="")


def read_batches(path: Path, task: str) -> Iterator[ItemResult]:
    """The file in batches of rows, each an ItemResult (rows, errors, skip counts)."""
    spec = get_task(task)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # report texts exceed csv's 128 KB default
    with _open(path) as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        if all(c in cols for c in MIMIC3):
            layout = "mimic3"
        elif all(c in cols for c in MIMIC4):
            layout = "mimic4"
        else:
            raise IngestError(f"header {cols[:6]} is neither MIMIC-III NOTEEVENTS ({', '.join(MIMIC3)}) "
                              f"nor MIMIC-IV-Note radiology ({', '.join(MIMIC4)})", source=str(path))
        batch = ItemResult(name=f"{path.name}#1")
        digest = hashlib.sha256()
        for n, rec in enumerate(reader, start=2):
            try:
                ex = _row(spec, rec, layout, str(path), n, batch)
            except IngestError as exc:
                batch.errors.append(exc.record())
                ex = None
            if ex is not None:
                batch.examples.append(ex)
                digest.update(ex.example_id.encode())
            if n % BATCH == 0:
                batch.digest = digest.hexdigest()
                yield batch
                batch, digest = ItemResult(name=f"{path.name}#{n + 1}"), hashlib.sha256()
        batch.digest = digest.hexdigest()
        yield batch


def _row(spec, rec: dict, layout: str, source: str, n: int, batch: ItemResult) -> Example | None:
    def skip(why: str) -> None:
        batch.notes[why] = batch.notes.get(why, 0) + 1

    if layout == "mimic3":
        if str(rec.get("CATEGORY", "")).strip().lower() != "radiology":
            return skip("not a radiology note")
        if str(rec.get("ISERROR") or "").strip() == "1":
            return skip("marked ISERROR")
        key, subject, text = rec.get("ROW_ID"), rec.get("SUBJECT_ID"), rec.get("TEXT")
        names = ("ROW_ID", "SUBJECT_ID")
        exam = " ".join(str(rec.get("DESCRIPTION") or "").split())
    else:
        key, subject, text = rec.get("note_id"), rec.get("subject_id"), rec.get("text")
        names, exam = ("note_id", "subject_id"), ""
    for value, name in zip((key, subject), names):
        if not str(value or "").strip():
            raise IngestError("missing", source=source, row=n, field=name)
    if not isinstance(text, str) or not text.strip():
        raise IngestError("empty report text", source=source, row=n,
                          field="TEXT" if layout == "mimic3" else "text")
    parts = report_sections(text)
    findings, impression = parts.get("FINDINGS"), parts.get("IMPRESSION") or parts.get("IMPRESSIONS")
    if not findings or not impression:
        return skip("missing FINDINGS or IMPRESSION")
    context = {"findings": findings, **({"exam": exam} if exam else {})}
    check_prompt(spec, context, 0, source=source, row=n)
    example_id = f"{layout}-{str(key).strip()}"
    return Example(example_id=example_id, task=spec.name, split=hash_split(str(subject).strip()),
                   context=context, target=impression, label=None, source=f"{source}:{n}")


def ingest_mimic_notes(store: ShardStore, path: str, *, task: str = "mimic3_summary",
                       on_error: str = "raise", replace: bool = False, parallel: str = "auto",
                       progress: bool = True) -> IngestSummary:
    """Radiology reports of NOTEEVENTS / radiology.csv into `task` (module docstring).
    `parallel` and `progress` are accepted for a uniform signature: the file is streamed here."""
    started = time.perf_counter()
    spec = get_task(task)
    if spec.kind != "summarize" or spec.has_image:
        raise IngestError(f"task {task} is not a text summarization task (findings -> impression)",
                          field="task")
    p = Path(path)
    if not p.is_file():
        raise IngestError("notes file not found", source=str(p))
    return write_ingest(store, kind=KIND, task=spec.name, results=read_batches(p, spec.name),
                        source={"path": str(p), "layout": "mimic radiology notes",
                                "split": "hash of subject"},
                        on_error=on_error, replace=replace, unit="row batches", started=started)
