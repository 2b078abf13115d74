"""Ingest plumbing: error messages, option parsing, splits, the one-transaction writer, quarantine."""

from __future__ import annotations

import json
import pickle
from collections import Counter

import pytest

from medmix.data.ingest.common import (IngestError, ItemResult, hash_split, read_labels_csv,
                                       resolve_option, run_parallel, write_ingest)
from medmix.data.schema import Example


def mcq(i: int, split: str = "train", source: str = "test.jsonl") -> Example:
    return Example(example_id=f"q{i}", task="medqa", split=split, source=f"{source}:{i}",
                   context={"question": f"question {i}?", "options": ["a", "b"]}, target="a", label=0)


def result(i: int, **kw) -> ItemResult:
    return ItemResult(name=f"item{i}", examples=[mcq(i, **kw)], digest=f"{i:064x}")


class VolumeError(IngestError):
    def __init__(self, path):
        super().__init__("bad volume", source=path)


def test_ingest_error_names_file_row_field_and_survives_pickling():
    err = IngestError("'x' is not an option", source="labels.csv", row=4, field="label")
    assert str(err) == "labels.csv, row 4, field 'label': 'x' is not an option"
    assert isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))
    assert (str(back), back.source, back.row, back.field) == (str(err), "labels.csv", 4, "label")
    assert err.record() == {"source": "labels.csv", "row": 4, "field": "label",
                            "error": "'x' is not an option"}
    # subclasses with their own __init__ signature come back as themselves
    sub = pickle.loads(pickle.dumps(VolumeError("v.nii")))
    assert type(sub) is VolumeError and str(sub) == "v.nii: bad volume"


def test_resolve_option_accepts_text_letter_and_index_and_lists_options_otherwise():
    opts = ("yes", "no")
    kw = dict(task="cxr_classify", source="f.csv", row=2, field="label")
    assert resolve_option(opts, "No", **kw) == 1
    assert resolve_option(opts, "(B)", **kw) == 1
    assert resolve_option(opts, "a", **kw) == 0
    assert resolve_option(opts, 1, **kw) == 1
    assert resolve_option(opts, "0", **kw) == 0
    with pytest.raises(IngestError, match=r"f.csv, row 2, field 'label': 'maybe' is not an option "
                                          r"of task cxr_classify.*\(A\) yes; \(B\) no"):
        resolve_option(opts, "maybe", **kw)
    for bad in (2, True, None, ""):
        with pytest.raises(IngestError):
            resolve_option(opts, bad, **kw)


def test_hash_split_is_deterministic_and_close_to_80_10_10():
    assert hash_split("patient-17") == hash_split("patient-17")
    counts = Counter(hash_split(f"id-{i}") for i in range(5000))
    assert set(counts) == {"train", "val", "test"}
    assert 0.77 < counts["train"] / 5000 < 0.83
    assert 0.08 < counts["val"] / 5000 < 0.12


def test_labels_csv_missing_column_names_column_and_file(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("file,split\na.png,train\n")
    with pytest.raises(IngestError, match=r"labels.csv, row 1, field 'label': missing column 'label' "
                                          r"\(columns: file, split\)"):
        read_labels_csv(p, required=["file", "label"])
    p.write_text("file,label\n")
    with pytest.raises(IngestError, match="header but no rows"):
        read_labels_csv(p, required=["file", "label"])
    with pytest.raises(IngestError, match="labels CSV not found"):
        read_labels_csv(tmp_path / "nope.csv", required=["file"])


def test_labels_csv_rows_carry_line_numbers_and_context(tmp_path):
    p = tmp_path / "labels.csv"
    p.write_text("file,label,age,region\na.png,nevus,55,face\n\nb.png,melanoma,,back\n")
    rows = read_labels_csv(p, required=["file", "label"])
    assert [r.row for r in rows] == [2, 4]
    assert rows[0].context() == {"age": 55, "region": "face"}
    assert rows[1].context() == {"region": "back"}


def test_writer_commits_one_transaction_with_source_digest(store):
    summary = write_ingest(store, kind="qa", task="medqa", results=[result(i) for i in range(5)],
                           source={"path": "x.jsonl"})
    assert summary.rows == {"train": 5} and summary.items == 5 and summary.quarantined == 0
    src = store.manifest()["sources"][-1]
    assert src["kind"] == "qa" and src["task"] == "medqa" and src["rows"] == 5
    assert len(src["sha256"]) == 64 and src["sha256"] == summary.source_sha256
    assert store.verify() == []


def test_exception_after_flushed_shards_leaves_store_byte_identical(small_shards_store, snapshot):
    store = small_shards_store
    write_ingest(store, kind="qa", task="medqa", results=[result(i) for i in range(3)],
                 source={"path": "first"})
    before = snapshot(store)

    def results_then_crash():
        for i in range(100, 109):  # 9 rows with 2 per shard: 4 part files flushed
            yield result(i)
        raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        write_ingest(store, kind="qa", task="medqa", results=results_then_crash(),
                     source={"path": "second"})
    assert snapshot(store) == before
    assert store.verify() == []


def test_failed_first_ingest_leaves_no_store_behind(tmp_path, make_store):
    store = make_store(tmp_path / "fresh", rows_per_shard=2)

    def bad():
        yield result(1)
        yield result(2)
        yield result(3)
        yield ItemResult(name="broken", errors=[{"source": "b.jsonl", "row": 7, "field": "answer",
                                                 "error": "missing"}])
    with pytest.raises(IngestError, match="b.jsonl, row 7, field 'answer': missing"):
        write_ingest(store, kind="qa", task="medqa", results=bad(), source={"path": "b"})
    assert not (tmp_path / "fresh").exists()


def test_skip_quarantines_bad_items_and_duplicates_and_reports_them(store):
    items = [result(1), result(2),
             ItemResult(name="bad", errors=[{"source": "q.jsonl", "row": 3, "field": "options",
                                             "error": "must be a list"}]),
             ItemResult(name="dup", examples=[mcq(1, source="other.jsonl")])]
    summary = write_ingest(store, kind="qa", task="medqa", results=items, source={"path": "q"},
                           on_error="skip")
    assert summary.total_rows == 2 and summary.quarantined == 2
    lines = [json.loads(x) for x in open(summary.quarantine_path)]
    assert lines[0] == {"source": "q.jsonl", "row": 3, "field": "options", "error": "must be a list"}
    assert lines[1]["source"] == "other.jsonl" and lines[1]["row"] == 1
    assert lines[1]["field"] == "example_id" and "duplicate example_id 'q1'" in lines[1]["error"]
    assert "quarantine" in summary.quarantine_path and summary.quarantine_path.endswith("-qa.jsonl")
    assert "quarantined 2 bad items" in summary.render()
    assert store.manifest()["sources"][-1]["quarantined"] == 2


def test_duplicate_of_a_row_already_in_the_store_is_rejected(store, snapshot):
    write_ingest(store, kind="qa", task="medqa", results=[result(1)], source={"path": "a"})
    before = snapshot(store)
    with pytest.raises(IngestError, match="field 'example_id': duplicate example_id 'q1'"):
        write_ingest(store, kind="qa", task="medqa", results=[result(2), result(1)], source={"path": "b"})
    assert snapshot(store) == before
    # --replace drops the task's old rows instead
    summary = write_ingest(store, kind="qa", task="medqa", results=[result(1), result(2)],
                           source={"path": "b"}, replace=True)
    assert store.counts() == {"medqa": {"train": 2}} and summary.total_rows == 2


def test_all_bad_or_empty_source_is_an_error_and_changes_nothing(store, snapshot):
    before = snapshot(store)
    with pytest.raises(IngestError, match="empty source"):
        write_ingest(store, kind="qa", task="medqa", results=[], source={"path": "nothing"})
    bad = ItemResult(name="bad", errors=[{"source": "q.jsonl", "row": 1, "field": "id", "error": "empty"}])
    with pytest.raises(IngestError, match="no rows to ingest: all 1 items were bad"):
        write_ingest(store, kind="qa", task="medqa", results=[bad], source={"path": "q"}, on_error="skip")
    assert snapshot(store) == before


def test_run_parallel_local_keeps_order():
    out = list(run_parallel(_square, list(range(5)), desc="t", parallel="local", progress=False))
    assert [r.name for r in out] == ["0", "1", "4", "9", "16"]


def _square(i: int) -> ItemResult:
    return ItemResult(name=str(i * i))
