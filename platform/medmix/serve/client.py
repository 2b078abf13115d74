"""A minimal client of the medmix HTTP API (standard library only).

    from medmix.serve.client import ask, image_b64
    answer = ask("http://127.0.0.1:8000", "cxr_classify",
                 {"condition": "edema", "image": image_b64("chest.png")}, token=os.environ.get("MEDMIX_API_TOKEN"))
    answer["text"], answer.get("prediction"), answer["model"]["id"]

`ask` returns the JSON response as a dict; an HTTP error raises `APIError` carrying the
status and the server's JSON error (which says what was wrong and in which field).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class APIError(RuntimeError):
    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(f"HTTP {status}: {body.get('error', body)}")
        self.status = status
        self.body = body


def image_b64(path: str | Path) -> str:
    """A PNG/JPEG/DICOM file as the base64 string `inputs.image` takes."""
    return base64.b64encode(Path(path).read_bytes()).decode()


def request(url: str, method: str = "GET", body: Any = None, token: str | None = None,
            model: str | None = None, timeout: float = 120.0) -> Any:
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if model:
        headers["X-Medmix-Model"] = model
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {"error": raw.decode(errors="replace")[:500]}
        raise APIError(exc.code, payload if isinstance(payload, dict) else {"error": payload}) from None


def ask(url: str, task: str, inputs: dict[str, Any], token: str | None = None, *,
        options: dict[str, Any] | None = None, model: str | None = None, timeout: float = 120.0) -> dict:
    """POST /v1/predict; returns the response (text, model, and option probabilities for option tasks)."""
    body: dict[str, Any] = {"task": task, "inputs": inputs}
    if options:
        body["options"] = options
    return request(url.rstrip("/") + "/v1/predict", "POST", body, token=token, model=model, timeout=timeout)


def tasks(url: str, token: str | None = None) -> list[dict]:
    """GET /v1/tasks: each task's fields and a working example body."""
    return request(url.rstrip("/") + "/v1/tasks", token=token)


def models(url: str, token: str | None = None) -> list[dict]:
    """GET /v1/models: the served versions with their lineage (the `data` of OpenAI's list)."""
    return request(url.rstrip("/") + "/v1/models", token=token)["data"]
