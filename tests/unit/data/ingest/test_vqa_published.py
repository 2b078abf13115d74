"""VQA-RAD, Slake and Path-VQA in their published layouts ingest into their tasks with the
published splits; bad records name file, record and field and leave the store as it was."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medmix.cli import main
from medmix.data.ingest.common import IngestError
from medmix.data.ingest.vqa_published import ingest_path_vqa, ingest_slake, ingest_vqa_rad


def png(value=80) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((9, 12, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def vqarad_rec(qid, image, phrase, **over):
    rec = {"qid": qid, "phrase_type": phrase, "qid_linked_id": f"0{qid}", "image_case_url": "https://x",
           "image_name": image, "image_organ": "CHEST", "evaluation": "evaluated",
           "question": "Is there a pneumothorax?", "question_rephrase": "NULL", "question_relation": "NULL",
           "question_frame": "NULL", "question_type": "PRES", "answer": "No", "answer_type": "CLOSED"}
    rec.update(over)
    return {k: v for k, v in rec.items() if v is not ...}


def test_vqa_rad_public_json_with_phrase_type_splits(store, tmp_path):
    folder = tmp_path / "VQA_RAD"
    (folder / "VQA_RAD Image Folder").mkdir(parents=True)
    for name in ("synpic1.jpg", "synpic2.jpg"):
        (folder / "VQA_RAD Image Folder" / name).write_bytes(png())
    recs = [vqarad_rec(1, "synpic1.jpg", "freeform"), vqarad_rec(2, "synpic1.jpg", "para"),
            vqarad_rec(3, "synpic2.jpg", "test_freeform", answer="Yes"), vqarad_rec(4, "synpic2.jpg", "test_para")]
    (folder / "VQA_RAD Dataset Public.json").write_text(json.dumps(recs))
    ingest_vqa_rad(store, str(folder), progress=False)
    rows = {e.example_id: e for e in store.iter_examples("vqa_rad")}
    assert set(rows) == {"vqarad-1", "vqarad-2", "vqarad-3", "vqarad-4"}
    assert rows["vqarad-3"].split == rows["vqarad-4"].split == "test" and rows["vqarad-3"].target == "Yes"
    assert rows["vqarad-1"].split in ("train", "val") and rows["vqarad-1"].split == rows["vqarad-2"].split
    assert rows["vqarad-1"].context == {"question": "Is there a pneumothorax?", "organ": "CHEST",
                                        "answer_type": "CLOSED"}


@pytest.mark.parametrize("bad, field, message", [
    (vqarad_rec(9, "synpic1.jpg", "dev"), "phrase_type", "is not freeform"),
    (vqarad_rec(9, "nope.jpg", "freeform"), "image_name", "no image 'nope.jpg'"),
    (vqarad_rec(9, "synpic1.jpg", "freeform", answer=""), "answer", "missing or empty"),
])
def test_vqa_rad_bad_record_names_file_record_field(store, tmp_path, snapshot, bad, field, message):
    (tmp_path / "synpic1.jpg").write_bytes(png())
    f = tmp_path / "VQA_RAD Dataset Public.json"
    f.write_text(json.dumps([vqarad_rec(1, "synpic1.jpg", "freeform"), bad]))
    before = snapshot(store)
    with pytest.raises(IngestError) as err:
        ingest_vqa_rad(store, str(tmp_path), progress=False)
    assert (err.value.source, err.value.row, err.value.field) == (str(f), 2, field)
    assert message in str(err.value) and snapshot(store) == before


def slake_rec(qid, img, lang="en", **over):
    rec = {"img_id": 0, "img_name": img, "question": "What modality is used?", "answer": "MRI",
           "q_lang": lang, "location": "Abdomen", "modality": "MRI", "answer_type": "OPEN",
           "base_type": "vqa", "content_type": "Modality", "triple": ["vhead", "_", "_"], "qid": qid}
    rec.update(over)
    return rec


def test_slake_files_english_subset_and_splits(store, tmp_path):
    root = tmp_path / "Slake1.0"
    (root / "imgs" / "xmlab0").mkdir(parents=True)
    (root / "imgs" / "xmlab0" / "source.jpg").write_bytes(png(120))
    for name, base in (("train.json", 0), ("validate.json", 100), ("test.json", 200)):
        (root / name).write_text(json.dumps([slake_rec(base + 1, "xmlab0/source.jpg"),
                                             slake_rec(base + 2, "xmlab0/source.jpg", "zh", question="这是什么?")]))
    ingest_slake(store, str(root), progress=False)
    rows = {e.example_id: e for e in store.iter_examples("slake_vqa")}
    assert {k: r.split for k, r in rows.items()} == {"slake-1": "train", "slake-101": "val", "slake-201": "test"}
    assert rows["slake-1"].context["organ"] == "Abdomen" and rows["slake-1"].target == "MRI"
    ingest_slake(store, str(root), lang="all", replace=True, progress=False)
    assert len(list(store.iter_examples("slake_vqa"))) == 6
    (root / "test.json").write_text(json.dumps([slake_rec(300, "xmlab9/source.jpg")]))
    with pytest.raises(IngestError, match="no image") as err:
        ingest_slake(store, str(root), progress=False)
    assert (err.value.row, err.value.field) == (1, "img_name")


def test_path_vqa_parquet_release_and_refusal_of_pickles(store, tmp_path, capsys):
    data = tmp_path / "path-vqa" / "data"
    data.mkdir(parents=True)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for name, n in (("train-00000-of-00001.parquet", 3), ("validation-00000-of-00001.parquet", 1),
                    ("test-00000-of-00001.parquet", 2)):
        pq.write_table(pa.table({"image": pa.array([{"bytes": png(30 * i), "path": None} for i in range(n)], image),
                                 "question": [f"is there necrosis {i}?" for i in range(n)],
                                 "answer": ["yes"] * n}), data / name)
    root = tmp_path / "store2"
    assert main(["ingest", "path-vqa", str(data), "--root", str(root), "--no-progress"]) == 0
    from medmix.data.store import ShardStore
    rows = {e.example_id: e for e in ShardStore(root).iter_examples("path_vqa")}
    assert len(rows) == 6 and rows["pathvqa-validation-00000-of-00001-1"].split == "val"
    assert rows["pathvqa-test-00000-of-00001-2"].split == "test"
    pk = tmp_path / "pickled"
    pk.mkdir()
    (pk / "train_qa.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(IngestError, match="never unpickles"):
        ingest_path_vqa(store, str(pk), progress=False)
