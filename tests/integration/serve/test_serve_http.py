"""The HTTP API on a real Ray Serve app on localhost: answers equal offline inference, every
malformed request is a 4xx JSON, auth holds, and 500 requests at concurrency 32 get no 5xx.

One app per module (Serve start + model load take a while): two debug model versions behind
one multiplexed deployment, a bearer token, and limits small enough to hit cheaply.
"""

from __future__ import annotations

import asyncio
from collections import Counter
import base64
import json
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import suite_config

sys.path.insert(0, str(Path(__file__).parent))
from serve_helpers import free_port, make_export  # noqa: E402

TOKEN = secrets.token_urlsafe(24)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_CHARS = 4000
MAX_BODY = 3_000_000


@dataclass
class Served:
    url: str
    cfg: object
    entries: list
    exports: list
    keys: dict
    keys_file: Path
    audit_log: Path


@pytest.fixture(scope="module")
def served(ray_local, tiny_suite, tmp_path_factory):
    from ray import serve

    from medmix.serve import server
    from medmix.serve.auth import token_digest
    from medmix.serve.models import resolve_models
    from medmix.serve.keys import add_key
    tmp = tmp_path_factory.mktemp("serve-http")
    keys_file = tmp / "keys.json"
    keys = {"clinic": add_key(keys_file, "clinic"), "tight": add_key(keys_file, "tight", rate_per_minute=1, burst=2)}
    cfg = suite_config(tmp, tiny_suite, f"serve.port={free_port()}", "serve.max_batch_size=8",
                       f'serve.keys_file="{keys_file}"', f'serve.audit_log="{tmp / "audit.jsonl"}"',
                       "serve.batch_wait_timeout_s=0.05", "serve.max_new_tokens=32", "serve.default_max_new_tokens=8",
                       f"serve.max_body_bytes={MAX_BODY}", "serve.max_image_pixels=4000000",
                       f"serve.max_input_chars={MAX_CHARS}", "serve.max_images=20", "serve.num_gpus=0")
    exports = [make_export(tmp / f"v{seed}", cfg, seed) for seed in (0, 1)]
    entries = resolve_models([str(p) for p in exports], cfg.lineage)
    url = server.start(cfg, entries, token_digest(TOKEN))
    yield Served(url, cfg, entries, exports, keys, keys_file, tmp / "audit.jsonl")
    serve.shutdown()


@pytest.fixture(scope="module")
def client(served):
    with httpx.Client(base_url=served.url, timeout=120.0) as c:
        yield c


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_health_auth_and_errors_are_json(client):
    assert client.get("/healthz").status_code == 200  # no token needed
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": TOKEN}):
        for method, path in (("GET", "/v1/tasks"), ("GET", "/v1/models"), ("POST", "/v1/predict"),
                             ("GET", "/docs"), ("GET", "/nowhere")):
            r = client.request(method, path, headers=headers, json={"task": "medqa", "inputs": {}})
            assert r.status_code == 401, (headers, path)
            assert r.headers["www-authenticate"].startswith("Bearer")
            if path == "/v1/models":  # an OpenAI route: OpenAI's error object
                assert r.json()["error"]["type"] == "authentication_error"
            else:
                assert r.json()["status"] == 401
    r = client.get("/nowhere", headers=AUTH)
    assert r.status_code == 404 and "no route" in r.json()["error"]
    r = client.get("/v1/predict", headers=AUTH)
    assert r.status_code == 405 and r.json()["status"] == 405
    assert client.get("/docs", headers=AUTH).status_code == 200
    assert "/v1/predict" in client.get("/openapi.json", headers=AUTH).json()["paths"]


def test_tasks_examples_and_models(client, served):
    from medmix.tasks import task_names
    tasks = client.get("/v1/tasks", headers=AUTH).json()
    assert [t["name"] for t in tasks] == task_names()
    for t in tasks:  # every task's example is a working request
        r = client.post("/v1/predict", json=t["example"], headers=AUTH)
        assert r.status_code == 200, (t["name"], r.text)
        body = r.json()
        assert body["model"]["id"] == served.entries[0].id and len(body["model"]["digest"]) == 64
        assert (body.get("options") is not None) == (t["kind"] in ("mcq", "qa", "classify", "variant", "risk"))
        if t["kind"] == "variant":
            assert body["genotype"]["gt"] in ("0/0", "0/1", "1/1")
    listing = client.get("/v1/models", headers=AUTH).json()
    assert listing["object"] == "list"
    models = listing["data"]
    assert all(m["object"] == "model" and m["owned_by"] == "medmix" and m["created"] > 0 for m in models)
    assert [m["id"] for m in models] == [e.id for e in served.entries] and models[0]["default"]
    assert models[1]["lineage"]["checkpoint"] == "random-init-seed-1" and models[0]["max_seq_len"] == 256


# --- predictions equal offline inference -------------------------------------------------------

def offline(export: Path, task: str, inputs: dict, max_new: int | None):
    """The training code path, called directly: decode, encode, generate, score."""
    import torch

    from medmix.data.encode import encode_options, encode_prompt
    from medmix.data.images import decode_image, to_model_input
    from medmix.data.tokenizer import MedmixTokenizer
    from medmix.model import generate, load_exported, score_options
    from medmix.tasks import get_task
    model, config = load_exported(export)
    meta = config["meta"]
    tok = MedmixTokenizer.from_file(export / "tokenizer.json")
    spec = get_task(task)
    raw = inputs.get("images") or ([inputs["image"]] if "image" in inputs else [])
    px = [to_model_input(decode_image(base64.b64decode(s)), meta["image_size"]) for s in raw]
    pixels = torch.from_numpy(np.stack(px)) if px else None
    ctx = {k: v for k, v in inputs.items() if k not in ("image", "images")}
    args = (tok, spec, ctx, len(px), meta["num_image_tokens"])
    scores = None
    if spec.has_options:
        enc = encode_options(*args, meta["max_seq_len"], exemplar=meta["exemplar"])
        n = enc[0].num_prompt_tokens
        opts = [e.input_ids[n:] for e in enc]
        max_new = max_new or max(map(len, opts))
        scores = score_options(model, [enc[0].input_ids[:n]], [opts], pixels, pad_token_id=meta["pad_id"])[0]
    prompt = encode_prompt(*args, meta["max_seq_len"] - max_new, exemplar=meta["exemplar"]).input_ids
    tokens = generate(model, [prompt], pixels, max_new_tokens=max_new, eos_token_id=meta["eos_id"],
                      pad_token_id=meta["pad_id"])[0]
    return tok.decode(tokens).strip(), tokens, scores


def store_requests(suite_root: str, tasks: list[str], per_task: int = 2) -> list[dict]:
    from medmix.data.store import ShardStore
    store = ShardStore(suite_root)
    out = []
    for task in tasks:
        for _, row in zip(range(per_task), store.iter_examples(task, "test")):
            inputs = dict(row.context)
            if row.images:
                inputs["image"] = b64(row.images[0])
            out.append({"task": task, "inputs": inputs,
                        "options": {} if task in ("cxr_classify", "derm_pad", "medqa") else {"max_new_tokens": 12}})
    return out


async def post_all(url: str, bodies: list[dict], headers: dict, concurrency: int) -> list[httpx.Response]:
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120.0, limits=limits) as c:
        async def one(body):
            async with sem:
                if isinstance(body, (bytes, str)):
                    return await c.post("/v1/predict", content=body,
                                        headers={**headers, "Content-Type": "application/json"})
                return await c.post("/v1/predict", json=body, headers=headers)
        return await asyncio.gather(*(one(b) for b in bodies))


def test_http_predictions_equal_offline_generate_and_score(served, tiny_suite):
    tasks = ["cxr_classify", "derm_pad", "medqa", "cxr_report", "mimic3_summary", "path_vqa"]
    bodies = store_requests(tiny_suite, tasks)
    for version, export in enumerate(served.exports):
        headers = {**AUTH, "X-Medmix-Model": served.entries[version].id}
        responses = asyncio.run(post_all(served.url, bodies, headers, concurrency=len(bodies)))
        assert max(r.json()["batch_size"] for r in responses) > 1  # the requests were batched
        for body, r in zip(bodies, responses):
            assert r.status_code == 200, r.text
            got = r.json()
            assert got["model"]["id"] == served.entries[version].id == r.headers["x-medmix-model"]
            text, tokens, scores = offline(export, body["task"], body["inputs"],
                                           body["options"].get("max_new_tokens"))
            assert got["text"] == text and got["num_generated_tokens"] == len(tokens), body["task"]
            if scores is not None:
                np.testing.assert_allclose([o["prob"] for o in got["options"]], scores.probs, atol=1e-4)
                assert got["prediction"] == got["options"][scores.best]["option"]


def test_model_selection_by_header_alias_and_field(client, served):
    body = {"task": "medqa", "inputs": {"question": "Which vitamin prevents scurvy?",
                                        "options": ["A", "B", "C", "D"]}}
    by_id = [client.post("/v1/predict", json=body, headers={**AUTH, "X-Medmix-Model": e.id}).json()
             for e in served.entries]
    assert [b["model"]["id"] for b in by_id] == [e.id for e in served.entries]
    assert by_id[0]["options"] != by_id[1]["options"]  # two different versions answered
    alias = client.post("/v1/predict", json=body, headers={**AUTH, "serve_multiplexed_model_id": served.entries[1].aliases[0]})
    assert alias.json()["model"]["id"] == served.entries[1].id
    field = client.post("/v1/predict", json={**body, "model": served.entries[1].id}, headers=AUTH)
    assert field.json()["options"] == by_id[1]["options"]
    r = client.post("/v1/predict", json=body, headers={**AUTH, "X-Medmix-Model": "medmix/999"})
    assert r.status_code == 404 and r.json()["field"] == "X-Medmix-Model" and served.entries[0].id in r.json()["error"]


def test_body_size_limit_declared_and_streamed(client):
    big = json.dumps({"task": "medqa", "inputs": {"question": "x" * (MAX_BODY + 10)}})
    r = client.post("/v1/predict", content=big, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413 and "serve.max_body_bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is counted while reading
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"x" * 65536
    r = client.post("/v1/predict", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413


# --- the OpenAI-compatible API, driven by the official openai client ------------------------------

@pytest.fixture(scope="module")
def oai(served):
    import openai
    return openai.OpenAI(base_url=served.url + "/v1", api_key=TOKEN, max_retries=0, timeout=120.0)


def image_part(data: bytes, mime: str = "image/png") -> dict:
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{b64(data)}"}}


def test_openai_chat_with_an_image_streams_what_offline_generate_says(oai, served, tiny_suite):
    """A task prompt (medmix.task) with an image part: the answer equals offline `generate` on the
    same inputs; the streamed chunks concatenate to it; usage counts the tokens."""
    from medmix.data.store import ShardStore
    row = next(iter(ShardStore(tiny_suite).iter_examples("cxr_report", "test")))
    messages = [{"role": "user", "content": [image_part(row.images[0])]}]
    extra = {"medmix": {"task": "cxr_report", "inputs": dict(row.context)}}
    done = oai.chat.completions.create(model=served.entries[1].aliases[0], messages=messages, max_tokens=12,
                                       temperature=0, extra_body=extra)
    text, tokens, _ = offline(served.exports[1], "cxr_report", {**row.context, "image": b64(row.images[0])}, 12)
    assert done.object == "chat.completion" and done.model == served.entries[1].id
    choice = done.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == text
    assert choice.finish_reason == ("length" if len(tokens) == 12 else "stop")
    assert done.usage.completion_tokens == len(tokens) and done.usage.prompt_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens

    stream = oai.chat.completions.create(model=served.entries[1].id, messages=messages, max_tokens=12,
                                         temperature=0, stream=True, stream_options={"include_usage": True},
                                         extra_body=extra)
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choice = [c for c in chunks if c.choices]
    assert len(with_choice) >= len(tokens) + 2  # the role, one per token as decoded, the finish reason
    assert "".join(c.choices[0].delta.content or "" for c in with_choice) == text
    assert with_choice[-1].choices[0].finish_reason == choice.finish_reason
    assert all(c.choices[0].finish_reason is None for c in with_choice[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(tokens)
    # a stop sequence: streamed and whole answers agree, and the stream ends early
    print(f"streamed answer: {text!r}")
    if len(text) >= 4:
        stop = text[len(text) // 2:len(text) // 2 + 2]
        whole = oai.chat.completions.create(model=served.entries[1].id, messages=messages, max_tokens=12,
                                            temperature=0, stop=[stop], extra_body=extra)
        assert whole.choices[0].finish_reason == "stop" and stop not in whole.choices[0].message.content
        parts = list(oai.chat.completions.create(model=served.entries[1].id, messages=messages, max_tokens=12,
                                                 temperature=0, stop=stop, stream=True, extra_body=extra))
        assert "".join(c.choices[0].delta.content or "" for c in parts if c.choices) == whole.choices[0].message.content
        assert parts[-1].choices[0].finish_reason == "stop"


def test_openai_plain_chat_sees_the_image_and_reports_logprobs(oai, served):
    def ask(image: bytes, **kw):
        return oai.chat.completions.create(
            model=served.entries[0].id, max_completion_tokens=4, logprobs=True, top_logprobs=3,
            messages=[{"role": "system", "content": "Answer briefly."},
                      {"role": "user", "content": [{"type": "text", "text": "What does this show?"}, image_part(image)]}],
            **kw)
    a, b = ask(_png(24)), ask(_png(31))
    lp_a, lp_b = a.choices[0].logprobs.content, b.choices[0].logprobs.content
    assert len(lp_a) == a.usage.completion_tokens and len(lp_a[0].top_logprobs) == 3
    assert lp_a[0].logprob <= 0 and lp_a[0].top_logprobs[0].logprob >= lp_a[0].logprob
    assert [t.logprob for t in lp_a] != [t.logprob for t in lp_b]  # the image reached the model
    again = ask(_png(24))
    assert again.choices[0].message.content == a.choices[0].message.content  # greedy by default
    # DICOM as a data URI
    from pydicom.data import get_testdata_file
    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    d = oai.chat.completions.create(model=served.entries[0].id, max_tokens=3, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Findings?"}, image_part(dicom, "application/dicom")]}])
    assert d.usage.completion_tokens >= 1
    listing = oai.models.list()
    assert [m.id for m in listing.data] == [e.id for e in served.entries]
    assert oai.models.retrieve(served.entries[1].id).id == served.entries[1].id


def test_openai_errors_are_openai_shaped(oai, served, client):
    import openai
    user = [{"role": "user", "content": "hello"}]
    cases = [(dict(n=2), openai.BadRequestError, "n"),
             (dict(tools=[{"type": "function", "function": {"name": "f"}}]), openai.BadRequestError, "tools"),
             (dict(extra_body={"bogus": 1}), openai.BadRequestError, "bogus"),
             (dict(model="medmix/999"), openai.NotFoundError, "model"),
             (dict(max_tokens=10_000), openai.BadRequestError, "max_tokens"),
             (dict(extra_body={"medmix": {"task": "nope"}}), openai.BadRequestError, "medmix.task"),
             (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}]}]),
              openai.BadRequestError, "messages[0].content[0].image_url.url")]
    for kw, exc_type, param in cases:
        kw = {"model": served.entries[0].id, "messages": user, **kw}
        with pytest.raises(exc_type) as e:
            oai.chat.completions.create(**kw)
        err = e.value.response.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["param"] == param and err["message"], err
    import openai as _openai
    bad_key = _openai.OpenAI(base_url=served.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(_openai.AuthenticationError) as e:
        bad_key.chat.completions.create(model=served.entries[0].id, messages=user)
    assert e.value.response.json()["error"]["type"] == "authentication_error"
    for content in (b"{not json", b"[1, 2]", json.dumps({"messages": "hi"}).encode()):
        r = client.post("/v1/chat/completions", content=content, headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
    r = client.post("/v1/chat/completions", json={"messages": user, "stream": True, "max_tokens": 2}, headers=AUTH)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [line for line in r.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)


def test_api_keys_rate_limits_and_audit_log(served):
    """Keys from the keys file (plus MEDMIX_API_TOKEN), re-read while serving; a key over its
    rate gets 429 + Retry-After; the audit log names keys and models, never keys or content."""
    import openai

    from medmix.serve.keys import add_key

    def client_for(key):
        return openai.OpenAI(base_url=served.url + "/v1", api_key=key, max_retries=0, timeout=60.0)
    secret_text = "patient Jane Roe, MRN 0012345"
    ask = dict(model=served.entries[0].id, max_tokens=2, messages=[{"role": "user", "content": secret_text}])
    done = client_for(served.keys["clinic"]).chat.completions.create(**ask)
    tight = client_for(served.keys["tight"])
    tight.models.list()
    tight.chat.completions.create(**ask)
    with pytest.raises(openai.RateLimitError) as e:
        tight.chat.completions.create(**ask)
    assert int(e.value.response.headers["retry-after"]) >= 1
    assert e.value.response.json()["error"]["code"] == "rate_limit_exceeded"

    new_key = add_key(served.keys_file, "added-live")
    fresh = client_for(new_key)
    for _ in range(40):  # the keys file is re-read within about a second of a change
        try:
            fresh.models.list()
            break
        except openai.AuthenticationError:
            time.sleep(0.1)
    else:
        raise AssertionError("a key added to the keys file was not accepted")

    lines = [json.loads(line) for line in served.audit_log.read_text().splitlines()]
    chat = [x for x in lines if x["key"] == "clinic" and x["endpoint"] == "/v1/chat/completions"]
    assert chat and chat[-1]["status"] == 200 and chat[-1]["model"] == served.entries[0].id
    assert chat[-1]["completion_tokens"] == done.usage.completion_tokens
    assert chat[-1]["prompt_tokens"] == done.usage.prompt_tokens and chat[-1]["task"] == "chat"
    assert [x["status"] for x in lines if x["key"] == "tight"][-3:] == [200, 200, 429]
    assert any(x["key"] == "token" for x in lines) and any(x["status"] == 401 and x["key"] is None for x in lines)
    text = served.audit_log.read_text()
    assert secret_text not in text and TOKEN not in text and not any(k in text for k in served.keys.values())


# --- malformed requests (hypothesis) ------------------------------------------------------------

def _png(size: int = 24) -> bytes:
    from medmix.data.images import encode_png
    return encode_png(np.random.default_rng(size).integers(0, 255, (size, size), dtype=np.uint8))


def _png_header(width: int, height: int) -> bytes:
    from tests.unit.serve.test_serve_inputs import png_header_only
    return png_header_only(width, height)


TASKS = ["cxr_classify", "medqa", "volume_report", "mimic3_summary", "variant_calling"]
# NaN and Infinity included: Python's JSON writes them, and the server must refuse them cleanly
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                             st.dictionaries(st.text(max_size=8), c, max_size=3)),
                           max_leaves=8)
not_a_dict = json_values.filter(lambda v: not isinstance(v, dict))
not_a_str = json_values.filter(lambda v: not isinstance(v, str))
good_image = {"condition": "edema"}


def _valid_inputs(task: str) -> dict:
    return {"cxr_classify": {"condition": "edema", "image": b64(_png())},
            "medqa": {"question": "q?", "options": ["a", "b"]},
            "volume_report": {"images": [b64(_png())] * 2},
            "mimic3_summary": {"findings": "clear lungs"},
            "variant_calling": {"locus": "chr1:5 A>G", "image": b64(_png())}}[task]


@st.composite
def surrogate_body(draw) -> bytes:
    """A request body whose text holds lone surrogates, built as bytes.

    Each surrogate is written as its own `\\uXXXX` escape, and a high surrogate is never followed
    by a low one: that pair is valid JSON for one astral character, which the server must accept.
    """
    units = draw(st.lists(st.integers(0xD800, 0xDFFF), min_size=1, max_size=3).filter(_lone_surrogates_only))
    bad = "".join(f"\\u{u:04x}" for u in units)
    where = draw(st.sampled_from(["value", "key", "option"]))
    if where == "value":
        body = {"task": "mimic3_summary", "inputs": {"findings": "clear " + SURROGATE}}
    elif where == "key":
        body = {"task": "mimic3_summary", "inputs": {"findings": "clear", SURROGATE: "x"}}
    else:
        body = {"task": "medqa", "inputs": {"question": "q?", "options": ["a", SURROGATE]}}
    return json.dumps(body).replace(SURROGATE, bad).encode()


@st.composite
def malformed(draw):
    """(body bytes or object, headers) that is wrong in at least one way."""
    kind = draw(st.sampled_from(["raw", "top", "task", "inputs", "options", "image", "field", "huge", "model",
                                 "surrogate"]))
    task = draw(st.sampled_from(TASKS))
    good = {"task": task, "inputs": _valid_inputs(task)}
    if kind == "raw":  # not JSON at all, or JSON that is not an object
        raw = draw(st.one_of(st.binary(max_size=200).filter(lambda b: not _is_json_object(b)),
                             not_a_dict.map(lambda v: json.dumps(v).encode())))
        return raw, {}
    if kind == "top":  # missing or extra top-level keys
        body = dict(good)
        if draw(st.booleans()):
            body.pop(draw(st.sampled_from(["task", "inputs"])))
        else:
            body[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in ("task", "inputs", "options", "model")))] = 1
        return body, {}
    if kind == "task":  # wrong type or unknown
        from medmix.tasks import task_names
        bad = draw(st.one_of(not_a_str, st.text(max_size=80).filter(lambda t: t not in task_names())))
        return {**good, "task": bad}, {}
    if kind == "inputs":
        return {**good, "inputs": draw(not_a_dict)}, {}
    if kind == "options":  # wrong types or out of range
        key, bad = draw(st.sampled_from([
            ("max_new_tokens", st.one_of(st.integers(max_value=0), st.integers(min_value=33, max_value=10**9),
                                         st.text(max_size=5).filter(lambda s: not _is_number(s)), st.floats(allow_nan=False).filter(lambda f: not f.is_integer()))),
            ("temperature", st.one_of(st.floats(max_value=-0.001), st.floats(min_value=5.01, allow_infinity=False),
                                      st.text(min_size=1, max_size=5).filter(lambda s: not _is_number(s)))),
            ("top_p", st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.001, allow_infinity=False))),
            ("seed", st.integers(max_value=-1)),
            ("bogus_option", json_values),
        ]))
        return {**good, "options": {key: draw(bad)}}, {}
    if kind == "image":  # bad base64, other formats, truncated, oversized, wrong type, too many
        png = _png()
        bad = draw(st.sampled_from(["b64", "format", "truncated", "oversized", "type", "many", "dicom"]))
        inputs = {"condition": "edema"}
        if bad == "b64":
            inputs["image"] = draw(st.text(min_size=1, max_size=40).filter(lambda s: not _is_b64(s)))
        elif bad == "format":
            inputs["image"] = b64(draw(st.binary(min_size=1, max_size=300).filter(
                lambda b: not b.startswith((b"\x89PNG", b"\xff\xd8\xff")) and b[128:132] != b"DICM")))
        elif bad == "truncated":
            inputs["image"] = b64(png[:draw(st.integers(1, len(png) // 2))])  # half the pixel data is gone
        elif bad == "oversized":
            w = draw(st.integers(2001, 60000))
            inputs["image"] = b64(_png_header(w, w))
        elif bad == "type":
            inputs["image"] = draw(not_a_str.filter(lambda v: v is not None))
        elif bad == "many":
            return {"task": "volume_report", "inputs": {"images": [b64(png)] * draw(st.integers(21, 40))}}, {}
        else:
            inputs["image"] = b64(b"\0" * 128 + b"DICM" + draw(st.binary(max_size=64)))
        return {"task": "cxr_classify", "inputs": inputs}, {}
    if kind == "field":  # missing required fields, wrong value types
        which = draw(st.sampled_from(["no_condition", "no_options", "nested", "options_fixed", "no_image"]))
        if which == "no_condition":
            return {"task": "cxr_classify", "inputs": {"image": b64(_png())}}, {}
        if which == "no_options":
            return {"task": "medqa", "inputs": {"question": "q?"}}, {}
        if which == "nested":
            return {"task": "mimic3_summary", "inputs": {"findings": draw(st.one_of(
                st.lists(json_scalars, max_size=3), st.dictionaries(st.text(max_size=4), json_scalars, max_size=2)))}}, {}
        if which == "options_fixed":
            return {"task": "cxr_classify", "inputs": {**good_image, "image": b64(_png()), "options": ["x", "y"]}}, {}
        return {"task": "cxr_classify", "inputs": dict(good_image)}, {}
    if kind == "surrogate":  # JSON can carry lone surrogates; tokenizers and UTF-8 cannot
        return draw(surrogate_body()), {}
    if kind == "huge":  # text past serve.max_input_chars
        n = draw(st.integers(MAX_CHARS + 1, 4 * MAX_CHARS))
        return {"task": "mimic3_summary", "inputs": {"findings": "f" * n}}, {}
    return good, {"X-Medmix-Model": draw(st.text(min_size=1, max_size=20).filter(
        lambda s: s.isprintable() and s.isascii() and s.strip() == s and not s.startswith("export-")))}


SURROGATE = "@@surrogate@@"   # stands where the escaped lone surrogates go in the body bytes


def _lone_surrogates_only(units: list[int]) -> bool:
    """No high surrogate (D800-DBFF) directly followed by a low one (DC00-DFFF)."""
    return not any(0xD800 <= a <= 0xDBFF and 0xDC00 <= b <= 0xDFFF for a, b in zip(units, units[1:]))


def _is_json_object(b: bytes) -> bool:
    try:
        return isinstance(json.loads(b), dict)
    except ValueError:
        return False


def _is_b64(s: str) -> bool:
    try:
        return bool(base64.b64decode("".join(s.split()), validate=True))
    except ValueError:
        return False


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


SEEN: list[int] = []
MALFORMED = 1000   # generated malformed requests per route (/v1/predict, /v1/chat/completions)


@settings(max_examples=MALFORMED, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                 HealthCheck.function_scoped_fixture])
@given(case=malformed())
def test_malformed_requests_get_4xx_json(client, case):
    body, headers = case
    headers = {**AUTH, **headers}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post("/v1/predict", content=content, headers={**headers, "Content-Type": "application/json"})
    SEEN.append(r.status_code)
    assert 400 <= r.status_code < 500, (body if len(str(body)) < 500 else str(body)[:500], r.text)
    err = r.json()
    assert err["status"] == r.status_code and err["error"]


@settings(max_examples=200, deadline=None)
@given(body=surrogate_body())
def test_surrogate_bodies_carry_a_lone_surrogate(body):
    """The generator's own contract: the body is JSON whose text UTF-8 cannot encode."""
    text = json.dumps(json.loads(body), ensure_ascii=False)
    with pytest.raises(UnicodeEncodeError):
        text.encode("utf-8")


def test_a_surrogate_pair_is_not_malformed():
    assert not _lone_surrogates_only([0xD800, 0xDC00])
    assert _lone_surrogates_only([0xDC00, 0xD800]) and _lone_surrogates_only([0xD800, 0xD800])


def test_app_is_healthy_after_the_malformed_requests(client):
    assert len(SEEN) >= MALFORMED, f"only {len(SEEN)} malformed requests ran"
    print("malformed requests by status:", sorted(Counter(SEEN).items()))
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.post("/v1/predict", json={"task": "medqa", "inputs": _valid_inputs("medqa")}, headers=AUTH)
    assert r.status_code == 200


# --- malformed chat completions (hypothesis): every one a 4xx in OpenAI's error shape ----------------

def _chat_image(url: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": "findings?"},
                                        {"type": "image_url", "image_url": {"url": url}}]}


not_a_number = json_values.filter(lambda v: v is not None and not isinstance(v, (int, float))
                                  and not (isinstance(v, str) and _is_number(v)))
not_a_list_or_str = json_values.filter(lambda v: not isinstance(v, (list, str)) and v is not None)


@st.composite
def malformed_chat(draw):
    """A /v1/chat/completions body (bytes or object) wrong in at least one way."""
    good = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
    kind = draw(st.sampled_from(["raw", "top", "messages", "message", "part", "image", "param", "medmix", "model"]))
    if kind == "raw":
        return draw(st.one_of(st.binary(max_size=200).filter(lambda b: not _is_json_object(b)),
                              not_a_dict.map(lambda v: json.dumps(v).encode())))
    if kind == "top":
        if draw(st.booleans()):
            return {"max_tokens": 2}
        key = draw(st.text(min_size=1, max_size=12).filter(lambda k: k not in ChatFields))
        return {**good, key: draw(json_values)}
    if kind == "messages":
        return {**good, "messages": draw(st.one_of(st.just([]), not_a_list_or_str.filter(lambda v: v != []),
                                                  st.lists(not_a_dict, min_size=1, max_size=3)))}
    if kind == "message":
        bad = draw(st.sampled_from(["role", "content", "extra", "no_user"]))
        if bad == "role":
            m = {"role": draw(st.one_of(st.text(max_size=10).filter(lambda r: r not in ("system", "developer", "user", "assistant")),
                                        not_a_str)), "content": "x"}
        elif bad == "content":
            m = {"role": "user", "content": draw(json_values.filter(lambda v: v is not None and not isinstance(v, (str, list))))}
        elif bad == "extra":
            m = {"role": "user", "content": "x", draw(st.text(min_size=1, max_size=8).filter(
                lambda k: k not in ("role", "content", "name"))): 1}
        else:
            m = {"role": draw(st.sampled_from(["system", "assistant"])), "content": "x"}
        return {**good, "messages": [m]}
    if kind == "part":
        part = draw(st.one_of(
            st.fixed_dictionaries({"type": st.text(max_size=12).filter(lambda t: t not in ("text", "image_url"))}),
            st.fixed_dictionaries({"type": st.just("text"), "text": not_a_str}),
            st.fixed_dictionaries({"type": st.just("image_url"), "image_url": not_a_dict}),
            st.just({"type": "text"})))
        return {**good, "messages": [{"role": "user", "content": [part]}]}
    if kind == "image":
        png = _png()
        bad = draw(st.sampled_from(["scheme", "not_b64", "mime", "bytes", "truncated", "huge", "many"]))
        if bad == "scheme":
            url = draw(st.sampled_from(["http://example.org/a.png", "file:///etc/passwd", "", "ftp://x"]))
        elif bad == "not_b64":
            url = "data:image/png;base64," + draw(st.text(min_size=1, max_size=40).filter(lambda t: not _is_b64(t)))
        elif bad == "mime":
            url = f"data:{draw(st.sampled_from(['image/gif', 'text/plain', 'image/webp', '']))};base64,{b64(png)}"
        elif bad == "bytes":
            url = "data:image/png;base64," + b64(draw(st.binary(min_size=1, max_size=200).filter(
                lambda b: not b.startswith((b"\x89PNG", b"\xff\xd8\xff")) and b[128:132] != b"DICM")))
        elif bad == "truncated":
            url = "data:image/png;base64," + b64(png[:draw(st.integers(1, len(png) // 2))])
        elif bad == "huge":
            url = "data:image/png;base64," + b64(_png_header(draw(st.integers(2001, 60000)), 3000))
        else:
            return {**good, "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(png)}}] * 21}]}
        return {**good, "messages": [_chat_image(url)]}
    if kind == "param":
        key, bad = draw(st.sampled_from([
            ("n", st.integers(2, 10)), ("n", not_a_number),
            ("temperature", st.one_of(st.floats(max_value=-0.001), st.floats(min_value=2.001, allow_infinity=False), not_a_number)),
            ("top_p", st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.001, allow_infinity=False))),
            ("max_tokens", st.one_of(st.integers(max_value=0), st.integers(33, 10**9))),
            ("max_completion_tokens", st.integers(33, 10**6)),
            ("seed", st.integers(max_value=-1)),
            ("stop", st.one_of(st.lists(st.text(min_size=1, max_size=3), min_size=5, max_size=8), st.just([""]), not_a_list_or_str)),
            ("stream", st.one_of(st.lists(st.booleans(), min_size=1, max_size=2), st.dictionaries(st.text(max_size=3), st.booleans(), min_size=1))),
            ("top_logprobs", st.integers(0, 20)),
            ("tools", st.lists(st.just({"type": "function", "function": {"name": "f"}}), min_size=1, max_size=2)),
            ("presence_penalty", st.floats(min_value=0.1, max_value=2)),
            ("response_format", st.just({"type": "json_object"})),
        ]))
        return {**good, key: draw(bad)}
    if kind == "medmix":
        return {**good, "medmix": draw(st.one_of(
            not_a_dict.filter(lambda v: v is not None), st.fixed_dictionaries({"task": st.text(max_size=20).filter(lambda t: t not in TaskNames)}),
            st.fixed_dictionaries({"task": st.just("medqa"), "inputs": not_a_dict}),
            st.fixed_dictionaries({"task": st.just("cxr_classify")}),  # no image, no condition
            st.fixed_dictionaries({"task": st.just("medqa"), "bogus": json_values})))}
    return {**good, "model": draw(st.text(min_size=1, max_size=20).filter(
        lambda m: m.isprintable() and not m.startswith("export-")))}


ChatFields = {"messages", "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop",
              "stream", "stream_options", "n", "logprobs", "top_logprobs", "user", "metadata", "store",
              "service_tier", "medmix", "tools", "tool_choice", "functions", "function_call", "parallel_tool_calls",
              "audio", "modalities", "logit_bias", "presence_penalty", "frequency_penalty", "prediction",
              "web_search_options", "reasoning_effort", "verbosity", "response_format"}
TaskNames = {"medqa", "cxr_classify", "cxr_report", "derm_pad", "mimic3_summary", "path_vqa", "vqa_rad", "pubmedqa",
             "volume_report", "variant_calling"}
CHAT_SEEN: list[int] = []


@settings(max_examples=MALFORMED, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                 HealthCheck.function_scoped_fixture])
@given(body=malformed_chat())
def test_malformed_chat_requests_get_openai_shaped_4xx(client, body):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post("/v1/chat/completions", content=content, headers={**AUTH, "Content-Type": "application/json"})
    CHAT_SEEN.append(r.status_code)
    assert 400 <= r.status_code < 500, (str(body)[:500], r.text)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["type"], r.text


def test_app_is_healthy_after_the_malformed_chat_requests(client):
    from medmix.tasks import task_names
    assert TaskNames <= set(task_names())
    assert len(CHAT_SEEN) >= MALFORMED, f"only {len(CHAT_SEEN)} malformed chat requests ran"
    print("malformed chat requests by status:", sorted(Counter(CHAT_SEEN).items()))
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
                    headers=AUTH)
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"


# --- load ---------------------------------------------------------------------------------------

def test_500_requests_at_concurrency_32_get_no_5xx(served):
    rng = np.random.default_rng(0)
    valid = [{"task": t, "inputs": _valid_inputs(t), "options": {"max_new_tokens": int(rng.integers(1, 6))}}
             for t in TASKS for _ in range(4)]
    bodies = []
    for i in range(500):
        if i % 10 == 9:
            bodies.append(b'{"task": "medqa", "inputs": ')  # truncated JSON among the load
        else:
            bodies.append(valid[int(rng.integers(len(valid)))])
    responses = asyncio.run(post_all(served.url, bodies, AUTH, concurrency=32))
    codes = [r.status_code for r in responses]
    assert not [c for c in codes if c >= 500]
    assert codes.count(200) == 450 and codes.count(400) == 50
    batch_sizes = [r.json()["batch_size"] for r in responses if r.status_code == 200]
    assert max(batch_sizes) >= 4, f"batches never filled: {max(batch_sizes)}"
    print("batch sizes under load:", sorted(Counter(batch_sizes).items()))
