"""Request-size limits enforced before a body is parsed, as ASGI middleware.

`BodyLimit` answers 413 with a JSON error when a request declares (Content-Length) or sends
(chunked) more than `serve.max_body_bytes`; the body is read at most once and never beyond
the limit + one chunk, so an oversized upload costs the server no more than the limit. The
per-field limits (image pixels, number of images, text length, max_new_tokens, options)
are checked in `medmix.serve.inputs` with messages naming the field.
"""

from __future__ import annotations

from medmix.serve.auth import app_path, error_json, send_json


class BodyLimit:
    """ASGI middleware: 413 for bodies over `max_bytes`; replays the buffered body otherwise."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, scope, size: int | None) -> dict:
        said = f"{size:,} bytes" if size is not None else "more bytes"
        return error_json(app_path(scope), 413, f"request body is {said}, over the limit of {self.max_bytes:,} "
                          f"bytes (serve.max_body_bytes); send smaller or fewer images", "body", "request_too_large")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await send_json(send, 400, error_json(app_path(scope), 400, "invalid Content-Length "
                                                                 "header", "Content-Length"))
                if declared > self.max_bytes:
                    return await send_json(send, 413, self._too_large(scope, declared))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away; nothing to answer
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await send_json(send, 413, self._too_large(scope, None))
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay_receive():
            if replay:
                return replay.pop()
            return await receive()  # after the body: disconnect notifications

        return await self.app(scope, replay_receive, send)
