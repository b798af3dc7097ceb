"""Per-key limits: requests and tokens per minute, a USD budget per day or month, concurrent requests.

Counters live in Redis when ``auth.redis_url`` is set (shared by every gateway replica and worker), in this
process's memory otherwise. Windows are fixed (the current minute, day or month, UTC). Over a limit: 429
with ``retry-after`` until the window ends, in the OpenAI error shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from gateway.errors import GatewayError
from logstore.keys import ApiKey


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Counters(Protocol):
    async def add(self, name: str, amount: float, ttl_s: int) -> float: ...
    async def get(self, name: str) -> float: ...


class MemoryCounters:
    """Counters of one process (a single-replica gateway, or the local demo)."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, float]] = {}  # name -> (value, expires at)

    async def add(self, name: str, amount: float, ttl_s: int) -> float:
        now = time.monotonic()
        value, expires = self._values.get(name, (0.0, now + ttl_s))
        if expires <= now:
            value, expires = 0.0, now + ttl_s
        self._values[name] = (value + amount, expires)
        if len(self._values) > 100_000:
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
        return value + amount

    async def get(self, name: str) -> float:
        value, expires = self._values.get(name, (0.0, 0.0))
        return value if expires > time.monotonic() else 0.0


class RedisCounters:
    """Counters shared by every replica, in Redis (INCRBYFLOAT with an expiry per window)."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url)

    async def add(self, name: str, amount: float, ttl_s: int) -> float:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incrbyfloat(name, amount)
            pipe.expire(name, ttl_s, nx=True)
            value, _ = await pipe.execute()
        return float(value)

    async def get(self, name: str) -> float:
        value = await self._redis.get(name)
        return float(value) if value is not None else 0.0

    async def close(self) -> None:
        await self._redis.aclose()


@dataclass(frozen=True, slots=True)
class Windows:
    minute: str
    minute_left_s: float
    period: str
    period_left_s: float


def windows(key: ApiKey, now: float | None = None) -> Windows:
    now = time.time() if now is None else now
    moment = datetime.fromtimestamp(now, UTC)
    if key.budget_period == "month":
        period_end = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
        period = moment.strftime("%Y%m")
    else:
        period_end = datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=1)
        period = moment.strftime("%Y%m%d")
    return Windows(str(int(now // 60)), 60 - now % 60, period, period_end.timestamp() - now)


class Limiter:
    def __init__(self, counters: Counters, prefix: str = "cascade") -> None:
        self.counters = counters
        self.prefix = prefix

    def _name(self, kind: str, key: ApiKey, window: str = "") -> str:
        return f"{self.prefix}:{kind}:{key.id}:{window}"

    async def admit(self, key: ApiKey) -> None:
        """Let a request of ``key`` in, or raise :class:`RateLimited`; pair with :meth:`release`."""
        w = windows(key)
        if key.budget_usd is not None:
            spent = await self.counters.get(self._name("usd", key, w.period))
            if spent >= key.budget_usd:
                raise RateLimited(
                    f"this key's budget of {key.budget_usd} USD per {key.budget_period} is spent",
                    retry_after=w.period_left_s,
                    code="budget_exceeded",
                )
        if key.tpm is not None:
            tokens = await self.counters.get(self._name("tpm", key, w.minute))
            if tokens >= key.tpm:
                raise RateLimited(
                    f"this key's limit of {key.tpm} tokens per minute is reached", retry_after=w.minute_left_s
                )
        if key.rpm is not None:
            count = await self.counters.add(self._name("rpm", key, w.minute), 1, 120)
            if count > key.rpm:
                raise RateLimited(
                    f"this key's limit of {key.rpm} requests per minute is reached", retry_after=w.minute_left_s
                )
        if key.max_concurrent is not None:
            running = await self.counters.add(self._name("conc", key), 1, 3600)
            if running > key.max_concurrent:
                await self.counters.add(self._name("conc", key), -1, 3600)
                raise RateLimited(
                    f"this key's limit of {key.max_concurrent} concurrent requests is reached", retry_after=1
                )

    async def release(self, key: ApiKey, tokens: int, cost_usd: float) -> None:
        """A request of ``key`` ended: count its tokens and cost, free its concurrency slot."""
        w = windows(key)
        if key.max_concurrent is not None:
            await self.counters.add(self._name("conc", key), -1, 3600)
        if key.tpm is not None and tokens:
            await self.counters.add(self._name("tpm", key, w.minute), tokens, 120)
        if key.budget_usd is not None and cost_usd:
            await self.counters.add(self._name("usd", key, w.period), cost_usd, int(w.period_left_s) + 3600)
