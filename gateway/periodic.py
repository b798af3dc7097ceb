"""Background work repeated on a timer (the tiers' health check, the page's snapshots)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("cascade.gateway")


async def repeat(every_s: float, step: Callable[[], Awaitable[object]], what: str) -> None:
    """Run ``step`` now and then every ``every_s`` until cancelled; a failure is logged (once per kind of
    error, so a lasting fault does not flood the log) and the step is tried again next time."""
    seen: set[str] = set()
    while True:
        try:
            await step()
        except Exception as exc:
            kind = f"{type(exc).__name__}: {exc}"[:200]
            if kind not in seen:
                seen.add(kind)
                log.exception("%s failed (tried again every %s s)", what, every_s)
        await asyncio.sleep(every_s)
