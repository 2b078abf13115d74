"""VinDr-Mammo as published -> rows of `mammo_vindr` (BI-RADS per breast image).

    medmix ingest vindr-mammo vindr-mammo/1.0.0/     # breast-level_annotations.csv + images/

Layout (Nguyen et al. 2023, Scientific Data 10:277; the PhysioNet release): `breast-level_
annotations.csv` with `study_id, series_id, image_id, laterality, view_position, height, width,
breast_birads, breast_density, split`, and the DICOM files at `images/<study_id>/<image_id>.dicom`.
`breast_birads` ("BI-RADS 1".."BI-RADS 5") is the label; `split` "training" -> train (10% of the
studies, by a hash of study_id, as val), "test" -> test (the published 4,000 images). Rows of
one study (one patient's exam) share a split. Context: laterality (L/R -> left/right), view
(CC/MLO) and breast density. Pixels go through the DICOM ingest (`ingest.dicom`: LUTs, windows,
every codec pydicom's plugins decode). Example id: the image_id.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from medmix.data.ingest.common import (IngestError, IngestSummary, LabelRow, hash_split, image_task,
                                       read_labels_csv, run_parallel, write_ingest)
from medmix.data.ingest.dicom import DicomItem, DicomOptions, process_or_flag
from medmix.data.store import ShardStore, sha256_file

KIND = "vindr-mammo"
CSV = "breast-level_annotations.csv"
REQUIRED = ("study_id", "image_id", "laterality", "view_position", "breast_birads", "split")
SPLITS = {"training": "train", "test": "test"}
SIDES = {"L": "left", "R": "right"}


def plan_items(root: Path, spec) -> tuple[list[DicomItem], list[dict], str]:
    csv_path = root / CSV
    rows = read_labels_csv(csv_path, required=REQUIRED)
    items, errors, seen = [], [], {}
    for r in rows:
        v = r.values
        try:
            study, image_id = str(v["study_id"]).strip(), str(v["image_id"]).strip()
            if not study or not image_id:
                raise IngestError("missing", source=r.source, row=r.row,
                                  field="study_id" if not study else "image_id")
            if image_id in seen:
                raise IngestError(f"duplicate image_id (first on row {seen[image_id]})",
                                  source=r.source, row=r.row, field="image_id")
            split = SPLITS.get(str(v["split"]).strip().lower())
            if split is None:
                raise IngestError(f"{v['split']!r} is not training or test", source=r.source,
                                  row=r.row, field="split")
            if split == "train":
                split = hash_split(study, (0.9, 0.1, 0.0))
            birads = " ".join(str(v["breast_birads"]).split())
            if birads.upper() not in {o.upper() for o in spec.options}:
                raise IngestError(f"{v['breast_birads']!r} is not one of {', '.join(spec.options)}",
                                  source=r.source, row=r.row, field="breast_birads")
            side = SIDES.get(str(v["laterality"]).strip().upper())
            if side is None:
                raise IngestError(f"{v['laterality']!r} is not L or R", source=r.source, row=r.row,
                                  field="laterality")
            path = root / "images" / study / f"{image_id}.dicom"
            if not path.is_file():
                raise IngestError(f"no DICOM file {path}", source=r.source, row=r.row, field="image_id")
        except IngestError as exc:
            errors.append(exc.record())
            continue
        seen[image_id] = r.row
        values = {"label": birads, "split": split, "group": study, "laterality": side,
                  "view": str(v["view_position"]).strip().upper()}
        if str(v.get("breast_density") or "").strip():
            values["density"] = " ".join(str(v["breast_density"]).split())
        items.append(DicomItem(str(path), f"{study}/{image_id}.dicom",
                               (LabelRow(r.source, r.row, values),), (image_id,)))
    return items, errors, str(csv_path)


def ingest_vindr_mammo(store: ShardStore, folder: str, *, task: str = "mammo_vindr",
                       on_error: str = "raise", replace: bool = False, parallel: str = "auto",
                       progress: bool = True) -> IngestSummary:
    """VinDr-Mammo's breast-level annotations and DICOMs into `mammo_vindr` (module docstring)."""
    started = time.perf_counter()
    spec = image_task(task)
    root = Path(folder)
    if not (root / CSV).is_file():
        raise IngestError(f"no {CSV} here (the release's top folder holds it and images/)",
                          source=str(root))
    items, errors, csv_path = plan_items(root, spec)
    opts = DicomOptions(spec=spec, image_size=store.config.image_size)
    results = run_parallel(partial(process_or_flag, opts), items, desc=KIND, parallel=parallel,
                           progress=progress)
    return write_ingest(store, kind=KIND, task=spec.name, results=results,
                        source={"path": str(root), "labels": csv_path, "layout": "vindr-mammo",
                                "image_size": opts.image_size},
                        on_error=on_error, replace=replace, unit="images", plan_errors=errors,
                        extra_digests=[(CSV, sha256_file(csv_path))], started=started)
