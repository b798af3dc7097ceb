"""From a finished :class:`~gateway.exchange.Exchange` to the escalation log's :class:`~logstore.LogRecord`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cascade.terms import Reason
from gateway.exchange import Exchange, TierCall
from logstore import LogRecord, TierAnswer


def _answer(call: TierCall | None) -> TierAnswer | None:
    if call is None:
        return None
    return TierAnswer(
        model=call.model,
        text=call.text,
        tool_calls=call.tool_calls,
        invalid=call.invalid,
        logprobs=call.tokens if call.logprobs else None,
        prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens,
        latency_s=call.latency_s,
        finish_reason=call.finish_reason,
    )


def to_log_record(exchange: Exchange) -> LogRecord | None:
    """The record of a request whose body was read (and whose key, if any, was accepted): routed, pinned, or
    refused or cancelled before routing (reason ``not_routed``); None before that. A shadowed request's record
    is written while its shadow runs (``shadow`` true, no teacher answer) and again once it is back."""
    reason = exchange.reason or (Reason.NOT_ROUTED if exchange.requested_model else None)
    if reason is None:
        return None
    request: dict[str, Any] = exchange.request
    signals = dict(exchange.signals)
    if exchange.student is not None and exchange.student.logprobs:
        # Every post-generation signal, for calibration and new scorers (computed here, off the hot path).
        signals |= exchange.student.features
    answered = exchange.outcome == "ok" or exchange.degraded is not None
    tier = exchange.tier if answered else None
    return LogRecord(
        request_id=exchange.request_id,
        time=datetime.fromtimestamp(exchange.created, UTC),
        decision=reason.decision,
        reason=reason,
        tier=tier,
        messages=request.get("messages"),
        params={key: value for key, value in request.items() if key != "messages"},
        caller_key_id=exchange.caller_key_id,
        client_request_id=exchange.client_request_id,
        signals=signals,
        student=_answer(exchange.student),
        teacher=_answer(exchange.shadow or exchange.teacher),
        cost_usd=exchange.cost_usd,
        status=exchange.outcome,
        http_status=exchange.status,
        error=exchange.error,
        degraded=exchange.degraded,
        duration_s=exchange.duration_s,
        shadow=exchange.shadow is not None or exchange.shadow_pending,
        audit_share=exchange.audit_share,
        stream=bool(request.get("stream")),
    )
