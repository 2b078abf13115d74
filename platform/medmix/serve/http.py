"""The FastAPI app of the ingress: routes, error handling, middleware.

Built inside each ingress replica (`MedmixIngress.__serve_build_asgi_app__`), so the routes
close over that replica's models, tokenizers and limits. Error contract: every failure is a
JSON `ErrorResponse` — 400 unparsable JSON, 401 key, 404 unknown model or path, 413 size
limits, 415 image format, 422 anything else about the request, 429 rate limit — and a
request can only reach the model after it passed all of them. The OpenAI routes
(`/v1/chat/completions`, `/v1/models`) answer the same failures in OpenAI's error object
(`medmix.serve.chat`), with 400 where /v1/predict says 422. A failure inside the server is a 500 with the
same JSON shape; none of them takes the replica down.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from medmix import __version__
from medmix.observability.metrics import record_request
from medmix.serve.auth import BearerAuth, openai_path
from medmix.serve.chat import ChatCompletionRequest, ChatError, error_body, sse
from medmix.serve.inputs import InputError
from medmix.serve.limits import BodyLimit
from medmix.serve.schemas import (ChatCompletion, ErrorResponse, Health, ModelCard, ModelList, OpenAIError,
                                  PredictRequest, PredictResponse, TaskInfo)

log = logging.getLogger(__name__)

MODEL_HEADER = "x-medmix-model"
SERVE_MODEL_HEADER = "serve_multiplexed_model_id"  # Ray Serve's own multiplexing header

ERRORS = {code: {"model": ErrorResponse, "description": what} for code, what in (
    (400, "body is not valid JSON"), (401, "missing or wrong API token"), (404, "unknown model"),
    (413, "over a size limit (body, image pixels, images, text, prompt)"), (415, "unsupported image format"),
    (422, "invalid request: wrong type, unknown task, missing field, bad image, ..."),
    (429, "over the API key's rate limit (Retry-After says when to retry)"),
    (500, "server failure (never caused by the request's content)"))}

OPENAI_ERRORS = {code: {"model": OpenAIError, "description": what} for code, what in (
    (400, "invalid request (error.param names the field)"), (401, "missing or unknown API key"),
    (404, "unknown model"), (413, "over a size limit"), (415, "unsupported image format"),
    (429, "over the key's rate limit (Retry-After says when to retry)"), (500, "server failure"))}


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a field name or message echoing a lone surrogate from the
    request still renders (Starlette's UTF-8 encoding of it would raise, i.e. a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error(status: int, message: str, field: str | None = None, details: list | None = None) -> JSONResponse:
    body = {"error": message, "status": status, "field": field}
    if details:
        body["details"] = details
    return SafeJSONResponse(body, status_code=status)


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None) -> JSONResponse:
    return SafeJSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def _openai_validation(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        return openai_error(400, f"request body is not valid JSON: {bad_json.get('msg', '')}", None, "invalid_json")
    first = errors[0] if errors else {}
    param = _loc(first.get("loc", ()))
    kind = str(first.get("type", ""))
    if kind == "extra_forbidden":
        message = f"unrecognized request field {param!r}; see /docs for the fields medmix accepts"
    elif kind == "missing":
        message = f"missing required parameter {param!r}"
    elif param == "body":
        message = "the body must be a JSON object sent with Content-Type: application/json"
    else:
        message = f"{param}: {first.get('msg', 'invalid value')}"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return openai_error(400, message + more, param, "invalid_value" if kind != "extra_forbidden" else "unknown_parameter")


def _loc(loc: tuple | list) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        first = next(e for e in errors if e.get("type") == "json_invalid")
        return error(400, f"request body is not valid JSON: {first.get('msg', '')} "
                          f"(at {(first.get('ctx') or {}).get('error', 'body')})", "body")
    # only loc/msg/type: `input` may be a megabyte of base64, `ctx` may hold exception objects
    details = [{"field": _loc(e.get("loc", ())), "message": str(e.get("msg", "")), "type": str(e.get("type", ""))}
               for e in errors[:20]]
    first = details[0] if details else {"field": "body", "message": "invalid request"}
    if first["field"] == "body" and first["message"].startswith("Input should be a valid dict"):
        first = {**first, "message": "the body must be a JSON object {task, inputs, options} sent with "
                                     "Content-Type: application/json"}
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return error(422, f"{first['field']}: {first['message']}{more}", first["field"], details)


def audit_note(request: Request, **fields: Any) -> None:
    """What the audit line of this request records besides status and latency (`BearerAuth`)."""
    note = request.scope.get("medmix.audit")
    if note is not None:
        note.update(fields)


def build_http_app(ingress) -> FastAPI:
    """The FastAPI app for one ingress replica (see `MedmixIngress`)."""
    cfg = ingress.cfg
    app = FastAPI(
        title="medmix", version=__version__, default_response_class=SafeJSONResponse,
        description="A generalist biomedical multimodal model (MultiMedBench tasks) on Ray Serve. "
                    "Send `Authorization: Bearer <token>` when the server has MEDMIX_API_TOKEN set; pick a "
                    "served model with the `X-Medmix-Model` header. Limits: body "
                    f"{cfg.max_body_bytes:,} bytes, {cfg.max_images} images, {cfg.max_image_pixels:,} pixels "
                    f"per image, {cfg.max_input_chars:,} characters of text, max_new_tokens <= {cfg.max_new_tokens}.")

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError):
        if openai_path(request.url.path):
            return _openai_validation(exc)
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}; see /docs"
        if openai_path(request.url.path):
            return openai_error(exc.status_code, message)
        return error(exc.status_code, message)

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        if openai_path(request.url.path):
            return openai_error(500, f"internal error ({type(exc).__name__}); the request was valid, retry or "
                                     f"report it")
        return error(500, f"internal error ({type(exc).__name__}); the request was valid, retry or report it")

    @app.post("/v1/predict", response_model=PredictResponse, response_model_exclude_none=True, responses=ERRORS,
              summary="Answer one request: generated text, and option probabilities for option tasks")
    async def predict(body: PredictRequest, request: Request) -> Any:
        t0 = time.perf_counter()
        audit_note(request, task=body.task)
        header = request.headers.get(MODEL_HEADER) or request.headers.get(SERVE_MODEL_HEADER)
        try:
            out = await ingress.predict(body, header)
        except InputError as exc:
            record_request("/v1/predict", body.task, exc.status, time.perf_counter() - t0, "")
            return error(exc.status, exc.message, exc.field)
        except Exception as exc:  # noqa: BLE001 - the contract: JSON, and the replica lives on
            log.exception("predict failed")
            record_request("/v1/predict", body.task, 500, time.perf_counter() - t0, "")
            return error(500, f"internal error: {type(exc).__name__}: {exc}")
        record_request("/v1/predict", body.task, 200, time.perf_counter() - t0, out["model"]["id"])
        audit_note(request, model=out["model"]["id"], task=body.task, prompt_tokens=out["num_prompt_tokens"],
                   completion_tokens=out["num_generated_tokens"])
        return SafeJSONResponse(out, headers={"X-Medmix-Model": out["model"]["id"]})

    @app.get("/v1/tasks", response_model=list[TaskInfo], responses={401: ERRORS[401]},
             summary="Every task: its input fields and a request body that works")
    async def tasks() -> Any:
        return ingress.tasks

    @app.get("/v1/tasks/{name}", response_model=TaskInfo, responses={401: ERRORS[401], 404: ERRORS[404]},
             summary="One task's input fields and example")
    async def task(name: str) -> Any:
        for t in ingress.tasks:
            if t["name"] == name:
                return t
        return error(404, f"unknown task {name!r}; GET /v1/tasks lists them", "name")

    @app.get("/v1/models", response_model=ModelList, responses={401: OPENAI_ERRORS[401]},
             summary="The served model versions (OpenAI's list shape) with their aliases and lineage")
    async def models() -> Any:
        return {"object": "list", "data": ingress.model_cards}

    @app.get("/v1/models/{model:path}", response_model=ModelCard, responses={401: OPENAI_ERRORS[401],
                                                                              404: OPENAI_ERRORS[404]},
             summary="One served model, by id or alias")
    async def model(model: str) -> Any:
        if model not in ingress.names:
            return openai_error(404, f"model {model!r} is not served here; GET /v1/models lists them", "model",
                                "model_not_found")
        return next(c for c in ingress.model_cards if c["id"] == ingress.names[model])

    @app.post("/v1/chat/completions", response_model=ChatCompletion, responses=OPENAI_ERRORS,
              summary="OpenAI-compatible chat completion: text and image parts, streaming, logprobs; "
                      "`medmix: {task}` renders a task's trained prompt")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
        t0 = time.perf_counter()
        task = body.medmix.task if body.medmix else "chat"
        audit_note(request, task=task)
        try:
            if body.stream and not body.logprobs:  # token by token as the model decodes
                model_id, spec, item = await ingress.chat_prepare(body)
                record_request("/v1/chat/completions", task, 200, time.perf_counter() - t0, model_id)
                audit_note(request, model=model_id)
                note = request.scope.get("medmix.audit")
                events = ingress.chat_stream(body, model_id, spec, item, note if note is not None else {})
                return StreamingResponse(events, media_type="text/event-stream",
                                         headers={"X-Medmix-Model": model_id, "Cache-Control": "no-cache"})
            answer = await ingress.chat(body)
        except ChatError as exc:
            record_request("/v1/chat/completions", task, exc.status, time.perf_counter() - t0, "")
            return openai_error(exc.status, exc.message, exc.param, exc.code)
        except Exception as exc:  # noqa: BLE001 - the contract: JSON, and the replica lives on
            log.exception("chat completion failed")
            record_request("/v1/chat/completions", task, 500, time.perf_counter() - t0, "")
            return openai_error(500, f"internal error: {type(exc).__name__}: {exc}")
        record_request("/v1/chat/completions", task, 200, time.perf_counter() - t0, answer.model)
        audit_note(request, model=answer.model, prompt_tokens=answer.usage["prompt_tokens"],
                   completion_tokens=answer.usage["completion_tokens"])
        headers = {"X-Medmix-Model": answer.model}
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            chunks = answer.chunks(ingress.prep[answer.model].tokenizer, include_usage)
            return StreamingResponse(sse(chunks), media_type="text/event-stream",
                                     headers={**headers, "Cache-Control": "no-cache"})
        return SafeJSONResponse(answer.response(), headers=headers)

    @app.get("/healthz", response_model=Health, summary="Liveness (no token needed)")
    async def healthz() -> Any:
        return {"status": "ok", "models": [e.id for e in ingress.entries]}

    # outermost first: auth, rate limit and audit (no body read), then the body-size limit, then FastAPI
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(BearerAuth, keyring=ingress.keyring, limiter=ingress.limiter, audit=ingress.audit)
    return app

