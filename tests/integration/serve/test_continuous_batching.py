"""Continuous batching on a live Serve app: a 4-token request sent while a 256-token request is
decoding in the same replica joins its decode batch and finishes first (issue 15).

Under static batching (`@serve.batch`) the short request would wait in Ray's queue until the
long batch had decoded all 256 steps. The long request is a streamed chat completion, so the
test knows it is decoding (its first tokens arrived) before it sends the short one, with no
sleeps to tune; the short one's `batch_size` (the largest decode batch it was part of) shows
that it joined the long one's batch.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import suite_config

sys.path.insert(0, str(Path(__file__).parent))
from serve_helpers import free_port, make_export  # noqa: E402

LONG, SHORT = 256, 4


@pytest.fixture(scope="module")
def url(ray_local, tiny_suite, tmp_path_factory):
    from ray import serve

    from medmix.serve import server
    from medmix.serve.models import resolve_models
    tmp = tmp_path_factory.mktemp("serve-continuous")
    # the tiny decoder (~4 ms a step here, the debug one ~0.6 ms): the long request decodes for about a
    # second, far longer than the stream's relay lags behind the replica or the short request takes
    cfg = suite_config(tmp, tiny_suite, f"serve.port={free_port()}", "serve.num_gpus=0", "serve.access_log=false",
                       'model.language_scale="tiny"', "stream.max_seq_len=512", f"serve.max_new_tokens={LONG}")
    assert cfg.serve.batching == "continuous"  # the default
    export = make_export(tmp / "v0", cfg, seed=0)
    # End of text becomes the image token, which generation never emits: every answer runs to its
    # max_new_tokens whatever the random weights say, so the long request decodes all 256 steps.
    config = json.loads((export / "config.json").read_text())
    config["meta"]["eos_id"] = config["meta"]["image_token_id"]
    (export / "config.json").write_text(json.dumps(config))
    yield server.start(cfg, resolve_models([str(export)], cfg.lineage))
    serve.shutdown()


async def long_and_short(url: str) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=120.0) as client:
        seen: dict = {"long_tokens": 0}
        short_task = None

        async def short() -> httpx.Response:
            r = await client.post("/v1/predict", json={
                "task": "mimic3_summary", "inputs": {"findings": "Mild cardiomegaly. No effusion."},
                "options": {"max_new_tokens": SHORT}})
            seen["long_tokens_when_short_done"] = seen["long_tokens"]
            seen["short_done"] = time.perf_counter()
            return r

        body = {"messages": [{"role": "user", "content": "Describe a normal chest radiograph."}],
                "max_tokens": LONG, "stream": True, "stream_options": {"include_usage": True}}
        async with client.stream("POST", "/v1/chat/completions", json=body) as stream:
            assert stream.status_code == 200
            async for line in stream.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = json.loads(line[len("data: "):])
                choices = chunk["choices"]
                if chunk.get("usage") and not choices:
                    seen["long_usage"] = chunk["usage"]
                if choices and choices[0]["finish_reason"]:
                    seen["long_finish"] = choices[0]["finish_reason"]
                elif choices and choices[0]["delta"].get("content") is not None and "role" not in choices[0]["delta"]:
                    seen["long_tokens"] += 1
                    if seen["long_tokens"] == 3:  # the long request is decoding: send the short one now
                        short_task = asyncio.create_task(short())
        seen["long_done"] = time.perf_counter()
        assert short_task is not None
        seen["short"] = await short_task
        return seen


def test_a_short_request_overtakes_a_long_one_in_the_same_replica(url):
    seen = asyncio.run(long_and_short(url))
    short = seen["short"]
    assert short.status_code == 200, short.text
    answer = short.json()
    assert answer["num_generated_tokens"] == SHORT and answer["finish_reason"] == "length"
    assert seen["long_finish"] == "length" and seen["long_usage"]["completion_tokens"] == LONG
    # sent after the long one's 3rd token, done before its last: the short request finished first,
    # and it shared the long one's decode batch (the largest batch it was part of)
    assert seen["short_done"] < seen["long_done"]
    assert seen["long_tokens_when_short_done"] < LONG
    assert answer["batch_size"] == 2
    print(f"the short request was done when the long one had streamed {seen['long_tokens_when_short_done']} "
          f"of {LONG} tokens")
