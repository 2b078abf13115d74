"""LLaVA-Med and ShareGPT (LLaMA-Factory) conversation JSON ingests into registered tasks: one
example per user/assistant turn, <image> tokens removed, one split per image; a bad record
names file, record and field and leaves the store as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medmix.cli import main
from medmix.data.images import decode_image
from medmix.data.ingest.common import IngestError
from medmix.data.ingest.conversations import ingest_conversations


def image(folder, name, value=90):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((10, 14, 3), value, np.uint8)).save(folder / name)
    return name


def llava(i, img, turns):
    conv = []
    for k, (q, a) in enumerate(turns):
        conv += [{"from": "human", "value": ("<image>\n" if k == 0 else "") + q}, {"from": "gpt", "value": a}]
    return {"id": f"rec-{i}", "image": img, "conversations": conv}


def test_llava_med_json_becomes_vqa_rows_one_per_turn(store, tmp_path):
    imgs = tmp_path / "images"
    data = [llava(1, image(imgs, "ct1.png"), [("Is there a fracture?", "yes"), ("Which side?", "left")]),
            llava(2, image(imgs, "mri2.png", 200), [("What organ is shown?", "liver")])]
    (tmp_path / "vqa.json").write_text(json.dumps(data))
    summary = ingest_conversations(store, [str(tmp_path / "vqa.json")], task="vqa_rad",
                                   images_root=str(imgs), progress=False)
    assert summary.total_rows == 3
    rows = {e.example_id: e for e in store.iter_examples("vqa_rad")}
    assert rows["rec-1#0"].context == {"question": "Is there a fracture?"} and rows["rec-1#0"].target == "yes"
    assert rows["rec-1#1"].target == "left" and rows["rec-1#0"].split == rows["rec-1#1"].split
    assert rows["rec-2"].target == "liver"
    px = decode_image(rows["rec-2"].images[0])
    assert px.shape[:2] == (64, 64) and px[32, 32, 0] == 200


def test_sharegpt_messages_with_images_list_and_text_only_records(store, tmp_path):
    image(tmp_path, "lesion.jpg", 120)
    lines = [{"messages": [{"role": "system", "content": "You are a dermatologist."},
                           {"role": "user", "content": "<image>What is this lesion?"},
                           {"role": "assistant", "content": "Melanoma"}], "images": ["lesion.jpg"],
              "split": "test"}]
    (tmp_path / "derm.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ingest_conversations(store, [str(tmp_path / "derm.jsonl")], task="derm_pad", progress=False)
    (ex,) = store.iter_examples("derm_pad")
    assert (ex.target, ex.split, ex.example_id) == ("melanoma", "test", "derm:1")
    text = [{"conversations": [{"from": "human", "value": "Do statins reduce AF?"},
                               {"from": "gpt", "value": "(A)"}]}]
    (tmp_path / "pqa.json").write_text(json.dumps(text))
    ingest_conversations(store, [str(tmp_path / "pqa.json")], task="pubmedqa", progress=False)
    (pq,) = store.iter_examples("pubmedqa")
    assert (pq.target, pq.label, pq.images) == ("yes", 0, [])


@pytest.mark.parametrize("record, field, message", [
    ({"image": "a.png", "conversations": [{"from": "gpt", "value": "x"}]}, "conversations[0].from",
     "where a user turn"),
    ({"image": "a.png", "conversations": [{"from": "human", "value": "<image><image> q"},
                                          {"from": "gpt", "value": "yes"}]}, "images", "2 <image> token(s) for 1"),
    ({"image": "missing.png", "conversations": [{"from": "human", "value": "q"},
                                                {"from": "gpt", "value": "yes"}]}, "images", "cannot be read"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "yes"}]}, "images",
     "takes 1 image(s)"),
    ({"image": "a.png", "conversations": [{"from": "human", "value": "q"}]}, "conversations", "no assistant answer"),
])
def test_bad_record_names_file_record_and_field(store, tmp_path, snapshot, record, field, message):
    image(tmp_path, "a.png")
    good = llava(1, "a.png", [("q", "yes")])
    (tmp_path / "c.json").write_text(json.dumps([good, record]))
    before = snapshot(store)
    with pytest.raises(IngestError) as err:
        ingest_conversations(store, [str(tmp_path / "c.json")], task="vqa_rad", progress=False)
    assert (err.value.source, err.value.row, err.value.field) == (str(tmp_path / "c.json"), 2, field)
    assert message in str(err.value) and snapshot(store) == before
    summary = ingest_conversations(store, [str(tmp_path / "c.json")], task="vqa_rad",
                                   on_error="skip", progress=False)
    assert summary.total_rows == 1 and summary.quarantined == 1


def test_answer_outside_options_and_cli(store, tmp_path):
    image(tmp_path, "a.png")
    (tmp_path / "c.json").write_text(json.dumps([llava(1, "a.png", [("what?", "a unicorn")])]))
    with pytest.raises(IngestError, match="'a unicorn' is not an option of task derm_pad"):
        ingest_conversations(store, [str(tmp_path / "c.json")], task="derm_pad", progress=False)
    root = tmp_path / "store2"
    (tmp_path / "v.json").write_text(json.dumps([llava(1, "a.png", [("what?", "a unicorn")])]))
    assert main(["ingest", "conversations", str(tmp_path / "v.json"), "--task", "vqa_rad",
                 "--root", str(root), "--no-progress"]) == 0
    assert json.loads((root / "manifest.json").read_text())["sources"][0]["kind"] == "conversations"
