"""OpenAI-compatible chat completions: the request schema, prompt rendering, responses, errors.

    POST /v1/chat/completions
    {"model": "medmix/3", "max_tokens": 64, "temperature": 0,
     "messages": [{"role": "user", "content": [
         {"type": "text", "text": "Describe the findings."},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0..."}}]}],
     "medmix": {"task": "cxr_report"}}                      # optional: the task's trained prompt

What the `openai` client sends works unchanged (the `medmix` field goes in `extra_body`).
Images come only as data: URIs — `image/png`, `image/jpeg` or `application/dicom`, base64 —
and are decoded by the same code as `/v1/predict` (`Preprocessor.image`): the server never
fetches a URL.

Prompts. With `medmix.task`, the request is that task's single-turn prompt, rendered by the
task registry exactly as in training: the one user message's text is the `question` (left
out, the task's default question applies), its images are the task's images, and
`medmix.inputs` fills the task's other fields (`condition`, `options`, `view`, ...). Without
it, the messages go through the decoder's chat template when the model has one (its own
system/user/assistant format, as training rendered task prompts), else a plain chat
rendering in the style the model was trained on:

    Instructions: <system / developer text>
    Q: <user text, images where their parts are>
    A: <assistant text>
    Q: <user text>
    A:

Differences from OpenAI, each answered with a 400 naming the field: `n` must be 1; tools,
functions, audio, response formats other than text, logit_bias and non-zero penalties are
not supported; `image_url` must be a data: URI. `temperature` defaults to 0 (greedy), not 1:
a medical model's answer should not change between two identical requests unless asked to.
`logprobs` are the model's own distribution (temperature 1), computed in one forward pass
after generation. `stream` sends `chat.completion.chunk` events as the model decodes each
token (a row of the replica's continuous batch; under static batching, on its own beside the
batches), then `data: [DONE]`; with
`logprobs`, the answer is generated whole first and then sent token by token.

Errors are OpenAI's error object, `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from medmix.data.chat import IMAGE, chat_prompt_ids
from medmix.data.chat import Message as TemplateMessage
from medmix.data.encode import uses_chat_template
from medmix.serve.inputs import InputError, Limits, ModelInputs
from medmix.serve.schemas import GenerationOptions

log = logging.getLogger(__name__)

IMAGE_MIME = ("image/png", "image/jpeg", "image/jpg", "application/dicom")
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error",
               415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
               500: "server_error"}


# --- errors ------------------------------------------------------------------------------------

class ChatError(Exception):
    """A request the chat endpoint refuses: HTTP status, message, the parameter at fault, a code."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code

    @classmethod
    def from_input(cls, exc: InputError, param: str | None = None) -> "ChatError":
        """A `/v1/predict`-style InputError, as the chat endpoint reports it (4xx keep their status
        where OpenAI clients know it — 404, 413, 415 — and the rest become 400s)."""
        status = exc.status if exc.status in (404, 413, 415) else 400
        code = {404: "model_not_found", 413: "request_too_large", 415: "unsupported_image_format"}.get(status)
        return cls(exc.message, param or exc.field, status, code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


# --- the request -------------------------------------------------------------------------------

class ImageURL(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(..., description="data:image/png;base64,..., data:image/jpeg;base64,... or "
                                      "data:application/dicom;base64,...")
    detail: Literal["auto", "low", "high"] | None = Field(None, description="accepted and ignored")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["image_url"]
    image_url: ImageURL


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(..., description="system, developer, user or assistant")
    content: str | list[dict[str, Any]] | None = Field(None, description="a string, or a list of "
                                                       "text and image_url parts")
    name: str | None = Field(None, description="accepted and ignored")


class MedmixExtension(BaseModel):
    """The `medmix` field: render a task's trained prompt instead of the chat rendering."""

    model_config = ConfigDict(extra="forbid")
    task: str = Field(..., min_length=1, max_length=64, description="task name, see GET /v1/tasks")
    inputs: dict[str, Any] = Field(default_factory=dict, description="the task's other fields "
                                   "(condition, options, view, ...); `question` defaults to the user's text")
    exemplar: bool | None = Field(None, description="render the task's one-shot exemplar (default: as trained)")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


# fields OpenAI defines that medmix does not implement: refused unless they hold their no-op value
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []), "function_call": (None, "none"),
    "parallel_tool_calls": (None, False, True), "audio": (None,), "modalities": (None, ["text"]),
    "logit_bias": (None, {}), "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
    "prediction": (None,), "web_search_options": (None,), "reasoning_effort": (None,), "verbosity": (None,),
    "response_format": (None, {"type": "text"}),
}


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request, as far as medmix implements it (unknown fields are 400s)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message] = Field(..., min_length=1)
    model: str | None = Field(None, max_length=256, description="served model id or alias (GET /v1/models); "
                              "default: the first served model")
    max_tokens: int | None = Field(None, ge=1, description="deprecated name of max_completion_tokens")
    max_completion_tokens: int | None = Field(None, ge=1, description="tokens to generate at most")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 (the default here) = greedy")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = Field(None, description="up to 4 strings; the answer ends before the first")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, description="must be 1")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    user: str | None = Field(None, description="accepted and ignored")
    metadata: dict[str, Any] | None = Field(None, description="accepted and ignored")
    store: bool | None = Field(None, description="accepted and ignored (nothing is stored)")
    service_tier: str | None = Field(None, description="accepted and ignored")
    medmix: MedmixExtension | None = None
    # declared so that they are refused by name rather than as unknown fields
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    audio: Any = None
    modalities: Any = None
    logit_bias: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    prediction: Any = None
    web_search_options: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    response_format: Any = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4:
            raise ValueError(f"at most 4 stop sequences, got {len(stops)}")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty strings")
        return v

    def check(self) -> None:
        """What pydantic's types cannot say (raises ChatError)."""
        if self.n != 1:
            raise ChatError(f"n = {self.n}: medmix returns one choice per request; send n = 1 (or leave it "
                            f"out) and repeat the request with a seed for more samples", "n")
        for name, allowed in UNSUPPORTED.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ChatError(f"{name} is not supported by medmix (it answers in text only: no tools, "
                                f"audio, structured output, logit bias or penalties); leave it out", name)
        if self.top_logprobs is not None and not self.logprobs:
            raise ChatError("top_logprobs needs logprobs = true", "top_logprobs")
        if self.stream_options is not None and not self.stream:
            raise ChatError("stream_options is only allowed with stream = true", "stream_options")
        if (self.max_tokens is not None and self.max_completion_tokens is not None
                and self.max_tokens != self.max_completion_tokens):
            raise ChatError(f"max_tokens = {self.max_tokens} and max_completion_tokens = "
                            f"{self.max_completion_tokens} disagree; send one of them", "max_tokens")

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def max_new(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# --- content parts -> text and images -------------------------------------------------------------

@dataclass
class Turn:
    """One message: its role and its content as text pieces and image bytes, in order."""

    role: str
    pieces: list[str | bytes] = field(default_factory=list)
    where: list[str] = field(default_factory=list)
    """The param path of each piece (messages[i].content[j])."""

    @property
    def text(self) -> str:
        return " ".join(p.strip() for p in self.pieces if isinstance(p, str) and p.strip())

    @property
    def images(self) -> list[tuple[bytes, str]]:
        return [(p, w) for p, w in zip(self.pieces, self.where) if isinstance(p, bytes)]


ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def data_uri(url: str, where: str) -> bytes:
    """The bytes of a base64 image data: URI (ChatError for anything else)."""
    if not url.startswith("data:"):
        raise ChatError(f"{where}: image_url must be a data: URI (data:image/png;base64,...); the server does "
                        f"not fetch URLs", where)
    head, comma, payload = url[5:].partition(",")
    mime, *params = head.split(";")
    if not comma or "base64" not in params:
        raise ChatError(f"{where}: a data: URI must be base64, e.g. data:image/png;base64,...", where)
    if mime.lower() not in IMAGE_MIME:
        raise ChatError(f"{where}: unsupported media type {mime!r}; send image/png, image/jpeg or "
                        f"application/dicom", where, status=415, code="unsupported_image_format")
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ChatError(f"{where}: the data: URI is not valid base64 ({exc})", where) from None
    if not data:
        raise ChatError(f"{where}: the data: URI holds no bytes", where)
    return data


def parse_turns(messages: list[Message], limits: Limits) -> list[Turn]:
    """Messages -> Turns with images as bytes; checks roles, part types, image count and text size."""
    turns, images, chars = [], 0, 0
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        role = ROLES.get(m.role)
        if role is None:
            raise ChatError(f"{where}.role: {m.role!r} is not supported; use system, developer, user or assistant "
                            f"(medmix has no tools)", f"{where}.role")
        turn = Turn(role)
        content = m.content
        if content is None:
            content = ""
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        for j, part in enumerate(content):
            pwhere = f"{where}.content[{j}]"
            kind = part.get("type")
            if kind == "text":
                try:
                    text = TextPart.model_validate(part).text
                except Exception:  # noqa: BLE001 - pydantic's message is long; ours names the field
                    raise ChatError(f"{pwhere}: a text part is {{\"type\": \"text\", \"text\": \"...\"}}", pwhere) from None
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise ChatError(f"{pwhere}.text is not valid Unicode text (it holds a lone surrogate)",
                                    f"{pwhere}.text") from None
                chars += len(text)
                turn.pieces.append(text)
                turn.where.append(pwhere)
            elif kind == "image_url":
                if role != "user":
                    raise ChatError(f"{pwhere}: only user messages may carry images", pwhere)
                try:
                    url = ImagePart.model_validate(part).image_url.url
                except Exception:  # noqa: BLE001
                    raise ChatError(f"{pwhere}: an image part is {{\"type\": \"image_url\", \"image_url\": "
                                    f"{{\"url\": \"data:image/png;base64,...\"}}}}", pwhere) from None
                turn.pieces.append(data_uri(url, f"{pwhere}.image_url.url"))
                turn.where.append(f"{pwhere}.image_url.url")
                images += 1
            else:
                raise ChatError(f"{pwhere}.type: {kind!r} is not supported; content parts are text or image_url",
                                f"{pwhere}.type")
        turns.append(turn)
    if images > limits.max_images:
        raise ChatError(f"messages carry {images} images, over the limit of {limits.max_images} (serve.max_images)",
                        "messages", status=413, code="request_too_large")
    if chars > limits.max_input_chars:
        raise ChatError(f"messages hold {chars:,} characters of text, over the limit of "
                        f"{limits.max_input_chars:,} (serve.max_input_chars)", "messages", status=413,
                        code="request_too_large")
    if not any(t.role == "user" for t in turns):
        raise ChatError("messages need at least one user message", "messages")
    return turns


def render_chat(tok, turns: list[Turn], num_image_tokens: int) -> tuple[list[int], int]:
    """[bos] + the plain chat rendering (see the module docstring) as ids, or the turns through the
    model's chat template when its tokenizer has one (as in training); returns (ids, images).
    Image parts become runs of `num_image_tokens` image ids where they stood; text never does."""
    if uses_chat_template(tok):
        messages = [TemplateMessage(t.role, _template_pieces(t)) for t in turns]
        return chat_prompt_ids(tok, messages, num_image_tokens), sum(len(t.images) for t in turns)
    segments: list[str | None] = []  # None = one image slot

    def text(s: str) -> None:
        if segments and isinstance(segments[-1], str):
            segments[-1] += s
        else:
            segments.append(s)

    system = [t.text for t in turns if t.role == "system" and t.text]
    if system:
        text("Instructions: " + " ".join(system) + "\n")
    images = 0
    for t in turns:
        if t.role == "system":
            continue
        text("Q:" if t.role == "user" else "A:")
        for piece in t.pieces:
            if isinstance(piece, bytes):
                text(" ")
                segments.append(None)
                images += 1
            elif piece.strip():
                text(" " + piece.strip())
        text("\n")
    text("A:")
    ids = [tok.bos_id]
    for seg in segments:
        ids.extend([tok.image_token_id] * num_image_tokens if seg is None else tok.encode(seg))
    return ids, images


def _template_pieces(turn: Turn) -> tuple[str | None, ...]:
    """A turn's content for a chat template: texts stripped and joined by a space, images in place."""
    pieces: list[str | None] = []
    for piece in turn.pieces:
        if isinstance(piece, bytes):
            if pieces and isinstance(pieces[-1], str):
                pieces[-1] += " "
            pieces.append(IMAGE)
        elif piece.strip():
            if pieces and isinstance(pieces[-1], str):
                pieces[-1] += " " + piece.strip()
            else:
                pieces.append(piece.strip() if not pieces else " " + piece.strip())
    return tuple(pieces)


def task_inputs(turns: list[Turn], ext: MedmixExtension) -> tuple[dict[str, Any], list[tuple[bytes, str]]]:
    """With `medmix.task`: the task inputs (user text -> question) and the images, in order."""
    if [t.role for t in turns] != ["user"]:
        raise ChatError("medmix.task renders the task's single-turn prompt: send exactly one user message "
                        "(its text is the question, its images the task's images) and no system or "
                        "assistant messages", "messages")
    turn = turns[0]
    inputs = dict(ext.inputs)
    for key in ("image", "images"):
        if key in inputs:
            raise ChatError(f"medmix.inputs.{key}: send images as image_url parts of the user message",
                            f"medmix.inputs.{key}")
    if turn.text and "question" not in inputs:
        inputs["question"] = turn.text
    return inputs, turn.images


# --- the response ------------------------------------------------------------------------------

def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def cut_at_stop(tok, tokens: list[int], text: str, stops: list[str]) -> tuple[list[int], str, bool]:
    """(tokens kept, text before the first stop sequence, whether one matched)."""
    hits = [(text.find(s), s) for s in stops if s in text]
    if not hits:
        return tokens, text, False
    at, _ = min(hits)
    for k in range(1, len(tokens) + 1):  # the fewest tokens whose text holds a stop sequence
        prefix = tok.decode(tokens[:k]).lstrip()
        if any(s in prefix for s in stops):
            return tokens[:k], text[:at], True
    return tokens, text[:at], True


def logprobs_content(tok, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runner's per-token log-probabilities in OpenAI's `logprobs.content` shape."""
    def token(i: int) -> str:
        return tok.decode([i], skip_special_tokens=False)

    out = []
    for e in entries:
        t = token(e["id"])
        out.append({"token": t, "logprob": e["logprob"], "bytes": list(t.encode("utf-8", "replace")),
                    "top_logprobs": [{"token": (s := token(i)), "logprob": lp, "bytes": list(s.encode("utf-8", "replace"))}
                                     for i, lp in e.get("top", [])]})
    return out


@dataclass
class Answer:
    """One generated answer, ready to be rendered as a response or as stream chunks."""

    id: str
    created: int
    model: str
    fingerprint: str
    text: str
    tokens: list[int]
    finish_reason: str
    prompt_tokens: int
    logprobs: list[dict[str, Any]] | None
    medmix: dict[str, Any]

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": len(self.tokens),
                "total_tokens": self.prompt_tokens + len(self.tokens)}

    def response(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "system_fingerprint": self.fingerprint,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text, "refusal": None},
                             "logprobs": None if self.logprobs is None else {"content": self.logprobs, "refusal": None},
                             "finish_reason": self.finish_reason}],
                "usage": self.usage, "medmix": self.medmix}

    def chunk(self, delta: dict, finish: str | None = None, logprobs: list | None = None,
               usage: bool = False) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None if logprobs is None else {"content": logprobs},
                  "finish_reason": finish}
        out = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
               "system_fingerprint": self.fingerprint, "choices": [choice]}
        if usage:
            out["usage"] = None
        return out

    def chunks(self, tok, include_usage: bool = False) -> list[dict[str, Any]]:
        """The answer as stream chunks: the role, then one per generated token (its new text,
        possibly empty while a multi-byte character is incomplete), then the finish reason,
        then (with include_usage) the usage with no choices. The deltas concatenate to `text`."""
        out = [self.chunk({"role": "assistant", "content": ""}, usage=include_usage)]
        emitted = 0
        for k in range(1, len(self.tokens) + 1):
            prefix = tok.decode(self.tokens[:k]).lstrip()
            common = 0
            for a, b in zip(prefix, self.text):
                if a != b:
                    break
                common += 1
            delta = self.text[emitted:common] if common > emitted else ""
            emitted = max(emitted, common)
            if k == len(self.tokens) and emitted < len(self.text):
                delta, emitted = delta + self.text[emitted:], len(self.text)
            lp = None if self.logprobs is None else [self.logprobs[k - 1]]
            out.append(self.chunk({"content": delta}, logprobs=lp, usage=include_usage))
        if emitted < len(self.text):  # no tokens but text (cannot happen; keeps the contract)
            out.append(self.chunk({"content": self.text[emitted:]}, usage=include_usage))
        out.append(self.chunk({}, finish=self.finish_reason, usage=include_usage))
        if include_usage:
            out.append({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "system_fingerprint": self.fingerprint, "choices": [],
                        "usage": self.usage})
        return out


def sse_event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=True, separators=(',', ':'))}\n\n"


def sse(chunks: list[dict[str, Any]]):
    """Server-sent events: `data: {json}` per chunk, then `data: [DONE]`."""
    for c in chunks:
        yield sse_event(c)
    yield "data: [DONE]\n\n"


class StreamText:
    """A streamed answer's text, token by token, such that the pieces sent concatenate to exactly
    the text a non-streamed request gets (decode, strip, cut before the first stop sequence).

    Text is held back while it could still change: trailing whitespace (the answer is
    stripped), an incomplete UTF-8 character (U+FFFD at the end), and a tail that may be the
    start of a stop sequence."""

    def __init__(self, tok, stops: list[str]):
        self.tok = tok
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.tokens: list[int] = []
        self.sent = ""
        self.stopped = False

    def _text(self) -> str:
        return self.tok.decode(self.tokens).lstrip()

    def add(self, token: int) -> str:
        """Take one token; returns the text now safe to send (may be "")."""
        self.tokens.append(int(token))
        text = self._text()
        hits = [text.find(s) for s in self.stops if s in text]
        if hits:
            self.stopped = True
            return self._extend(text[:min(hits)])
        safe = text.rstrip().rstrip("\ufffd")
        if self.hold:
            safe = safe[:max(0, len(safe) - self.hold)]
        return self._extend(safe)

    def _extend(self, candidate: str) -> str:
        if len(candidate) > len(self.sent) and candidate.startswith(self.sent):
            delta = candidate[len(self.sent):]
            self.sent = candidate
            return delta
        return ""

    def finish(self) -> str:
        """The rest of the answer once generation ended (or a stop sequence cut it)."""
        text = self.tok.decode(self.tokens).strip()
        hits = [text.find(s) for s in self.stops if s in text]
        final = text[:min(hits)] if hits else text
        if not final.startswith(self.sent):  # cannot happen with a prefix-stable tokenizer; never resend
            log.warning("streamed text diverged from the final answer; sending the rest as is")
            return final[len(self.sent):] if len(final) > len(self.sent) else ""
        rest = final[len(self.sent):]
        self.sent = final
        return rest


def model_card(info: dict[str, Any], created: int) -> dict[str, Any]:
    """A served model in OpenAI's model object shape, with medmix's own fields alongside."""
    return {"id": info["id"], "object": "model", "created": created, "owned_by": "medmix", **info}


def now() -> int:
    return int(time.time())


def chat_item(prep, turns: list[Turn], body: ChatCompletionRequest, limits: Limits, spec=None) -> ModelInputs:
    """The model's inputs for a chat request (task prompt or chat rendering); raises ChatError."""
    max_new = body.max_new or limits.default_max_new_tokens
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    if max_new > limits.max_new_tokens:
        raise ChatError(f"{param} = {max_new} is over the limit of {limits.max_new_tokens} (serve.max_new_tokens)",
                        param)
    if max_new >= prep.max_seq_len:
        raise ChatError(f"{param} = {max_new} leaves no room for the prompt within the model's context of "
                        f"{prep.max_seq_len} tokens", param, code="context_length_exceeded")
    temperature = body.temperature or 0.0
    top_p = body.top_p if body.top_p is not None else 1.0
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    pixels, header = [], {}
    images = [img for t in turns for img in t.images]
    for data, where in images:
        try:
            px, head = prep.image(data, limits, where)
        except InputError as exc:
            raise ChatError.from_input(exc, where) from None
        pixels.append(px)
        header = {**head, **header}
    if spec is not None:
        inputs, task_images = task_inputs(turns, body.medmix)
        if not spec.has_image and task_images:
            raise ChatError(f"task {spec.name} is text-only and takes no image", task_images[0][1])
        if spec.has_image and not task_images:
            raise ChatError(f"task {spec.name} needs {'images' if spec.multi_image else 'an image'}: add "
                            f"image_url parts to the user message", "messages")
        if spec.has_image and not spec.multi_image and len(task_images) != 1:
            raise ChatError(f"task {spec.name} takes exactly one image, got {len(task_images)}", "messages")
        options = GenerationOptions(max_new_tokens=max_new, temperature=temperature, top_p=top_p, seed=body.seed,
                                    exemplar=body.medmix.exemplar, score_options=False)
        try:
            item = prep.prepare(spec, inputs, options, limits, images=(pixels, header))
        except InputError as exc:
            field_ = exc.field or ""
            param = ("medmix." + field_) if field_.startswith("inputs") else field_ or None
            if field_ == "inputs.question":
                param = "messages"
            raise ChatError.from_input(exc, param) from None
        item.logprobs = logprobs
        return item
    ids, _ = render_chat(prep.tokenizer, turns, prep.num_image_tokens)
    if len(ids) > prep.max_seq_len - max_new:
        raise ChatError(f"the prompt is {len(ids)} tokens (images: {len(pixels)} x {prep.num_image_tokens}); with "
                        f"{param} = {max_new} it exceeds the model's context of {prep.max_seq_len} tokens: shorten "
                        f"the messages or lower {param}", "messages", code="context_length_exceeded")
    stack = (np.stack(pixels).astype(np.float32, copy=False) if pixels
             else np.zeros((0, 3, prep.image_size, prep.image_size), np.float32))
    return ModelInputs(task="chat", prompt_ids=ids, pixel_values=stack, max_new_tokens=max_new,
                       temperature=temperature, top_p=top_p, seed=body.seed, exemplar=False, logprobs=logprobs)
