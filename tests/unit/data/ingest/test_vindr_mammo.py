"""VinDr-Mammo in its published layout (breast-level_annotations.csv, images/<study>/<image>.dicom)
ingests into mammo_vindr with its BI-RADS labels and split, one study per split."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from pydicom.data import get_testdata_file

from medmix.cli import main
from medmix.data.ingest.common import IngestError
from medmix.data.ingest.vindr_mammo import ingest_vindr_mammo

HEADER = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
          "breast_birads", "breast_density", "split"]


def release(root, rows):
    for r in rows:
        d = root / "images" / r["study_id"]
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(get_testdata_file("CT_small.dcm"), d / f"{r['image_id']}.dicom")
    with open(root / "breast-level_annotations.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HEADER)
        w.writeheader()
        w.writerows(rows)
    return root


def row(study, image, side, view, birads, split):
    return dict(zip(HEADER, [study, f"s{study}", image, side, view, "128", "128", birads, "DENSITY C", split]))


def test_breast_level_csv_and_dicoms_become_birads_rows(store, tmp_path):
    rows = [row(f"st{s}", f"im{s}{k}", "LR"[k % 2], ("CC", "MLO")[k // 2], f"BI-RADS {1 + (s + k) % 5}",
                "test" if s == 0 else "training") for s in range(4) for k in range(4)]
    root = release(tmp_path / "vindr", rows)
    summary = ingest_vindr_mammo(store, str(root), parallel="local", progress=False)
    assert summary.total_rows == 16
    ex = {e.example_id: e for e in store.iter_examples("mammo_vindr")}
    one = ex["im01"]
    assert (one.target, one.split) == ("BI-RADS 2", "test")
    assert one.context["laterality"] == "right" and one.context["view"] == "CC"
    assert one.context["density"] == "DENSITY C"
    by_study: dict[str, set] = {}
    for e in ex.values():
        by_study.setdefault(e.example_id[:3], set()).add(e.split)
    assert all(len(v) == 1 for v in by_study.values()) and by_study["im0"] == {"test"}


@pytest.mark.parametrize("change, field, message", [
    ({"breast_birads": "BI-RADS 7"}, "breast_birads", "is not one of"),
    ({"split": "dev"}, "split", "is not training or test"),
    ({"laterality": "X"}, "laterality", "is not L or R"),
    ({"image_id": "gone"}, "image_id", "no DICOM file"),
])
def test_bad_row_names_csv_row_and_field(store, tmp_path, snapshot, change, field, message):
    rows = [row("st1", "a", "L", "CC", "BI-RADS 1", "training"), row("st1", "b", "R", "CC", "BI-RADS 2", "training")]
    root = release(tmp_path / "vindr", rows)
    rows[1].update(change)
    with open(root / "breast-level_annotations.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HEADER)
        w.writeheader()
        w.writerows(rows)
    before = snapshot(store)
    with pytest.raises(IngestError) as err:
        ingest_vindr_mammo(store, str(root), progress=False)
    assert (err.value.row, err.value.field) == (3, field) and message in str(err.value)
    assert snapshot(store) == before


def test_cli_ingest_vindr_mammo(tmp_path):
    root = release(tmp_path / "vindr", [row("st1", "a", "L", "MLO", "BI-RADS 4", "test")])
    assert main(["ingest", "vindr-mammo", str(root), "--root", str(tmp_path / "s"), "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["sources"][0]["layout"] == "vindr-mammo"
