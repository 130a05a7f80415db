"""API keys: who may call which endpoint, and how often.

Keys are configured as SHA-256 hashes (``api.keys``), so a leaked configuration does not leak a key; a request
presents the key as ``Authorization: Bearer KEY`` or ``api-key: KEY`` (Qdrant's header), and its hash is
compared with every configured hash in constant time. Scopes: ``read`` (search, recommend, points, spaces)
and ``admin`` (``read`` plus what writes or reveals configuration: ``/metrics`` — public only when no keys are
configured, unless ``api.metrics_public`` says otherwise — and the migration steps ``POST /spaces/{space}/…``,
checked by their routes).
Without keys there is no authentication, which is why ``serve`` refuses a non-loopback address then unless
told ``--insecure``. With ``api.rate_per_s``, each key (each client address when keys are off) has a token
bucket, ``/metrics`` included; a request over it gets 429 with ``Retry-After``. The client address is the
socket's unless ``api.forwarded_allow_ips`` names the proxy in front (``serve``), and the table of buckets is
bounded. Keys never appear in logs or error bodies.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from embedstream.schemas.settings import ApiKey, ApiSettings

OPEN_PATHS = ("/healthz",)
OPEN_PREFIXES = ("/static/",)
PAGE_PATHS = ("/",)  # the page itself is static; the calls it makes need the key
SCOPE_RANK = {"read": 1, "admin": 2}
MAX_BUCKETS = 10_000  # rate-limit buckets kept at once (see Gate._prune)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh key: 32 random bytes, URL-safe, prefixed so that secret scanners recognise it."""
    return "es_" + secrets.token_urlsafe(32)


def presented_key(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return headers.get("api-key") or None


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Denial:
    status: int  # 401, 403 or 429
    detail: str
    retry_after_s: float | None = None


class Gate:
    """Decides each request: None to let it through, or the ``Denial`` to answer with."""

    def __init__(self, settings: ApiSettings) -> None:
        self._keys = [(bytes.fromhex(key.sha256), key) for key in settings.keys]
        public = settings.metrics_public
        self._metrics_public = not settings.keys if public is None else public  # unset: open only without keys
        self._rate = settings.rate_per_s
        self._burst = float(settings.rate_burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # who → (tokens, when)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def identify(self, key: str) -> ApiKey | None:
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for stored, entry in self._keys:  # every hash compared: the time does not say which one matched
            if hmac.compare_digest(digest, stored):
                found = entry
        return found

    def required_scope(self, path: str) -> str | None:
        if path in OPEN_PATHS or path in PAGE_PATHS or path.startswith(OPEN_PREFIXES):
            return None
        if path == "/metrics":
            return None if self._metrics_public else "admin"
        return "read"

    def check(self, path: str, headers: Mapping[str, str], client: str) -> Denial | None:
        scope = self.required_scope(path)
        who = client
        if self.enabled and scope is not None:
            key = presented_key(headers)
            entry = self.identify(key) if key is not None else None
            if entry is None:
                detail = "this API needs a key: 'Authorization: Bearer KEY' or 'api-key: KEY'"
                return Denial(401, detail if key is None else "the API key is not valid")
            if SCOPE_RANK[entry.scope] < SCOPE_RANK[scope]:
                return Denial(403, f"the key {entry.name!r} has the {entry.scope} scope; {path} needs {scope}")
            who = f"key:{entry.name}"
        if self._rate is not None and (scope is not None or path == "/metrics"):
            return self._take(who)
        return None

    def _take(self, who: str) -> Denial | None:
        assert self._rate is not None
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) >= MAX_BUCKETS and who not in self._buckets:
                self._prune(now)
            tokens, then = self._buckets.get(who, (self._burst, now))
            tokens = min(self._burst, tokens + (now - then) * self._rate)
            if tokens < 1:
                self._buckets[who] = (tokens, now)
                wait = (1 - tokens) / self._rate
                return Denial(429, f"over the rate limit of {self._rate:g} requests/s", retry_after_s=wait)
            self._buckets[who] = (tokens - 1, now)
        return None

    def _prune(self, now: float) -> None:
        """Keep the bucket table bounded (one entry per client address when keys are off): a bucket idle long
        enough to be full again is the same as none; if too many are still busy, the oldest half goes (their
        clients start again with a full burst, which is all forgetting can give them)."""
        assert self._rate is not None
        refill_s = self._burst / self._rate
        self._buckets = {who: (t, at) for who, (t, at) in self._buckets.items() if now - at < refill_s}
        if len(self._buckets) >= MAX_BUCKETS:
            newest = sorted(self._buckets.items(), key=lambda item: item[1][1])[len(self._buckets) // 2 :]
            self._buckets = dict(newest)
