"""Pooled client for one OpenAI-compatible upstream (a vLLM server or any API).

One :class:`Upstream` per tier, created once at start-up. It uses aiohttp: httpx's own connection pool
falls to about a tenth of aiohttp's throughput at 64 concurrent requests on this kind of machine.

Resilience, per upstream: retries (tenacity) only where safe — the connection could not be opened, or the
upstream answered 429/503 (honouring ``retry-after``) — never once an answer has begun; a circuit breaker
that fails calls fast after ``breaker_failures`` consecutive failures until a probe succeeds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from cascade.config import UpstreamSettings
from cascade.terms import Tier
from gateway.breaker import CircuitBreaker
from gateway.errors import UpstreamBadResponse, UpstreamError, UpstreamTimeout, UpstreamUnavailable

_CONNECT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)
T = TypeVar("T")


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) chat completion from an upstream, already parsed."""

    body: dict[str, Any]
    latency_s: float


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class Upstream:
    def __init__(self, name: Tier, settings: UpstreamSettings) -> None:
        self.name = name  # the tier
        self.settings = settings
        self.model = settings.model
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
        self._chat_url = settings.url + "/chat/completions"
        self._models_url = settings.url + "/models"
        self._headers = {"content-type": "application/json"}
        if settings.api_key:
            self._headers["authorization"] = f"Bearer {settings.api_key}"
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout_s, sock_read=settings.read_timeout_s
        )
        self._complete_timeout = aiohttp.ClientTimeout(
            total=settings.total_timeout_s, sock_connect=settings.connect_timeout_s, sock_read=settings.read_timeout_s
        )
        backoff = wait_exponential_jitter(multiplier=0.05, max=settings.retry_max_wait_s, jitter=0.05)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            after = getattr(exc, "retry_after", None)
            return min(after, settings.retry_max_wait_s) if after is not None else backoff(state)

        self._retrying = AsyncRetrying(
            stop=stop_after_attempt(settings.retries + 1),
            wait=wait,
            retry=retry_if_exception(lambda exc: getattr(exc, "retryable", False)),
            reraise=True,
        )
        self._session: aiohttp.ClientSession | None = None

    def body(self, data: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """What this tier is sent for a client's request: its fields, this tier's model (unless ``fields`` names
        one), and this tier's ``max_tokens`` cap when the client asked for no limit (a cap bounds every call)."""
        body = {**data, "model": self.model, **fields}
        cap = self.settings.max_tokens
        if cap is not None and data.get("max_tokens") is None and data.get("max_completion_tokens") is None:
            body["max_tokens"] = cap
        return body

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.max_connections, ttl_dns_cache=300, keepalive_timeout=self.settings.keepalive_s
        )
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"upstream {self.name} used before start()")
        return self._session

    def _fail(self, exc: BaseException) -> UpstreamError:
        if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
            return UpstreamTimeout(f"the {self.name} model server timed out", upstream=self.name)
        # Safe to retry: nothing reached the model when the connection could not even be opened, and a pooled
        # connection the server closed as it was reused (its idle timeout) dropped the request unanswered.
        retryable = isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ServerDisconnectedError)
        return UpstreamUnavailable(
            f"the {self.name} model server is unreachable", upstream=self.name, retryable=retryable
        )

    async def _raise_for_status(self, response: aiohttp.ClientResponse) -> None:
        if response.status == 200:
            return
        raw = await response.read()
        message = f"the {self.name} model server answered HTTP {response.status}"
        try:
            upstream_error = orjson.loads(raw).get("error")
            if isinstance(upstream_error, dict) and upstream_error.get("message"):
                message = f"{message}: {upstream_error['message']}"
            elif isinstance(upstream_error, str):
                message = f"{message}: {upstream_error}"
        except (orjson.JSONDecodeError, AttributeError):
            pass
        retry_after = _retry_after(response)
        if response.status == 503:
            raise UpstreamUnavailable(message, upstream=self.name, retryable=True, retry_after=retry_after)
        raise UpstreamBadResponse(
            message,
            upstream=self.name,
            upstream_status=response.status,
            retryable=response.status == 429,
            retry_after=retry_after,
        )

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run one call (with its retries) through the circuit breaker."""
        if not self.breaker.allow():
            raise UpstreamUnavailable(
                f"the {self.name} model server is failing; its circuit breaker is open",
                upstream=self.name,
                code="circuit_open",
                retry_after=self.settings.breaker_reset_s,
            )
        settled = False
        try:
            result = await self._retrying.wraps(call)()
            settled = True
            self.breaker.success()
            return result
        except UpstreamError as exc:
            settled = True
            if exc.counts_against_breaker:  # down, 5xx, or refusing the gateway's key or quota (401/403/429)
                self.breaker.failure()
            else:
                self.breaker.success()  # the server answered: the request, or one model name, was at fault
            raise
        finally:
            if not settled:  # cancelled: neither a success nor a failure of the upstream
                self.breaker.probing = False

    async def complete(self, body: dict[str, Any]) -> Completion:
        """POST a non-streamed chat completion and return the parsed answer."""
        payload = orjson.dumps(body)

        async def once() -> Completion:
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                async with self.session.post(
                    self._chat_url, data=payload, headers=self._headers, timeout=self._complete_timeout
                ) as response:
                    await self._raise_for_status(response)
                    raw = await response.read()
            except UpstreamError:
                raise
            except (TimeoutError, *_CONNECT_ERRORS) as exc:
                raise self._fail(exc) from exc
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise UpstreamBadResponse(
                    f"the {self.name} model server sent a body that is not JSON",
                    upstream=self.name,
                    upstream_status=502,
                ) from None
            if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
                raise UpstreamBadResponse(
                    f"the {self.name} model server sent no choices", upstream=self.name, upstream_status=502
                )
            return Completion(parsed, loop.time() - started)

        return await self._guarded(once)

    async def open_stream(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """Start a streamed chat completion; errors before the first byte raise here, as for complete()."""
        payload = orjson.dumps(body)

        async def once() -> aiohttp.ClientResponse:
            try:
                response = await self.session.post(self._chat_url, data=payload, headers=self._headers)
            except (TimeoutError, *_CONNECT_ERRORS) as exc:
                raise self._fail(exc) from exc
            try:
                await self._raise_for_status(response)
            except BaseException:
                response.release()
                raise
            return response

        return await self._guarded(once)

    async def iter_stream(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """Yield the raw SSE bytes of an opened stream; a failure midway raises an UpstreamError."""
        try:
            async for chunk in response.content.iter_any():
                yield chunk
        except (TimeoutError, *_CONNECT_ERRORS) as exc:
            self.breaker.failure()
            raise self._fail(exc) from exc
        finally:
            response.close()

    async def served_models(self) -> list[str] | None:
        """The model names the upstream lists on GET /models, or None when it cannot be asked."""
        try:
            async with self.session.get(
                self._models_url, headers=self._headers, timeout=aiohttp.ClientTimeout(total=2)
            ) as response:
                if response.status != 200:
                    return None
                data = orjson.loads(await response.read()).get("data", [])
                return [str(item.get("id")) for item in data]
        except (TimeoutError, *_CONNECT_ERRORS, orjson.JSONDecodeError, AttributeError):
            return None

    async def load_lora_adapter(self, name: str, path: str) -> None:
        """Ask a vLLM server (started with runtime LoRA loading) to serve the adapter at ``path`` as ``name``.

        An adapter it already serves under that name counts as loaded; any other refusal raises.
        """
        url = self.settings.url + "/load_lora_adapter"
        body = orjson.dumps({"lora_name": name, "lora_path": path})
        try:
            async with self.session.post(
                url, data=body, headers=self._headers, timeout=aiohttp.ClientTimeout(total=120)
            ) as response:
                if response.status == 200:
                    return
                text = (await response.read()).decode(errors="replace")
        except (TimeoutError, *_CONNECT_ERRORS) as exc:
            raise self._fail(exc) from exc
        if "already been loaded" in text:
            return
        raise UpstreamBadResponse(
            f"the {self.name} model server refused to load adapter {name!r}: HTTP {response.status}: {text[:300]}",
            upstream=self.name,
            upstream_status=response.status,
        )

    async def serves(self, model: str) -> bool:
        return model in (await self.served_models() or [])
