"""In process: the key cache cannot be flushed by a flood of made-up key ids."""

from __future__ import annotations

import asyncio
import secrets

from gateway.auth import UNKNOWN_IDS_CACHED, Authenticator
from logstore.keys import ApiKey


class CountingStore:
    """Stands in for the key store's one read: knows one key, counts every lookup."""

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.lookups: list[str] = []

    async def get(self, key_id: str) -> ApiKey | None:
        self.lookups.append(key_id)
        return self.key if key_id == self.key.id else None


def test_a_flood_of_unknown_ids_never_evicts_a_key_in_use() -> None:
    real = ApiKey(id="0123456789ab", name="team", secret_sha256="0" * 64)
    store = CountingStore(real)
    auth = Authenticator(store, cache_s=60)  # type: ignore[arg-type]

    async def run() -> None:
        assert await auth._lookup(real.id) == real
        for _ in range(20_000):  # twice what emptied the whole cache before
            assert await auth._lookup(secrets.token_hex(6)) is None
        assert await auth._lookup(real.id) == real

    asyncio.run(run())
    assert store.lookups.count(real.id) == 1  # still cached: no second read of the real key
    assert len(auth._unknown) <= UNKNOWN_IDS_CACHED


def test_an_unknown_id_asked_again_at_once_is_not_read_again() -> None:
    store = CountingStore(ApiKey(id="0123456789ab", name="team", secret_sha256="0" * 64))
    auth = Authenticator(store, cache_s=60)  # type: ignore[arg-type]

    async def run() -> None:
        for _ in range(5):
            assert await auth._lookup("ffffffffffff") is None

    asyncio.run(run())
    assert store.lookups == ["ffffffffffff"]


def test_no_cache_when_the_cache_time_is_zero() -> None:
    real = ApiKey(id="0123456789ab", name="team", secret_sha256="0" * 64)
    store = CountingStore(real)
    auth = Authenticator(store, cache_s=0)  # type: ignore[arg-type]

    async def run() -> None:
        for _ in range(3):
            await auth._lookup(real.id)

    asyncio.run(run())
    assert store.lookups == [real.id] * 3  # a revocation takes effect at once
