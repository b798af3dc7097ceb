"""What the gateway tests share: a chat request and its POST, the OpenAI client on the gateway, and what they read
back (the log store's records, the gateway's metrics, what a fake upstream received), polled, never slept on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from logstore import LogRecord, iter_records
from tests.conftest import Server

T = TypeVar("T")


def chat(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    """A chat request body: one user message (which scripts the fake tiers), and any other fields."""
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def post(gateway: Server, **kwargs: Any) -> httpx.Response:
    """POST /v1/chat/completions on the gateway (``json=`` a body, or ``content=`` raw bytes, ``headers=``...)."""
    return httpx.post(gateway.url + "/chat/completions", timeout=30, **kwargs)


def openai_client(gateway: Server, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url, api_key=api_key, max_retries=0)


def received(server: Server) -> int:
    """How many requests a fake upstream has received."""
    return len(httpx.get(server.root + "/_stats").json()["received"])


def wait_until_received(server: Server, count: int, timeout_s: float = 10.0) -> None:
    eventually(lambda: received(server) >= count, timeout_s, f"{count} requests received by {server.root}")


def records(url: str) -> list[LogRecord]:
    async def collect() -> list[LogRecord]:
        return [record async for record in iter_records(url)]

    return asyncio.run(collect())


def eventually(
    check: Callable[[], T | None], timeout_s: float = 10.0, what: str = "the condition", every_s: float = 0.1
) -> T:
    """The first value of ``check()`` that is not None (or False), polled every ``every_s`` until ``timeout_s``;
    an AssertionError naming ``what`` after that. Exceptions count as "not yet" (a table not migrated yet)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except Exception:
            value = None
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not after {timeout_s} s")
        time.sleep(every_s)


def wait_for_records(url: str, count: int, timeout_s: float = 10.0) -> list[LogRecord]:
    """At least ``count`` records of the store at ``url``, polled until ``timeout_s``."""

    def enough() -> list[LogRecord] | None:
        found = records(url)
        return found if len(found) >= count else None

    return eventually(enough, timeout_s, f"{count} records in the log store")


def wait_for_record(url: str, request_id: str, timeout_s: float = 10.0) -> LogRecord:
    """The record of ``request_id`` in the store at ``url``, polled until ``timeout_s``."""

    def found() -> LogRecord | None:
        return next((record for record in records(url) if record.request_id == request_id), None)

    return eventually(found, timeout_s, f"the record of {request_id}")


def metric_sum(gateway: Server, name: str) -> float:
    """The sum of every sample named ``name`` on the gateway's /metrics (all label sets)."""
    text = httpx.get(gateway.root + "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)
