"""Bearer-token authentication for the HTTP API, as ASGI middleware.

If `MEDMIX_API_TOKEN` is set where the app is built, every request except `GET /healthz`
must carry `Authorization: Bearer <token>`; otherwise it gets 401 with a JSON error. The
token itself never leaves the process that reads it: the ingress replicas receive only its
sha256 and compare digests with `hmac.compare_digest` (constant time, so response timing
says nothing about how much of a guess was right). Unknown paths answer 401 too, before
routing, so the API's shape is not visible without the token.

    export MEDMIX_API_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
    medmix serve --model medmix@champion
    curl -H "Authorization: Bearer $MEDMIX_API_TOKEN" http://127.0.0.1:8000/v1/tasks
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

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
    """ASGI middleware: 401 unless the request carries the API token (or the path is public)."""

    def __init__(self, app, digest: str | None, public_paths=PUBLIC_PATHS):
        self.app = app
        self.digest = digest
        self.public = frozenset(public_paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.digest or app_path(scope) in self.public:
            return await self.app(scope, receive, send)
        header = None
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        reason = check_header(header, self.digest)
        if reason is None:
            return await self.app(scope, receive, send)
        await send_json(send, 401, error_json(app_path(scope), 401, reason, "Authorization", "invalid_api_key"),
                        [(b"www-authenticate", b'Bearer realm="medmix"')])
