"""The model side of serving: batches answer exactly what each request would get alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medmix.serve.inputs import ModelInputs
from medmix.serve.runner import ModelRunner, plan_buckets

VOCAB, IMG, PAD, BOS, EOS = 64, 63, 0, 1, 2
T = 4  # image tokens per image


@pytest.fixture(scope="module")
def model():
    from medmix.config import load_config
    from medmix.model import build_model
    cfg = dataclasses.replace(load_config("debug").model, image_size=32, num_image_tokens=T)
    torch.manual_seed(0)
    return build_model(cfg, vocab_size=VOCAB, image_token_id=IMG, pad_token_id=PAD).eval()


def pixels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 32, 32)).astype(np.float32)


def item(prompt, images=0, img_seed=0, **kw) -> ModelInputs:
    return ModelInputs(task="t", prompt_ids=[BOS] + [IMG] * (T * images) + list(prompt),
                       pixel_values=pixels(images, img_seed), **({"max_new_tokens": 6} | kw))


def test_plan_buckets_groups_similar_lengths():
    assert plan_buckets([5, 5, 5], 0.0) == [[0, 1, 2]]
    assert plan_buckets([10, 100, 12, 98], 0.2) == [[0, 2], [3, 1]]
    assert plan_buckets([10, 100, 12, 98], 1.0) == [[0, 2, 3, 1]]
    lengths = list(np.random.default_rng(0).integers(1, 200, 50))
    buckets = plan_buckets(lengths, 0.3)
    assert sorted(i for b in buckets for i in b) == list(range(50))
    for b in buckets:
        width = max(lengths[i] for i in b)
        assert (width * len(b) - sum(lengths[i] for i in b)) / (width * len(b)) <= 0.3


def test_batch_equals_each_request_alone(model):
    from medmix.model import generate, score_options
    items = [
        item([5, 6, 7], images=1, img_seed=1),
        item([8] * 30, images=0, max_new_tokens=3),
        item([9, 10], images=2, img_seed=2, max_new_tokens=8),
        item([11, 12, 13, 14], images=1, img_seed=3, option_ids=[[20, EOS], [21, 22, EOS]], options=["a", "b"]),
        item([15], images=0, temperature=0.8, seed=7),             # seeded sampling: runs alone
        item([16, 17], images=0, ignore_eos=True, max_new_tokens=5),
    ]
    items[3].score_prompt_ids = items[3].prompt_ids
    runner = ModelRunner(model, "cpu", eos_id=EOS, pad_id=PAD, max_pad_fraction=0.5)
    got = runner.run(items)
    for it, res in zip(items, got):
        px = torch.from_numpy(it.pixel_values) if len(it.pixel_values) else None
        alone = generate(model, [it.prompt_ids], px, max_new_tokens=it.max_new_tokens,
                         eos_token_id=None if it.ignore_eos else EOS, pad_token_id=PAD,
                         temperature=it.temperature, seed=it.seed if it.temperature > 0 else None)[0]
        assert res["tokens"] == alone
        assert res["finish_reason"] == ("length" if len(alone) == it.max_new_tokens else "stop")
        assert res["batch_size"] == len(items)
        if it.option_ids:
            want = score_options(model, [it.prompt_ids], [it.option_ids], px, pad_token_id=PAD)[0]
            np.testing.assert_allclose(res["option_probs"], want.probs, atol=1e-5)
            np.testing.assert_allclose(res["option_logprobs"], want.logprobs, atol=1e-4)
    assert len(got[5]["tokens"]) == 5
    assert runner.stats["buckets"] >= 3  # greedy long/short split, sampled alone, ignore_eos group


def test_a_failing_request_fails_alone(model):
    good = item([5, 6], images=1, img_seed=1)
    bad = item([5, 6], images=1, img_seed=2)
    bad.pixel_values = bad.pixel_values[:, :, :8, :8]  # wrong image size: the vision encoder rejects it
    runner = ModelRunner(model, "cpu", eos_id=EOS, pad_id=PAD)
    out = runner.run([good, bad])
    assert "tokens" in out[0] and "error" in out[1]
    assert runner.stats["retries"] == 1


def test_token_logprobs_match_a_full_forward_and_depend_on_the_image(model):
    """The per-token log-probabilities the chat endpoint reports: one forward pass over prompt +
    answer, the chosen token among the top ones under greedy decoding, and a different image
    gives different numbers."""
    runner = ModelRunner(model, "cpu", eos_id=EOS, pad_id=PAD)
    it = dataclasses.replace(item([5, 6, 7], images=1), logprobs=3, max_new_tokens=5)
    (res,) = runner.run([it])
    assert len(res["logprobs"]) == len(res["tokens"]) > 0
    for tok, entry in zip(res["tokens"], res["logprobs"]):
        assert entry["id"] == tok and entry["logprob"] <= 0 and len(entry["top"]) == 3
        assert entry["top"][0][0] == tok  # greedy: the chosen token is the likeliest
        assert abs(entry["top"][0][1] - entry["logprob"]) < 1e-4
    other = dataclasses.replace(it, pixel_values=pixels(1, 7))
    assert runner.run([other])[0]["logprobs"][0]["logprob"] != res["logprobs"][0]["logprob"]
    assert "logprobs" not in runner.run([item([5, 6, 7])])[0]


def test_a_stream_yields_the_batched_answer_token_by_token(model):
    runner = ModelRunner(model, "cpu", eos_id=EOS, pad_id=PAD)
    items = [item([5, 6, 7], images=1, max_new_tokens=7), item([9, 3], max_new_tokens=4),
             item([8, 8, 2, 5], images=1, img_seed=3, temperature=0.8, seed=11, max_new_tokens=6)]
    for it in items:
        (batched,) = runner.run([it])
        gen = runner.stream(it)
        tokens = []
        try:
            while True:
                tokens.append(next(gen))
        except StopIteration as stop:
            finish = stop.value
        assert tokens == batched["tokens"] and finish == batched["finish_reason"]
