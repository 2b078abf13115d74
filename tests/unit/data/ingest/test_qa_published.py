"""MedQA, MedMCQA and PubMedQA in their published layouts (file names, JSON keys, answer
coding) ingest into their tasks and splits; a broken record names file, line/pmid and field
and leaves the store as it was; --on-error skip quarantines it."""

from __future__ import annotations

import json

import pytest

from medmix.cli import main
from medmix.data.ingest.common import IngestError
from medmix.data.ingest.qa_published import ingest_medmcqa, ingest_medqa, ingest_pubmedqa
from medmix.tasks import get_task, render_prompt


def medqa_line(i: int, **over) -> str:
    rec = {"question": f"A {30 + i}-year-old man has scurvy. Which vitamin is deficient?",
           "answer": "Vitamin C",
           "options": {"A": "Vitamin A", "B": "Vitamin B12", "C": "Vitamin C", "D": "Vitamin D"},
           "meta_info": "step1", "answer_idx": "C",
           "metamap_phrases": ["year old man", "scurvy", "vitamin", "deficient"]}
    rec.update(over)
    return json.dumps({k: v for k, v in rec.items() if v is not ...})


def medmcqa_line(i: int, **over) -> str:
    rec = {"question": f"Nerve injured in fracture of the surgical neck of humerus ({i})?",
           "exp": "The axillary nerve winds round the surgical neck.", "cop": 2,
           "opa": "Radial nerve", "opb": "Axillary nerve", "opc": "Ulnar nerve", "opd": "Median nerve",
           "subject_name": "Anatomy", "topic_name": "Upper limb", "id": f"4e17-{i:04d}",
           "choice_type": "single"}
    rec.update(over)
    return json.dumps({k: v for k, v in rec.items() if v is not ...})


def pqal_record(decision: str = "yes", **over) -> dict:
    rec = {"QUESTION": "Do statins reduce atrial fibrillation after bypass surgery?",
           "CONTEXTS": ["Atrial fibrillation is common after surgery.", "Statin users had less AF."],
           "LABELS": ["BACKGROUND", "RESULTS"], "MESHES": ["Atrial Fibrillation", "Humans"],
           "YEAR": "2006", "reasoning_required_pred": decision, "reasoning_free_pred": decision,
           "final_decision": decision, "LONG_ANSWER": "Preoperative statins reduce AF."}
    rec.update(over)
    return {k: v for k, v in rec.items() if v is not ...}


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_medqa_4_option_files_ingest_with_their_split_and_letter_answers(store, tmp_path):
    folder = tmp_path / "data_clean" / "questions" / "US" / "4_options"
    for split, n in (("train", 3), ("dev", 1), ("test", 2)):
        write_lines(folder / f"phrases_no_exclude_{split}.jsonl", [medqa_line(i) for i in range(n)])
    summary = ingest_medqa(store, [str(folder)], progress=False)
    assert summary.total_rows == 6
    rows = {ex.example_id: ex for ex in store.iter_examples("medqa")}
    ex = rows["phrases_no_exclude_test:2"]
    assert (ex.split, ex.target, ex.label) == ("test", "Vitamin C", 2)
    assert ex.context["options"] == ["Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D"]
    assert ex.context["meta_info"] == "step1"
    assert {r.split for k, r in rows.items() if k.startswith("phrases_no_exclude_dev")} == {"val"}
    assert "(C) Vitamin C" in render_prompt(get_task("medqa"), ex.context)


def test_medqa_5_option_file_and_mixing_both_variants(store, tmp_path, snapshot):
    five = {"A": "Vitamin A", "B": "Vitamin B12", "C": "Vitamin C", "D": "Vitamin D", "E": "Vitamin K"}
    us = tmp_path / "US"
    write_lines(us / "test.jsonl", [medqa_line(0, options=five, answer="Vitamin K", answer_idx="E")])
    write_lines(us / "4_options" / "phrases_no_exclude_test.jsonl", [medqa_line(0)])
    before = snapshot(store)
    with pytest.raises(IngestError, match="4 and 5 options.*ingest one"):
        ingest_medqa(store, [str(us)], progress=False)
    assert snapshot(store) == before
    ingest_medqa(store, [str(us / "test.jsonl")], progress=False)
    (ex,) = store.iter_examples("medqa")
    assert (ex.target, ex.label, ex.split) == ("Vitamin K", 4, "test")


@pytest.mark.parametrize("bad, field, message", [
    ("{not json", None, "not valid JSON"),
    (medqa_line(9, question=""), "question", "missing or empty"),
    (medqa_line(9, options=["a", "b"]), "options", "lettered options"),
    (medqa_line(9, options={"A": "x", "C": "y"}), "options", "not A, B, C"),
    (medqa_line(9, answer_idx="F"), "answer_idx", "not one of the option letters"),
    (medqa_line(9, answer="Vitamin D"), "answer", "is not option C"),
])
def test_medqa_bad_record_names_file_line_and_field(store, tmp_path, snapshot, bad, field, message):
    p = write_lines(tmp_path / "train.jsonl", [medqa_line(0), bad])
    before = snapshot(store)
    with pytest.raises(IngestError) as err:
        ingest_medqa(store, [str(p)], progress=False)
    assert (err.value.source, err.value.row, err.value.field) == (str(p), 2, field)
    assert message in str(err.value) and snapshot(store) == before


def test_medmcqa_published_files_cop_1_to_4_dev_is_test(store, tmp_path):
    write_lines(tmp_path / "train.json", [medmcqa_line(i) for i in range(40)])
    write_lines(tmp_path / "dev.json", [medmcqa_line(100 + i, cop=1) for i in range(3)])
    ingest_medmcqa(store, [str(tmp_path)], progress=False)
    rows = {ex.example_id: ex for ex in store.iter_examples("medmcqa")}
    assert len(rows) == 43
    train = [rows[f"4e17-{i:04d}"] for i in range(40)]
    assert {ex.split for ex in train} <= {"train", "val"} and "train" in {ex.split for ex in train}
    assert all((ex.target, ex.label) == ("Axillary nerve", 1) for ex in train)      # cop 2 = opb
    dev = rows["4e17-0100"]
    assert (dev.split, dev.target, dev.label) == ("test", "Radial nerve", 0)       # cop 1 = opa
    assert dev.context["subject"] == "Anatomy" and dev.context["explanation"].startswith("The axillary")


def test_medmcqa_cop_coding_mismatch_and_missing_answer_name_the_row(store, tmp_path, snapshot):
    p = write_lines(tmp_path / "train.json", [medmcqa_line(0, cop=0), medmcqa_line(1)])
    before = snapshot(store)
    with pytest.raises(IngestError, match=r"0 is outside 1-4.*--cop-base 0") as err:
        ingest_medmcqa(store, [str(p)], progress=False)
    assert (err.value.row, err.value.field) == (1, "cop") and snapshot(store) == before
    # a Hugging Face export (0-3) with the flag
    ingest_medmcqa(store, [str(p)], cop_base=0, progress=False)
    rows = {ex.example_id: ex for ex in store.iter_examples("medmcqa")}
    assert rows["4e17-0000"].target == "Radial nerve" and rows["4e17-0001"].target == "Ulnar nerve"
    # the test file's withheld answers: quarantined with --on-error skip
    t = write_lines(tmp_path / "test.json", [medmcqa_line(7, cop=...), medmcqa_line(8, opc=""),
                                             medmcqa_line(9, cop=3)])
    summary = ingest_medmcqa(store, [str(t)], on_error="skip", progress=False)
    report = [json.loads(x) for x in open(summary.quarantine_path)]
    assert [(r["row"], r["field"]) for r in report] == [(1, "cop"), (2, "opc")]
    assert "ships without answers" in report[0]["error"] and summary.total_rows == 1


def test_pubmedqa_pqal_with_test_ground_truth_beside_it(store, tmp_path):
    data = {"21645374": pqal_record("yes"), "16418930": pqal_record("no"),
            "9488747": pqal_record("maybe"), **{str(1000 + i): pqal_record("no") for i in range(20)}}
    (tmp_path / "ori_pqal.json").write_text(json.dumps(data, indent=4))
    (tmp_path / "test_ground_truth.json").write_text(json.dumps({"21645374": "yes", "9488747": "maybe"}))
    ingest_pubmedqa(store, [str(tmp_path / "ori_pqal.json")], progress=False)
    rows = {ex.example_id: ex for ex in store.iter_examples("pubmedqa")}
    assert len(rows) == 23
    ex = rows["pubmedqa-21645374"]
    assert (ex.split, ex.target, ex.label) == ("test", "yes", 0)
    assert ex.context["abstract"] == ("BACKGROUND: Atrial fibrillation is common after surgery.\n"
                                      "RESULTS: Statin users had less AF.")
    assert ex.context["long_answer"] == "Preoperative statins reduce AF."
    assert rows["pubmedqa-9488747"].split == "test" and rows["pubmedqa-9488747"].target == "maybe"
    others = {r.split for k, r in rows.items() if k not in ("pubmedqa-21645374", "pubmedqa-9488747")}
    assert others <= {"train", "val"}
    assert "Abstract" in render_prompt(get_task("pubmedqa"), ex.context)


@pytest.mark.parametrize("bad, field, message", [
    (pqal_record(final_decision="perhaps"), "final_decision", "not yes, no or maybe"),
    (pqal_record(CONTEXTS=[]), "CONTEXTS", "list of abstract sections"),
    (pqal_record(LABELS=["BACKGROUND"]), "LABELS", "one label per section"),
    (pqal_record(QUESTION=...), "QUESTION", "missing or empty"),
])
def test_pubmedqa_bad_record_names_file_pmid_and_field(store, tmp_path, snapshot, bad, field, message):
    p = tmp_path / "ori_pqal.json"
    p.write_text(json.dumps({"111": pqal_record(), "222": bad}))
    before = snapshot(store)
    with pytest.raises(IngestError) as err:
        ingest_pubmedqa(store, [str(p)], progress=False)
    assert (err.value.source, err.value.field) == (f"{p}#222", field)
    assert message in str(err.value) and snapshot(store) == before


def test_cli_ingests_each_published_layout(tmp_path, capsys):
    root = tmp_path / "store"
    write_lines(tmp_path / "medqa" / "phrases_no_exclude_test.jsonl", [medqa_line(0)])
    write_lines(tmp_path / "mcqa" / "dev.json", [medmcqa_line(0, cop=0)])
    (tmp_path / "ori_pqal.json").write_text(json.dumps({"1": pqal_record()}))
    assert main(["ingest", "medqa", str(tmp_path / "medqa"), "--root", str(root), "--no-progress"]) == 0
    assert main(["ingest", "medmcqa", str(tmp_path / "mcqa"), "--cop-base", "0", "--root", str(root),
                 "--no-progress"]) == 0
    assert main(["ingest", "pubmedqa", str(tmp_path / "ori_pqal.json"), "--root", str(root),
                 "--no-progress"]) == 0
    manifest = json.loads((root / "manifest.json").read_text())
    assert {s["task"]: s["layout"] for s in manifest["sources"]} == {
        "medqa": "medqa", "medmcqa": "medmcqa", "pubmedqa": "pubmedqa"}
