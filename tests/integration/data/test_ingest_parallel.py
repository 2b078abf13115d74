"""Folder ingest through Ray tasks (the default for 8+ files): same bytes as in-process, exact
rollback when a file midway is bad, quarantine under skip, and the CLI end to end."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from medmix.cli import main
from medmix.data.ingest.common import IngestError
from medmix.data.ingest.dicom import ingest_dicom
from medmix.data.ingest.image_folder import ingest_images
from medmix.data.store import ShardStore, StoreConfig

SMALL = ["CT_small.dcm", "MR_small.dcm"]


def store_at(path: Path, rows_per_shard: int = 2048) -> ShardStore:
    return ShardStore(path, StoreConfig(root=str(path), max_rows_per_shard=rows_per_shard, image_size=64))


def dicom_folder(folder: Path, copies: int, names=SMALL, patient: str | None = "P1") -> list[Path]:
    """Real DICOM files re-saved with fresh SOPInstanceUIDs; one patient -> one split."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(copies):
        for name in names:
            ds = pydicom.dcmread(get_testdata_file(name))
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[folder.name, name, str(k)])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            if patient:
                ds.PatientID = patient
            path = folder / f"{k:02d}-{Path(name).stem}.dcm"
            ds.save_as(path)
            out.append(path)
    return out


def snapshot(store: ShardStore):
    manifest = store.manifest_path.read_bytes() if store.exists() else None
    files = [f.relative_to(store.loc) for f in store.loc.files() if not f.relative_to(store.loc).startswith("quarantine/")]
    return manifest, files


VQA = dict(task="vqa_rad", target="a scan", context=["question=What is shown?"], progress=False)


def test_ray_folder_ingest_matches_in_process_bytes(ray_local, tmp_path):
    dicom_folder(tmp_path / "scans", copies=6, patient=None)  # 12 files: Ray by default
    via_ray = store_at(tmp_path / "ray")
    t0 = time.perf_counter()
    summary = ingest_dicom(via_ray, [str(tmp_path / "scans")], **VQA)
    ray_s = time.perf_counter() - t0
    local = store_at(tmp_path / "local")
    ingest_dicom(local, [str(tmp_path / "scans")], parallel="local", **VQA)
    assert summary.items == 12 and summary.total_rows == 12
    assert via_ray.digest() == local.digest()  # input order kept: identical shards
    assert via_ray.verify() == []
    print(f"ray dicom ingest: 12 files in {ray_s:.2f} s ({12 / ray_s:.1f} files/s)")


def test_bad_file_midway_rolls_back_flushed_shards(ray_local, tmp_path):
    store = store_at(tmp_path / "store", rows_per_shard=2)
    dicom_folder(tmp_path / "first", copies=1)
    ingest_dicom(store, [str(tmp_path / "first")], **VQA)
    before = snapshot(store)
    files = dicom_folder(tmp_path / "scans", copies=8)  # 16 files, one patient: one split
    bad = files[11]
    bad.write_bytes(bad.read_bytes()[:2000])
    with pytest.raises(IngestError, match=bad.name):
        ingest_dicom(store, [str(tmp_path / "scans")], **VQA)
    assert snapshot(store) == before  # manifest byte-identical, no part file left behind
    assert main(["data", "verify", "--root", str(store.root)]) == 0
    # results are consumed in input order, so the 11 good files before the bad one had been
    # written as part files when it failed: the same run under skip shows them
    summary = ingest_dicom(store, [str(tmp_path / "scans")], on_error="skip", **VQA)
    assert summary.total_rows == 15 and len(summary.shards) == 8


def test_skip_through_ray_quarantines_and_commits_the_rest(ray_local, tmp_path):
    store = store_at(tmp_path / "store", rows_per_shard=3)
    files = dicom_folder(tmp_path / "scans", copies=5)
    files[3].write_text("not a dicom file")
    (tmp_path / "scans" / "zz-empty.dcm").write_bytes(b"")
    summary = ingest_dicom(store, [str(tmp_path / "scans")], on_error="skip", **VQA)
    assert summary.items == 11 and summary.total_rows == 9 and summary.quarantined == 2
    report = [json.loads(line) for line in open(summary.quarantine_path)]
    assert [Path(r["source"]).name for r in report] == [files[3].name, "zz-empty.dcm"]
    assert store.counts()["vqa_rad"] == summary.rows
    assert store.verify() == []


def test_ray_image_folder_ingest(ray_local, tmp_path):
    import skimage
    data = Path(skimage.__file__).parent / "data"
    folder = tmp_path / "imgs"
    folder.mkdir()
    names = ["retina.jpg", "ihc.png", "cell.png", "camera.png", "astronaut.png", "coffee.png",
             "microaneurysms.png", "phantom.png", "chelsea.png", "moon.png"]
    for n in names:
        shutil.copy(data / n, folder / n)
    (folder / "labels.csv").write_text("file,label\n" + "".join(
        f"{n},{['benign', 'malignant', 'benign without callback'][i % 3]}\n" for i, n in enumerate(names)))
    store = store_at(tmp_path / "store", rows_per_shard=4)
    summary = ingest_images(store, str(folder), task="mammo_cbis_calc", progress=False)
    assert summary.total_rows == 10 and store.verify() == []
    local = store_at(tmp_path / "local", rows_per_shard=4)
    ingest_images(local, str(folder), task="mammo_cbis_calc", parallel="local", progress=False)
    assert store.digest() == local.digest()


def test_cli_dicom_folder_ingest_with_tiny_shards_then_verify(ray_local, tmp_path, capsys):
    dicom_folder(tmp_path / "scans", copies=5, names=SMALL + ["RG1_UNCI.dcm"], patient=None)
    root = tmp_path / "store"
    t0 = time.perf_counter()
    rc = main(["ingest", "dicom", str(tmp_path / "scans"), "--task", "cxr_report",
               "--target", "No acute findings.", "--root", str(root), "--no-progress",
               "--set", "data.max_rows_per_shard=2", "--set", "data.image_size=64"])
    seconds = time.perf_counter() - t0
    out = capsys.readouterr().out
    assert rc == 0 and "ingested 15 rows of task cxr_report" in out, out
    assert main(["data", "verify", "--root", str(root)]) == 0
    assert "ok:" in capsys.readouterr().out
    shards = ShardStore(root).shards()
    assert sum(s.rows for s in shards) == 15 and max(s.rows for s in shards) == 2
    print(f"cli dicom ingest (5x RG1_UNCI 1955x1841 + 10 small): 15 files in {seconds:.2f} s "
          f"({15 / seconds:.1f} files/s) on {os.cpu_count()} cores")
