"""In process, against the real Redis and the in-memory counters: concurrency slots, budget reservations, and
what a client sees when the counters are away."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from gateway import limits
from gateway.limits import Counters, Limiter, LimitsUnavailable, MemoryCounters, RateLimited, RedisCounters
from logstore.keys import ApiKey
from tests.gateway.test_keys import REDIS_URL
from tests.serving.helpers import free_port


def a_key(**limits_: Any) -> ApiKey:
    return ApiKey(id=uuid.uuid4().hex[:12], name="test", secret_sha256="0" * 64, **limits_)


async def counters_of(kind: str) -> AsyncIterator[Counters]:
    if kind == "memory":
        yield MemoryCounters()
    else:
        redis = RedisCounters(REDIS_URL)
        yield redis
        await redis.close()


@pytest.fixture(params=["memory", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def with_counters(kind: str, body: Callable[[Limiter], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        async for counters in counters_of(kind):
            await body(Limiter(counters, prefix=f"test-{uuid.uuid4().hex[:8]}"))

    asyncio.run(main())


def test_a_slot_never_released_expires_on_its_own(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crashed gateway's slot frees itself after SLOT_TTL_S; the others' slots are untouched."""
    key = a_key(max_concurrent=2)
    clock = {"now": 1_000_000.0}
    monkeypatch.setattr(limits.time, "time", lambda: clock["now"])
    monkeypatch.setattr(limits.time, "monotonic", lambda: clock["now"])

    async def body(limiter: Limiter) -> None:
        await limiter.admit(key)  # its holder dies: never released
        clock["now"] += limits.SLOT_TTL_S / 2
        held = await limiter.admit(key)
        with pytest.raises(RateLimited, match="2 concurrent requests"):
            await limiter.admit(key)
        clock["now"] += limits.SLOT_TTL_S / 2 + 1  # the dead one's slot expired; the live one's did not
        await limiter.admit(key)
        with pytest.raises(RateLimited):
            await limiter.admit(key)
        await limiter.release(held, 0, 0.0)
        await limiter.release(held, 0, 0.0)  # a second release frees nothing more
        await limiter.admit(key)
        with pytest.raises(RateLimited):
            await limiter.admit(key)

    with_counters(kind, body)


def test_the_count_cannot_go_negative_when_a_window_expires_in_flight(kind: str) -> None:
    """Releasing after the counter's expiry used to drive it to -1, letting limit + 1 requests run."""
    key = a_key(max_concurrent=1)

    async def body(limiter: Limiter) -> None:
        first = await limiter.admit(key)
        await limiter.counters.release(limiter._name("slots", key), "a slot nobody holds")
        await limiter.release(first, 0, 0.0)
        await limiter.release(first, 0, 0.0)
        await limiter.admit(key)
        with pytest.raises(RateLimited):
            await limiter.admit(key)

    with_counters(kind, body)


def test_a_budget_holds_the_worst_case_while_requests_run(kind: str) -> None:
    key = a_key(budget_usd=1.0, budget_period="month")

    async def body(limiter: Limiter) -> None:
        first = await limiter.admit(key, worst_case_usd=0.6)
        with pytest.raises(RateLimited, match=r"could cost up to 0\.600000 USD") as refused:
            await limiter.admit(key, worst_case_usd=0.6)  # both together could overspend
        assert refused.value.code == "budget_exceeded"
        await limiter.release(first, 10, 0.05)  # what it really cost replaces its reservation
        second = await limiter.admit(key, worst_case_usd=0.6)
        await limiter.release(second, 10, 0.05)
        spent = await limiter.counters.get(limiter._name("usd", key, limits.windows(key).period))
        assert spent == pytest.approx(0.1)

    with_counters(kind, body)


def test_a_budget_refusal_frees_the_slot_it_took(kind: str) -> None:
    key = a_key(budget_usd=1.0, max_concurrent=1)

    async def body(limiter: Limiter) -> None:
        for _ in range(3):
            with pytest.raises(RateLimited, match="could cost"):
                await limiter.admit(key, worst_case_usd=5.0)
        await limiter.admit(key, worst_case_usd=0.1)

    with_counters(kind, body)


def test_unreachable_counters_are_a_503_not_a_500() -> None:
    async def main() -> None:
        counters = RedisCounters(f"redis://127.0.0.1:{free_port()}/0")
        try:
            with pytest.raises(LimitsUnavailable) as info:
                await Limiter(counters).admit(a_key(rpm=10, max_concurrent=4))
        finally:
            await counters.close()
        assert info.value.status == 503 and info.value.type == "service_unavailable"

    asyncio.run(main())
