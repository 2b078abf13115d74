"""Hugging Face `datasets` data on disk (save_to_disk folders, DatasetDicts, parquet/arrow
folders as the hub ships them) ingests into registered tasks through a column mapping: Image
columns give the images, ClassLabel columns their names; a missing column or an unmapped
field is named before anything is written, a bad row names split, index and field (issue 16)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

datasets = pytest.importorskip("datasets")
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Sequence, Value  # noqa: E402

from medmix.cli import main  # noqa: E402
from medmix.data.images import decode_image  # noqa: E402
from medmix.data.ingest.common import IngestError  # noqa: E402
from medmix.data.ingest.hf import ingest_hf, split_from_name  # noqa: E402


def png(value: int, size=(12, 10)) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def vqa_dataset(n=4, offset=0) -> Dataset:
    return Dataset.from_dict(
        {"img": [{"bytes": png(40 + 10 * i), "path": None} for i in range(offset, offset + n)],
         "q": [f"Is there an abnormality {i}?" for i in range(offset, offset + n)],
         "a": ["yes" if i % 2 else "no" for i in range(offset, offset + n)],
         "qid": [f"q{i}" for i in range(offset, offset + n)]},
        features=Features({"img": Image(), "q": Value("string"), "a": Value("string"), "qid": Value("string")}))


def test_datasetdict_save_to_disk_into_vqa_with_splits_and_images(store, tmp_path):
    DatasetDict({"train": vqa_dataset(4), "validation": vqa_dataset(2, 4), "test": vqa_dataset(1, 6)}
                ).save_to_disk(str(tmp_path / "vqa_hf"))
    summary = ingest_hf(store, str(tmp_path / "vqa_hf"), task="vqa_rad", parallel="local", progress=False,
                        mapping=["question=q", "answer=a", "image=img", "id=qid"])
    assert summary.rows == {"train": 4, "val": 2, "test": 1}
    rows = {e.example_id: e for e in store.iter_examples("vqa_rad")}
    assert rows["q5"].split == "val" and rows["q6"].split == "test"
    assert rows["q3"].context == {"question": "Is there an abnormality 3?"} and rows["q3"].target == "yes"
    px = decode_image(rows["q3"].images[0])
    assert px.shape[:2] == (64, 64) and px[32, 32, 0] == 70
    source = store.manifest()["sources"][-1]
    assert source["kind"] == "hf" and source["mapping"]["image"] == "img"


def test_saved_dataset_with_classlabel_into_a_classification_task(store, tmp_path):
    feats = Features({"image": Image(), "dx": ClassLabel(names=["nevus", "melanoma", "basal cell carcinoma"]),
                      "age": Value("int32"), "patient": Value("string")})
    Dataset.from_dict({"image": [{"bytes": png(100 + i), "path": None} for i in range(6)],
                       "dx": [0, 1, 2, 1, 0, 0], "age": [30 + i for i in range(6)],
                       "patient": ["p1", "p1", "p2", "p3", "p3", "p4"]}, features=feats
                      ).save_to_disk(str(tmp_path / "derm"))
    # `image` and `age` are columns named like task fields: no --map needed for them
    ingest_hf(store, str(tmp_path / "derm"), task="derm_pad", mapping={"answer": "dx", "group": "patient"},
              parallel="local", progress=False)
    rows = sorted(store.iter_examples("derm_pad"), key=lambda e: e.example_id)
    assert [r.target for r in rows] == ["nevus", "melanoma", "basal cell carcinoma", "melanoma", "nevus", "nevus"]
    assert [r.label for r in rows] == [5, 4, 0, 4, 5, 5]   # indices into derm_pad's options
    assert rows[0].context == {"age": 30} and rows[0].example_id == "derm:0"
    assert rows[0].split == rows[1].split and rows[3].split == rows[4].split  # one patient, one split


def test_parquet_folder_as_the_hub_ships_it_into_mcq(store, tmp_path):
    data = tmp_path / "medqa_hub" / "data"
    data.mkdir(parents=True)
    for split, n in (("train", 3), ("validation", 1), ("test", 2)):
        Dataset.from_dict({"sent1": [f"{split} question {i}" for i in range(n)],
                           "choices": [["Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D"]] * n,
                           "label": [2] * n}).to_parquet(str(data / f"{split}-00000-of-00001.parquet"))
    summary = ingest_hf(store, str(tmp_path / "medqa_hub"), task="medqa", parallel="local", progress=False,
                        mapping=["question=sent1", "options=choices"])   # `label` is the answer's alias
    assert summary.rows == {"train": 3, "val": 1, "test": 2}
    ex = next(e for e in store.iter_examples("medqa") if e.split == "val")
    assert ex.context == {"question": "validation question 0",
                          "options": ["Vitamin A", "Vitamin B12", "Vitamin C", "Vitamin D"]}
    assert (ex.target, ex.label) == ("Vitamin C", 2) and ex.example_id == "medqa_hub:data/validation-00000-of-00001:0"


def test_arrow_files_and_split_names():
    assert split_from_name("data/validation-00000-of-00002.parquet") == "val"
    assert split_from_name("test/data-00000-of-00001.arrow") == "test"
    assert split_from_name("train.parquet") == "train"
    assert split_from_name("contest-00000.parquet") is None   # a word inside a word is no split


def test_arrow_file_with_image_paths_and_forced_split(store, tmp_path):
    folder = tmp_path / "pathvqa"
    (folder / "imgs").mkdir(parents=True)
    (folder / "imgs" / "a.png").write_bytes(png(9))
    ds = Dataset.from_dict({"image": ["imgs/a.png"], "question": ["What stain?"], "answer": ["H&E"]})
    import pyarrow as pa
    with pa.OSFile(str(folder / "part.arrow"), "wb") as f:   # an IPC stream, as datasets writes
        with pa.ipc.new_stream(f, ds.data.table.schema) as w:
            w.write_table(ds.data.table)
    ingest_hf(store, str(folder), task="path_vqa", split="test", parallel="local", progress=False)
    (ex,) = store.iter_examples("path_vqa")
    assert (ex.split, ex.target, ex.context) == ("test", "H&E", {"question": "What stain?"})
    assert decode_image(ex.images[0])[32, 32, 0] == 9


@pytest.mark.parametrize("mapping,field,message", [
    (["question=q", "answer=nope", "image=img"], "answer", "no column 'nope' in the dataset (columns: img, q, a, qid)"),
    (["question=q", "answer=a"], "image", "task vqa_rad takes an image: map an Image column with --map image=COLUMN"),
    (["question=q", "image=img"], "answer", "no column for field 'answer'"),
    (["question=q", "answer=a", "image=img", "colour=a"], "colour", "task vqa_rad has no field 'colour'"),
    (["question"], "--map", "--map 'question' must look like FIELD=COLUMN"),
])
def test_bad_mapping_names_field_and_column_and_writes_nothing(store, tmp_path, snapshot, mapping, field, message):
    vqa_dataset(2).save_to_disk(str(tmp_path / "ds"))
    before = snapshot(store)
    with pytest.raises(IngestError) as err:
        ingest_hf(store, str(tmp_path / "ds"), task="vqa_rad", mapping=mapping, parallel="local", progress=False)
    assert err.value.field == field and message in str(err.value)
    assert snapshot(store) == before


def test_bad_rows_name_split_index_and_field_and_skip_quarantines(store, tmp_path, snapshot):
    feats = Features({"image": Image(), "dx": Value("string"), "condition": Value("string")})
    Dataset.from_dict({"image": [{"bytes": png(1), "path": None}, {"bytes": b"not an image", "path": None},
                                 {"bytes": png(3), "path": None}],
                       "dx": ["yes", "no", "perhaps"], "condition": ["edema"] * 3}, features=feats
                      ).save_to_disk(str(tmp_path / "cxr"))
    before = snapshot(store)
    with pytest.raises(IngestError) as err:
        ingest_hf(store, str(tmp_path / "cxr"), task="cxr_classify", mapping=["answer=dx"], parallel="local",
                  progress=False)
    assert err.value.source == f"{tmp_path / 'cxr'}[1]" and err.value.field == "image"
    assert "image does not decode" in str(err.value) and snapshot(store) == before
    summary = ingest_hf(store, str(tmp_path / "cxr"), task="cxr_classify", mapping=["answer=dx"],
                        on_error="skip", parallel="local", progress=False)
    assert summary.total_rows == 1 and summary.quarantined == 2
    # a context field the prompt needs, with no column, is named
    Dataset.from_dict({"image": [{"bytes": png(1), "path": None}], "dx": ["yes"]},
                      features=Features({"image": Image(), "dx": Value("string")})).save_to_disk(str(tmp_path / "c2"))
    with pytest.raises(IngestError, match="condition") as err:
        ingest_hf(store, str(tmp_path / "c2"), task="cxr_classify", mapping=["answer=dx"], parallel="local",
                  progress=False, replace=True)
    assert err.value.field == "condition"


def test_not_a_dataset_is_named(store, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no dataset here"):
        ingest_hf(store, str(tmp_path / "empty"), task="medqa", progress=False)
    with pytest.raises(IngestError, match="hub name is not fetched"):
        ingest_hf(store, "someone/medqa", task="medqa", progress=False)


def test_cli(tmp_path, capsys):
    vqa_dataset(3).save_to_disk(str(tmp_path / "ds"))
    root = tmp_path / "store"
    assert main(["ingest", "hf", "slake_vqa", str(tmp_path / "ds"), "--root", str(root), "--map", "question=q",
                 "--map", "answer=a", "--map", "image=img", "--split", "train", "--parallel", "local",
                 "--no-progress"]) == 0
    assert "ingested 3 rows of task slake_vqa" in capsys.readouterr().out
