"""MIMIC-CXR(-JPG) in its published tree and CSVs ingests into cxr_classify (CheXpert labels
per condition, uncertain ones skipped) and cxr_report (report FINDINGS), official split."""

from __future__ import annotations

import csv
import gzip
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from medmix.cli import main
from medmix.data.ingest.common import IngestError
from medmix.data.ingest.mimic_cxr import ingest_mimic_cxr

META = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
        "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
        "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
CHEX = ["subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
        "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity", "No Finding",
        "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices"]
REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with cough

 FINDINGS:  The heart size is normal.  The lungs are clear.  No pleural effusion.

 IMPRESSION:  No acute cardiopulmonary process.
"""


def write_csv_gz(path, header, rows):
    with gzip.open(path, "wt", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)


def release(root, images, dicom=None):
    """images: (dicom_id, subject, study, view, split); chexpert per study."""
    meta, split = [], []
    for dicom_id, subject, study, view, sp in images:
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        if dicom_id == dicom:
            shutil.copy(get_testdata_file("CT_small.dcm"), folder / f"{dicom_id}.dcm")
        else:
            Image.fromarray(np.full((20, 16), 100, np.uint8)).save(folder / f"{dicom_id}.jpg")
        (folder.parent / f"s{study}.txt").write_text(REPORT)
        meta.append(dict(zip(META, [dicom_id, subject, study, "CHEST (PA AND LAT)", view, "20", "16",
                                    "21800506", "213014.531", "CHEST (PA AND LAT)", "postero-anterior", "Erect"])))
        split.append({"dicom_id": dicom_id, "study_id": study, "subject_id": subject, "split": sp})
    write_csv_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", META, meta)
    write_csv_gz(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split)
    studies = sorted({(s, st) for _, s, st, _, _ in images})
    chex = [dict(zip(CHEX, [s, st, "1.0", "0.0", "-1.0", "", "", "", "", "", "", "1.0", "", "", "", ""]))
            for s, st in studies]
    write_csv_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", CHEX, chex)
    return root


IMAGES = [("d1", "10000032", "50414267", "PA", "train"), ("d2", "10000032", "50414267", "LATERAL", "train"),
          ("d3", "10000764", "57375967", "AP", "test"), ("d4", "10000898", "50771383", "PA", "validate")]


def test_chexpert_labels_become_per_condition_rows_with_official_split(store, tmp_path):
    root = release(tmp_path / "mimic-cxr-jpg", IMAGES, dicom="d4")
    summary = ingest_mimic_cxr(store, str(root), task="cxr_classify", parallel="local", progress=False)
    ex = {e.example_id: e for e in store.iter_examples("cxr_classify")}
    assert set(ex) == {f"{d}:{c}" for d in ("d1", "d3", "d4")
                       for c in ("atelectasis", "cardiomegaly", "pleural effusion")}
    assert ex["d1:atelectasis"].target == "yes" and ex["d1:cardiomegaly"].target == "no"
    assert ex["d3:pleural effusion"].split == "test" and ex["d4:atelectasis"].split == "val"
    assert ex["d1:atelectasis"].context == {"view": "PA", "condition": "atelectasis"}
    assert summary.notes["uncertain (-1.0) label"] == 3 and summary.notes["view not in AP,PA"] == 1


def test_reports_give_findings_rows_and_missing_pieces_are_named(store, tmp_path, snapshot):
    root = release(tmp_path / "mimic-cxr-jpg", IMAGES[:1])
    ingest_mimic_cxr(store, str(root), task="cxr_report", progress=False)
    (ex,) = store.iter_examples("cxr_report")
    assert ex.target == "The heart size is normal. The lungs are clear. No pleural effusion."
    assert ex.context == {"view": "PA", "indication": "___ with cough"} and ex.example_id == "d1"
    (root / "files" / "p10" / "p10000032" / "s50414267" / "d1.jpg").unlink()
    before = snapshot(store)
    with pytest.raises(IngestError) as err:
        ingest_mimic_cxr(store, str(root), task="cxr_report", replace=True, progress=False)
    assert (err.value.row, err.value.field) == (2, "dicom_id") and "no image" in str(err.value)
    assert snapshot(store) == before


def test_cli_ingest_mimic_cxr(tmp_path):
    root = release(tmp_path / "r", IMAGES[:1])
    assert main(["ingest", "mimic-cxr", str(root), "--task", "cxr_classify", "--root", str(tmp_path / "s"),
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["sources"][0]["kind"] == "mimic-cxr"
