"""3D volumes: slice count, order and windowing on volumes we build, the real MRI/CT files
nibabel and pydicom ship, a DICOM series sorted by position, the synthetic lesion set whose
report states slice and side, and bad inputs."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medmix.data.images import decode_image
from medmix.data.ingest.common import IngestError
from medmix.data.store import ShardStore
from medmix.data.ingest.volumes import (VolumeConfig, VolumeInputError, apply_window, ingest_volumes, load_volume,
                                 resample_depth, synthetic_volumes, volume_slices, window_limits)

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def nifti(path: Path, data: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> Path:
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([*zooms, 1.0])), str(path))
    return path


def reports_csv(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "report", "modality"])
        w.writerows(rows)
    return path


def test_depth_resampling_keeps_order_and_interpolates():
    data = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 4, 4), np.float32)
    out = resample_depth(data, 4)   # depths 0, 3, 6, 9
    assert [float(s[0, 0]) for s in out] == [0.0, 3.0, 6.0, 9.0]
    out = resample_depth(data, 19)  # every half slice
    assert float(out[1, 0, 0]) == pytest.approx(0.5) and float(out[-1, 0, 0]) == 9.0
    assert resample_depth(data[:1], 3).shape == (3, 4, 4)


def test_windowing_ct_and_percentile(tmp_path):
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    assert list(apply_window(hu, -160.0, 240.0)) == [0, 0, 128, 255, 255]  # soft tissue 40/400
    vol = load_volume(nifti(tmp_path / "v.nii.gz", np.linspace(0, 99, 5 * 4 * 4).reshape(4, 4, 5)), "CT")
    assert window_limits(vol) == (-160.0, 240.0)
    assert window_limits(vol, "50,100") == (0.0, 100.0)
    vol.modality = "MR"
    lo, hi = window_limits(vol)
    assert lo == pytest.approx(np.percentile(vol.data, 0.5)) and hi == pytest.approx(np.percentile(vol.data, 99.5))


def test_orientation_inferior_first_patient_right_on_image_left(tmp_path):
    """RAS+ volume: a marker at high i (patient right), high j (anterior), low k (inferior)."""
    data = np.zeros((10, 12, 6), np.float32)
    data[8, 10, 1] = 100.0
    vol = load_volume(nifti(tmp_path / "m.nii.gz", data))
    assert vol.data.shape == (6, 12, 10)           # depth, rows (A->P), cols (R->L)
    k, r, c = np.argwhere(vol.data == 100.0)[0]
    assert k == 1 and r == 12 - 1 - 10 and c == 10 - 1 - 8


def test_slices_of_a_stepped_volume(tmp_path):
    depth = 9
    data = np.zeros((16, 16, depth), np.float32)
    for k in range(depth):
        data[:, :, k] = k * 10.0
    vol = load_volume(nifti(tmp_path / "s.nii.gz", data), "CT")
    cfg = VolumeConfig(num_slices=5, image_size=32, window="40,80")   # 0..80 -> 0..255
    slices = volume_slices(vol, cfg)
    assert len(slices) == 5 and all(s.shape == (32, 32, 3) for s in slices)
    means = [int(s[16, 16, 0]) for s in slices]   # depths 0, 2, 4, 6, 8 -> 0, 20, 40, 60, 80 HU
    assert means == [0, 64, 128, 191, 255]


def test_real_nibabel_mri_and_4d(tmp_path):
    store = ShardStore(tmp_path / "store")
    files = [NIBABEL_DATA / "anatomical.nii", NIBABEL_DATA / "example4d.nii.gz"]
    rep = reports_csv(tmp_path / "r.csv", [("anatomical.nii", "Normal brain MRI.", "MR"),
                                           ("example4d.nii.gz", "Functional run.", "")])
    summary = ingest_volumes(store, files, rep, cfg=VolumeConfig(num_slices=8, image_size=64), parallel="local")
    assert summary.total_rows == 2
    rows = {ex.example_id: ex for ex in store.iter_examples("volume_report")}
    anat = rows["anatomical.nii"]
    assert len(anat.images) == 8 and anat.target == "Normal brain MRI."
    assert anat.context["modality"] == "MR" and anat.context["shape"] == [25, 41, 33]  # LAS -> RAS
    imgs = [decode_image(b) for b in anat.images]
    assert all(i.shape == (64, 64, 3) for i in imgs) and np.mean(imgs[4]) > np.mean(imgs[0]) * 0.5
    assert rows["example4d.nii.gz"].context["shape"][0] == 24   # first volume of the 4D series


def test_dicom_series_sorted_by_position(tmp_path):
    """A series of real CT_small slices saved under shuffled names with shifted positions."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid
    series = tmp_path / "series"
    series.mkdir()
    uid = generate_uid(entropy_srcs=["series"])
    for k, name in zip(range(5), ["c.dcm", "a.dcm", "e.dcm", "b.dcm", "d.dcm"]):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(k)])
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], 10.0 - 2.5 * k]
        ds.InstanceNumber = 50 - k
        arr = ds.pixel_array.copy()
        arr[:8, :8] = 200 + 100 * k     # a per-slice mark, in stored values
        ds.PixelData = arr.tobytes()
        ds.save_as(series / name)
    vol = load_volume(series)
    assert vol.modality == "CT" and vol.data.shape == (5, 128, 128)
    assert vol.spacing[0] == pytest.approx(2.5)
    marks = [float(vol.data[i, 0, 0]) for i in range(5)]
    # ascending position along the normal: k = 4 (z = 0) first ... k = 0 (z = 10) last; HU = stored - 1024
    assert marks == [200 + 100 * k - 1024 for k in (4, 3, 2, 1, 0)]
    single = load_volume(get_testdata_file("MR_small.dcm"))
    assert single.data.shape == (1, 64, 64) and single.modality == "MR"
    assert len(volume_slices(single, VolumeConfig(num_slices=4, image_size=32))) == 4


def test_synthetic_lesion_is_where_the_report_says(tmp_path):
    meta = synthetic_volumes(tmp_path / "vols", num=12, num_slices=8, seed=1)
    store = ShardStore(tmp_path / "store")
    ingest_volumes(store, [tmp_path / "vols" / m["file"] for m in meta], tmp_path / "vols" / "reports.csv",
                   cfg=VolumeConfig(num_slices=8, image_size=64), parallel="local")
    rows = {ex.example_id: ex for ex in store.iter_examples("volume_report")}
    assert [m["split"] for m in meta].count("test") == 1 and [m["split"] for m in meta].count("val") == 1
    with_lesion = [m for m in meta if m["side"]]
    assert with_lesion and len(with_lesion) < len(meta)
    for m in meta:
        ex = rows[m["file"]]
        assert ex.context["modality"] == "CT" and len(ex.images) == 8 and ex.split == m["split"]
        imgs = [decode_image(b)[..., 0].astype(int) for b in ex.images]
        if not m["side"]:
            assert ex.target == "No focal lesion." and max(int(i.max()) for i in imgs) < 190
            continue
        assert f"in the {m['side']} side at slice {m['slice']} of 8" in ex.target
        img = imgs[m["slice"] - 1]
        assert img.max() >= 190                                   # lesion (160 HU -> ~204)
        cols = np.flatnonzero((img >= 190).any(axis=0))
        on_left_half = cols.mean() < img.shape[1] / 2
        assert on_left_half == (m["side"] == "right")              # patient right = image left


def test_bad_volumes(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    with pytest.raises(VolumeInputError, match=r"bad\.nii\.gz: not a readable NIfTI"):
        load_volume(bad)
    with pytest.raises(VolumeInputError, match=r"gone\.nii: volume not found"):
        load_volume(tmp_path / "gone.nii")
    good = nifti(tmp_path / "good.nii.gz", np.zeros((4, 4, 4)))
    rep = reports_csv(tmp_path / "r.csv", [("good.nii.gz", "Fine.", "CT")])
    store = ShardStore(tmp_path / "store")
    with pytest.raises(IngestError, match=r"bad\.nii\.gz"):
        ingest_volumes(store, [good, bad], rep, parallel="local")
    assert not store.exists()
    # skip: the bad volume (and the one without a report) are quarantined, the good one lands
    nifti(tmp_path / "unreported.nii.gz", np.zeros((4, 4, 4)))
    summary = ingest_volumes(store, [good, bad, tmp_path / "unreported.nii.gz"], rep, on_error="skip",
                             parallel="local")
    assert summary.total_rows == 1 and summary.quarantined == 2
    two = tmp_path / "two_series"
    two.mkdir()
    from pydicom.data import get_testdata_file
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(get_testdata_file(name), two / name)
    with pytest.raises(VolumeInputError, match=r"two_series: holds 2 DICOM series"):
        load_volume(two)
