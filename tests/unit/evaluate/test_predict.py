"""The prediction path: option probabilities, generated text, blank images, errors, work items.

Every expectation is recomputed independently through the model API (`score_options`,
`generate`) on the same encoded prompts, so a wrong prompt, option order or image splice in
`predict_rows` shows up as a mismatch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medmix.data.encode import encode_options, encode_prompt
from medmix.data.images import decode_image, to_model_input
from medmix.data.store import ShardStore
from medmix.evaluate.predict import PredictError, Predictor, predict_rows
from medmix.evaluate.runner import work_items
from medmix.model import generate, score_options
from medmix.tasks import get_task


def rows_of(root: str, task: str, n: int = 3, split: str = "test") -> list[dict]:
    return ShardStore(root).read_table(task, split).to_pylist()[:n]


def pixels(p: Predictor, rows: list[dict]):
    ims = [to_model_input(decode_image(b, r["image_format"]), p.image_size) for r in rows for b in r["images"]]
    return torch.from_numpy(np.stack(ims)) if ims else None


def test_option_tasks_return_probabilities_over_their_options(random_export):
    export, root = random_export
    p = Predictor.from_export(export)
    rows = rows_of(root, "derm_pad") + rows_of(root, "medqa") + rows_of(root, "cxr_classify")
    preds = predict_rows(p, rows)
    assert [q.example_id for q in preds] == [r["example_id"] for r in rows]
    for row, q in zip(rows, preds):
        spec, ctx = get_task(row["task"]), json.loads(row["context"])
        options = spec.options_for(ctx)
        assert len(q.option_probs) == len(options)
        assert sum(q.option_probs) == pytest.approx(1.0, abs=1e-9)
        assert all(0 <= x <= 1 for x in q.option_probs)
        assert q.prediction == options[int(np.argmax(q.option_probs))]
    # the same numbers straight from the model API, one task at a time
    for task in ("derm_pad", "medqa"):
        group = [r for r in rows if r["task"] == task]
        encs = [encode_options(p.tokenizer, get_task(task), json.loads(r["context"]), len(r["images"]),
                               p.num_image_tokens, p.max_seq_len) for r in group]
        prompts = [e[0].input_ids[:e[0].num_prompt_tokens] for e in encs]
        options = [[x.input_ids[x.num_prompt_tokens:] for x in e] for e in encs]
        direct = score_options(p.model, prompts, options, pixels(p, group), pad_token_id=p.tokenizer.pad_id)
        ours = [q for q in preds if q.task == task]
        for d, q in zip(direct, ours):
            assert q.option_probs == pytest.approx(d.probs, abs=1e-5)


def test_free_text_tasks_return_generated_text(random_export):
    export, root = random_export
    p = Predictor.from_export(export, max_new_tokens=6)
    rows = rows_of(root, "cxr_report", 2) + rows_of(root, "vqa_rad", 2) + rows_of(root, "mimic3_summary", 2)
    preds = predict_rows(p, rows)
    assert all(q.option_probs is None and isinstance(q.prediction, str) for q in preds)
    tok = p.tokenizer
    prompts = [encode_prompt(tok, get_task(r["task"]), json.loads(r["context"]), len(r["images"]),
                             p.num_image_tokens, p.max_seq_len - 6).input_ids for r in rows]
    new = generate(p.model, prompts, pixels(p, rows), max_new_tokens=6, eos_token_id=tok.eos_id,
                   pad_token_id=tok.pad_id)
    assert [q.prediction for q in preds] == [tok.decode(ids).strip() for ids in new]
    assert any(q.prediction for q in preds), "an untrained model still emits some tokens"
    assert predict_rows(p, rows) == preds  # greedy: the same answers every time


def test_blank_images_remove_what_the_image_says(random_export):
    export, root = random_export
    a, b = rows_of(root, "derm_pad", 2)
    swapped = {**a, "example_id": "a-with-b-image", "images": b["images"]}  # same prompt, other image
    with_images = predict_rows(Predictor.from_export(export), [a, swapped])
    assert with_images[0].option_probs != pytest.approx(with_images[1].option_probs, abs=1e-6)
    blank = predict_rows(Predictor.from_export(export, blank_images=True), [a, swapped])
    assert blank[0].option_probs == blank[1].option_probs


def test_a_row_that_cannot_be_read_names_the_example(random_export):
    export, root = random_export
    (row,) = rows_of(root, "derm_pad", 1)
    bad = {**row, "images": [b"not a png"]}
    with pytest.raises(PredictError, match=rf"{row['example_id']}.*images\[0\]"):
        predict_rows(Predictor.from_export(export), [bad])
    with pytest.raises(PredictError, match="context"):
        predict_rows(Predictor.from_export(export), [{**row, "context": "{not json"}])


def test_work_items_cut_each_task_in_fixed_order(tiny_suite):
    store = ShardStore(tiny_suite)
    items = work_items(store, ["derm_pad", "medqa"], "test", batch_size=2, limit=0)
    assert [(it["task"], json.loads(it["rows"])) for it in items] == [
        ("derm_pad", [0, 1]), ("derm_pad", [2]), ("medqa", [0, 1]), ("medqa", [2])]
    assert [it["item"] for it in items] == [0, 1, 2, 3]
    limited = work_items(store, ["derm_pad"], "test", batch_size=2, limit=1)
    assert [json.loads(it["rows"]) for it in limited] == [[0]]
