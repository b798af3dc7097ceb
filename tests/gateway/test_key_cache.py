"""In process: the key cache cannot be flushed by a flood of made-up key ids."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from gateway.auth import UNKNOWN_IDS_CACHED, Authenticator, KeyStoreUnavailable
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


class FailingStore(CountingStore):
    """The key store's database is away once ``down`` is set."""

    down = False

    async def get(self, key_id: str) -> ApiKey | None:
        if self.down:
            raise ConnectionRefusedError("the database is away")
        return await super().get(key_id)


def test_a_key_confirmed_before_a_key_store_outage_is_still_accepted() -> None:
    real = ApiKey(id="0123456789ab", name="team", secret_sha256="0" * 64)
    store = FailingStore(real)
    auth = Authenticator(store, cache_s=0, outage_s=60)  # type: ignore[arg-type]

    async def run() -> None:
        assert await auth._lookup(real.id) == real
        store.down = True
        assert await auth._lookup(real.id) == real  # the database is away: the last confirmation stands
        with pytest.raises(KeyStoreUnavailable):
            await auth._lookup("ffffffffffff")  # never confirmed: cannot be let in

    asyncio.run(run())
    strict = Authenticator(FailingStore(real), cache_s=0, outage_s=0)  # type: ignore[arg-type]

    async def run_strict() -> None:
        assert await strict._lookup(real.id) == real
        strict.keys.down = True  # type: ignore[attr-defined]
        with pytest.raises(KeyStoreUnavailable):
            await strict._lookup(real.id)

    asyncio.run(run_strict())
