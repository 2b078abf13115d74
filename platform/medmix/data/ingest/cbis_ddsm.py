"""CBIS-DDSM as published -> rows of `mammo_cbis_mass` / `mammo_cbis_calc` (pathology per
abnormality patch).

    medmix ingest cbis-ddsm CBIS-DDSM/ --task mammo_cbis_mass     # mass_case_description_*.csv
    medmix ingest cbis-ddsm CBIS-DDSM/ --task mammo_cbis_calc     # calc_case_description_*.csv

Layout (Lee et al. 2017, Scientific Data 4:170177; the TCIA collection page lists the four
description CSVs beside the DICOM download): `mass_case_description_train_set.csv`,
`mass_case_description_test_set.csv`, `calc_case_description_{train,test}_set.csv`, with
columns `patient_id, breast_density` (`breast density` in the calc files), `left or right
breast, image view, abnormality id, abnormality type, mass shape, mass margins` (calc: `calc
type, calc distribution`), `assessment, pathology, subtlety, image file path, cropped image
file path, ROI mask file path`. The file paths read `<Subject ID>/<StudyInstanceUID>/
<SeriesInstanceUID>/000000.dcm` (the NBIA retriever's classic folder names); the retriever's
descriptive names (`<Subject ID>/<date-DDSM-...>/<n-cropped images-...>/1-1.dcm`) are found
through the Subject ID folder, directly under the folder given or under its `CBIS-DDSM/`.

The tasks classify the abnormality patch: the cropped image (`--image full`: the whole
mammogram instead). A crop shares its series with the abnormality's ROI mask, and the two
file names are known to be swapped in places, so the crop is the smaller of the DICOMs there
(the mask has the mammogram's size). Label: `pathology` (MALIGNANT, BENIGN,
BENIGN_WITHOUT_CALLBACK -> the task's options). Split: the published one -- the train CSV ->
train, with 10% of its patients (a hash of patient_id) as val; the test CSV -> test; one
patient's rows share a split. Context: laterality, view, breast density. Example id: the
crop's Subject ID (`Mass-Training_P_00001_LEFT_CC_1`). Pixels go through the DICOM ingest
(`ingest.dicom`). A bad row names the CSV, its row and the field.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from medmix.data.ingest.common import (IngestError, IngestSummary, ItemResult, LabelRow, guarded,
                                       hash_split, image_task, read_labels_csv, resolve_option,
                                       run_parallel, write_ingest)
from medmix.data.ingest.dicom import DicomItem, DicomOptions, process_file
from medmix.data.store import ShardStore, sha256_file

KIND = "cbis-ddsm"
ABNORMALITY = {"mammo_cbis_mass": ("mass", "Mass"), "mammo_cbis_calc": ("calc", "Calc")}
TYPES = {"mass": "mass", "calc": "calcification"}
SETS = {"train": ("Training", "train"), "test": ("Test", "test")}
REQUIRED = ("patient_id", "left or right breast", "image view", "abnormality id", "abnormality type",
            "pathology", "image file path", "cropped image file path")
SIDES = {"LEFT": "left", "RIGHT": "right"}
IMAGES = ("cropped", "full")


@dataclass(frozen=True)
class CbisItem:
    """One CSV row: where its DICOM(s) may be, and the label row the example comes from."""

    candidates: tuple[str, ...]   # DICOM files, one of which is the image
    pick: str                     # smallest (a crop beside its mask) or largest (a mammogram)
    name: str
    label: LabelRow
    example_id: str


def csv_name(prefix: str, which: str) -> str:
    return f"{prefix}_case_description_{which}_set.csv"


def find_csvs(root: Path, prefix: str) -> list[tuple[str, Path]]:
    """(set, path) of the description CSVs of one abnormality type (at most one level down)."""
    out = []
    for which in SETS:
        name = csv_name(prefix, which)
        hits = [p for p in (root / name, *sorted(root.glob(f"*/{name}"))) if p.is_file()]
        if hits:
            out.append((which, hits[0]))
    if not out:
        raise IngestError(f"no {csv_name(prefix, 'train')} or {csv_name(prefix, 'test')} here (the "
                          f"description CSVs from the collection page, beside the DICOM folder)",
                          source=str(root))
    return out


def _bases(root: Path) -> list[Path]:
    return [b for b in (root, root / "CBIS-DDSM") if b.is_dir()]


def dicoms_for(bases: list[Path], rel: str) -> list[Path]:
    """The DICOM files a CSV path may mean: the file's own folder (classic names), else every
    DICOM under the Subject ID folder (descriptive names)."""
    rel = rel.strip().strip('"').replace("\\", "/").strip()
    if not rel:
        return []
    for base in bases:
        p = base / rel
        if p.parent.is_dir() and p.parent != base:
            found = sorted(p.parent.glob("*.dcm"))
            if found:
                return found
    subject = rel.split("/", 1)[0]
    for base in bases:
        folder = base / subject
        if folder.is_dir():
            return sorted(folder.rglob("*.dcm"))
    return []


def plan_items(root: Path, spec, image: str) -> tuple[list[CbisItem], list[dict], list[Path]]:
    prefix, title = ABNORMALITY[spec.name]
    bases = _bases(root)
    items: list[CbisItem] = []
    errors: list[dict] = []
    csvs = find_csvs(root, prefix)
    for which, path in csvs:
        rows = read_labels_csv(path, required=REQUIRED)
        for r in rows:
            v = r.values
            try:
                items.append(_item(r, v, which, title, prefix, spec, bases, image))
            except IngestError as exc:
                errors.append(exc.record())
    return items, errors, [p for _, p in csvs]


def _item(r: LabelRow, v: dict, which: str, title: str, prefix: str, spec, bases, image: str) -> CbisItem:
    where = {"source": r.source, "row": r.row}
    patient = str(v["patient_id"]).strip()
    if not patient:
        raise IngestError("missing", **where, field="patient_id")
    kind = str(v["abnormality type"]).strip().lower()
    if kind != TYPES[prefix]:
        raise IngestError(f"{v['abnormality type']!r} is not {TYPES[prefix]!r}, the abnormality of task "
                          f"{spec.name}", **where, field="abnormality type")
    side = SIDES.get(str(v["left or right breast"]).strip().upper())
    if side is None:
        raise IngestError(f"{v['left or right breast']!r} is not LEFT or RIGHT", **where,
                          field="left or right breast")
    view = str(v["image view"]).strip().upper()
    if view not in ("CC", "MLO"):
        raise IngestError(f"{v['image view']!r} is not CC or MLO", **where, field="image view")
    abn = str(v["abnormality id"]).strip()
    if not abn.isdigit():
        raise IngestError(f"{v['abnormality id']!r} is not a number", **where, field="abnormality id")
    label = resolve_option(spec.options, str(v["pathology"]).strip(), task=spec.name, field="pathology",
                           **where)
    column = "cropped image file path" if image == "cropped" else "image file path"
    candidates = dicoms_for(bases, str(v[column] or ""))
    if not candidates:
        raise IngestError(f"no DICOM file for {str(v[column] or '').strip()!r} (looked for its folder "
                          f"and its Subject ID folder under {', '.join(map(str, bases))})", **where,
                          field=column)
    title_set, split = SETS[which]
    if split == "train":
        split = hash_split(patient, (0.9, 0.1, 0.0))
    example_id = f"{title}-{title_set}_{patient}_{side.upper()}_{view}_{abn}"
    values = {"label": spec.options[label], "split": split, "group": patient, "laterality": side,
              "view": view}
    density = str(v.get("breast_density") or v.get("breast density") or "").strip()
    if density:
        values["density"] = density
    return CbisItem(tuple(map(str, candidates)), "smallest" if image == "cropped" else "largest",
                    example_id, LabelRow(r.source, r.row, values), example_id)


def choose(item: CbisItem) -> str:
    """The crop (smallest Rows x Columns) or the mammogram (largest) among the candidates."""
    if len(item.candidates) == 1:
        return item.candidates[0]
    import pydicom
    sizes = []
    for path in item.candidates:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception as exc:  # noqa: BLE001 - truncated headers raise many types
                raise IngestError(f"unreadable DICOM {path} ({type(exc).__name__}: {exc})",
                                  source=item.label.source, row=item.label.row, field="image") from None
        sizes.append((int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0), path))
    return (min(sizes) if item.pick == "smallest" else max(sizes))[1]


def process_item(opts: DicomOptions, item: CbisItem) -> ItemResult:
    path = choose(item)
    return process_file(opts, DicomItem(path, item.name, (item.label,), (item.example_id,)))


def ingest_cbis_ddsm(store: ShardStore, folder: str, *, task: str = "mammo_cbis_mass", image: str = "cropped",
                     on_error: str = "raise", replace: bool = False, parallel: str = "auto",
                     progress: bool = True) -> IngestSummary:
    """CBIS-DDSM's description CSVs and DICOMs into a CBIS task (module docstring)."""
    started = time.perf_counter()
    if task not in ABNORMALITY:
        raise IngestError(f"task {task!r} is not a CBIS-DDSM task; use {' or '.join(ABNORMALITY)}", field="task")
    if image not in IMAGES:
        raise IngestError(f"--image {image!r} must be one of {', '.join(IMAGES)}", field="image")
    spec = image_task(task)
    root = Path(folder)
    if not root.is_dir():
        raise IngestError("no such folder", source=str(root))
    items, errors, csvs = plan_items(root, spec, image)
    opts = DicomOptions(spec=spec, image_size=store.config.image_size)
    results = run_parallel(partial(_process, opts), items, desc=KIND, parallel=parallel, progress=progress)
    return write_ingest(store, kind=KIND, task=spec.name, results=results,
                        source={"path": str(root), "labels": [str(p) for p in csvs], "layout": "cbis-ddsm",
                                "image": image, "image_size": opts.image_size},
                        on_error=on_error, replace=replace, unit="images", plan_errors=errors,
                        extra_digests=[(p.name, sha256_file(p)) for p in csvs], started=started)


def _process(opts: DicomOptions, item: CbisItem) -> ItemResult:
    return guarded(partial(process_item, opts), item, item.name)
