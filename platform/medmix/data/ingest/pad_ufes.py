"""PAD-UFES-20 as published -> rows of `derm_pad`.

    medmix ingest pad-ufes PAD-UFES-20/        # metadata.csv + images/imgs_part_*/PAT_*.png

Layout (Pacheco et al. 2020, Data in Brief 32:106221, "Description of each attribute present in
the metadata CSV file"; data.mendeley.com/datasets/zr7vgbcyr2): `metadata.csv` with the header
`patient_id, lesion_id, smoke, drink, background_father, background_mother, age, pesticide,
gender, skin_cancer_history, cancer_history, has_piped_water, has_sewage_system, fitspatrick,
region, diameter_1, diameter_2, diagnostic, itch, grew, hurt, changed, bleed, elevation,
img_id, biopsed`, and the images, named by `img_id` (`PAT_46_881_14.png`), anywhere under the
folder (the release splits them over imgs_part_1..3).

Mapping: `diagnostic` ACK/BCC/MEL/NEV/SCC/SEK -> the task's options (BOD, Bowen's disease, is
SCC in situ and was merged into SCC by the authors); the column spelled `fitspatrick` ->
`fitzpatrick` (an integer type 1-6); True/False -> yes/no, gender and region lower-cased,
UNK or empty -> absent. The dataset has no published split: rows are split by a hash of
`patient_id`, so one patient's images never straddle splits. Example id: the img_id without
its extension. The answer (`diagnostic`) never enters the context.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any

from medmix.data.ingest.common import (IngestError, IngestSummary, ItemResult, LabelRow, guarded,
                                       image_task, list_files, read_labels_csv, run_parallel,
                                       write_ingest)
from medmix.data.ingest.image_folder import IMAGE_SUFFIXES, ImageItem, ImageOptions, process_row
from medmix.data.store import ShardStore, sha256_file

KIND = "pad-ufes"
DIAGNOSES = {"ACK": "actinic keratosis", "BCC": "basal cell carcinoma", "MEL": "melanoma",
             "NEV": "nevus", "SCC": "squamous cell carcinoma", "SEK": "seborrheic keratosis",
             "BOD": "squamous cell carcinoma"}
REQUIRED = ("patient_id", "lesion_id", "diagnostic", "img_id", "fitspatrick")
BOOLEAN = {"true": "yes", "false": "no"}
MISSING = {"", "unk", "nan", "none"}
LOWER = ("gender", "region", "background_father", "background_mother")
NOT_CONTEXT = {"diagnostic", "img_id"}


def row_values(r: LabelRow, image: Path) -> dict[str, Any]:
    """A metadata.csv row -> the values `image_folder.process_row` reads (file, label, group, id,
    context columns), or IngestError naming the row and field."""
    code = str(r.values.get("diagnostic") or "").strip().upper()
    if code not in DIAGNOSES:
        raise IngestError(f"diagnostic {code!r} is not one of {', '.join(sorted(DIAGNOSES))}",
                          source=r.source, row=r.row, field="diagnostic")
    patient = str(r.values.get("patient_id") or "").strip()
    if not patient:
        raise IngestError("missing: every image needs its patient (the split is by patient)",
                          source=r.source, row=r.row, field="patient_id")
    out: dict[str, Any] = {"file": str(image), "label": DIAGNOSES[code], "group": patient}
    for key, raw in r.values.items():
        if key in NOT_CONTEXT or raw is None or str(raw).strip().lower() in MISSING:
            continue
        value: Any = str(raw).strip()
        if value.lower() in BOOLEAN:
            value = BOOLEAN[value.lower()]
        if key == "fitspatrick":
            try:
                value = int(float(value))
            except ValueError:
                raise IngestError(f"{value!r} is not a Fitzpatrick skin type 1-6", source=r.source,
                                  row=r.row, field="fitspatrick") from None
            if not 1 <= value <= 6:
                raise IngestError(f"{value} is not a Fitzpatrick skin type 1-6", source=r.source,
                                  row=r.row, field="fitspatrick")
            key = "fitzpatrick"
        elif key in LOWER:
            value = value.lower()
        out[key] = value
    return out


def plan_items(folder: Path) -> tuple[list[ImageItem], list[dict], str]:
    """One item per metadata row whose image is found; rows without one are errors."""
    csv_path = folder / "metadata.csv"
    rows = read_labels_csv(csv_path, required=REQUIRED)
    images: dict[str, Path] = {}
    for f, _ in list_files([folder]):
        if f.suffix.lower() in IMAGE_SUFFIXES:
            images.setdefault(f.name, f)
    items, errors, seen = [], [], {}
    for r in rows:
        img_id = str(r.values.get("img_id") or "").strip()
        image = images.get(img_id) or images.get(f"{img_id}.png")
        try:
            if not img_id:
                raise IngestError("missing", source=r.source, row=r.row, field="img_id")
            if img_id in seen:
                raise IngestError(f"duplicate img_id (first on row {seen[img_id]})",
                                  source=r.source, row=r.row, field="img_id")
            if image is None:
                raise IngestError(f"no image {img_id!r} under {folder} (the release keeps them in "
                                  f"images/imgs_part_1..3)", source=r.source, row=r.row, field="img_id")
            values = row_values(r, image)
        except IngestError as exc:
            errors.append(exc.record())
            continue
        seen[img_id] = r.row
        items.append(ImageItem(str(image), LabelRow(r.source, r.row, values), Path(img_id).stem))
    return items, errors, str(csv_path)


def ingest_pad_ufes(store: ShardStore, folder: str, *, task: str = "derm_pad",
                    on_error: str = "raise", replace: bool = False, parallel: str = "auto",
                    progress: bool = True) -> IngestSummary:
    """PAD-UFES-20's metadata.csv and images into `derm_pad` (see the module docstring)."""
    started = time.perf_counter()
    spec = image_task(task)
    if spec.options != image_task("derm_pad").options:
        raise IngestError(f"task {task!r} lacks PAD-UFES-20's six diagnoses as options", field="task")
    root = Path(folder)
    if not root.is_dir():
        raise IngestError("PAD-UFES-20 folder not found (it holds metadata.csv and images/)",
                          source=str(root))
    items, errors, csv_path = plan_items(root)
    opts = ImageOptions(spec=spec, image_size=store.config.image_size)
    results = run_parallel(partial(_process, opts), items, desc="pad-ufes", parallel=parallel,
                           progress=progress)
    return write_ingest(store, kind=KIND, task=spec.name, results=results,
                        source={"path": str(root), "labels": csv_path, "layout": "pad-ufes-20",
                                "split": "hash of patient_id", "image_size": opts.image_size},
                        on_error=on_error, replace=replace, unit="rows", plan_errors=errors,
                        extra_digests=[("metadata.csv", sha256_file(csv_path))], started=started)


def _process(opts: ImageOptions, item: ImageItem) -> ItemResult:
    return guarded(partial(process_row, opts), item, item.example_id)
