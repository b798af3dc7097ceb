"""After the client has its answer: count the request in the metrics and write its log record.

Runs off the client's clock (a background task of the response, or the end of a stream). A configurable
share of accepted answers is also sent to the teacher as a *shadow*, in the background, so calibration sees
both answers on accepted traffic too; its cost is real and is counted.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Coroutine
from typing import Any

from gateway.exchange import Exchange, TierCall
from gateway.limits import Limiter
from gateway.metrics import Metrics
from gateway.records import to_log_record
from gateway.upstream import Upstream
from logstore import LogWriter
from router.agreement import Agreement, exact_match

log = logging.getLogger("cascade.gateway")
MAX_SHADOWS_IN_FLIGHT = 16


class Accountant:
    def __init__(
        self,
        metrics: Metrics,
        writer: LogWriter | None,
        teacher: Upstream,
        shadow_share: float,
        limiter: Limiter | None = None,
        agreement: Agreement = exact_match,
        shadow_drain_s: float = 10.0,
    ) -> None:
        self.metrics = metrics
        self.shadow_drain_s = shadow_drain_s
        self.agreement = agreement
        self.limiter = limiter
        self.writer = writer
        self.teacher = teacher
        self.shadow_share = shadow_share
        self._tasks: set[asyncio.Task[None]] = set()
        self._random = random.Random()

    def finish(self, exchange: Exchange) -> None:
        self.metrics.observe(exchange)
        if exchange.admission is not None and self.limiter is not None:
            tokens = sum(call.prompt_tokens + call.completion_tokens for call in exchange.calls)
            self._spawn(self.limiter.release(exchange.admission, tokens, exchange.cost_usd))
        if self.writer is None:
            return
        if self._wants_shadow(exchange):
            self._write(exchange, shadow_pending=True)  # kept even if the gateway dies before the teacher answers
            self._spawn(self._shadow(exchange))
            return
        self._write(exchange)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _write(self, exchange: Exchange, shadow: TierCall | None = None, shadow_pending: bool = False) -> None:
        assert self.writer is not None
        try:
            record = to_log_record(exchange, shadow, shadow_pending)
        except Exception:  # a record that cannot be built must not take the gateway down; it is counted
            log.exception("could not build the log record of request %s", exchange.request_id)
            self.metrics.log_record_errors.inc()
            return
        if record is not None:
            self.writer.submit(record)

    def _wants_shadow(self, exchange: Exchange) -> bool:
        return (
            self.shadow_share > 0
            and exchange.reason == "confident"
            and exchange.outcome == "ok"
            and len(self._tasks) < MAX_SHADOWS_IN_FLIGHT
            and self._random.random() < self.shadow_share
        )

    async def _shadow(self, exchange: Exchange) -> None:
        """Ask the teacher the same question; complete the request's record with its answer, whatever it does."""
        call = TierCall("teacher", self.teacher.model, self.teacher.settings.price)
        body = self.teacher.body(exchange.request, stream=False)
        body.pop("stream_options", None)
        if self.teacher.settings.log_top_logprobs:
            body.update(logprobs=True, top_logprobs=self.teacher.settings.log_top_logprobs)
            if self.teacher.settings.token_ids:
                body["return_tokens_as_token_ids"] = True
        try:
            completion = await self.teacher.complete(body)
            call.take_completion(completion.body, completion.latency_s)
            student_text = exchange.student.text if exchange.student else None
            agree = self.agreement(student_text or "", call.text or "")
            self.metrics.observe_shadow(call, agree)
        except Exception as exc:
            call.error = str(exc)
        self._write(exchange, call)  # completes the pending record (cancelled at shutdown: it stays pending)

    async def close(self) -> None:
        """Give shadows and limit updates in flight ``shadow_drain_s``, cancel the rest (a cancelled shadow still
        writes its record), then drain the log queue."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.shadow_drain_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self.writer is not None:
            await self.writer.close()
