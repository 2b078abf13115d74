"""The OpenAI-compatible chat endpoint's parsing, rendering and response shapes (no Serve here;
tests/integration/serve/test_serve_http.py drives it over HTTP with the openai client)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from pydantic import ValidationError

from medmix.data.images import encode_png
from medmix.serve.chat import (Answer, ChatCompletionRequest, ChatError, chat_item, cut_at_stop, error_body,
                               parse_turns, render_chat)
from medmix.serve.inputs import Limits, Preprocessor
from medmix.serve.schemas import GenerationOptions
from medmix.tasks import get_task
from tests.conftest import suite_config


@pytest.fixture(scope="module")
def prep(tiny_suite, tmp_path_factory):
    from medmix.data.tokenizer import load_tokenizer
    cfg = suite_config(tmp_path_factory.mktemp("serve-chat"), tiny_suite)
    return Preprocessor(tokenizer=load_tokenizer(cfg.tokenizer, cfg.data.root, cfg.model.decoder_path),
                        image_size=cfg.model.image_size, num_image_tokens=cfg.model.num_image_tokens,
                        max_seq_len=cfg.stream.max_seq_len, exemplar=cfg.stream.exemplar,
                        store_image_size=cfg.data.image_size)


def png(seed: int = 0, size: int = 24) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8))


def uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def req(messages, **kw) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": messages, **kw})


def user(*parts) -> dict:
    content = [{"type": "text", "text": p} if isinstance(p, str) else
               {"type": "image_url", "image_url": {"url": uri(p)}} for p in parts]
    return {"role": "user", "content": content}


LIMITS = Limits(max_images=3, max_input_chars=200, max_new_tokens=32, default_max_new_tokens=8)


def test_error_body_is_openai_shaped():
    assert error_body(429, "slow down", None, "rate_limit_exceeded") == {"error": {
        "message": "slow down", "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}}


@pytest.mark.parametrize("extra, param", [
    ({"n": 2}, "n"), ({"tools": [{"type": "function"}]}, "tools"), ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"response_format": {"type": "json_object"}}, "response_format"), ({"top_logprobs": 2}, "top_logprobs"),
    ({"max_tokens": 3, "max_completion_tokens": 4}, "max_tokens"), ({"stream_options": {"include_usage": True}},
                                                                    "stream_options")])
def test_unsupported_fields_are_named(extra, param):
    with pytest.raises(ChatError) as e:
        req([{"role": "user", "content": "hi"}], **extra).check()
    assert e.value.param == param and e.value.status == 400


def test_no_op_values_of_unsupported_fields_pass():
    req([{"role": "user", "content": "hi"}], n=1, presence_penalty=0, tools=[], response_format={"type": "text"},
        logprobs=True, top_logprobs=0, max_tokens=4, max_completion_tokens=4).check()


@pytest.mark.parametrize("body", [{"messages": []}, {"messages": [{"role": "user"}], "bogus": 1},
                                  {"messages": [{"role": "user", "content": "x"}], "stop": ["a"] * 5},
                                  {"messages": [{"role": "user", "content": "x"}], "stop": [""]},
                                  {"messages": [{"role": "user", "content": "x"}], "temperature": 2.5},
                                  {"messages": [{"role": "user", "content": 3}]}])
def test_schema_violations_are_validation_errors(body):
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate(body)


@pytest.mark.parametrize("message, param, status", [
    ({"role": "tool", "content": "x"}, "messages[0].role", 400),
    ({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}, "messages[0].content[0].type", 400),
    ({"role": "user", "content": [{"type": "text"}]}, "messages[0].content[0]", 400),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
     "messages[0].content[0].image_url.url", 400),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]},
     "messages[0].content[0].image_url.url", 400),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG"}}]},
     "messages[0].content[0].image_url.url", 415),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]},
     "messages[0].content[0].image_url.url", 400),
    ({"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
     "messages[0].content[0]", 400),
    ({"role": "user", "content": "x" * 201}, "messages", 413),
    ({"role": "system", "content": "only a system message"}, "messages", 400),
])
def test_bad_messages_name_the_part(message, param, status):
    with pytest.raises(ChatError) as e:
        parse_turns(req([message]).messages, LIMITS)
    assert (e.value.param, e.value.status) == (param, status), e.value.message


def test_too_many_images():
    with pytest.raises(ChatError) as e:
        parse_turns(req([user("look", png(), png(), png(), png())]).messages, LIMITS)
    assert e.value.status == 413 and "serve.max_images" in e.value.message


def test_chat_rendering_places_images_where_their_parts_are(prep):
    tok = prep.tokenizer
    turns = parse_turns(req([{"role": "system", "content": "Be brief."}, user("Compare", png(0), "with", png(1)),
                             {"role": "assistant", "content": "Similar."}, user("Sure? <img>")]).messages, LIMITS)
    ids, n = render_chat(tok, turns, prep.num_image_tokens)
    assert n == 2 and ids[0] == tok.bos_id
    assert ids.count(tok.image_token_id) == 2 * prep.num_image_tokens  # the text "<img>" stays text
    text = tok.decode([i for i in ids if i != tok.image_token_id])
    assert text.startswith("Instructions: Be brief.\nQ: Compare") and text.endswith("Q: Sure? <img>\nA:")
    assert "A: Similar." in text
    first = ids.index(tok.image_token_id)
    assert tok.decode(ids[:first]).endswith("Compare ")


def test_plain_chat_item_and_context_limit(prep):
    body = req([user("What is shown?", png(3))], max_tokens=5, temperature=0.5, seed=3, logprobs=True,
               top_logprobs=2)
    item = chat_item(prep, parse_turns(body.messages, LIMITS), body, LIMITS)
    assert item.pixel_values.shape == (1, 3, prep.image_size, prep.image_size)
    assert (item.max_new_tokens, item.temperature, item.seed, item.logprobs) == (5, 0.5, 3, 2)
    long = req([user("pneumothorax " * 300)], max_tokens=30)
    with pytest.raises(ChatError) as e:
        big = Limits(max_new_tokens=300, max_input_chars=10**6)
        chat_item(prep, parse_turns(long.messages, big), long, big)
    assert e.value.code == "context_length_exceeded" and e.value.param == "messages" and "max_tokens" in e.value.message
    over = req([user("hi")], max_completion_tokens=33)
    with pytest.raises(ChatError) as e:
        chat_item(prep, parse_turns(over.messages, LIMITS), over, LIMITS)
    assert e.value.param == "max_completion_tokens" and "serve.max_new_tokens" in e.value.message


def test_task_prompt_equals_the_predict_path(prep):
    """medmix.task renders exactly what /v1/predict renders for the same inputs."""
    image = png(5)
    body = req([user(image)], medmix={"task": "cxr_classify", "inputs": {"condition": "edema"}}, max_tokens=4)
    spec = get_task("cxr_classify")
    item = chat_item(prep, parse_turns(body.messages, LIMITS), body, LIMITS, spec)
    ref = prep.prepare(spec, {"condition": "edema", "image": base64.b64encode(image).decode()},
                       GenerationOptions(max_new_tokens=4, score_options=False), LIMITS)
    assert item.prompt_ids == ref.prompt_ids and np.array_equal(item.pixel_values, ref.pixel_values)
    asked = req([user("Is there edema here?", image)], medmix={"task": "cxr_classify", "inputs": {"condition": "x"}})
    item = chat_item(prep, parse_turns(asked.messages, LIMITS), asked, LIMITS, spec)
    assert "Is there edema here?" in prep.tokenizer.decode(item.prompt_ids)


@pytest.mark.parametrize("messages, ext, param", [
    ([user("q?")], {"task": "cxr_classify", "inputs": {"condition": "edema"}}, "messages"),        # no image
    ([user("q?", png())], {"task": "medqa", "inputs": {"options": ["a", "b"]}}, "messages[0].content[1].image_url.url"),
    ([user(png())], {"task": "cxr_classify"}, "medmix.inputs.condition"),
    ([{"role": "system", "content": "s"}, user(png())], {"task": "cxr_classify"}, "messages"),
    ([user(png())], {"task": "cxr_classify", "inputs": {"image": "AA=="}}, "medmix.inputs.image"),
])
def test_task_mode_errors(prep, messages, ext, param):
    body = req(messages, medmix=ext)
    with pytest.raises(ChatError) as e:
        chat_item(prep, parse_turns(body.messages, LIMITS), body, LIMITS, get_task(ext["task"]))
    assert e.value.param == param and e.value.status == 400, e.value.message


def test_stop_sequences_and_stream_chunks_concatenate(prep):
    tok = prep.tokenizer
    tokens = tok.encode(" no acute cardiopulmonary process. Impression: normal")
    text = tok.decode(tokens).strip()
    kept, cut, hit = cut_at_stop(tok, tokens, text, ["Impression", "zzz"])
    assert hit and cut == text[:text.index("Impression")] and len(kept) < len(tokens)
    assert "Impression" in tok.decode(kept) and "Impression" not in tok.decode(kept[:-1])
    assert cut_at_stop(tok, tokens, text, ["zzz"]) == (tokens, text, False)
    answer = Answer(id="chatcmpl-x", created=1, model="m", fingerprint="f", text=text, tokens=tokens,
                    finish_reason="length", prompt_tokens=7, logprobs=None, medmix={})
    chunks = answer.chunks(tok, include_usage=True)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == text
    assert len(chunks) == len(tokens) + 3 and chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 7 + len(tokens)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert answer.response()["usage"] == {"prompt_tokens": 7, "completion_tokens": len(tokens),
                                          "total_tokens": 7 + len(tokens)}


@pytest.mark.parametrize("stops", [[], ["Impression"], ["zzz", "sion:"], [" "], ["é"]])
def test_streamed_text_concatenates_to_the_answer(prep, stops):
    """Token by token, the pieces sent add up to what a non-streamed request answers (stripped,
    cut before the first stop), and nothing past a stop sequence is ever sent."""
    from medmix.serve.chat import StreamText
    tok = prep.tokenizer
    for source in ("  no acute cardiopulmonary process.  Impression: normal é ", "é"):
        tokens = tok.encode(source)
        whole = tok.decode(tokens).strip()
        expected_tokens, expected, hit = cut_at_stop(tok, tokens, whole, stops)
        stream, pieces = StreamText(tok, stops), []
        for t in tokens:
            pieces.append(stream.add(t))
            assert expected.startswith("".join(pieces))
            if stream.stopped:
                break
        pieces.append(stream.finish())
        assert "".join(pieces) == expected and stream.stopped == hit
        assert stream.tokens == expected_tokens
