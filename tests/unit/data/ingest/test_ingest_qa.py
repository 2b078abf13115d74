"""QA JSONL ingest: MCQ rows, answers as text/letter/index, errors with file + line + field."""

from __future__ import annotations

import json

import pytest

from medmix.cli import main
from medmix.data.ingest.common import IngestError
from medmix.data.ingest.qa import ingest_qa
from medmix.tasks import get_task, render_prompt

OPTIONS = ["Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D"]


def line(i: int, **over) -> str:
    rec = {"id": f"q{i}", "question": f"Question {i}: which vitamin?", "options": OPTIONS,
           "answer": "Vitamin C"}
    rec.update(over)
    return json.dumps({k: v for k, v in rec.items() if v is not ...})


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_becomes_mcq_rows_with_answers_in_every_form(store, tmp_path):
    p = write(tmp_path / "medqa.jsonl", [line(1), line(2, answer="B"), line(3, answer=3, split="test"),
                                         "", line(4, answer="(a)", split="val")])
    summary = ingest_qa(store, [str(p)], task="medqa", progress=False)
    assert summary.total_rows == 4 and summary.items == 1
    rows = {ex.example_id: ex for ex in store.iter_examples("medqa")}
    assert [(rows[f"q{i}"].target, rows[f"q{i}"].label) for i in range(1, 5)] == [
        ("Vitamin C", 2), ("Vitamin B12", 1), ("Vitamin D", 3), ("Vitamin A", 0)]
    assert rows["q3"].split == "test" and rows["q4"].split == "val"
    assert rows["q4"].source == f"{p}:5"
    prompt = render_prompt(get_task("medqa"), rows["q1"].context)
    assert prompt.endswith("Q: Question 1: which vitamin? (A) Vitamin A (B) Vitamin B12 "
                           "(C) Vitamin C (D) Vitamin D\nA:")


@pytest.mark.parametrize("bad, field, message", [
    ("{not json", None, "not valid JSON"),
    ("[1, 2]", None, "expected a JSON object"),
    (line(9, id=""), "id", "missing or empty"),
    (line(9, question=...), "question", "missing or empty"),
    (line(9, options=["only one"]), "options", "at least 2 non-empty strings"),
    (line(9, options=["a", "A"], answer="a"), "options", "options repeat"),
    (line(9, answer=...), "answer", "missing"),
    (line(9, answer="Vitamin K"), "answer", "'Vitamin K' is not an option of task medqa"),
    (line(9, answer=7), "answer", "is not an option"),
    (line(9, split="dev"), "split", "must be one of train, val, test"),
])
def test_bad_line_names_file_line_and_field(store, tmp_path, snapshot, bad, field, message):
    p = write(tmp_path / "qs.jsonl", [line(1), line(2), bad, line(4)])
    before = snapshot(store)
    with pytest.raises(IngestError) as err:
        ingest_qa(store, [str(p)], task="medqa", progress=False)
    e = err.value
    assert (e.source, e.row, e.field) == (str(p), 3, field)
    assert message in str(e) and str(e).startswith(f"{p}, row 3")
    assert snapshot(store) == before


def test_duplicate_ids_within_and_across_files(store, tmp_path):
    a = write(tmp_path / "a.jsonl", [line(1), line(2), line(1, answer="A")])
    with pytest.raises(IngestError, match=r"a.jsonl, row 3, field 'id': duplicate id 'q1' \(first on line 1\)"):
        ingest_qa(store, [str(a)], task="medqa", progress=False)
    a = write(tmp_path / "a.jsonl", [line(1), line(2)])
    b = write(tmp_path / "b.jsonl", [line(3), line(2)])
    with pytest.raises(IngestError, match=r"b.jsonl, row 2, field 'example_id': duplicate example_id 'q2': "
                                          r"also from .*a.jsonl:2"):
        ingest_qa(store, [str(a), str(b)], task="medqa", progress=False)
    summary = ingest_qa(store, [str(tmp_path)], task="medqa", on_error="skip", progress=False)
    assert summary.total_rows == 3 and summary.quarantined == 1 and summary.items == 2
    # ingesting again: the store already holds these ids
    with pytest.raises(IngestError, match="duplicate example_id 'q1'"):
        ingest_qa(store, [str(a)], task="medqa", progress=False)


def test_skip_writes_quarantine_report_with_line_numbers(store, tmp_path):
    p = write(tmp_path / "qs.jsonl", [line(1), "{oops", line(3, answer="Z"), line(4)])
    summary = ingest_qa(store, [str(p)], task="medmcqa", on_error="skip", progress=False)
    assert summary.total_rows == 2 and summary.quarantined == 2
    report = [json.loads(x) for x in open(summary.quarantine_path)]
    assert [(r["source"], r["row"], r["field"]) for r in report] == [(str(p), 2, None), (str(p), 3, "answer")]


def test_pubmedqa_uses_fixed_options_and_abstract(store, tmp_path):
    p = write(tmp_path / "pubmedqa.jsonl", [json.dumps({
        "id": "pm1", "question": "Does aspirin help?", "abstract": "In a trial, it helped.",
        "answer": "yes"})])
    ingest_qa(store, [str(p)], task="pubmedqa", progress=False)
    (ex,) = list(store.iter_examples("pubmedqa"))
    assert ex.context == {"question": "Does aspirin help?", "abstract": "In a trial, it helped."}
    assert (ex.target, ex.label) == ("yes", 0)


def test_empty_source_and_wrong_task(store, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(IngestError, match="empty file: no questions"):
        ingest_qa(store, [str(empty)], task="medqa", progress=False)
    (tmp_path / "none").mkdir()
    with pytest.raises(IngestError, match="empty source: no .jsonl files"):
        ingest_qa(store, [str(tmp_path / "none")], task="medqa", progress=False)
    with pytest.raises(IngestError, match="not a text multiple-choice task"):
        ingest_qa(store, [str(empty)], task="cxr_report", progress=False)


def test_cli_ingest_qa_prints_summary_and_verifies(tmp_path, capsys):
    p = write(tmp_path / "q.jsonl", [line(i) for i in range(20)])
    root = tmp_path / "store"
    assert main(["ingest", "qa", str(p), "--task", "medqa", "--root", str(root), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ingested 20 rows of task medqa" in out and "quarantined 0 items" in out
    assert main(["data", "verify", "--root", str(root)]) == 0
    bad = write(tmp_path / "bad.jsonl", [line(100), line(101, answer="nope")])
    assert main(["ingest", "qa", str(bad), "--task", "medqa", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl, row 2, field 'answer'" in err and "Traceback" not in err
