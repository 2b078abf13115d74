"""IU chest X-ray reports, read in place from the installed torchxrayvision (CC BY-NC-ND: never copied
into the repo; the tests write stores under tmp_path only)."""

from __future__ import annotations

import json
import tarfile

import pytest

from medmix.cli import main
from medmix.data.ingest.common import IngestError
from medmix.data.ingest.reports import default_archive, ingest_reports
from medmix.tasks import get_task, render_prompt


@pytest.fixture(scope="module")
def iu_store(tmp_path_factory):
    from medmix.data.store import ShardStore, StoreConfig
    root = tmp_path_factory.mktemp("iu") / "store"
    store = ShardStore(root, StoreConfig(root=str(root)))
    summary = ingest_reports(store, progress=False)
    return store, summary


def test_iu_reports_yield_over_3000_findings_to_impression_rows(iu_store):
    store, summary = iu_store
    assert summary.items == 3955
    assert summary.total_rows >= 3000
    skipped = sum(summary.notes.values())
    assert summary.total_rows + skipped == summary.items
    assert summary.notes["reports without FINDINGS"] > 400  # counted, not silently dropped
    assert store.counts()["mimic3_summary"] == summary.rows
    assert set(summary.rows) == {"train", "val", "test"}
    assert 0.75 < summary.rows["train"] / summary.total_rows < 0.85
    assert store.verify() == []


def test_rows_carry_findings_indication_and_impression(iu_store):
    store, _ = iu_store
    rows = {ex.example_id: ex for ex in store.iter_examples("mimic3_summary", "train")}
    rows.update({ex.example_id: ex for ex in store.iter_examples("mimic3_summary", "val")})
    rows.update({ex.example_id: ex for ex in store.iter_examples("mimic3_summary", "test")})
    ex = rows["iu-CXR1"]
    assert ex.context["findings"].startswith("The cardiac silhouette and mediastinum size are within normal limits.")
    assert ex.context["indication"] == "Positive TB test"
    assert ex.target == "Normal chest x-XXXX."
    assert ex.source.endswith("NLMCXR_reports.tgz:ecgen-radiology/1.xml")
    prompt = render_prompt(get_task("mimic3_summary"), ex.context)
    assert "Findings: The cardiac silhouette" in prompt and prompt.endswith("A:")


def test_split_is_a_deterministic_hash_of_the_report_id(iu_store, tmp_path):
    store, summary = iu_store
    from medmix.data.store import ShardStore, StoreConfig
    again = ShardStore(tmp_path / "again", StoreConfig(root=str(tmp_path / "again")))
    second = ingest_reports(again, progress=False)
    assert second.rows == summary.rows
    assert again.digest() == store.digest()  # same bytes, same shards


def test_folder_of_xml_with_a_broken_report(tmp_path, store):
    folder = tmp_path / "xml"
    folder.mkdir()
    with tarfile.open(default_archive()) as tar:
        members = [m for m in tar if m.isfile()][:6]
        for m in members:
            (folder / m.name.rsplit("/", 1)[-1]).write_bytes(tar.extractfile(m).read())
    (folder / "zz-broken.xml").write_text("<eCitation><uId id='X'/><Abstract>")
    with pytest.raises(IngestError, match=r"zz-broken.xml, row 1: not well-formed XML"):
        ingest_reports(store, str(folder), progress=False)
    summary = ingest_reports(store, str(folder), on_error="skip", progress=False)
    assert summary.items == 7 and summary.quarantined == 1
    assert summary.total_rows + sum(summary.notes.values()) == 6
    report = [json.loads(x) for x in open(summary.quarantine_path)]
    assert report[0]["source"].endswith("zz-broken.xml")


def test_wrong_task_and_missing_source(store, tmp_path):
    with pytest.raises(IngestError, match="not a text summarization task"):
        ingest_reports(store, task="medqa", progress=False)
    with pytest.raises(IngestError, match="no such file or folder"):
        ingest_reports(store, str(tmp_path / "nope"), progress=False)


def test_cli_ingest_reports_prints_counts(tmp_path, capsys):
    root = tmp_path / "store"
    assert main(["ingest", "reports", "--root", str(root), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "rows of task mimic3_summary" in out and "skipped 502: reports without FINDINGS" in out
    assert main(["data", "verify", "--root", str(root)]) == 0
