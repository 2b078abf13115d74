"""MIMIC-III NOTEEVENTS and MIMIC-IV-Note radiology.csv, in their published columns, become
findings -> impression rows split by patient; other notes and reports without both sections
are skipped and counted; a bad row names the file, row and field."""

from __future__ import annotations

import csv
import gzip
import json

import pytest

from medmix.cli import main
from medmix.data.ingest.common import IngestError
from medmix.data.ingest.mimic_notes import ingest_mimic_notes, report_sections

M3 = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME", "CATEGORY",
      "DESCRIPTION", "CGID", "ISERROR", "TEXT"]
REPORT = """[**2101-1-1**] 8:00 AM
 CHEST (PORTABLE AP)                                             Clip # [**Clip Number (Radiology) 1**]
 Reason: eval for pneumonia
 ______________________________________________________________________________
                                 FINAL REPORT
 INDICATION:  Fever.

 FINDINGS:  The heart size is normal.  There is a new left lower lobe
 opacity.  No pleural effusion.

 IMPRESSION:  Left lower lobe pneumonia.
"""


def m3_row(row_id, subject, category="Radiology", text=REPORT, iserror=""):
    return dict(zip(M3, [row_id, subject, "100", "2101-01-01", "", "", category, "CHEST (PORTABLE AP)",
                         "", iserror, text]))


def write_gz(path, header, rows):
    with gzip.open(path, "wt", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    return path


def test_report_sections_split_on_upper_case_headers():
    parts = report_sections(REPORT)
    assert parts["FINDINGS"] == ("The heart size is normal. There is a new left lower lobe opacity. "
                                 "No pleural effusion.")
    assert parts["IMPRESSION"] == "Left lower lobe pneumonia."


def test_noteevents_radiology_rows_become_summaries_split_by_subject(store, tmp_path):
    rows = [m3_row(i, 10 + i // 3) for i in range(1, 13)]
    rows += [m3_row(50, 11, category="Nursing"), m3_row(51, 11, iserror="1"),
             m3_row(52, 12, text="FINAL REPORT\n IMPRESSION: nothing new.")]
    path = write_gz(tmp_path / "NOTEEVENTS.csv.gz", M3, rows)
    summary = ingest_mimic_notes(store, str(path), progress=False)
    assert summary.total_rows == 12
    assert summary.notes == {"not a radiology note": 1, "marked ISERROR": 1, "missing FINDINGS or IMPRESSION": 1}
    ex = {e.example_id: e for e in store.iter_examples("mimic3_summary")}
    one = ex["mimic3-1"]
    assert one.target == "Left lower lobe pneumonia." and one.context["exam"] == "CHEST (PORTABLE AP)"
    assert one.context["findings"].startswith("The heart size is normal.")
    splits: dict[int, set] = {}
    for i in range(1, 13):
        splits.setdefault(10 + i // 3, set()).add(ex[f"mimic3-{i}"].split)
    assert all(len(v) == 1 for v in splits.values())


def test_mimic4_note_radiology_csv_and_bad_rows(store, tmp_path, snapshot):
    header = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]
    rows = [dict(zip(header, ["10000032-RR-14", "10000032", "", "RR", "14", "", "", REPORT]))]
    path = write_gz(tmp_path / "radiology.csv.gz", header, rows)
    ingest_mimic_notes(store, str(path), progress=False)
    assert [e.example_id for e in store.iter_examples("mimic3_summary")] == ["mimic4-10000032-RR-14"]
    bad = write_gz(tmp_path / "bad.csv.gz", M3, [m3_row(1, 5), m3_row(2, "")])
    before = snapshot(store)
    with pytest.raises(IngestError) as err:
        ingest_mimic_notes(store, str(bad), progress=False)
    assert (err.value.row, err.value.field) == (3, "SUBJECT_ID") and snapshot(store) == before
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(IngestError, match="neither MIMIC-III NOTEEVENTS"):
        ingest_mimic_notes(store, str(other), progress=False)
    root = tmp_path / "s"
    assert main(["ingest", "mimic-notes", str(path), "--root", str(root), "--no-progress"]) == 0
    assert json.loads((root / "manifest.json").read_text())["sources"][0]["kind"] == "mimic-notes"
