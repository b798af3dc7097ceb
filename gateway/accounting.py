"""After the client has its answer: count the request in the metrics, release its limits, write its log record
(or hand it to the shadow sampler, which writes it). Runs off the client's clock (a background task of the
response, or the end of a stream).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from gateway.exchange import Exchange
from gateway.limits import Limiter
from gateway.metrics import Metrics
from gateway.records import to_log_record
from gateway.shadows import ShadowSampler, drain
from logstore import LogWriter

log = logging.getLogger("cascade.gateway")


class Accountant:
    def __init__(
        self,
        metrics: Metrics,
        writer: LogWriter | None,
        limiter: Limiter | None = None,
        drain_s: float = 10.0,
    ) -> None:
        self.metrics = metrics
        self.writer = writer
        self.limiter = limiter
        self.drain_s = drain_s
        self.shadows: ShadowSampler | None = None  # set by the app when log_store.shadow_share > 0
        self._releases: set[asyncio.Task[None]] = set()

    def finish(self, exchange: Exchange) -> None:
        self.metrics.observe(exchange)
        if exchange.admission is not None and self.limiter is not None:
            tokens = sum(call.prompt_tokens + call.completion_tokens for call in exchange.calls)
            self._spawn(self.limiter.release(exchange.admission, tokens, exchange.cost_usd))
        if self.writer is None:
            return
        exchange.audit_share = self.shadows.share if self.shadows is not None else 0.0
        if self.shadows is not None and self.shadows.offer(exchange):
            return
        self.write(exchange)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def write(self, exchange: Exchange) -> None:
        """Submit the request's log record; one that cannot be built is logged and counted, never raised."""
        if self.writer is None:
            return
        try:
            record = to_log_record(exchange)
        except Exception:  # a record that cannot be built must not take the gateway down; it is counted
            log.exception("could not build the log record of request %s", exchange.request_id)
            self.metrics.log_record_errors.inc()
            return
        if record is not None:
            self.writer.submit(record)

    async def close(self) -> None:
        """Give shadows and limit releases in flight ``drain_s``, cancel the rest (a cancelled shadow still
        writes its record), then drain the log queue."""
        await asyncio.gather(
            drain(self._releases, self.drain_s),
            self.shadows.drain(self.drain_s) if self.shadows is not None else asyncio.sleep(0),
        )
        if self.writer is not None:
            await self.writer.close()
