"""Shadows: the accepted answers of the audit sample also sent to the teacher, in the background, so that
calibration sees both answers on accepted traffic too. A request is in the sample when
:func:`router.audit.audit_draw` of its id is below the share (``log_store.shadow_share``, logged with every
record as ``audit_share``): decided by the id alone, so ``router.from_log`` takes the same sample from the log.
Their cost is real: counted in the metrics and in the request's log record (``cost_usd``), the same figure in
both.

A shadow of the sample is skipped (``cascade_shadows_skipped_total``) while ``max_in_flight`` are running, so a
slow teacher cannot pile up calls. Its request stays in the sample, its label missing: calibration counts it
as a disagreement, never drops it (skipped ones may be the hard ones).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cascade.terms import Reason, Tier
from gateway.exchange import Exchange, TierCall
from gateway.metrics import Metrics
from gateway.upstream import Upstream
from router.agreement import Agreement, answers_agree
from router.audit import audit_draw


class ShadowSampler:
    def __init__(
        self,
        teacher: Upstream,
        share: float,
        agreement: Agreement,
        metrics: Metrics,
        write: Callable[[Exchange], None],
        max_in_flight: int = 16,
    ) -> None:
        self.teacher = teacher
        self.share = share
        self.agreement = agreement
        self.metrics = metrics
        self.write = write
        self.max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def offer(self, exchange: Exchange) -> bool:
        """Shadow this finished request if it is an accepted answer in the audit sample; True when started
        (its record is then written at once, marked pending, and again when the teacher's answer is back)."""
        if self.share <= 0 or exchange.reason != Reason.CONFIDENT or exchange.outcome != "ok":
            return False
        if audit_draw(exchange.request_id) >= self.share:
            return False
        if len(self._tasks) >= self.max_in_flight:
            self.metrics.shadows_skipped.inc()
            return False
        exchange.shadow_pending = True
        self.write(exchange)  # kept even if the gateway dies before the teacher answers
        task = asyncio.get_running_loop().create_task(self._shadow(exchange))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _shadow(self, exchange: Exchange) -> None:
        """Ask the teacher the same question; complete the request's record with its answer, whatever it does."""
        call = TierCall(Tier.TEACHER, self.teacher.model, self.teacher.settings.price)
        body = self.teacher.body(exchange.request, stream=False)
        body.pop("stream_options", None)
        if self.teacher.settings.log_top_logprobs:
            body.update(logprobs=True, top_logprobs=self.teacher.settings.log_top_logprobs)
            if self.teacher.settings.token_ids:
                body["return_tokens_as_token_ids"] = True
        try:
            completion = await self.teacher.complete(body)
            call.take_completion(completion.body, completion.latency_s)
            student = exchange.student.message if exchange.student else {}
            agree = answers_agree(exchange.request, student, call.message, self.agreement)
            self.metrics.observe_shadow(call, agree)
        except Exception as exc:
            call.error = str(exc)
        exchange.shadow, exchange.shadow_pending = call, False
        self.write(exchange)  # completes the pending record (cancelled at shutdown: it stays pending)

    async def drain(self, timeout_s: float) -> None:
        """Give the shadows in flight ``timeout_s``, then cancel the rest (their records stay pending)."""
        await drain(self._tasks, timeout_s)


async def drain(tasks: set[asyncio.Task[None]], timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for ``tasks``, then cancel and await what is left."""
    if not tasks:
        return
    _, pending = await asyncio.wait(set(tasks), timeout=timeout_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
