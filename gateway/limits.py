"""Per-key limits: requests and tokens per minute, a USD budget per day or month, concurrent requests.

Counters live in Redis when ``auth.redis_url`` is set (shared by every gateway replica and worker), in this
process's memory otherwise. Windows are fixed (the current minute, day or month, UTC). Over a limit: 429
with ``retry-after`` until the window ends, in the OpenAI error shape; limits that cannot be checked (Redis
away): 503. A concurrent request holds a slot of its own (a member of a sorted set scored by its expiry), so a
slot a crashed gateway never released expires alone and the count can never go below zero.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from redis.exceptions import RedisError

from gateway.errors import GatewayError
from logstore.keys import ApiKey

SLOT_TTL_S = 3600  # the longest a request holds a concurrency slot if its gateway dies before releasing it


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class LimitsUnavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "limits_unavailable"


class Counters(Protocol):
    async def add(self, name: str, amount: float, ttl_s: int) -> float: ...
    async def get(self, name: str) -> float: ...
    async def acquire(self, name: str, member: str, limit: int, ttl_s: int) -> bool: ...
    async def release(self, name: str, member: str) -> None: ...


class MemoryCounters:
    """Counters of one process (a single-replica gateway, or the local demo)."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, float]] = {}  # name -> (value, expires at)
        self._slots: dict[str, dict[str, float]] = {}  # name -> {member: expires at}

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

    async def acquire(self, name: str, member: str, limit: int, ttl_s: int) -> bool:
        now = time.monotonic()
        slots = {held: until for held, until in self._slots.get(name, {}).items() if until > now}
        if len(slots) >= limit:
            self._slots[name] = slots
            return False
        slots[member] = now + ttl_s
        self._slots[name] = slots
        return True

    async def release(self, name: str, member: str) -> None:
        self._slots.get(name, {}).pop(member, None)


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

    async def acquire(self, name: str, member: str, limit: int, ttl_s: int) -> bool:
        now = time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(name, "-inf", now)  # slots whose holder never released them
            pipe.zadd(name, {member: now + ttl_s})
            pipe.zcard(name)
            pipe.expire(name, ttl_s)
            _, _, held, _ = await pipe.execute()
        if held > limit:
            await self._redis.zrem(name, member)
            return False
        return True

    async def release(self, name: str, member: str) -> None:
        await self._redis.zrem(name, member)

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


@dataclass(frozen=True, slots=True)
class Admission:
    """What an admitted request holds until it ends: its concurrency slot and its budget reservation."""

    key: ApiKey
    slot: str | None = None
    reserved_usd: float = 0.0


class Limiter:
    def __init__(self, counters: Counters, prefix: str = "cascade") -> None:
        self.counters = counters
        self.prefix = prefix

    def _name(self, kind: str, key: ApiKey, window: str = "") -> str:
        return f"{self.prefix}:{kind}:{key.id}:{window}"

    async def admit(self, key: ApiKey, worst_case_usd: float = 0.0) -> Admission:
        """Let a request of ``key`` in, or raise :class:`RateLimited`; pair with :meth:`release`.

        With a budget, the request's worst-case cost is reserved against it (so concurrent requests cannot
        overspend it together) and :meth:`release` replaces the reservation by what the request really cost.
        """
        try:
            return await self._admit(key, worst_case_usd)
        except RedisError:
            raise LimitsUnavailable(
                "this key's limits cannot be checked right now: the limit counters are unreachable"
            ) from None

    async def _admit(self, key: ApiKey, worst_case_usd: float) -> Admission:
        w = windows(key)
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
        slot = None
        if key.max_concurrent is not None:
            slot = uuid.uuid4().hex
            if not await self.counters.acquire(self._name("slots", key), slot, key.max_concurrent, SLOT_TTL_S):
                raise RateLimited(
                    f"this key's limit of {key.max_concurrent} concurrent requests is reached", retry_after=1
                )
        try:
            await self._reserve(key, w, worst_case_usd)
        except BaseException:
            if slot is not None:
                await self.counters.release(self._name("slots", key), slot)
            raise
        return Admission(key, slot, worst_case_usd if key.budget_usd is not None else 0.0)

    async def _reserve(self, key: ApiKey, w: Windows, worst_case_usd: float) -> None:
        if key.budget_usd is None:
            return
        spent_name = self._name("usd", key, w.period)
        spent = await self.counters.get(spent_name)
        if spent >= key.budget_usd:
            raise RateLimited(
                f"this key's budget of {key.budget_usd} USD per {key.budget_period} is spent",
                retry_after=w.period_left_s,
                code="budget_exceeded",
            )
        if worst_case_usd:
            reserved = await self.counters.add(spent_name, worst_case_usd, int(w.period_left_s) + 3600)
            if reserved > key.budget_usd:
                await self.counters.add(spent_name, -worst_case_usd, int(w.period_left_s) + 3600)
                raise RateLimited(
                    f"this request could cost up to {worst_case_usd:.6f} USD, more than is left of this "
                    f"key's budget of {key.budget_usd} USD per {key.budget_period}; ask fewer max_tokens",
                    retry_after=w.period_left_s,
                    code="budget_exceeded",
                )

    async def release(self, admission: Admission, tokens: int, cost_usd: float) -> None:
        """A request ended: free its slot, count its tokens and its cost in place of its reservation."""
        key, w = admission.key, windows(admission.key)
        if admission.slot is not None:
            await self.counters.release(self._name("slots", key), admission.slot)
        if key.tpm is not None and tokens:
            await self.counters.add(self._name("tpm", key, w.minute), tokens, 120)
        if key.budget_usd is not None and cost_usd != admission.reserved_usd:
            await self.counters.add(
                self._name("usd", key, w.period), cost_usd - admission.reserved_usd, int(w.period_left_s) + 3600
            )
