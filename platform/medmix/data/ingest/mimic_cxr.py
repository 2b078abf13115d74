"""MIMIC-CXR (-JPG) as published -> rows of `cxr_report` (findings) or `cxr_classify` (per condition).

    medmix ingest mimic-cxr mimic-cxr-jpg/2.0.0/ --task cxr_classify
    medmix ingest mimic-cxr mimic-cxr-jpg/2.0.0/ --task cxr_report --reports-root mimic-cxr/2.0.0/

Layout (Johnson et al. 2019; PhysioNet mimic-cxr-jpg 2.0.0 and mimic-cxr 2.0.0):
- `mimic-cxr-2.0.0-metadata.csv(.gz)`: `dicom_id, subject_id, study_id, ..., ViewPosition, ...`;
- `mimic-cxr-2.0.0-split.csv(.gz)`: `dicom_id, study_id, subject_id, split` (train / validate /
  test, the official split, by patient);
- `mimic-cxr-2.0.0-chexpert.csv(.gz)`: `subject_id, study_id` and one column per CheXpert label
  ("Atelectasis", ..., "Pleural Effusion"): 1.0 positive, 0.0 negative, -1.0 uncertain, blank
  not mentioned;
- images `files/p<first 2 digits>/p<subject_id>/s<study_id>/<dicom_id>.jpg` (MIMIC-CXR-JPG) or
  `.dcm` (MIMIC-CXR, read through the DICOM ingest's LUT/window/codec path);
- reports `files/p../p<subject_id>/s<study_id>.txt` (MIMIC-CXR; `--reports-root`, default the
  same root).

cxr_classify: one row per image and condition of the task (atelectasis, cardiomegaly,
consolidation, edema, pleural effusion): 1.0 -> yes, 0.0 -> no; uncertain (-1.0) and blank
labels are skipped and counted. cxr_report: one row per image, target = the report's
FINDINGS section, context indication (INDICATION) where present; reports without findings are
skipped and counted. Views: `--views` (default PA,AP, the frontal views). Context view =
ViewPosition. Example ids: `<dicom_id>` (report) or `<dicom_id>:<condition>` (classify).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

from medmix.data.images import encode_png, square_resize
from medmix.data.ingest.common import (IngestError, IngestSummary, ItemResult, check_prompt, guarded,
                                       image_task, run_parallel, write_ingest)
from medmix.data.ingest.dicom import read_display
from medmix.data.ingest.image_folder import decode_file
from medmix.data.ingest.mimic_notes import report_sections
from medmix.data.schema import Example
from medmix.data.store import ShardStore
from medmix.tasks.builtin import CXR_CONDITIONS

KIND = "mimic-cxr"
SPLITS = {"train": "train", "validate": "val", "test": "test"}
VALUES = {"1.0": "yes", "1": "yes", "0.0": "no", "0": "no"}


@dataclass(frozen=True)
class CxrItem:
    image: str
    source: str
    row: int
    dicom_id: str
    split: str
    view: str
    rows: tuple  # (example_id, context extras, target)


def table(root: Path, name: str, required: Sequence[str]) -> tuple[str, list[dict]]:
    """A release CSV (.csv or .csv.gz) -> (its path, rows); missing file/columns name it."""
    for suffix in (".csv.gz", ".csv"):
        path = root / f"mimic-cxr-2.0.0-{name}{suffix}"
        if path.is_file():
            opener = gzip.open if suffix.endswith(".gz") else open
            with opener(path, "rt", newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = [c for c in required if c not in (reader.fieldnames or [])]
                if missing:
                    raise IngestError(f"lacks column(s) {', '.join(missing)}", source=str(path),
                                      field=missing[0])
                return str(path), list(reader)
    raise IngestError(f"no mimic-cxr-2.0.0-{name}.csv(.gz) here", source=str(root))


def study_dir(root: Path, subject: str, study: str) -> Path:
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"


def plan_items(root: Path, task: str, views: set[str], reports_root: Path
               ) -> tuple[list[CxrItem], list[dict], dict[str, int], list[str]]:
    meta_path, meta = table(root, "metadata", ("dicom_id", "subject_id", "study_id", "ViewPosition"))
    split_path, split_rows = table(root, "split", ("dicom_id", "split"))
    splits = {r["dicom_id"]: r["split"] for r in split_rows}
    labels: dict[str, dict] = {}
    files = [meta_path, split_path]
    if task == "cxr_classify":
        columns = [c.title() for c in CXR_CONDITIONS]  # "pleural effusion" -> "Pleural Effusion"
        chex_path, chex = table(root, "chexpert", ("study_id", *columns))
        labels = {r["study_id"]: r for r in chex}
        files.append(chex_path)
    items, errors, notes = [], [], {}

    def note(why: str) -> None:
        notes[why] = notes.get(why, 0) + 1

    for n, r in enumerate(meta, start=2):
        dicom_id, subject, study = (str(r.get(k) or "").strip() for k in ("dicom_id", "subject_id", "study_id"))
        view = str(r.get("ViewPosition") or "").strip().upper()
        where = {"source": meta_path, "row": n}
        try:
            if not dicom_id or not subject or not study:
                raise IngestError("missing", **where, field="dicom_id" if not dicom_id else
                                  "subject_id" if not subject else "study_id")
            if views and view not in views:
                note(f"view not in {','.join(sorted(views))}")
                continue
            split = SPLITS.get(str(splits.get(dicom_id, "")).strip().lower())
            if split is None:
                raise IngestError(f"no train/validate/test split for this image in {split_path}",
                                  **where, field="dicom_id")
            folder = study_dir(root, subject, study)
            image = next((folder / f"{dicom_id}{ext}" for ext in (".jpg", ".dcm")
                          if (folder / f"{dicom_id}{ext}").is_file()), None)
            if image is None:
                raise IngestError(f"no image {folder / dicom_id}.jpg (or .dcm)", **where, field="dicom_id")
            rows: list[tuple] = []
            if task == "cxr_classify":
                lab = labels.get(study)
                if lab is None:
                    note("study without CheXpert labels")
                    continue
                for cond, col in zip(CXR_CONDITIONS, columns):
                    value = str(lab.get(col) or "").strip()
                    if value in VALUES:
                        rows.append((f"{dicom_id}:{cond}", {"condition": cond}, VALUES[value]))
                    else:
                        note("uncertain (-1.0) label" if value.startswith("-1") else "label not mentioned")
            else:
                report = study_dir(reports_root, subject, study).with_suffix(".txt")
                if not report.is_file():
                    raise IngestError(f"no report {report} (set --reports-root to the MIMIC-CXR "
                                      f"release holding files/p../p<subject>/s<study>.txt)", **where,
                                      field="study_id")
                parts = report_sections(report.read_text(encoding="utf-8", errors="replace"))
                if not parts.get("FINDINGS"):
                    note("report without FINDINGS")
                    continue
                extra = {"indication": parts["INDICATION"]} if parts.get("INDICATION") else {}
                rows.append((dicom_id, extra, parts["FINDINGS"]))
            if rows:
                items.append(CxrItem(str(image), meta_path, n, dicom_id, split, view, tuple(rows)))
        except IngestError as exc:
            errors.append(exc.record())
    return items, errors, notes, files


def process_item(task: str, image_size: int, item: CxrItem) -> ItemResult:
    where = {"source": item.source, "row": item.row}
    path = Path(item.image)
    if path.suffix == ".dcm":
        _, pixels = read_display(str(path))
    else:
        try:
            pixels = decode_file(path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - PIL raises many types
            raise IngestError(f"image {path} does not decode ({type(exc).__name__}: {exc})", **where,
                              field="dicom_id") from None
    png = encode_png(square_resize(pixels, image_size))
    spec = image_task(task)
    result = ItemResult(name=item.dicom_id, digest=hashlib.sha256(png).hexdigest())
    for example_id, extra, target in item.rows:
        context = {"view": item.view or "PA", **extra}
        check_prompt(spec, context, 1, **where)
        label = spec.options.index(target) if spec.options else None
        result.examples.append(Example(example_id=example_id, task=task, split=item.split,
                                       context=context, target=target, label=label,
                                       source=f"{path} ({item.source}:{item.row})", images=[png],
                                       image_format="png"))
    return result


def ingest_mimic_cxr(store: ShardStore, root: str, *, task: str = "cxr_classify",
                     reports_root: str | None = None, views: Sequence[str] = ("PA", "AP"),
                     on_error: str = "raise", replace: bool = False, parallel: str = "auto",
                     progress: bool = True) -> IngestSummary:
    """MIMIC-CXR(-JPG) into cxr_classify or cxr_report (see the module docstring)."""
    started = time.perf_counter()
    if task not in ("cxr_classify", "cxr_report"):
        raise IngestError(f"task {task!r}: MIMIC-CXR fills cxr_classify or cxr_report", field="task")
    base = Path(root)
    items, errors, notes, files = plan_items(base, task, {v.strip().upper() for v in views if v.strip()},
                                             Path(reports_root) if reports_root else base)
    results = run_parallel(partial(_process, task, store.config.image_size), items, desc=KIND,
                           parallel=parallel, progress=progress)
    summary = write_ingest(store, kind=KIND, task=task, results=results,
                           source={"path": str(base), "reports_root": reports_root, "views": list(views),
                                   "layout": "mimic-cxr-2.0.0", "split": "official"},
                           on_error=on_error, replace=replace, unit="images", plan_errors=errors,
                           extra_digests=[(Path(f).name, hashlib.sha256(Path(f).read_bytes()).hexdigest())
                                          for f in files], started=started)
    for why, count in notes.items():
        summary.notes[why] = summary.notes.get(why, 0) + count
    return summary


def _process(task: str, image_size: int, item: CxrItem) -> ItemResult:
    return guarded(partial(process_item, task, image_size), item, item.dicom_id)
