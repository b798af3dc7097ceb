"""Pooled client for one OpenAI-compatible upstream (a vLLM server or any API).

One :class:`Upstream` per tier, created once at start-up. It uses aiohttp: httpx's own connection pool
falls to about a tenth of aiohttp's throughput at 64 concurrent requests on this kind of machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from cascade.config import UpstreamSettings
from gateway.errors import UpstreamBadResponse, UpstreamError, UpstreamTimeout, UpstreamUnavailable

_CONNECT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) chat completion from an upstream, already parsed."""

    body: dict[str, Any]
    latency_s: float


class Upstream:
    def __init__(self, name: str, settings: UpstreamSettings) -> None:
        self.name = name  # the tier: "student" or "teacher"
        self.settings = settings
        self.model = settings.model
        self._chat_url = settings.url + "/chat/completions"
        self._models_url = settings.url + "/models"
        self._headers = {"content-type": "application/json"}
        if settings.api_key:
            self._headers["authorization"] = f"Bearer {settings.api_key}"
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout_s, sock_read=settings.read_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.settings.max_connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, json_serialize=lambda o: orjson.dumps(o).decode()
        )

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
        return UpstreamUnavailable(f"the {self.name} model server is unreachable", upstream=self.name)

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
        if response.status == 503:
            raise UpstreamUnavailable(message, upstream=self.name)
        raise UpstreamBadResponse(message, upstream=self.name, upstream_status=response.status)

    async def complete(self, body: dict[str, Any]) -> Completion:
        """POST a non-streamed chat completion and return the parsed answer."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with self.session.post(self._chat_url, data=orjson.dumps(body), headers=self._headers) as response:
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

    async def open_stream(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """Start a streamed chat completion; errors before the first byte raise here, as for complete()."""
        try:
            response = await self.session.post(self._chat_url, data=orjson.dumps(body), headers=self._headers)
        except (TimeoutError, *_CONNECT_ERRORS) as exc:
            raise self._fail(exc) from exc
        try:
            await self._raise_for_status(response)
        except BaseException:
            response.release()
            raise
        return response

    async def iter_stream(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """Yield the raw SSE bytes of an opened stream; a failure midway raises an UpstreamError."""
        try:
            async for chunk in response.content.iter_any():
                yield chunk
        except (TimeoutError, *_CONNECT_ERRORS) as exc:
            raise self._fail(exc) from exc
        finally:
            response.close()

    async def ready(self) -> bool:
        """True when the upstream answers GET /models and serves the configured model."""
        try:
            async with self.session.get(
                self._models_url, headers=self._headers, timeout=aiohttp.ClientTimeout(total=2)
            ) as response:
                if response.status != 200:
                    return False
                data = orjson.loads(await response.read()).get("data", [])
                return any(item.get("id") == self.model for item in data)
        except (TimeoutError, *_CONNECT_ERRORS, orjson.JSONDecodeError, AttributeError):
            return False
