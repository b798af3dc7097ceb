"""Timer-driven background work: repeated, and a lasting failure logged once, not on every try."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from gateway.periodic import repeat


def test_a_failing_step_is_retried_and_each_kind_of_error_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    async def step() -> None:
        calls.append(len(calls))
        if len(calls) <= 4:
            raise ConnectionError("refused" if len(calls) <= 3 else "reset")

    async def scenario() -> None:
        task = asyncio.create_task(repeat(0.001, step, "the probe"))
        while len(calls) < 6:
            await asyncio.sleep(0.001)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.ERROR, logger="cascade.gateway"):
        asyncio.run(scenario())
    failures = [r.getMessage() for r in caplog.records if "the probe failed" in r.getMessage()]
    assert len(failures) == 2  # "refused" three times, then "reset": two kinds
    assert len(calls) >= 6  # and it went on after them
