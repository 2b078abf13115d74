"""The FastAPI app of the ingress: routes, error handling, middleware.

Built inside each ingress replica (`MedmixIngress.__serve_build_asgi_app__`), so the routes
close over that replica's models, tokenizers and limits. Error contract: every failure is a
JSON `ErrorResponse` — 400 unparsable JSON, 401 token, 404 unknown model or path, 413 size
limits, 415 image format, 422 anything else about the request — and a request can only
reach the model after it passed all of them. A failure inside the server is a 500 with the
same JSON shape; none of them takes the replica down.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from medmix import __version__
from medmix.observability.metrics import record_request
from medmix.serve.auth import BearerAuth
from medmix.serve.inputs import InputError
from medmix.serve.limits import BodyLimit
from medmix.serve.schemas import ErrorResponse, Health, ModelInfo, PredictRequest, PredictResponse, TaskInfo

log = logging.getLogger(__name__)

MODEL_HEADER = "x-medmix-model"
SERVE_MODEL_HEADER = "serve_multiplexed_model_id"  # Ray Serve's own multiplexing header

ERRORS = {code: {"model": ErrorResponse, "description": what} for code, what in (
    (400, "body is not valid JSON"), (401, "missing or wrong API token"), (404, "unknown model"),
    (413, "over a size limit (body, image pixels, images, text, prompt)"), (415, "unsupported image format"),
    (422, "invalid request: wrong type, unknown task, missing field, bad image, ..."),
    (500, "server failure (never caused by the request's content)"))}


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
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}; see /docs"
        return error(exc.status_code, message)

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); the request was valid, retry or report it")

    @app.post("/v1/predict", response_model=PredictResponse, response_model_exclude_none=True, responses=ERRORS,
              summary="Answer one request: generated text, and option probabilities for option tasks")
    async def predict(body: PredictRequest, request: Request) -> Any:
        t0 = time.perf_counter()
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

    @app.get("/v1/models", response_model=list[ModelInfo], responses={401: ERRORS[401]},
             summary="The served model versions, their aliases and lineage")
    async def models() -> Any:
        return ingress.models

    @app.get("/healthz", response_model=Health, summary="Liveness (no token needed)")
    async def healthz() -> Any:
        return {"status": "ok", "models": [e.id for e in ingress.entries]}

    # outermost first: auth (no body read), then the body-size limit, then FastAPI
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(BearerAuth, digest=ingress.token_sha256)
    return app

