"""API keys, per-key rate limits and the audit log of the HTTP API.

    medmix serve --keys-file keys.json --add-key pacs-bridge --key-rate 120   # prints the key once
    medmix serve --model medmix@champion --keys-file keys.json

The keys file is JSON; it holds each key's name and the sha256 of the key, never the key:

    {"keys": [{"name": "pacs-bridge", "sha256": "9f86d08...", "rate_per_minute": 120, "burst": 20},
              {"name": "notebook", "sha256": "60303ae..."}]}

A request sends `Authorization: Bearer <key>`; a missing or unknown key is a 401 (in the
shape of the route's errors). The file is re-read when it changes (checked at most once per
`RELOAD_S` seconds), so keys are added and revoked without a restart; a file that no longer
parses keeps the last good keys and logs why. `MEDMIX_API_TOKEN` stays a key of its own,
named `token`.

Rate limits are token buckets per key and ingress replica: `rate_per_minute` requests per
minute on average (the key's own, else `serve.rate_limit_per_minute`; 0 = none) and `burst`
at once (default: a minute's worth). A request over it gets 429 with `Retry-After` (seconds).

The audit log is JSON lines, one per request (`serve.audit_log`; by default
`<lineage.root>/serve/audit.jsonl`): time, key name, method, endpoint, model version,
task, status, latency, prompt and completion tokens. No request or response content, no key.
Requests refused with 401 are logged too (key: null). The keys file and the audit log are
paths on the ingress replicas' nodes (resolved to absolute paths where the app is built).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RELOAD_S = 1.0
TOKEN_KEY_NAME = "token"  # MEDMIX_API_TOKEN, as a key
HEX64 = re.compile(r"^[0-9a-f]{64}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")


class KeysFileError(ValueError):
    """A keys file that cannot be used, with what is wrong and where."""


@dataclass(frozen=True)
class Key:
    name: str
    sha256: str
    rate_per_minute: float | None = None
    burst: int | None = None


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_keys(text: str, where: str = "keys file") -> list[Key]:
    """The keys of a keys file's text (KeysFileError naming the entry at fault)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise KeysFileError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeysFileError(f'{where}: expected {{"keys": [{{"name": ..., "sha256": ...}}, ...]}}')
    keys, names, digests = [], set(), set()
    for i, entry in enumerate(data["keys"]):
        at = f"{where}: keys[{i}]"
        if not isinstance(entry, dict):
            raise KeysFileError(f"{at} must be an object with name and sha256")
        unknown = sorted(set(entry) - {"name", "sha256", "rate_per_minute", "burst", "comment"})
        if unknown:
            raise KeysFileError(f"{at}: unknown field {unknown[0]!r} (name, sha256, rate_per_minute, burst, comment)")
        name, digest = entry.get("name"), entry.get("sha256")
        if not isinstance(name, str) or not NAME.match(name):
            raise KeysFileError(f"{at}.name must be 1-64 characters of letters, digits and _.@:- , got {name!r}")
        if not isinstance(digest, str) or not HEX64.match(digest.lower()):
            raise KeysFileError(f"{at}.sha256 must be the 64 hex digits of sha256(key) (key {name!r}); "
                                f"never put the key itself in this file")
        rate, burst = entry.get("rate_per_minute"), entry.get("burst")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0
                                 or not math.isfinite(rate)):
            raise KeysFileError(f"{at}.rate_per_minute must be a number >= 0 (0 = unlimited), got {rate!r}")
        if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
            raise KeysFileError(f"{at}.burst must be an integer >= 1, got {burst!r}")
        if name in names:
            raise KeysFileError(f"{at}: the name {name!r} is used twice")
        if digest.lower() in digests:
            raise KeysFileError(f"{at}: key {name!r} has the same sha256 as another key")
        names.add(name)
        digests.add(digest.lower())
        keys.append(Key(name, digest.lower(), None if rate is None else float(rate), burst))
    return keys


def load_keys(path: str | Path) -> list[Key]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise KeysFileError(f"keys file {path}: cannot read it ({exc.strerror or exc})") from None
    return parse_keys(text, f"keys file {path}")


def add_key(path: str | Path, name: str, rate_per_minute: float | None = None, burst: int | None = None) -> str:
    """Create a key named `name` in the keys file at `path` (created if missing); returns the key,
    which is shown only this once (the file keeps its sha256)."""
    path = Path(path)
    data: dict[str, Any] = {"keys": []}
    if path.exists():
        load_keys(path)  # refuse to extend a broken file
        data = json.loads(path.read_text())
    key = "mmx-" + secrets.token_urlsafe(32)
    entry: dict[str, Any] = {"name": name, "sha256": key_digest(key)}
    if rate_per_minute is not None:
        entry["rate_per_minute"] = rate_per_minute
    if burst is not None:
        entry["burst"] = burst
    data["keys"].append(entry)
    parse_keys(json.dumps(data), f"keys file {path}")  # name clashes and bad values fail before writing
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return key


class Keyring:
    """The keys a server accepts: the keys file (re-read when it changes) and MEDMIX_API_TOKEN."""

    def __init__(self, path: str | None = None, token_sha256: str | None = None, reload_s: float = RELOAD_S):
        self.path = path or None
        self.token = Key(TOKEN_KEY_NAME, token_sha256) if token_sha256 else None
        self.reload_s = reload_s
        self._keys: list[Key] = []
        self._stamp: tuple | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        if self.path:
            self._keys = load_keys(self.path)  # a bad file at start-up is an error
            self._stamp = self._file_stamp()
            self._checked = time.monotonic()

    @property
    def enabled(self) -> bool:
        return bool(self.path or self.token)

    def _file_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def keys(self) -> list[Key]:
        """The current keys, re-reading the file if it changed since the last look."""
        if self.path and time.monotonic() - self._checked >= self.reload_s:
            with self._lock:
                self._checked = time.monotonic()
                stamp = self._file_stamp()
                if stamp != self._stamp:
                    try:
                        self._keys = load_keys(self.path)
                        log.info("keys file %s reloaded: %d keys", self.path, len(self._keys))
                    except KeysFileError as exc:
                        log.error("%s; keeping the %d keys loaded before", exc, len(self._keys))
                    self._stamp = stamp
        return self._keys + ([self.token] if self.token else [])

    def check(self, header: str | None) -> tuple[Key | None, str | None]:
        """(the key, None) for a valid `Bearer <key>` header, else (None, what is wrong)."""
        if not header:
            return None, "missing API key: send `Authorization: Bearer <key>`"
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None, "Authorization header must be `Bearer <key>`"
        digest = key_digest(given.strip())
        found = None
        for key in self.keys():  # compare every key, in constant time each
            if hmac.compare_digest(digest.encode(), key.sha256.encode()):
                found = key
        if found is None:
            return None, "invalid API key"
        return found, None


class RateLimiter:
    """Token buckets per key name: `rate` requests per minute on average, `burst` at once."""

    def __init__(self, default_rate: float = 0.0, default_burst: int = 0, clock=time.monotonic):
        self.default_rate = default_rate
        self.default_burst = default_burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, last time)
        self._lock = threading.Lock()

    def limits(self, key: Key | None) -> tuple[float, int]:
        rate = key.rate_per_minute if key is not None and key.rate_per_minute is not None else self.default_rate
        burst = (key.burst if key is not None and key.burst else None) or self.default_burst or max(1, math.ceil(rate))
        return rate, burst

    def acquire(self, key: Key | None) -> float | None:
        """None if the request may go ahead (one token taken), else the seconds until it may."""
        rate, burst = self.limits(key)
        if rate <= 0:
            return None
        name = key.name if key is not None else ""
        per_s = rate / 60.0
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(name, (float(burst), now))
            tokens = min(float(burst), tokens + (now - last) * per_s)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return None
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / per_s


class AuditLog:
    """Append-only JSON lines, one per request; never request content or keys."""

    FIELDS = ("time", "key", "method", "endpoint", "model", "task", "status", "latency_ms",
              "prompt_tokens", "completion_tokens")

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        if self.path is None:
            return
        record = {k: record.get(k) for k in self.FIELDS}
        record["time"] = record["time"] or datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        line = json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"
        try:
            with self._lock, open(self.path, "a", encoding="ascii") as f:
                f.write(line)  # one write per line: whole lines even with several ingress replicas
        except OSError as exc:
            log.error("audit log %s: cannot write (%s)", self.path, exc)
