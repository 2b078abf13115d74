"""DICOM ingest on real files: pydicom's test files and pydicom-data's chest X-ray RG1_UNCI."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from medmix.cli import main
from medmix.data.images import decode_image
from medmix.data.ingest.common import IngestError
from medmix.data.ingest.dicom import header_context, ingest_dicom, to_display


def stored_images(store, task):
    return {ex.source.split(" (")[0].rsplit("/", 1)[-1]: (ex, decode_image(ex.images[0]))
            for ex in store.iter_examples(task)}


def region(img: np.ndarray, rows: tuple[float, float], cols: tuple[float, float]) -> float:
    h, w = img.shape[:2]
    return float(img[int(rows[0] * h):int(rows[1] * h), int(cols[0] * w):int(cols[1] * w)].mean())


def lungs_dark_mediastinum_bright(img: np.ndarray) -> bool:
    lungs = (region(img, (.3, .6), (.18, .32)) + region(img, (.3, .6), (.68, .82))) / 2
    return region(img, (.3, .6), (.45, .55)) > lungs + 30


def diaphragm_below_lungs(img: np.ndarray) -> bool:
    """Upright PA film: the bright diaphragm/abdomen band is at the bottom, dark lungs above."""
    upper = (region(img, (.2, .4), (.18, .32)) + region(img, (.2, .4), (.68, .82))) / 2
    lower = (region(img, (.85, .95), (.18, .32)) + region(img, (.85, .95), (.68, .82))) / 2
    return lower > upper + 30


def test_real_chest_xray_is_inverted_windowed_and_upright(store, copy_testdata):
    path = copy_testdata("RG1_UNCI.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 15
    summary = ingest_dicom(store, [str(path)], task="cxr_report", progress=False,
                           target="Lungs are clear.")
    assert summary.total_rows == 1
    ex, img = stored_images(store, "cxr_report")["RG1_UNCI.dcm"]
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    gray = img[..., 0].astype(float)
    assert lungs_dark_mediastinum_bright(gray)
    assert diaphragm_below_lungs(gray)
    # the checks can fail: an uninverted or upside-down film does not pass them
    assert not lungs_dark_mediastinum_bright(255 - gray)
    assert not diaphragm_below_lungs(np.flipud(gray))
    assert ex.context == {"view": "PA", "modality": "CR", "body_part": "CHEST", "sex": "female"}
    assert ex.example_id == f"dcm-{ds.SOPInstanceUID}"
    assert ex.image_format == "png" and ex.target == "Lungs are clear."


def test_display_conversion_uses_the_full_8_bit_range_on_shipped_files(copy_testdata):
    for name in ("CT_small.dcm", "MR_small.dcm", "vlut_04.dcm", "mlut_18.dcm"):
        ds = pydicom.dcmread(copy_testdata(name))
        out = to_display(ds)
        assert out.dtype == np.uint8 and out.shape == (ds.Rows, ds.Columns), name
        assert out.max() - out.min() > 150, name  # windowed to 8 bits, not a flat grey


def test_monochrome1_is_the_inverse_of_the_same_pixels_as_monochrome2(copy_testdata):
    ds = pydicom.dcmread(copy_testdata("RG1_UNCI.dcm"))
    mono1 = to_display(ds).astype(int)
    ds.PhotometricInterpretation = "MONOCHROME2"
    assert np.abs(mono1 + to_display(ds).astype(int) - 255).max() <= 1


def test_multiframe_gives_the_middle_frame(copy_testdata):
    ds = pydicom.dcmread(copy_testdata("emri_small.dcm"))
    frames = int(ds.NumberOfFrames)
    assert frames == 10
    out = to_display(ds)
    assert out.shape == (ds.Rows, ds.Columns)
    middle = ds.pixel_array[frames // 2].astype(float)
    assert np.corrcoef(out.ravel(), middle.ravel())[0, 1] > 0.95


def test_header_context_maps_age_laterality_and_view(copy_testdata):
    ds = pydicom.dcmread(copy_testdata("RG3_UNCI.dcm"))
    ctx = header_context(ds)
    assert ctx["view"] == "AP" and ctx["body_part"] == "EXTREMITY" and ctx["modality"] == "CR"
    ds.PatientAge, ds.ImageLaterality = "045Y", "L"
    assert header_context(ds)["age"] == 45 and header_context(ds)["laterality"] == "left"
    ds.PatientAge = "006M"
    assert header_context(ds)["age"] == "6 months"


def test_labels_csv_gives_per_file_answers_context_and_split(store, copy_testdata, tmp_path):
    copy_testdata("RG1_UNCI.dcm", "cxr/a/RG1_UNCI.dcm")
    copy_testdata("CT_small.dcm", "cxr/b/CT_small.dcm")
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label,condition,split\n"
                   "a/RG1_UNCI.dcm,no,edema,test\n"
                   "a/RG1_UNCI.dcm,yes,cardiomegaly,test\n"
                   "CT_small.dcm,(A),edema,train\n")
    summary = ingest_dicom(store, [str(tmp_path / "in" / "cxr")], task="cxr_classify",
                           labels=str(csv), progress=False)
    assert summary.rows == {"test": 2, "train": 1}
    rows = {ex.example_id: ex for ex in store.iter_examples("cxr_classify")}
    rg1 = [ex for ex in rows.values() if "RG1_UNCI" in ex.source]
    assert sorted(ex.example_id[-2:] for ex in rg1) == ["#0", "#1"]
    assert {(ex.context["condition"], ex.target, ex.label) for ex in rg1} == {("edema", "no", 1),
                                                                              ("cardiomegaly", "yes", 0)}
    ct = next(ex for ex in rows.values() if "CT_small" in ex.source)
    assert ct.target == "yes" and ct.context["modality"] == "CT" and ct.split == "train"
    assert "labels.csv:4" in ct.source
    assert store.manifest()["sources"][-1]["labels"] == str(csv)


def test_missing_context_field_is_named(store, copy_testdata):
    path = copy_testdata("CT_small.dcm")
    with pytest.raises(IngestError, match=r"field 'condition'.*--context condition=VALUE"):
        ingest_dicom(store, [str(path)], task="cxr_classify", target="no", progress=False)


def test_corrupt_dicom_is_named_and_store_unchanged(store, copy_testdata, tmp_path, snapshot):
    good = copy_testdata("CT_small.dcm", "scans/01-good.dcm")
    ingest_dicom(store, [str(good)], task="vqa_rad", target="ct", context=["question=What?"],
                 progress=False)
    before = snapshot(store)
    folder = tmp_path / "bad"
    folder.mkdir()
    data = good.read_bytes()
    (folder / "01-good.dcm").write_bytes(data)
    (folder / "02-truncated.dcm").write_bytes(data[:len(data) // 2])
    (folder / "03-notdicom.dcm").write_text("hello, I am a text file\n")
    (folder / "04-header-only.dcm").write_bytes(data[:400])
    for name, pattern in (("02-truncated.dcm", r"pixel data is truncated|no pixel data"),
                          ("03-notdicom.dcm", r"not a DICOM file"),
                          ("04-header-only.dcm", r"no pixel data|unreadable DICOM")):
        one = tmp_path / f"only-{name}"
        one.mkdir()
        (one / name).write_bytes((folder / name).read_bytes())
        with pytest.raises(IngestError, match=pattern) as err:
            ingest_dicom(store, [str(one)], task="vqa_rad", target="ct", context=["question=What?"],
                         progress=False, replace=True)
        assert name in str(err.value)
        assert snapshot(store) == before


def test_skip_quarantines_corrupt_files_and_ingests_the_rest(store, copy_testdata, tmp_path):
    good = copy_testdata("MR_small.dcm", "scans/01-good.dcm")
    (good.parent / "02-notdicom.dcm").write_bytes(b"\x00" * 300)
    (good.parent / "03-truncated.dcm").write_bytes(good.read_bytes()[:3000])
    summary = ingest_dicom(store, [str(good.parent)], task="vqa_rad", target="mr",
                           context=["question=What?"], on_error="skip", progress=False)
    assert summary.total_rows == 1 and summary.quarantined == 2
    report = [json.loads(line) for line in open(summary.quarantine_path)]
    assert [r["source"].rsplit("/", 1)[-1] for r in report] == ["02-notdicom.dcm", "03-truncated.dcm"]
    assert all(set(r) == {"source", "row", "field", "error"} for r in report)
    assert store.verify() == []


def test_label_rows_without_files_and_files_without_rows_are_bad_items(store, copy_testdata, tmp_path):
    good = copy_testdata("MR_small.dcm", "scans/MR_small.dcm")
    copy_testdata("CT_small.dcm", "scans/CT_small.dcm")
    csv = tmp_path / "labels.csv"
    csv.write_text("file,target,question\nMR_small.dcm,mr,What?\nmissing.dcm,ct,What?\n")
    with pytest.raises(IngestError, match=r"labels.csv, row 3, field 'file': no DICOM file 'missing.dcm'"):
        ingest_dicom(store, [str(good.parent)], task="vqa_rad", labels=str(csv), progress=False)
    summary = ingest_dicom(store, [str(good.parent)], task="vqa_rad", labels=str(csv),
                           on_error="skip", progress=False)
    assert summary.total_rows == 1 and summary.quarantined == 2
    errors = [json.loads(line)["error"] for line in open(summary.quarantine_path)]
    assert any("no row in the labels CSV" in e for e in errors)


def test_no_answer_source_unknown_task_and_volume_task_are_errors(store, copy_testdata, tmp_path):
    from medmix.tasks import UnknownTaskError
    path = str(copy_testdata("CT_small.dcm"))
    with pytest.raises(IngestError, match="give --labels CSV"):
        ingest_dicom(store, [path], task="cxr_report", progress=False)
    with pytest.raises(UnknownTaskError, match="unknown task 'cxr_nope'"):
        ingest_dicom(store, [path], task="cxr_nope", target="x", progress=False)
    with pytest.raises(IngestError, match="does not take one image per example"):
        ingest_dicom(store, [path], task="volume_report", target="x", progress=False)
    with pytest.raises(IngestError, match="no such file or folder"):
        ingest_dicom(store, ["/nonexistent/scans"], task="cxr_report", target="x", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".hidden.dcm").write_bytes(b"")
    with pytest.raises(IngestError, match="empty source: no files matching '\\*'"):
        ingest_dicom(store, [str(empty)], task="cxr_report", target="x", progress=False)


def test_cli_ingest_dicom_then_data_verify(tmp_path, copy_testdata, capsys):
    path = copy_testdata("RG1_UNCI.dcm")
    root = tmp_path / "cli-store"
    rc = main(["ingest", "dicom", str(path), "--task", "cxr_report", "--target", "Normal chest.",
               "--root", str(root), "--no-progress", "--set", "data.image_size=32"])
    out = capsys.readouterr().out
    assert rc == 0 and "ingested 1 rows of task cxr_report" in out and "files/s" in out
    assert main(["data", "verify", "--root", str(root)]) == 0
    assert "ok: 1 shards, 1 rows" in capsys.readouterr().out
    # a bad file prints one clear line, no traceback, and exit 1
    bad = tmp_path / "bad.dcm"
    bad.write_text("not dicom")
    assert main(["ingest", "dicom", str(bad), "--task", "cxr_report", "--target", "x",
                 "--root", str(root), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("medmix: error: ") and "bad.dcm" in err and "Traceback" not in err
