"""HTTP routes: each turns a request into a call and the result into a response, nothing more."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response, StreamingResponse

from gateway import streaming
from gateway.cascade import Answer, Cascade
from gateway.disconnect import cancel_on_disconnect
from gateway.errors import BodyTooLarge, GatewayError
from gateway.metrics import Metrics
from gateway.protocol import ChatCompletionRequest, parse_chat_request

api = APIRouter()


def get_cascade(request: Request) -> Cascade:
    cascade: Cascade = request.app.state.cascade
    return cascade


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


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


def _headers(answer: Answer, request_id: str) -> dict[str, str]:
    confidence = "none" if answer.confidence is None else f"{answer.confidence:.6f}"
    return {"x-cascade-tier": answer.tier, "x-cascade-confidence": confidence, "x-request-id": request_id}


async def _timed(
    chunks: AsyncIterator[bytes], answer: Answer, metrics: Metrics, started: float
) -> AsyncIterator[bytes]:
    outcome = "error"
    try:
        async for chunk in chunks:
            yield chunk
        outcome = "ok"
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        metrics.observe(answer.tier, outcome, answer.reason, time.perf_counter() - started)


@api.post(
    "/v1/chat/completions",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ChatCompletionRequest.model_json_schema()}},
        }
    },
)
async def chat_completions(request: Request, cascade: CascadeDep, metrics: MetricsDep) -> Response:
    started = time.perf_counter()
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    request.state.request_id = request_id
    try:
        raw = await read_body(request, request.app.state.max_body_bytes)
        chat, data = parse_chat_request(raw)
        answer = await cancel_on_disconnect(request, cascade.answer(chat, data))
    except GatewayError:
        metrics.requests.labels("none", "error").inc()
        raise
    headers = _headers(answer, request_id)
    if answer.stream is not None:
        return StreamingResponse(
            _timed(answer.stream, answer, metrics, started), media_type="text/event-stream", headers=headers
        )
    assert answer.body is not None
    metrics.observe(answer.tier, "ok", answer.reason, time.perf_counter() - started)
    if answer.replay_as_stream:
        payload = streaming.replay(answer.body, answer.include_usage)
        return Response(payload, media_type="text/event-stream", headers=headers)
    return Response(orjson.dumps(answer.body), media_type="application/json", headers=headers)


@api.get("/v1/models")
async def list_models(cascade: CascadeDep) -> Response:
    created = int(time.time())
    data: list[dict[str, Any]] = [
        {"id": name, "object": "model", "created": created, "owned_by": "cascade"} for name in cascade.model_names
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


@api.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@api.get("/readyz")
async def readyz(cascade: CascadeDep) -> Response:
    student, teacher = await asyncio.gather(cascade.student.ready(), cascade.teacher.ready())
    ready = student and teacher
    body = {
        "status": "ready" if ready else "not ready",
        "upstreams": {"student": student, "teacher": teacher},
    }
    return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json")


@api.get("/metrics")
async def metrics_endpoint(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
