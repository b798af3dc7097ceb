"""API keys on the OpenAI routes: ``Authorization: Bearer csk-...``, checked against the key store.

Off unless ``auth.enabled`` (the local demo runs without keys; every deploy profile turns them on). Keys
are looked up by their public id and cached for ``auth.key_cache_s`` seconds per worker, so a revocation
takes effect within that time. Found keys and unknown ids are cached apart, each in a bounded LRU: a flood of
random ids (which anyone can send) only ever evicts other unknown ids, never the keys in use. While the key
store (the log's database) is unreachable, a key confirmed within ``auth.key_outage_s`` is still accepted, so
a database outage does not lock every client out once the cache expires; an id never confirmed gets 503.
Secrets are never logged and never echoed in errors.
"""

from __future__ import annotations

import logging
import time

from cachetools import LRUCache, TTLCache
from starlette.requests import Request

from gateway.errors import GatewayError
from logstore.keys import ApiKey, KeyStore, split_key, verify


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class KeyStoreUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "key_store_unavailable"


class ModelNotAllowed(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


log = logging.getLogger("cascade.gateway")

KNOWN_KEYS_CACHED = 10_000  # keys in use, per worker
UNKNOWN_IDS_CACHED = 1_000  # ids the key store does not know, for at most MISS_CACHE_S
MISS_CACHE_S = 1.0


class Authenticator:
    def __init__(self, keys: KeyStore, cache_s: float, outage_s: float = 3600.0) -> None:
        self.keys = keys
        self.cache_s = cache_s
        self.outage_s = outage_s
        self._confirmed: LRUCache[str, tuple[ApiKey, float]] = LRUCache(KNOWN_KEYS_CACHED)  # for an outage
        self._known: TTLCache[str, ApiKey] = TTLCache(KNOWN_KEYS_CACHED, ttl=cache_s)
        self._unknown: TTLCache[str, bool] = TTLCache(UNKNOWN_IDS_CACHED, ttl=min(cache_s, MISS_CACHE_S))

    async def _lookup(self, key_id: str) -> ApiKey | None:
        if (known := self._known.get(key_id)) is not None:
            return known
        if key_id in self._unknown:
            return None
        try:
            key = await self.keys.get(key_id)
        except Exception as exc:
            confirmed = self._confirmed.get(key_id)
            if confirmed is not None and time.monotonic() - confirmed[1] <= self.outage_s:
                log.warning(
                    "key store unreachable (%s): accepting key %s as last confirmed", type(exc).__name__, key_id
                )
                return confirmed[0]
            raise KeyStoreUnavailable("API keys cannot be checked right now: the key store is unreachable") from None
        if key is not None:
            self._confirmed[key_id] = (key, time.monotonic())
        else:
            self._confirmed.pop(key_id, None)  # revoked or deleted: never accepted during an outage
        if self.cache_s > 0:
            if key is None:
                self._unknown[key_id] = True
            else:
                self._known[key_id] = key
        return key

    async def authenticate(self, request: Request) -> ApiKey:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        parts = split_key(token.strip()) if scheme.lower() == "bearer" else None
        if parts is None:
            raise Unauthorized("missing or malformed API key: send Authorization: Bearer csk-...")
        key = await self._lookup(parts[0])
        if key is None or not verify(key, parts[1]):
            raise Unauthorized("invalid or revoked API key")
        return key


def check_model_allowed(key: ApiKey, model: str) -> None:
    if not key.allows(model):
        raise ModelNotAllowed(f"this API key may not use model {model!r}", param="model")
