"""What the gateway tests read back: the log store's records and the gateway's metrics, polled, never slept on."""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from logstore import LogRecord, iter_records
from tests.conftest import Server


def records(url: str) -> list[LogRecord]:
    async def collect() -> list[LogRecord]:
        return [record async for record in iter_records(url)]

    return asyncio.run(collect())


def wait_for_records(url: str, count: int, timeout_s: float = 10.0) -> list[LogRecord]:
    """At least ``count`` records of the store at ``url``, polled until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    found: list[LogRecord] = []
    while time.monotonic() < deadline:
        try:
            found = records(url)
        except Exception:  # the table appears with the writer's first migration
            found = []
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{len(found)} of {count} records after {timeout_s} s")


def wait_for_record(url: str, request_id: str, timeout_s: float = 10.0) -> LogRecord:
    """The record of ``request_id`` in the store at ``url``, polled until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = [record for record in records(url) if record.request_id == request_id]
        except Exception:  # the table appears with the writer's first migration
            found = []
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no record {request_id} after {timeout_s} s")


def metric_sum(gateway: Server, name: str) -> float:
    """The sum of every sample named ``name`` on the gateway's /metrics (all label sets)."""
    text = httpx.get(gateway.root + "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)
