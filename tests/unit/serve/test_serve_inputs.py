"""Serving preprocessing: a request and the training row it came from give identical model inputs;
DICOM requests match what ingest + the stream would feed; every bad input is a named 4xx."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np
import pytest

from medmix.data.images import encode_png
from medmix.serve.inputs import InputError, Limits, Preprocessor, task_info
from medmix.serve.schemas import GenerationOptions
from medmix.tasks import all_tasks, get_task
from tests.conftest import suite_config


@pytest.fixture(scope="module")
def cfg(tiny_suite, tmp_path_factory):
    return suite_config(tmp_path_factory.mktemp("serve-inputs"), tiny_suite)


@pytest.fixture(scope="module")
def prep(cfg):
    from medmix.data.tokenizer import load_tokenizer
    return Preprocessor(tokenizer=load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path), image_size=cfg.model.image_size,
                        num_image_tokens=cfg.model.num_image_tokens, max_seq_len=cfg.stream.max_seq_len,
                        exemplar=cfg.stream.exemplar, store_image_size=cfg.data.image_size)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def training_inputs(prep, store_root, task: str, split: str, limit: int):
    """(rows, batch) exactly as the stream builds them for training/validation."""
    from medmix.data.collate import BatchSpec
    from medmix.data.store import ShardStore
    from medmix.data.stream import iter_split
    store = ShardStore(store_root)
    spec = BatchSpec(store_root=str(store_root), tokenizer=prep.tokenizer, image_size=prep.image_size,
                     num_image_tokens=prep.num_image_tokens, max_seq_len=prep.max_seq_len, task_names=[task],
                     exemplar=prep.exemplar)
    batch = next(iter_split(spec, store, task, split, batch_size=limit, limit=limit))
    rows = [ex for _, ex in zip(range(limit), store.iter_examples(task, split))]
    return rows, batch


def request_inputs(row) -> dict:
    inputs = dict(row.context)
    if len(row.images) == 1 and not get_task(row.task).multi_image:
        inputs["image"] = b64(row.images[0])
    elif row.images:
        inputs["images"] = [b64(i) for i in row.images]
    return inputs


def test_a_request_and_its_training_row_give_identical_input_ids_and_pixels(prep, tiny_suite):
    from medmix.data.store import ShardStore
    tasks = sorted({s.task for s in ShardStore(tiny_suite).shards(split="train")})
    assert len(tasks) >= 10
    checked = 0
    for task in tasks:
        rows, batch = training_inputs(prep, tiny_suite, task, "train", limit=3)
        labels = batch["labels"].numpy()
        offsets = np.concatenate([[0], np.cumsum(batch["image_counts"].numpy())])
        for i, row in enumerate(rows):
            assert batch["example_ids"][i] == row.example_id
            item = prep.prepare(get_task(task), request_inputs(row), GenerationOptions(), Limits())
            n_prompt = int(np.argmax(labels[i] != -100))  # training: first target position
            assert item.prompt_ids == batch["input_ids"][i, :n_prompt].tolist(), f"{task} {row.example_id}"
            want = batch["pixel_values"][offsets[i]:offsets[i + 1]].numpy()
            assert item.pixel_values.dtype == np.float32 and np.array_equal(item.pixel_values, want)
            if item.option_ids:  # option scoring continues the very same prompt
                assert item.score_prompt_ids == item.prompt_ids
            checked += 1
    assert checked == 3 * len(tasks)


@pytest.mark.parametrize("name,task,context", [
    ("RG1_UNCI.dcm", "cxr_classify", {"condition": "edema"}),          # real PA chest film, MONOCHROME1
    ("CT_small.dcm", "vqa_rad", {"question": "Is there a lesion?"}),   # CT with a window in the header
])
def test_dicom_request_matches_ingest_then_stream(prep, tmp_path, name, task, context):
    from pydicom.data import get_testdata_file

    from medmix.data.ingest.dicom import ingest_dicom
    from medmix.data.store import ShardStore, StoreConfig
    path = get_testdata_file(name)
    root = tmp_path / "store"
    store = ShardStore(root, StoreConfig(root=str(root), image_size=prep.store_image_size))
    ingest_dicom(store, [path], task=task, target="no", context=context, parallel="local", progress=False)
    split = next(s.split for s in store.shards(task=task))
    rows, batch = training_inputs(prep, root, task, split, limit=1)
    item = prep.prepare(get_task(task), {**context, "image": b64(open(path, "rb").read())},
                        GenerationOptions(), Limits())
    n_prompt = int(np.argmax(batch["labels"][0].numpy() != -100))
    assert item.prompt_ids == batch["input_ids"][0, :n_prompt].tolist()  # header context (view, ...) included
    assert np.array_equal(item.pixel_values, batch["pixel_values"].numpy())


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height and whose data is missing (a decompression bomb's shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF) + b"\x00\x00\x00\x00IEND\xaeB`\x82")


def small_png(size: int = 16) -> str:
    return b64(encode_png(np.full((size, size), 128, np.uint8)))


BAD = [
    ("medqa", {"question": "q?", "options": ["a", "b"], "image": small_png()}, 422, "inputs.image"),
    ("cxr_classify", {"condition": "edema"}, 422, "inputs.image"),
    ("cxr_classify", {"condition": "edema", "image": "not base64!!"}, 422, "inputs.image"),
    ("cxr_classify", {"condition": "edema", "image": b64(b"GIF89a" + b"\0" * 40)}, 415, "inputs.image"),
    ("cxr_classify", {"condition": "edema", "image": small_png()[:40]}, 422, "inputs.image"),
    ("cxr_classify", {"condition": "edema", "image": b64(png_header_only(20000, 20000))}, 413, "inputs.image"),
    ("cxr_classify", {"condition": "edema", "image": b64(png_header_only(40000, 1))}, 413, "inputs.image"),
    ("cxr_classify", {"condition": "edema", "image": 42}, 422, "inputs.image"),
    ("cxr_classify", {"condition": "edema", "image": small_png(), "images": [small_png()]}, 422, "inputs.images"),
    ("cxr_classify", {"image": small_png()}, 422, "inputs.condition"),
    ("cxr_classify", {"condition": {"nested": 1}, "image": small_png()}, 422, "inputs.condition"),
    ("cxr_classify", {"condition": "edema", "options": ["a", "b"], "image": small_png()}, 422, "inputs.options"),
    ("volume_report", {"images": [small_png()] * 40}, 413, "inputs.images"),
    ("volume_report", {"images": []}, 422, "inputs.images"),
    ("volume_report", {"images": "x"}, 422, "inputs.images"),
    ("medqa", {"question": "q?"}, 422, "inputs.options"),
    ("medqa", {"question": "q?", "options": ["only one"]}, 422, "inputs.options"),
    ("medqa", {"question": "q?", "options": "a, b"}, 422, "inputs.options"),
    ("mimic3_summary", {"findings": "word " * 10000}, 413, "inputs"),
    ("mimic3_summary", {"findings": "lone \ud800 surrogate"}, 422, "inputs.findings"),
    ("mimic3_summary", {"findings": "ok", "\udc00": "x"}, 422, "inputs"),
    ("cxr_classify", {"condition": "edema", "image": b64(b"\0" * 128 + b"DICM" + b"\x02\x00" * 10)}, 422,
     "inputs.image"),
]


@pytest.mark.parametrize("task,inputs,status,field", BAD)
def test_bad_inputs_are_named_4xx(prep, task, inputs, status, field):
    with pytest.raises(InputError) as err:
        prep.prepare(get_task(task), inputs, GenerationOptions(), Limits(max_images=32, max_input_chars=20_000))
    assert err.value.status == status, err.value.message
    assert err.value.field == field, err.value.message
    assert 400 <= err.value.status < 500 and err.value.message


def test_generation_limits(prep):
    spec = get_task("mimic3_summary")
    inputs = {"findings": "The heart is normal."}
    with pytest.raises(InputError, match="serve.max_new_tokens"):
        prep.prepare(spec, inputs, GenerationOptions(max_new_tokens=300), Limits(max_new_tokens=256))
    with pytest.raises(InputError, match="max_seq_len"):
        prep.prepare(spec, inputs, GenerationOptions(max_new_tokens=prep.max_seq_len), Limits(max_new_tokens=10**6))
    item = prep.prepare(spec, inputs, GenerationOptions(), Limits(default_max_new_tokens=7))
    assert item.max_new_tokens == 7 and item.option_ids is None
    # option tasks generate at most their longest option (+ end of text) unless told otherwise
    item = prep.prepare(get_task("pubmedqa"), {"abstract": "a", "question": "b?"}, GenerationOptions(), Limits())
    assert item.max_new_tokens == max(map(len, item.option_ids)) and item.options == ["yes", "no", "maybe"]
    # extra scalar fields are kept (training rows carry them) and reported
    item = prep.prepare(spec, {**inputs, "note": "x"}, GenerationOptions(), Limits())
    assert item.ignored_fields == ["note"]


def test_every_task_example_is_a_valid_request(prep):
    for spec in all_tasks():
        info = task_info(spec)
        assert info["example"]["task"] == spec.name
        item = prep.prepare(spec, info["example"]["inputs"], GenerationOptions(**info["example"]["options"]), Limits())
        assert len(item.pixel_values) == (len(info["example"]["inputs"].get("images", [])) or int(spec.has_image))
        required = {f["name"] for f in info["fields"] if f["required"]}
        assert required <= set(info["example"]["inputs"]) | {"question"}, spec.name
