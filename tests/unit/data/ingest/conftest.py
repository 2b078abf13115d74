"""Fixtures for ingest tests: a tmp store, real DICOM copies with fresh ids, snapshots of a store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medmix.data.store import ShardStore, StoreConfig


def make_store(path: Path, rows_per_shard: int = 2048, image_size: int = 64) -> ShardStore:
    return ShardStore(path, StoreConfig(root=str(path), max_rows_per_shard=rows_per_shard,
                                        row_group_rows=2, image_size=image_size))


def snapshot(store: ShardStore) -> tuple[bytes | None, list[str]]:
    """(manifest bytes, every file under the root except quarantine reports)."""
    manifest = store.manifest_path.read_bytes() if store.exists() else None
    files = [f.relative_to(store.loc) for f in store.loc.files() if not f.relative_to(store.loc).startswith("quarantine/")]
    return manifest, files


def testdata(name: str) -> str:
    from pydicom.data import get_testdata_file
    path = get_testdata_file(name)
    assert path, f"pydicom test file {name} not found (pydicom-data installed?)"
    return path


def dicom_copies(folder: Path, names: list[str], copies: int, patient: str | None = None) -> list[Path]:
    """Real DICOM files re-saved with fresh SOPInstanceUIDs (distinct example ids)."""
    import pydicom
    from pydicom.uid import generate_uid
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(copies):
        for name in names:
            ds = pydicom.dcmread(testdata(name))
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[folder.name, name, str(k)])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            if patient is not None:
                ds.PatientID = patient
            path = folder / f"{k:02d}-{Path(name).stem}.dcm"
            ds.save_as(path)
            out.append(path)
    return out


@pytest.fixture(name="snapshot")
def _snapshot():
    return snapshot


@pytest.fixture(name="dicom_copies")
def _dicom_copies():
    return dicom_copies


@pytest.fixture(name="make_store")
def _make_store():
    return make_store


@pytest.fixture
def store(tmp_path) -> ShardStore:
    return make_store(tmp_path / "store")


@pytest.fixture
def small_shards_store(tmp_path) -> ShardStore:
    """Two rows per part file, so an ingest flushes shards long before it ends."""
    return make_store(tmp_path / "store", rows_per_shard=2)


@pytest.fixture
def copy_testdata(tmp_path):
    def copy(name: str, dest: str | None = None) -> Path:
        target = tmp_path / "in" / (dest or name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(testdata(name), target)
        return target
    return copy
