"""API keys on the OpenAI routes: ``Authorization: Bearer csk-...``, checked against the key store.

Off unless ``auth.enabled`` (the local demo runs without keys; every deploy profile turns them on). Keys
are looked up by their public id and cached for ``auth.key_cache_s`` seconds per worker, so a revocation
takes effect within that time. Secrets are never logged and never echoed in errors.
"""

from __future__ import annotations

import time

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


class Authenticator:
    def __init__(self, keys: KeyStore, cache_s: float) -> None:
        self.keys = keys
        self.cache_s = cache_s
        self._cache: dict[str, tuple[ApiKey | None, float]] = {}

    async def _lookup(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[1] < self.cache_s:
            return cached[0]
        try:
            key = await self.keys.get(key_id)
        except Exception:
            raise KeyStoreUnavailable("API keys cannot be checked right now: the key store is unreachable") from None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (key, now)
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
