"""CBIS-DDSM in its published layout (the four case description CSVs, the DICOM download with
classic or descriptive folder names) ingests into the mass/calc tasks: the cropped patch (not
its ROI mask, even where the two are swapped), the pathology label, the published split with
one patient per split; a bad row names the CSV, its row and the field (issue 16)."""

from __future__ import annotations

import csv
import shutil

import pytest
from pydicom.data import get_testdata_file

from medmix.cli import main
from medmix.data.ingest.cbis_ddsm import ingest_cbis_ddsm
from medmix.data.ingest.common import IngestError

MASS = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
        "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
        "image file path", "cropped image file path", "ROI mask file path"]
CALC = ["patient_id", "breast density", "left or right breast", "image view", "abnormality id",
        "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
        "image file path", "cropped image file path", "ROI mask file path"]
CROP, MASK, FULL = "MR_small.dcm", "CT_small.dcm", "US1_UNCR.dcm"   # 64x64, 128x128, 480x640


def put(path, name):
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(get_testdata_file(name), path)


def case(root, title, patient, side, view, abn, pathology, *, descriptive=False, swapped=False):
    """One abnormality's CSV values, its DICOMs written under `root/CBIS-DDSM/` as NBIA does."""
    full_subject = f"{title}_{patient}_{side}_{view}"
    crop_subject = f"{full_subject}_{abn}"
    full_rel = f"{full_subject}/1.3.6.1.{abn}.1/1.3.6.1.{abn}.2/000000.dcm"
    crop_rel = f"{crop_subject}/1.3.6.1.{abn}.3/1.3.6.1.{abn}.4/000000.dcm"
    mask_rel = f"{crop_subject}/1.3.6.1.{abn}.3/1.3.6.1.{abn}.4/000001.dcm"
    base = root / "CBIS-DDSM"
    if descriptive:
        put(base / full_subject / "07-20-2016-DDSM-NA-1" / "1.000000-full mammogram images-1" / "1-1.dcm", FULL)
        series = base / crop_subject / "07-21-2016-DDSM-NA-2" / "1.000000-ROI mask images-2"
        put(series / "1-1.dcm", MASK)
        put(series / "1-2.dcm", CROP)
    else:
        put(base / full_rel, FULL)
        put(base / (mask_rel if swapped else crop_rel), CROP)
        put(base / (crop_rel if swapped else mask_rel), MASK)
    return {"patient_id": patient, "left or right breast": side, "image view": view, "abnormality id": abn,
            "assessment": "4", "pathology": pathology, "subtlety": "3", "image file path": full_rel,
            "cropped image file path": crop_rel + "\n", "ROI mask file path": mask_rel + "\n"}


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in header})


def mass_release(root, extra=None):
    train = [dict(case(root, "Mass-Training", f"P_{i:05d}", ("LEFT", "RIGHT")[i % 2], ("CC", "MLO")[i % 2], 1,
                       ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK")[i % 3], descriptive=i % 2 == 1,
                       swapped=i == 2), breast_density="3", **{"abnormality type": "mass", "mass shape": "OVAL"})
             for i in range(6)]
    train.append(dict(case(root, "Mass-Training", "P_00000", "LEFT", "CC", 2, "BENIGN"), breast_density="3",
                      **{"abnormality type": "mass"}))
    test = [dict(case(root, "Mass-Test", "P_00100", "RIGHT", "MLO", 1, "MALIGNANT"), breast_density="2",
                 **{"abnormality type": "mass"})]
    if extra:
        train[extra[0]].update(extra[1])
    write_csv(root / "mass_case_description_train_set.csv", MASS, train)
    write_csv(root / "mass_case_description_test_set.csv", MASS, test)
    return root


def test_mass_csvs_and_dicoms_become_patch_rows(store, tmp_path):
    root = mass_release(tmp_path / "cbis")
    summary = ingest_cbis_ddsm(store, str(root), parallel="local", progress=False)
    assert summary.total_rows == 8
    ex = {e.example_id: e for e in store.iter_examples("mammo_cbis_mass")}
    one = ex["Mass-Training_P_00002_LEFT_CC_1"]             # crop and mask swapped on disk: the crop
    assert one.target == "benign without callback" and one.label == 0
    assert one.context["laterality"] == "left" and one.context["view"] == "CC" and one.context["density"] == 3
    assert one.source.endswith("(" + str(root / "mass_case_description_train_set.csv") + ":8)")
    assert "000001.dcm" in one.source                       # the smaller file, named as the mask
    desc = ex["Mass-Training_P_00001_RIGHT_MLO_1"]          # descriptive folder names
    assert desc.source.startswith(str(root / "CBIS-DDSM" / "Mass-Training_P_00001_RIGHT_MLO_1")) and "1-2.dcm" in desc.source
    assert ex["Mass-Test_P_00100_RIGHT_MLO_1"].split == "test"
    assert {e.split for e in ex.values() if "Training" in e.example_id} <= {"train", "val"}
    assert ex["Mass-Training_P_00000_LEFT_CC_1"].split == ex["Mass-Training_P_00000_LEFT_CC_2"].split


def test_full_mammogram_mode_and_calc_task(store, tmp_path):
    root = tmp_path / "cbis"
    rows = [dict(case(root, "Calc-Test", "P_00200", "LEFT", "MLO", 1, "BENIGN"), **{"breast density": "4",
                 "abnormality type": "calcification", "calc type": "PLEOMORPHIC"})]
    write_csv(root / "calc_case_description_test_set.csv", CALC, rows)
    ingest_cbis_ddsm(store, str(root), task="mammo_cbis_calc", image="full", parallel="local", progress=False)
    (e,) = store.iter_examples("mammo_cbis_calc")
    assert (e.target, e.split, e.context["density"]) == ("benign", "test", 4)
    assert "Calc-Test_P_00200_LEFT_MLO/" in e.source


@pytest.mark.parametrize("change, field, message", [
    ({"pathology": "UNKNOWN"}, "pathology", "is not an option of task mammo_cbis_mass"),
    ({"abnormality type": "calcification"}, "abnormality type", "is not 'mass'"),
    ({"left or right breast": "BOTH"}, "left or right breast", "is not LEFT or RIGHT"),
    ({"cropped image file path": "Mass-Training_P_09999_LEFT_CC_1/1/2/000000.dcm"}, "cropped image file path",
     "no DICOM file for"),
])
def test_bad_row_names_csv_row_and_field(store, tmp_path, snapshot, change, field, message):
    root = mass_release(tmp_path / "cbis", extra=(3, change))
    before = snapshot(store)
    with pytest.raises(IngestError) as err:
        ingest_cbis_ddsm(store, str(root), parallel="local", progress=False)
    assert (err.value.source, err.value.row, err.value.field) == (
        str(root / "mass_case_description_train_set.csv"), 11, field)  # the line the record starts on
    assert message in str(err.value) and snapshot(store) == before
    summary = ingest_cbis_ddsm(store, str(root), on_error="skip", parallel="local", progress=False)
    assert summary.total_rows == 7 and summary.quarantined == 1


def test_missing_csvs_and_column_are_named(store, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no mass_case_description_train_set.csv"):
        ingest_cbis_ddsm(store, str(tmp_path / "empty"), progress=False)
    root = tmp_path / "cbis"
    root.mkdir()
    write_csv(root / "mass_case_description_test_set.csv", [c for c in MASS if c != "pathology"], [{}])
    with pytest.raises(IngestError, match="missing column 'pathology'") as err:
        ingest_cbis_ddsm(store, str(root), progress=False)
    assert err.value.field == "pathology"


def test_cli(tmp_path, capsys):
    root = mass_release(tmp_path / "cbis")
    assert main(["ingest", "cbis-ddsm", str(root), "--root", str(tmp_path / "store"), "--parallel", "local",
                 "--no-progress"]) == 0
    assert "ingested 8 rows of task mammo_cbis_mass" in capsys.readouterr().out
