"""Continuous batching (`medmix.serve.scheduler`): requests that join the decode batch at any
step get exactly what `generate` gives each alone, finished rows leave at once, and a failing
request fails alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from medmix.model import generate
from medmix.serve.inputs import ModelInputs
from medmix.serve.runner import ModelRunner
from medmix.serve.scheduler import ContinuousBatchingUnsupported, Scheduler
# the runner tests' tiny debug model, token ids and request builder: the two must agree on them
from tests.unit.serve.test_serve_runner import BOS, EOS, IMG, PAD, VOCAB, item, model  # noqa: F401


@pytest.fixture
def runner(model):
    return ModelRunner(model, "cpu", eos_id=EOS, pad_id=PAD)


def alone(model, it: ModelInputs) -> list[int]:
    px = torch.from_numpy(it.pixel_values) if len(it.pixel_values) else None
    return generate(model, [it.prompt_ids], px, max_new_tokens=it.max_new_tokens,
                    eos_token_id=None if it.ignore_eos else EOS, pad_token_id=PAD, temperature=it.temperature,
                    top_p=it.top_p, seed=it.seed if it.temperature > 0 else None)[0]


def check_cache(s: Scheduler) -> None:
    """The batch's cache holds a row per active sequence, its mask is as wide as the cache, and no
    leading column is padding in every row (retirement cut it)."""
    if not s.active:
        assert s.cache is None and s.mask is None
        return
    assert s.mask is not None
    keys = next(iter(s.cache))[0]
    assert keys.shape[0] == s.mask.shape[0] == len(s.active)
    assert keys.shape[2] == s.mask.shape[1] == max(seq.length for seq in s.active)
    assert bool(s.mask[:, 0].any())
    assert [int(n) for n in s.mask.sum(1)] == [seq.length for seq in s.active]


def drive(s: Scheduler, arrivals: dict[int, list[ModelInputs]]):
    """Step until idle, adding arrivals[k] before step k; returns the sequences in arrival order."""
    seqs, k = [], 0
    while s.busy or any(step >= k for step in arrivals):
        seqs += [s.add(it) for it in arrivals.get(k, [])]
        s.step()
        check_cache(s)
        k += 1
    return seqs


def test_greedy_requests_joining_at_any_step_equal_generate_alone(model, runner):
    rng = np.random.default_rng(0)
    items = [item(list(rng.integers(3, 60, int(rng.integers(1, 40)))), images=int(rng.integers(0, 3)),
                  img_seed=i, max_new_tokens=int(rng.integers(1, 30)), ignore_eos=bool(i % 4 == 3))
             for i in range(14)]
    s = Scheduler(runner, max_sequences=6)
    arrivals = {0: items[:3], 1: items[3:4], 4: items[4:7], 5: items[7:8], 9: items[8:12], 20: items[12:]}
    seqs = drive(s, arrivals)
    assert s.stats["peak_batch"] == 6 and s.stats["failed"] == 0  # rows really shared steps, capped at 6
    for it, seq in zip(items, seqs):
        want = alone(model, it)
        assert seq.result["tokens"] == want
        assert seq.result["finish_reason"] == ("length" if len(want) == it.max_new_tokens else "stop")
    assert {seq.result["finish_reason"] for seq in seqs} == {"stop", "length"}


def test_seeded_sampling_does_not_depend_on_batch_mates(model, runner):
    seeded = item([5, 6, 7], images=1, img_seed=4, temperature=0.9, top_p=0.95, seed=123, max_new_tokens=12)
    want = alone(model, seeded)
    rng = np.random.default_rng(1)
    for mates_at in (None, 0, 3):
        s = Scheduler(runner, max_sequences=8)
        mates = [item(list(rng.integers(3, 60, 9)), temperature=1.2, max_new_tokens=20) for _ in range(3)]
        mates.append(item([9, 9], images=1, img_seed=7, max_new_tokens=15))
        arrivals = {1: [seeded]}
        if mates_at is not None:
            arrivals[mates_at] = arrivals.get(mates_at, []) + mates
        (got,) = [seq for seq in drive(s, arrivals) if seq.item is seeded]
        assert got.result["tokens"] == want, mates_at


def test_finished_rows_leave_at_once_and_waiting_requests_take_them(model, runner):
    long = item([5, 6, 7, 8], images=1, ignore_eos=True, max_new_tokens=40)
    short = item([9], ignore_eos=True, max_new_tokens=3)
    queued = [item([10 + i], ignore_eos=True, max_new_tokens=4) for i in range(3)]
    s = Scheduler(runner, max_sequences=2)
    a, b = s.add(long), s.add(short)
    s.step()
    c, d, e = (s.add(it) for it in queued)
    steps = 1
    while b.result is None:
        s.step()
        steps += 1
        assert len(s.active) <= 2
    assert steps == 2 and a.result is None  # step 1: prefill + 1 token, step 2: the third
    assert s.active == [a] and len(s.waiting) == 3  # dropped from the batch in the step it finished
    check_cache(s)
    s.step()  # the freed row goes to the first waiting request
    assert s.active == [a, c] and [x.item for x in s.waiting] == queued[1:]
    check_cache(s)
    while s.busy:
        s.step()
        check_cache(s)
        assert len(s.active) <= 2
    assert all(x.result["finish_reason"] == "length" for x in (a, b, c, d, e))
    assert a.result["tokens"] == alone(model, long) and c.result["tokens"] == alone(model, queued[0])
    assert b.result["batch_size"] == 2 and s.cache is None


def test_admit_every_prefills_newcomers_together(model, runner):
    """With admit_every = 3 a running batch admits at most every third step: requests that arrive
    one a step are prefilled together, and answers stay those of `generate` alone."""
    items = [item([5 + i, 6, 7], images=1, img_seed=i, ignore_eos=True, max_new_tokens=12) for i in range(6)]
    s = Scheduler(runner, max_sequences=8, admit_every=3)
    seqs = drive(s, {k: [items[k]] for k in range(6)})
    assert s.stats["prefills"] == 3  # step 0 (idle: at once), then steps 3 and 6 (one bucket each: same lengths)
    assert [seq.result["tokens"] for seq in seqs] == [alone(model, it) for it in items]
    with pytest.raises(ValueError, match="admit_every = 0"):
        Scheduler(runner, admit_every=0)


def test_a_failing_request_fails_alone_and_the_loop_goes_on(model, runner):
    good = [item([5, 6], images=1, img_seed=1, max_new_tokens=8), item([7, 8, 9], max_new_tokens=5)]
    bad = item([5, 6], images=1, img_seed=2)
    bad.pixel_values = bad.pixel_values[:, :, :8, :8]  # wrong image size: the vision encoder rejects it
    s = Scheduler(runner, max_sequences=4)
    seqs = drive(s, {0: [good[0]], 2: [bad, good[1]]})
    assert "error" in seqs[1].result and s.stats["failed"] == 1
    assert [seqs[0].result["tokens"], seqs[2].result["tokens"]] == [alone(model, it) for it in good]

    # a decode step that fails fails its rows (nothing tells which row broke it); later requests are served
    s = Scheduler(runner, max_sequences=4)
    first = [s.add(it) for it in good]
    s.step()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(s.decoder, "forward", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("out of memory")))
        s.step()
    assert all("out of memory" in seq.result["error"] for seq in first) and not s.busy and s.cache is None
    again = s.add(good[0])
    while s.busy:
        s.step()
    assert again.result["tokens"] == alone(model, good[0])


def test_option_scores_and_logprobs_are_what_the_static_runner_reports(model, runner):
    scored = item([11, 12, 13, 14], images=1, img_seed=3, option_ids=[[20, EOS], [21, 22, EOS]], options=["a", "b"],
                  max_new_tokens=3)
    scored.score_prompt_ids = scored.prompt_ids
    traced = item([5, 6, 7], images=1, logprobs=3, max_new_tokens=5)
    static = runner.run([scored, traced])
    s = Scheduler(runner, max_sequences=4)
    seqs = drive(s, {0: [item([8] * 20, max_new_tokens=9)], 2: [scored], 3: [traced]})
    got = [seqs[1].result, seqs[2].result]
    for mine, theirs in zip(got, static):
        assert mine["tokens"] == theirs["tokens"] and mine["finish_reason"] == theirs["finish_reason"]
    np.testing.assert_allclose(got[0]["option_probs"], static[0]["option_probs"], atol=1e-5)
    np.testing.assert_allclose(got[0]["option_logprobs"], static[0]["option_logprobs"], atol=1e-4)
    assert [e["id"] for e in got[1]["logprobs"]] == got[1]["tokens"]
    np.testing.assert_allclose([e["logprob"] for e in got[1]["logprobs"]],
                               [e["logprob"] for e in static[1]["logprobs"]], atol=1e-4)


def test_submit_and_stream_share_the_batch_on_an_event_loop(model, runner):
    """The asyncio side: a short request submitted while a long stream decodes finishes first,
    the stream yields its answer token by token, and a stream closed early leaves the batch."""
    long = item([5, 6, 7], images=1, ignore_eos=True, max_new_tokens=60)
    short = item([9, 3], ignore_eos=True, max_new_tokens=4)
    s = Scheduler(runner, max_sequences=8)

    async def scenario():
        order, tokens = [], []

        async def streamed():
            async for step in s.stream(long):
                if isinstance(step, dict):
                    order.append("long")
                    return step
                tokens.append(step)
                if len(tokens) == 5:  # the long one is decoding: send the short one now
                    started.set()

        async def submitted():
            await started.wait()
            result = await s.submit(short)
            order.append("short")
            return result

        started = asyncio.Event()
        end, result = await asyncio.gather(streamed(), submitted())
        cut = s.stream(long)
        first = [await cut.__anext__() for _ in range(3)]
        await cut.aclose()  # the client left
        for _ in range(10):
            if not s.busy:
                break
            await asyncio.sleep(0)
        return order, tokens, end, result, first

    order, tokens, end, result, first = asyncio.run(scenario())
    assert order == ["short", "long"]
    assert tokens == alone(model, long) and end == {"finish_reason": "length", "batch_size": 2}
    assert result["tokens"] == alone(model, short) and result["batch_size"] == 2
    assert first == tokens[:3] and not s.busy and s.cache is None


def test_a_sliding_window_decoder_is_refused_with_the_way_out(runner):
    from transformers import MistralConfig, MistralForCausalLM
    decoder = MistralForCausalLM(MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                               sliding_window=8))
    other = ModelRunner(type("M", (), {"decoder": decoder, "image_token_id": IMG})(), "cpu", eos_id=EOS, pad_id=PAD)
    with pytest.raises(ContinuousBatchingUnsupported, match='serve.batching="static"'):
        Scheduler.of(other, 4)
    with pytest.raises(ContinuousBatchingUnsupported):  # asked again: the same answer
        Scheduler.of(other, 4)
    assert Scheduler.of(runner, 4) is Scheduler.of(runner, 8)  # one per model, made once
