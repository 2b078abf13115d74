"""DICOM files or folders -> image rows of one task, in parallel Ray tasks.

    medmix ingest dicom scans/ --task cxr_report --labels reports.csv
    medmix ingest dicom a.dcm b.dcm --task cxr_classify --target no --context condition=edema

Pixels: the stored values go through the Modality LUT (rescale slope/intercept or LUT), then
the VOI LUT or window (the file's first one); MONOCHROME1 is inverted so that dense tissue is
bright, as on a MONOCHROME2 display; the result is scaled to 8 bits over the VOI output range,
padded to a square and resized to the store's image size (`square_resize`) and stored as PNG.
With no VOI in the file the 0.5-99.5 percentile range is the window. Multi-frame files give
their middle frame, and only that frame is decoded (volumes are the `volume` ingest's job).
Colour (RGB/YBR) passes through.

Codecs: pydicom's pixel-data plugins decode every transfer syntax its own test files use —
uncompressed (little/big endian, implicit/explicit, deflated), RLE (pylibjpeg-rle), JPEG
baseline/extended/lossless (pylibjpeg-libjpeg), JPEG-LS (pylibjpeg-libjpeg) and JPEG 2000
(pylibjpeg-openjpeg); all are medmix dependencies. Two header faults whose answer the file
itself fixes are repaired in memory (never on disk): a missing Transfer Syntax UID on
uncompressed pixels (the encoding the dataset was read with is the syntax), and a malformed
NumberOfFrames on uncompressed pixels whose byte count is an exact number of frames. What
cannot decode (a corrupt compressed stream, truncated pixels, a missing image-pixel element)
is this file's error, naming the field and the transfer syntax.

Context from the header: ViewPosition -> `view`, Modality -> `modality`, BodyPartExamined ->
`body_part`, ImageLaterality/Laterality -> `laterality`, PatientSex -> `sex`, PatientAge ->
`age` (years). `--context KEY=VALUE` and the labels CSV's extra columns override them.

Labels: every row needs its answer. `--labels CSV` has a `file` column (the path relative to
the folder given, or the file name) and `label` (tasks with options: option text, letter or
0-based index) or `target` (free-text tasks); optional `split`, `id`, `group`, and any other
column becomes a context field. A file may have several rows (one per condition asked); a
file with no row is a bad item. Without a CSV, `--target` gives every file the same answer.
We do not store unlabelled rows: nothing could train or be scored on them.

Example ids are `dcm-<SOPInstanceUID>` (the same image ingested twice is a duplicate). The
split is a hash of PatientID (else StudyInstanceUID), so one patient never spans splits.
"""

from __future__ import annotations

import hashlib
import re
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medmix.data.images import encode_png, square_resize, to_uint8_rgb
from medmix.data.ingest.common import (IngestError, IngestSummary, ItemResult, LabelRow,
                                       check_prompt, check_split, guarded, hash_split,
                                       image_task, list_files, parse_context_args,
                                       read_labels_csv, run_parallel, target_and_label,
                                       write_ingest)
from medmix.data.schema import Example
from medmix.data.store import ShardStore, sha256_file
from medmix.tasks.spec import TaskSpec

KIND = "dicom"
SEX = {"M": "male", "F": "female", "O": "other"}
LATERALITY = {"L": "left", "R": "right", "B": "both", "U": "unpaired"}
AGE_UNITS = {"D": "days", "W": "weeks", "M": "months"}


@dataclass(frozen=True)
class DicomItem:
    path: str
    name: str
    """Path relative to the folder given: the key a labels CSV matches."""
    labels: tuple[LabelRow, ...]
    """The CSV rows (or the one `--target` row) this file's examples come from."""
    ids: tuple[str, ...] = ()
    """Example ids chosen from the CSV `id` column, one per label row ('' = from the header)."""


@dataclass(frozen=True)
class DicomOptions:
    spec: TaskSpec
    image_size: int


# --- pixels ---------------------------------------------------------------------------------

UNCOMPRESSED = {  # (implicit VR, little endian) as read -> the syntax that encoding is
    (True, True): "1.2.840.10008.1.2",
    (False, True): "1.2.840.10008.1.2.1",
    (False, False): "1.2.840.10008.1.2.2",
}
PLUGINS = "pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg and pylibjpeg-rle"


def _encapsulated(ds: Any) -> bool:
    elem = ds.get("PixelData")
    return bool(getattr(elem, "is_undefined_length", False))


def repair_header(ds: Any) -> list[str]:
    """Fix, in memory, the header faults the file itself answers; returns what was changed."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID
    fixed: list[str] = []
    meta = getattr(ds, "file_meta", None)
    if ("TransferSyntaxUID" not in (meta or {}) and not _encapsulated(ds)
            and getattr(ds, "original_encoding", (None, None)) in UNCOMPRESSED):
        if meta is None:
            ds.file_meta = meta = FileMetaDataset()
        meta.TransferSyntaxUID = UID(UNCOMPRESSED[ds.original_encoding])
        fixed.append(f"TransferSyntaxUID set to {meta.TransferSyntaxUID.name} (as read)")
    raw = ds.get("NumberOfFrames", None)
    if raw is not None and not _encapsulated(ds):
        try:
            int(raw)
        except (TypeError, ValueError):
            try:
                frame = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
                         * int(ds.BitsAllocated) // 8)
                count, rest = divmod(len(ds.PixelData), frame) if frame else (0, 1)
            except (AttributeError, TypeError, ValueError):
                count, rest = 0, 1
            if count >= 1 and rest in (0, 1):  # one byte of padding to an even length
                ds.NumberOfFrames = count
                fixed.append(f"NumberOfFrames {str(raw)!r} set to {count} (from the pixel bytes)")
    return fixed


def frame_count(ds: Any) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def display_frame(ds: Any) -> np.ndarray:
    """The one frame medmix shows (a multi-frame file's middle one), decoding only that frame;
    colour comes back as RGB (pydicom converts YBR)."""
    from pydicom.pixels import pixel_array
    frames = frame_count(ds)
    return pixel_array(ds, index=frames // 2 if frames > 1 else None)


def decode_error(ds: Any, exc: Exception, path: str | None = None) -> IngestError:
    """Why the pixels of `ds` did not decode, naming the field, the transfer syntax and a fix."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    name = getattr(syntax, "name", None) or "no transfer syntax"
    text = " ".join(str(exc).split())
    missing = re.search(r"Missing required element: \(0028,[0-9A-Fa-f]{4}\) '([^']+)'", text)
    if missing:
        field = missing.group(1).replace(" ", "")
        return IngestError(f"the image pixel module lacks {field}: the file is not a complete "
                           f"image; re-export it from its source", source=path, field=field)
    if "less than expected" in text or "cannot reshape" in text:
        return IngestError(f"pixel data is truncated ({text}); the file was cut short: copy it "
                           f"again from its source", source=path, field="PixelData")
    if "missing dependencies" in text or "no pixel data decoders" in text.lower():
        return IngestError(f"no decoder installed for {name} ({syntax}); install medmix's "
                           f"dependencies ({PLUGINS})", source=path, field="PixelData")
    if syntax is not None and getattr(syntax, "is_compressed", False):
        return IngestError(f"the {name} ({syntax}) pixel stream is corrupt: every installed "
                           f"decoder failed ({type(exc).__name__}: {text[:300]}); re-export "
                           f"the image from its source", source=path, field="PixelData")
    return IngestError(f"cannot decode pixel data ({name}; {type(exc).__name__}: {text[:300]})",
                       source=path, field="PixelData")


def to_display(ds: Any) -> np.ndarray:
    """A DICOM dataset's pixels as 8-bit display values: HxW (grey) or HxWx3 (colour)."""
    return _display_from(ds, display_frame(ds))


def _display_from(ds: Any, arr: np.ndarray) -> np.ndarray:
    """`to_display` on a frame already decoded from `ds`."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return to_uint8_rgb(arr)  # pydicom already converted YBR to RGB
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)  # no copy if float64
    lo = hi = None
    lut = "VOILUTSequence" in ds  # preferred over a window, as pydicom does
    if lut or ("WindowCenter" in ds and "WindowWidth" in ds):
        # a VOI LUT indexes integers; a window takes real values
        ends = np.array([-2**31, 2**31 - 1], dtype=np.int64) if lut else np.array([-1e12, 1e12])
        inputs = np.rint(values).astype(np.int64) if lut else values
        try:
            windowed = apply_voi_lut(inputs, ds, index=0)
            # the VOI output range: where the function sends the far ends of the input
            lo, hi = (float(v) for v in apply_voi_lut(ends, ds, index=0))
            values = np.asarray(windowed, dtype=np.float64)
        except (ValueError, IndexError, TypeError, AttributeError):
            lo = hi = None  # a malformed VOI: fall back to the data's own range
    if lo is None or hi is None or hi <= lo:
        lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    scaled = values - lo  # in place from here on: full-resolution films are ~4 Mpx of float64
    scaled *= 255.0 / max(hi - lo, 1e-6)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    if photometric == "MONOCHROME1":
        np.subtract(255.0, scaled, out=scaled)
    return np.rint(scaled, out=scaled).astype(np.uint8)


def header_context(ds: Any) -> dict[str, Any]:
    """The task-relevant header fields, in the names prompts use."""
    out: dict[str, Any] = {}
    view = str(ds.get("ViewPosition", "") or "").strip()
    if view:
        out["view"] = view
    for key, name in (("Modality", "modality"), ("BodyPartExamined", "body_part")):
        value = str(ds.get(key, "") or "").strip()
        if value:
            out[name] = value
    lat = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").strip().upper()
    if lat in LATERALITY:
        out["laterality"] = LATERALITY[lat]
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    if sex in SEX:
        out["sex"] = SEX[sex]
    age = str(ds.get("PatientAge", "") or "").strip().upper()
    if len(age) == 4 and age[:3].isdigit():
        out["age"] = int(age[:3]) if age[3] == "Y" else f"{int(age[:3])} {AGE_UNITS.get(age[3], age[3])}"
    return out


# --- one file -------------------------------------------------------------------------------

def read_dicom(path: str) -> Any:
    """The dataset, header repaired (`repair_header`), or IngestError naming the file and what
    is wrong; pixels are decoded later, one frame (`read_display`)."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on every odd VR in real-world headers
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError as exc:
            raise IngestError(f"not a DICOM file ({exc}); use --pattern to select only DICOM "
                              f"files", source=path) from None
        except Exception as exc:  # noqa: BLE001 - truncated headers raise many types
            raise IngestError(f"unreadable DICOM ({type(exc).__name__}: {exc})", source=path) from None
        if "PixelData" not in ds and "FloatPixelData" not in ds:
            sop = ds.get("SOPClassUID", None)
            what = f"SOP class {getattr(sop, 'name', sop)}" if sop else "no SOP class either"
            raise IngestError(f"no pixel data ({what}): the file is truncated or not an image",
                              source=path, field="PixelData")
        repair_header(ds)
    return ds


def read_display(path: str) -> tuple[Any, np.ndarray]:
    """The dataset and its 8-bit display pixels, or IngestError naming the file and field."""
    ds = read_dicom(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            frame = display_frame(ds)
        except Exception as exc:  # noqa: BLE001 - each plugin raises its own types
            raise decode_error(ds, exc, path) from None
    try:
        return ds, _display_from(ds, frame)
    except Exception as exc:  # noqa: BLE001 - odd LUTs, shapes
        raise IngestError(f"cannot convert pixels to 8-bit ({type(exc).__name__}: {exc})",
                          source=path, field="PixelData") from None


def process_file(opts: DicomOptions, item: DicomItem) -> ItemResult:
    """One DICOM file -> one example per label row (bad rows of a good file are its errors)."""
    with open(item.path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    ds, pixels = read_display(item.path)
    png = encode_png(square_resize(pixels, opts.image_size))
    header = header_context(ds)
    uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    group = str(ds.get("PatientID", "") or ds.get("StudyInstanceUID", "") or uid or item.name)
    base_id = f"dcm-{uid}" if uid else f"dcm-{item.name}"
    result = ItemResult(name=item.name, digest=digest)
    for k, lab in enumerate(item.labels):
        try:
            result.examples.append(_example(opts.spec, item, lab, k, header, png, base_id, group))
        except IngestError as exc:
            result.errors.append(exc.record())
    return result


def _example(spec: TaskSpec, item: DicomItem, lab: LabelRow, k: int, header: dict, png: bytes,
             base_id: str, group: str) -> Example:
    where = lab.source if lab.row is not None else item.path
    context = {**header, **lab.context()}
    target, label = target_and_label(spec, lab.values, source=where, row=lab.row)
    check_prompt(spec, context, 1, source=where, row=lab.row)
    split = check_split(lab.values.get("split"), source=where, row=lab.row)
    if split is None:
        split = hash_split(str(lab.values.get("group") or group))
    given = item.ids[k] if k < len(item.ids) else ""
    example_id = given or (base_id if len(item.labels) == 1 else f"{base_id}#{k}")
    source = item.path if lab.row is None else f"{item.path} ({lab.source}:{lab.row})"
    return Example(example_id=example_id, task=spec.name, split=split, context=context,
                   target=target, label=label, source=source, images=[png], image_format="png")


# --- the whole ingest -----------------------------------------------------------------------

def plan_items(paths: Sequence[str], *, labels: str | None, target: str | None,
               context: dict[str, Any], pattern: str = "*") -> tuple[list[DicomItem], list[dict]]:
    """Files to read, each with its label rows; CSV rows naming no file found are errors."""
    if labels is None and target is None:
        raise IngestError("give --labels CSV (file -> label/target) or --target TEXT (one answer "
                          "for every file); rows without an answer are not stored", field="--labels")
    files = [(f, n) for f, n in list_files(paths, pattern, skip=[labels] if labels else [])
             if f.name.upper() != "DICOMDIR"]
    if not files:
        raise IngestError(f"empty source: no files matching {pattern!r}", source=", ".join(map(str, paths)))
    if labels is None:
        row = LabelRow(source="--target", row=None,
                       values={"label": target, "target": target, **context})
        return [DicomItem(str(f), n, (row,)) for f, n in files], []
    rows = read_labels_csv(labels, required=["file"])
    rows = [LabelRow(r.source, r.row, {**context, **r.values}) for r in rows]
    ids = [r.values.get("id") or "" for r in rows]
    by_key: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_key.setdefault(str(r.values.get("file", "")).strip(), []).append(i)
    basenames: dict[str, int] = {}
    for _, n in files:
        basenames[Path(n).name] = basenames.get(Path(n).name, 0) + 1
    items, used = [], set()
    for f, n in files:
        hits = by_key.get(n) or (by_key.get(Path(n).name) if basenames[Path(n).name] == 1 else None) or []
        used.update(hits)
        items.append(DicomItem(str(f), n, tuple(rows[i] for i in hits), tuple(ids[i] for i in hits)))
    errors = [{"source": rows[i].source, "row": rows[i].row, "field": "file",
               "error": f"no DICOM file {rows[i].values.get('file')!r} under {', '.join(map(str, paths))}"}
              for i in range(len(rows)) if i not in used]
    return items, errors


def process_or_flag(opts: DicomOptions, item: DicomItem) -> ItemResult:
    """`process_file`, with a file that has no label row flagged before any decoding."""
    if not item.labels:
        return ItemResult(name=item.name, errors=[IngestError(
            "no row in the labels CSV for this file (match by path relative to the folder, or "
            "by file name)", source=item.path, field="file").record()])
    return guarded(partial(process_file, opts), item, item.name)


def ingest_dicom(store: ShardStore, paths: Sequence[str], *, task: str, labels: str | None = None,
                 target: str | None = None, context: Sequence[str] | dict = (), pattern: str = "*",
                 on_error: str = "raise", replace: bool = False, parallel: str = "auto",
                 progress: bool = True) -> IngestSummary:
    """Ingest DICOM files/folders into `store` as rows of `task` (see the module docstring)."""
    started = time.perf_counter()
    spec = image_task(task)
    ctx = context if isinstance(context, dict) else parse_context_args(context)
    items, orphan_rows = plan_items(paths, labels=labels, target=target, context=ctx, pattern=pattern)
    opts = DicomOptions(spec=spec, image_size=store.config.image_size)
    results = run_parallel(partial(process_or_flag, opts), items, desc="dicom", parallel=parallel,
                           progress=progress)
    extra = [("labels.csv", sha256_file(labels))] if labels else []
    source = {"path": [str(p) for p in paths], "labels": labels, "target": target,
              "image_size": opts.image_size}
    return write_ingest(store, kind=KIND, task=spec.name, results=results, source=source,
                        on_error=on_error, replace=replace, extra_digests=extra, unit="files",
                        plan_errors=orphan_rows, started=started)
