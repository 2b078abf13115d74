"""API keys file, rate limiter, audit log and the auth middleware, without Serve."""

from __future__ import annotations

import json
import os

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from medmix.serve.auth import BearerAuth
from medmix.serve.keys import AuditLog, Key, Keyring, KeysFileError, RateLimiter, add_key, key_digest, parse_keys

H = "a" * 64


@pytest.mark.parametrize("text, says", [
    ("{", "not valid JSON"), ("[]", '{"keys"'), ('{"keys": [1]}', "keys[0] must be an object"),
    ('{"keys": [{"name": "a"}]}', "keys[0].sha256"), ('{"keys": [{"name": "a", "sha256": "plain-key"}]}', "never put"),
    ('{"keys": [{"name": "", "sha256": "%s"}]}' % H, "keys[0].name"),
    ('{"keys": [{"name": "a", "sha256": "%s", "rate_per_minute": -1}]}' % H, "rate_per_minute"),
    ('{"keys": [{"name": "a", "sha256": "%s", "burst": 0}]}' % H, "burst"),
    ('{"keys": [{"name": "a", "sha256": "%s", "key": "x"}]}' % H, "unknown field 'key'"),
    ('{"keys": [{"name": "a", "sha256": "%s"}, {"name": "a", "sha256": "%s"}]}' % (H, "b" * 64), "used twice"),
    ('{"keys": [{"name": "a", "sha256": "%s"}, {"name": "b", "sha256": "%s"}]}' % (H, H.upper()), "same sha256"),
])
def test_bad_keys_files_say_what_is_wrong(text, says):
    with pytest.raises(KeysFileError, match=None) as e:
        parse_keys(text)
    assert says in str(e.value)


def test_add_key_check_reload_and_revoke(tmp_path):
    path = tmp_path / "keys.json"
    alice = add_key(path, "alice", rate_per_minute=30)
    assert alice not in path.read_text() and key_digest(alice) in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    ring = Keyring(str(path), token_sha256=key_digest("tok"), reload_s=0)
    assert ring.check(f"Bearer {alice}")[0] == Key("alice", key_digest(alice), 30.0, None)
    assert ring.check("Bearer tok")[0].name == "token"  # MEDMIX_API_TOKEN is a key too
    assert ring.check(None) == (None, "missing API key: send `Authorization: Bearer <key>`")
    assert ring.check(f"Basic {alice}")[1].startswith("Authorization header must be")
    assert ring.check("Bearer nope")[1] == "invalid API key"
    bob = add_key(path, "bob")
    assert ring.check(f"Bearer {bob}")[0].name == "bob"  # picked up without a restart
    with pytest.raises(KeysFileError, match="used twice"):
        add_key(path, "bob")
    data = json.loads(path.read_text())
    data["keys"] = [k for k in data["keys"] if k["name"] != "alice"]
    path.write_text(json.dumps(data))
    assert ring.check(f"Bearer {alice}")[1] == "invalid API key"  # revoked
    path.write_text("{broken")
    assert ring.check(f"Bearer {bob}")[0].name == "bob"  # a broken file keeps the last good keys
    with pytest.raises(KeysFileError):
        Keyring(str(path))  # ... but is refused at start-up


def test_rate_limiter_bursts_then_waits():
    now = [0.0]
    limiter = RateLimiter(default_rate=60, default_burst=2, clock=lambda: now[0])
    key = Key("a", H)
    assert limiter.acquire(key) is None and limiter.acquire(key) is None
    wait = limiter.acquire(key)
    assert wait == pytest.approx(1.0)
    assert limiter.acquire(Key("b", H)) is None  # buckets are per key
    now[0] = 1.0
    assert limiter.acquire(key) is None and limiter.acquire(key) == pytest.approx(1.0)
    slow = Key("slow", H, rate_per_minute=6, burst=1)  # the key's own limit wins
    assert limiter.acquire(slow) is None and limiter.acquire(slow) == pytest.approx(10.0)
    assert RateLimiter().acquire(key) is None  # 0 = unlimited
    assert RateLimiter(30).limits(None) == (30, 30)  # burst: a minute's worth


def app_with(ring, limiter, audit) -> TestClient:
    app = FastAPI()

    @app.post("/v1/predict")
    async def predict(request: Request):
        request.scope["medmix.audit"].update(model="m/1", task="medqa", prompt_tokens=5, completion_tokens=2)
        return {"ok": True}

    @app.post("/v1/chat/completions")
    async def chat():
        return {"ok": True}

    @app.get("/healthz")
    async def health():
        return {"status": "ok"}
    app.add_middleware(BearerAuth, keyring=ring, limiter=limiter, audit=audit)
    return TestClient(app)


def test_middleware_401_429_and_audit(tmp_path):
    path = tmp_path / "keys.json"
    key = add_key(path, "clinic", rate_per_minute=2, burst=2)
    log = tmp_path / "audit" / "audit.jsonl"
    client = app_with(Keyring(str(path)), RateLimiter(), AuditLog(log))
    assert client.get("/healthz").status_code == 200
    r = client.post("/v1/predict", json={"secret": "patient text"})
    assert r.status_code == 401 and r.json()["status"] == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = client.post("/v1/chat/completions", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert r.json()["error"]["code"] == "invalid_api_key"
    auth = {"Authorization": f"Bearer {key}"}
    assert client.post("/v1/predict", json={"secret": "patient text"}, headers=auth).status_code == 200
    assert client.post("/v1/chat/completions", headers=auth).status_code == 200
    r = client.post("/v1/chat/completions", headers=auth)
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
    assert int(r.headers["retry-after"]) == 30 and "clinic" in r.json()["error"]["message"]
    r = client.post("/v1/predict", headers=auth)
    assert r.status_code == 429 and r.json()["status"] == 429
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(x["key"], x["endpoint"], x["status"]) for x in lines] == [
        (None, "/v1/predict", 401), (None, "/v1/chat/completions", 401), ("clinic", "/v1/predict", 200),
        ("clinic", "/v1/chat/completions", 200), ("clinic", "/v1/chat/completions", 429),
        ("clinic", "/v1/predict", 429)]
    assert lines[2] | {"time": None, "latency_ms": None} == {
        "time": None, "key": "clinic", "method": "POST", "endpoint": "/v1/predict", "model": "m/1", "task": "medqa",
        "status": 200, "latency_ms": None, "prompt_tokens": 5, "completion_tokens": 2}
    text = log.read_text()
    assert key not in text and "patient text" not in text and "wrong" not in text


def test_no_keys_means_open_but_still_audited(tmp_path):
    log = tmp_path / "a.jsonl"
    client = app_with(Keyring(None, None), RateLimiter(), AuditLog(log))
    assert client.post("/v1/predict").status_code == 200
    assert json.loads(log.read_text())["key"] is None
    assert not os.path.exists(tmp_path / "none")
