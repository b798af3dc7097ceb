"""HTTP routes: each turns a request into a call and the result into a response, nothing more."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from cascade.config import ServerSettings
from gateway import streaming
from gateway.auth import Authenticator, check_model_allowed
from gateway.cascade import Cascade
from gateway.disconnect import cancel_on_disconnect
from gateway.errors import BodyTooLarge, error_payload
from gateway.exchange import Exchange
from gateway.health import Health
from gateway.metrics import Metrics
from gateway.protocol import check_content_type, client_request_id, parse_chat_request

api = APIRouter()


def get_cascade(request: Request) -> Cascade:
    cascade: Cascade = request.app.state.cascade
    return cascade


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


Finish = Callable[[Exchange], None]


def get_finish(request: Request) -> Finish:
    finish: Finish = request.app.state.finish_exchange
    return finish


CascadeDep = Annotated[Cascade, Depends(get_cascade)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(f"request body is larger than the limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge(f"request body is larger than the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _headers(exchange: Exchange) -> dict[str, str]:
    confidence = "none" if exchange.confidence is None else f"{exchange.confidence:.6f}"
    headers = {
        "x-cascade-tier": exchange.tier or "none",
        "x-cascade-confidence": confidence,
        "x-request-id": exchange.request_id,
    }
    if exchange.client_request_id:
        headers["x-client-request-id"] = exchange.client_request_id
    if exchange.degraded:
        headers["x-cascade-degraded"] = exchange.degraded
    answered = exchange.answered_by
    if answered is not None and answered.verdict is not None and answered.verdict.reason is not None:
        headers["x-cascade-invalid"] = answered.verdict.reason  # neither tier gave what the request asked for
    return headers


async def _streamed(chunks: AsyncGenerator[bytes, None], exchange: Exchange, finish: Finish) -> AsyncIterator[bytes]:
    """Send a relayed stream and close the exchange once its last byte is out (or the client left)."""
    outcome = "error"
    try:
        async for chunk in chunks:
            if exchange.ttft_s is None:
                exchange.ttft_s = time.perf_counter() - exchange.started
            yield chunk
        outcome = "ok" if all(call.error is None for call in exchange.calls if call.tier == exchange.tier) else "error"
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        await chunks.aclose()  # the relay counts what it sent (the usage, when the upstream never sent it)
        exchange.close(outcome, 200)
        finish(exchange)


class _ThenFinish(Response):
    """A whole answer whose metrics, log record and limit release follow its sending (off the client's clock),
    and happen even when sending fails or is cancelled (Starlette skips a background task then)."""

    def __init__(self, content: bytes, exchange: Exchange, finish: Finish, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._exchange, self._finish = exchange, finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._finish(self._exchange)


async def chat_completions(request: Request) -> Response:
    """POST /v1/chat/completions: the hot path, a plain Starlette endpoint (FastAPI's dependency solving cost
    about a fifth of the gateway's CPU per request); its OpenAPI entry is added in gateway/app.py."""
    cascade, finish = get_cascade(request), get_finish(request)
    request_id = uuid.uuid4().hex  # the log's key: never the client's header, which anyone can repeat
    request.state.request_id = request_id
    exchange = Exchange(request_id, "", {}, client_request_id=client_request_id(request.headers))
    try:
        auth: Authenticator | None = request.app.state.authenticator
        key = await auth.authenticate(request) if auth is not None else None
        limits: ServerSettings = request.app.state.settings.server
        check_content_type(request.headers.get("content-type"))
        raw = await read_body(request, limits.max_body_bytes)
        chat, data = parse_chat_request(raw, limits.max_messages, limits.max_choices)
        exchange.requested_model, exchange.request = chat.model, data
        if key is not None:
            exchange.caller_key_id = key.id
            check_model_allowed(key, chat.model)
            worst_case_usd = cascade.worst_case_usd(chat, len(raw)) if key.budget_usd is not None else 0.0
            exchange.admission = await request.app.state.limiter.admit(key, worst_case_usd)
        answer = await cancel_on_disconnect(request, cascade.answer(exchange, chat, data))
    except (ClientDisconnect, asyncio.CancelledError):  # the client left, or shutdown's grace ran out
        exchange.close("cancelled", 499)
        finish(exchange)
        raise
    except Exception as exc:
        status, _ = error_payload(exc)
        exchange.close("error", status, str(exc))
        finish(exchange)
        raise
    headers = _headers(exchange)
    if answer.stream is not None:
        return StreamingResponse(
            _streamed(answer.stream, exchange, finish), media_type="text/event-stream", headers=headers
        )
    assert answer.body is not None
    exchange.close("ok", 200)
    if answer.replay_as_stream:
        exchange.ttft_s = exchange.duration_s
        payload = streaming.replay(answer.body, answer.include_usage)
        return _ThenFinish(payload, exchange, finish, media_type="text/event-stream", headers=headers)
    return _ThenFinish(orjson.dumps(answer.body), exchange, finish, media_type="application/json", headers=headers)


api.add_route("/v1/chat/completions", chat_completions, methods=["POST"], include_in_schema=False)


@api.get("/v1/models")
async def list_models(request: Request, cascade: CascadeDep) -> Response:
    auth: Authenticator | None = request.app.state.authenticator
    key = await auth.authenticate(request) if auth is not None else None
    created = int(time.time())
    data: list[dict[str, Any]] = [
        {"id": name, "object": "model", "created": created, "owned_by": "cascade"}
        for name in cascade.model_names
        if key is None or key.allows(name)
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


@api.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@api.get("/readyz")
async def readyz(request: Request) -> Response:
    """200 while the alias can still be answered under the configured policy (either tier); each tier's state."""
    health: Health = request.app.state.health
    states = await health.check()
    ready = health.can_answer(states)
    body = {"status": "ready" if ready else "not ready", "upstreams": states}
    return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json")


@api.get("/metrics")
async def metrics_endpoint(request: Request, metrics: MetricsDep) -> Response:
    writer = request.app.state.log_writer
    if writer is not None:
        metrics.observe_log(writer.queue_depth, writer.queued_bytes, writer.spool_bytes, writer.dropped)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
