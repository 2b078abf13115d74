"""3D volumes (Med-Gemini-3D): a CT/MR volume as an ordered sequence of windowed slices.

    medmix ingest volumes scans/*.nii.gz series_dir/ --reports reports.csv --slices 16

Each input is a NIfTI file (nibabel; 4D takes its first volume) or a DICOM series (a folder
of slices of one SeriesInstanceUID, or one multi-frame file; pydicom). Volumes are brought to
axial slices in radiological display: NIfTI is reoriented to RAS+ (`as_closest_canonical`),
so a slice's rows run anterior -> posterior and its columns patient right -> left (the
patient's right is on the image's left, as on a radiology screen); DICOM slices are shown as
stored and ordered along the slice normal. Slice 1 is the most inferior.

Then: `num_slices` slices are resampled evenly along depth (linear interpolation between
neighbouring slices), windowed to uint8 — CT in Hounsfield units with `window` = "C,W"
(default soft tissue 40,400); anything else between the volume's 0.5th and 99.5th
percentiles — padded square and resized to `image_size` (`images.square_resize`), and stored
as PNGs in one row, in order. The row's target is the report (from `--reports`, a CSV with
columns `file,report`), empty without one. `synthetic_volumes` writes the bundled set: CT-like
NIfTI volumes with a bright lesion whose slice and side the report states.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from medmix.data.images import encode_png, square_resize
from medmix.data.ingest.common import (IngestError, IngestSummary, ItemResult, guarded, hash_split, input_digest,
                                       run_parallel, write_ingest)
from medmix.data.schema import SPLITS, Example
from medmix.data.store import sha256_file
from medmix.options import ConfigError, option, validate

NIFTI_SUFFIXES = (".nii", ".nii.gz")
CT_DEFAULT_WINDOW = (40.0, 400.0)   # soft tissue: centre, width in HU
PERCENTILES = (0.5, 99.5)


class VolumeInputError(IngestError):
    """A volume file or series that cannot be read; the message names it."""


@dataclass
class VolumeConfig:
    """How a volume becomes a sequence of slice images."""

    num_slices: int = option(16, "slices kept per volume, evenly spaced along depth", ge=1, le=256)
    image_size: int = option(224, "side of each stored slice image, px", ge=16, le=1024)
    window: str = option("auto", "'auto' (CT soft tissue 40,400 HU; else percentiles), 'percentile', or 'C,W'")

    def validate(self) -> None:
        if self.window not in ("auto", "percentile"):
            try:
                _parse_window(self.window)
            except ValueError:
                raise ConfigError(f"window = {self.window!r}: use auto, percentile or centre,width "
                                  f"(e.g. 40,400)") from None


@dataclass
class Volume:
    data: np.ndarray         # (depth, rows, cols) float32, slice 0 most inferior
    modality: str            # CT, MR, ... (DICOM Modality; NIfTI: as given)
    spacing: tuple[float, float, float]  # mm between slices, rows, cols
    path: str


def _parse_window(text: str) -> tuple[float, float]:
    c, w = (float(x) for x in text.split(","))
    if w <= 0:
        raise ValueError(text)
    return c, w


def load_nifti(path: str | Path, modality: str = "MR") -> Volume:
    import nibabel as nib
    try:
        img = nib.load(str(path))
        if len(img.shape) == 4:
            img = img.slicer[..., 0]
        if len(img.shape) != 3:
            raise VolumeInputError(f"{path}: NIfTI of shape {img.shape} is not a 3D volume")
        img = nib.as_closest_canonical(img)
        a = np.asarray(img.get_fdata(dtype=np.float32))
    except VolumeInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        raise VolumeInputError(f"{path}: not a readable NIfTI volume ({exc})") from exc
    zooms = img.header.get_zooms()[:3]
    data = np.ascontiguousarray(a[::-1, ::-1, :].transpose(2, 1, 0))
    return Volume(data, modality, (float(zooms[2]), float(zooms[1]), float(zooms[0])), str(path))


def load_dicom(path: str | Path) -> Volume:
    """A folder holding one DICOM series, or one (multi-frame) DICOM file."""
    import pydicom
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    slices = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f))
        except Exception as exc:  # noqa: BLE001
            if path.is_dir() and f.suffix.lower() != ".dcm":
                continue  # DICOMDIR-style folders hold other files too
            raise VolumeInputError(f"{f}: not a readable DICOM file ({exc})") from exc
        if "PixelData" not in ds:
            continue
        slices.append((f, ds))
    if not slices:
        raise VolumeInputError(f"{path}: no DICOM image found")
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise VolumeInputError(f"{path}: holds {len(series)} DICOM series; give one folder per "
                               f"series (SeriesInstanceUIDs {', '.join(sorted(series)[:3])} ...)")

    def position(ds) -> float:
        ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
        if ipp is not None and iop is not None:
            normal = np.cross(np.array(iop[:3], float), np.array(iop[3:], float))
            return float(np.dot(normal, np.array(ipp, float)))
        return float(ds.get("InstanceNumber", 0) or 0)

    slices.sort(key=lambda s: position(s[1]))
    planes = []
    for f, ds in slices:
        try:
            px = ds.pixel_array.astype(np.float32)
        except Exception as exc:  # noqa: BLE001
            raise VolumeInputError(f"{f}: pixel data cannot be decoded ({exc})") from exc
        px = px * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
        planes.append(px if px.ndim == 3 else px[None])
    shapes = {p.shape[1:] for p in planes}
    if len(shapes) > 1:
        raise VolumeInputError(f"{path}: slices differ in size ({', '.join(map(str, shapes))})")
    ds = slices[0][1]
    rows_mm, cols_mm = (float(x) for x in ds.get("PixelSpacing", [1, 1]))
    gaps = np.diff([position(d) for _, d in slices])
    depth_mm = float(np.median(np.abs(gaps))) if len(gaps) else float(ds.get("SliceThickness", 1) or 1)
    return Volume(np.concatenate(planes, axis=0), str(ds.get("Modality", "OT")),
                  (depth_mm, rows_mm, cols_mm), str(path))


def load_volume(path: str | Path, modality: str | None = None) -> Volume:
    path = Path(path)
    if not path.exists():
        raise VolumeInputError(f"{path}: volume not found")
    if path.name.endswith(NIFTI_SUFFIXES):
        return load_nifti(path, modality or "MR")
    vol = load_dicom(path)
    if modality:
        vol.modality = modality
    return vol


def resample_depth(data: np.ndarray, n: int) -> np.ndarray:
    """n slices at evenly spaced depths (first and last slice kept), linearly interpolated."""
    depth = data.shape[0]
    pos = np.linspace(0, depth - 1, n)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, depth - 1)
    frac = (pos - lo)[:, None, None].astype(np.float32)
    return data[lo] * (1 - frac) + data[hi] * frac


def window_limits(vol: Volume, window: str = "auto") -> tuple[float, float]:
    if window == "auto" and vol.modality.upper() == "CT":
        c, w = CT_DEFAULT_WINDOW
    elif window in ("auto", "percentile"):
        lo, hi = np.percentile(vol.data, PERCENTILES)
        return float(lo), float(hi if hi > lo else lo + 1)
    else:
        c, w = _parse_window(window)
    return c - w / 2, c + w / 2


def apply_window(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.rint(np.clip((data - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def volume_slices(vol: Volume, cfg: VolumeConfig) -> list[np.ndarray]:
    """The stored images: num_slices (image_size, image_size, 3) uint8, inferior first."""
    lo, hi = window_limits(vol, cfg.window)
    planes = apply_window(resample_depth(vol.data, cfg.num_slices), lo, hi)
    return [square_resize(p, cfg.image_size) for p in planes]


def slice_number(depth_index: float, depth: int, num_slices: int) -> int:
    """1-based stored slice nearest to a (0-based) depth index of the original volume."""
    if depth <= 1 or num_slices == 1:
        return 1
    return int(round(depth_index / (depth - 1) * (num_slices - 1))) + 1


def volume_example(path: str, cfg: VolumeConfig, task: str, split: str, modality: str | None,
                   report: str) -> Example:
    vol = load_volume(path, modality)
    images = [encode_png(s) for s in volume_slices(vol, cfg)]
    example_id = Path(path).name
    return Example(example_id=example_id, task=task,
                   split=hash_split(example_id) if split == "auto" else split,
                   context={"modality": vol.modality, "num_slices": len(images),
                            "shape": list(vol.data.shape), "spacing_mm": [round(s, 3) for s in vol.spacing]},
                   target=report, label=None, source=str(path), images=images, image_format="png")


def _digest(path: Path) -> str:
    """sha256 of a file, or of a series folder's files (name + sha256 each)."""
    if path.is_file():
        return sha256_file(path)
    return input_digest((f.name, sha256_file(f)) for f in sorted(path.iterdir()) if f.is_file())


def read_reports(path: str | Path) -> dict[str, tuple[str, str | None, str | None]]:
    """CSV `file,report[,modality][,split]` -> {file name or path: (report, modality, split)}."""
    path = Path(path)
    if not path.is_file():
        raise VolumeInputError(f"{path}: reports CSV not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"file", "report"} <= set(reader.fieldnames):
            raise VolumeInputError(f"{path}: needs columns `file` and `report` (has "
                                   f"{', '.join(reader.fieldnames or [])})")
        out = {}
        for i, row in enumerate(reader, start=2):
            split = (row.get("split") or "").strip().lower() or None
            if split and split not in SPLITS:
                raise VolumeInputError(f"split {split!r} must be one of {', '.join(SPLITS)} (or empty)",
                                       source=str(path), row=i, field="split")
            out[row["file"]] = (row["report"], row.get("modality") or None, split)
        return out


def ingest_volumes(store, paths: list[str | Path], reports: str | Path, task: str = "volume_report",
                   split: str = "auto", modality: str | None = None, cfg: VolumeConfig | None = None,
                   on_error: str = "raise", parallel: str = "auto", replace: bool = False,
                   progress: bool = False) -> IngestSummary:
    """NIfTI files / DICOM series -> one row per volume (Ray tasks from 8 volumes on).

    Args:
        reports: CSV `file,report[,modality][,split]`; `file` is the path as given or its file
            name; a row's `split` overrides `split`. A volume without a report is a bad item
            (we store no unlabelled rows).
        modality: for every volume (NIfTI carries none: default MR; DICOM: its Modality tag);
            the reports CSV's `modality` column sets it per file.
        on_error: "raise" (stop, store unchanged) or "skip" (quarantine bad volumes).
    """
    started = time.perf_counter()
    cfg = cfg or VolumeConfig()
    validate(cfg)
    if not paths:
        raise VolumeInputError("no volume given")
    texts = read_reports(reports)
    items = []
    for p in map(str, paths):
        report, mod, row_split = texts.get(p, texts.get(Path(p).name, ("", None, None)))
        items.append((p, report, mod or modality, row_split or split))
    results = run_parallel(partial(_volume_item, cfg=cfg, task=task), items,
                           desc="volumes", parallel=parallel, progress=progress)
    source = {"path": [p for p, *_ in items], "reports": str(reports), "num_slices": cfg.num_slices,
              "image_size": cfg.image_size, "window": cfg.window}
    return write_ingest(store, kind="volumes", task=task, results=results, source=source,
                        on_error=on_error, replace=replace, unit="volumes", started=started,
                        extra_digests=[(Path(reports).name, sha256_file(reports))])


def _volume_item(item: tuple[str, str, str | None, str], cfg: VolumeConfig, task: str) -> ItemResult:
    path, report, modality, split = item

    def one(_) -> ItemResult:
        if not report.strip():
            raise VolumeInputError("no report for this volume in the reports CSV", source=path)
        return ItemResult(name=Path(path).name, digest=_digest(Path(path)),
                          examples=[volume_example(path, cfg, task, split, modality, report)])
    return guarded(one, item, Path(path).name)


# --- the bundled synthetic set ------------------------------------------------------------

def synthetic_volumes(out_dir: str | Path, num: int, num_slices: int, seed: int = 0,
                      lesion_fraction: float = 0.7) -> list[dict]:
    """CT-like NIfTI volumes (HU) with or without a bright round lesion; returns per volume
    {file, report, side, slice, depth, split} and writes `reports.csv` beside them."""
    import nibabel as nib
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    meta = []
    for k in range(num):
        size, depth = 48, int(rng.integers(24, 41))
        x, y, z = np.meshgrid(np.arange(size), np.arange(size), np.arange(depth), indexing="ij")
        vol = np.full((size, size, depth), -1000.0, dtype=np.float32)  # air
        body = ((x - size / 2) / (size * 0.42)) ** 2 + ((y - size / 2) / (size * 0.36)) ** 2 <= 1
        vol[body] = 40.0
        vol += rng.normal(0, 8, size=vol.shape).astype(np.float32)
        item = {"file": f"vol{k:04d}.nii.gz", "depth": depth, "side": None, "slice": None}
        if rng.random() < lesion_fraction:
            side = "right" if rng.random() < 0.5 else "left"
            # RAS+: larger i is the patient's right
            cx = size / 2 + (1 if side == "right" else -1) * rng.uniform(6, 11)
            cy = size / 2 + rng.uniform(-6, 6)
            cz = rng.uniform(3, depth - 4)
            radius = rng.uniform(2.5, 4.0)
            mm = round(2 * radius * 1.5)
            lesion = (x - cx) ** 2 + (y - cy) ** 2 + ((z - cz) * 1.0) ** 2 <= radius ** 2
            vol[lesion] = 160.0 + rng.normal(0, 8, size=int(lesion.sum()))
            n = slice_number(cz, depth, num_slices)
            item.update(side=side, slice=n, centre=(float(cx), float(cy), float(cz)))
            item["report"] = (f"A {mm} mm hyperdense lesion in the {side} side at slice {n} of "
                              f"{num_slices}. No other focal abnormality.")
        else:
            item["report"] = "No focal lesion."
        img = nib.Nifti1Image(vol, np.diag([1.5, 1.5, 1.5, 1.0]))
        img.header.set_xyzt_units("mm")
        nib.save(img, str(out / item["file"]))
        meta.append(item)
    # the last tenth (at least one volume) is test, the tenth before it val
    held = max(1, num // 10)
    for k, item in enumerate(meta):
        item["split"] = "test" if k >= num - held else ("val" if k >= num - 2 * held else "train")
    with open(out / "reports.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "report", "modality", "split"])
        for item in meta:
            w.writerow([item["file"], item["report"], "CT", item["split"]])
    return meta
