"""Bearer authentication, rate limits and the audit log of the HTTP API, as ASGI middleware.

If `MEDMIX_API_TOKEN` is set where the app is built, or `serve.keys_file` names a keys file
(`medmix.serve.keys`), every request except `GET /healthz` must carry `Authorization: Bearer
<key>`; otherwise it gets 401 with a JSON error. A key never leaves the process that reads
it: the ingress replicas hold only sha256 digests and compare them with
`hmac.compare_digest` (constant time, so response timing says nothing about how much of a
guess was right). Unknown paths answer 401 too, before routing, so the API's shape is not
visible without a key. Then the key's rate limit (429 + Retry-After), and one audit line.

    export MEDMIX_API_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
    medmix serve --model medmix@champion
    curl -H "Authorization: Bearer $MEDMIX_API_TOKEN" http://127.0.0.1:8000/v1/tasks
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import time

from medmix.serve.keys import AuditLog, Keyring, RateLimiter

TOKEN_ENV = "MEDMIX_API_TOKEN"
PUBLIC_PATHS = frozenset({"/healthz"})


def token_digest(token: str | None = None) -> str | None:
    """sha256 hex of the API token (default: $MEDMIX_API_TOKEN); None when auth is off."""
    token = os.environ.get(TOKEN_ENV) if token is None else token
    if not token:
        return None
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_header(value: str | None, digest: str) -> str | None:
    """None if `value` is a valid `Bearer <token>` header for `digest`, else the reason."""
    if not value:
        return "missing Authorization header: send `Authorization: Bearer <token>` ($MEDMIX_API_TOKEN)"
    scheme, _, given = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return "Authorization header must be `Bearer <token>`"
    got = hashlib.sha256(given.strip().encode("utf-8")).hexdigest()
    if not hmac.compare_digest(got.encode(), digest.encode()):
        return "invalid API token"
    return None


def app_path(scope: dict) -> str:
    """The request path inside the app (without the route prefix Serve mounts it under)."""
    path = scope.get("path") or "/"
    root = scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


def openai_path(path: str) -> bool:
    """Routes that answer in OpenAI's shapes, errors included (`medmix.serve.chat`)."""
    return path.startswith("/v1/chat/") or path == "/v1/models" or path.startswith("/v1/models/")


def error_json(path: str, status: int, message: str, field: str | None, code: str | None = None) -> dict:
    """An error body in the shape of the route at `path`: OpenAI's error object, or medmix's."""
    if openai_path(path):
        from medmix.serve.chat import error_body
        return error_body(status, message, field, code)
    return {"error": message, "status": status, "field": field}


async def send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *headers]})
    await send({"type": "http.response.body", "body": data})


class BearerAuth:
    """ASGI middleware in front of everything but the public paths: the API key (401), the key's
    rate limit (429 + Retry-After), and one audit log line per request (`medmix.serve.keys`).

    Routes add what the audit line needs (model, task, token counts) to `scope["medmix.audit"]`.
    """

    def __init__(self, app, digest: str | None = None, public_paths=PUBLIC_PATHS, *, keyring=None,
                 limiter=None, audit=None):
        self.app = app
        self.keyring = keyring if keyring is not None else Keyring(None, digest)
        self.limiter = limiter if limiter is not None else RateLimiter()
        self.audit = audit if audit is not None else AuditLog(None)
        self.public = frozenset(public_paths)

    async def __call__(self, scope, receive, send):
        path = app_path(scope)
        if scope["type"] != "http" or path in self.public:
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        note: dict = {}
        scope["medmix.audit"] = note
        status = {"code": 500}

        def audit(key_name: str | None) -> None:
            self.audit.write(key=key_name, method=scope.get("method"), endpoint=path, status=status["code"],
                             latency_ms=round((time.perf_counter() - t0) * 1000, 2), model=note.get("model"),
                             task=note.get("task"), prompt_tokens=note.get("prompt_tokens"),
                             completion_tokens=note.get("completion_tokens"))

        key = None
        if self.keyring.enabled:
            header = None
            for name, value in scope.get("headers") or ():
                if name == b"authorization":
                    header = value.decode("latin-1")
                    break
            key, reason = self.keyring.check(header)
            if reason is not None:
                status["code"] = 401
                audit(None)
                return await send_json(send, 401, error_json(path, 401, reason, "Authorization", "invalid_api_key"),
                                       [(b"www-authenticate", b'Bearer realm="medmix"')])
        wait = self.limiter.acquire(key)
        key_name = key.name if key is not None else None
        if wait is not None:
            status["code"] = 429
            audit(key_name)
            retry = max(1, math.ceil(wait))
            rate, burst = self.limiter.limits(key)
            message = (f"rate limit of {rate:g} requests per minute (burst {burst}) reached for key "
                       f"{key_name or '(none)'}; retry after {retry} s")
            return await send_json(send, 429, error_json(path, 429, message, None, "rate_limit_exceeded"),
                                   [(b"retry-after", str(retry).encode())])

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                for name, value in message.get("headers") or ():
                    if name.lower() == b"x-medmix-model":
                        note.setdefault("model", value.decode("latin-1"))
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        finally:
            audit(key_name)
