"""The cascade decision in process: a :class:`~gateway.cascade.Cascade` over real upstream clients and the fake
student and teacher on loopback (aiohttp's test server), without the HTTP layer in front. Each case checks what
the client gets and what the exchange records: the tier, the reason, the calls made, the degraded flag."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestServer

from cascade.config import RouterSettings, UpstreamSettings
from cascade.terms import Reason, Tier
from gateway.cascade import Answer, Cascade
from gateway.errors import BadRequest, ModelNotFound, UpstreamError
from gateway.exchange import Exchange
from gateway.protocol import parse_chat_request
from gateway.routing import Routing
from gateway.upstream import Upstream
from tests.fake_upstream import make_app
from tests.structured import WEATHER

Run = Callable[..., Awaitable[tuple[Answer, Exchange]]]


@asynccontextmanager
async def cascade(on_teacher_down: str = "degrade", **settings: Any) -> AsyncIterator[Run]:
    """A Cascade over the fake pair; yields ``run(content, **fields)`` -> (answer, exchange)."""
    servers = [TestServer(make_app(f"{role}-model", role), host="127.0.0.1") for role in ("student", "teacher")]
    for server in servers:
        await server.start_server()
    student, teacher = (
        Upstream(tier, UpstreamSettings(url=str(server.make_url("/v1")), model=f"{tier}-model", retries=0, **settings))
        for tier, server in zip((Tier.STUDENT, Tier.TEACHER), servers, strict=True)
    )
    await student.start()
    await teacher.start()
    routing = Routing(RouterSettings(threshold=0.5))
    under_test = Cascade("cascade", student, teacher, routing, top_k=5, on_teacher_down=on_teacher_down)

    async def run(content: str, model: str = "cascade", **fields: Any) -> tuple[Answer, Exchange]:
        body = {"model": model, "messages": [{"role": "user", "content": content}], **fields}
        request, data = parse_chat_request(orjson.dumps(body), 64, 8)
        exchange = Exchange("req", model, data)
        return await under_test.answer(exchange, request, data), exchange

    try:
        yield run
    finally:
        await student.close()
        await teacher.close()
        for server in servers:
            await server.close()


def outcome(exchange: Exchange) -> tuple[Tier | None, Reason | None, list[Tier]]:
    return exchange.tier, exchange.reason, [call.tier for call in exchange.calls]


def test_a_confident_student_answers_and_its_logprobs_stay_with_the_gateway() -> None:
    async def go() -> None:
        async with cascade() as run:
            answer, exchange = await run("hello")
            assert outcome(exchange) == (Tier.STUDENT, Reason.CONFIDENT, [Tier.STUDENT])
            assert exchange.confidence is not None and exchange.confidence > 0.9
            assert answer.body is not None and answer.body["model"] == "student-model"
            assert answer.body["choices"][0]["message"]["content"] == "Answer from student."
            assert answer.body["choices"][0].get("logprobs") is None  # asked by the gateway, not by the client
            asked, exchange = await run("hello", logprobs=True, top_logprobs=2)
            assert asked.body is not None
            assert [len(t["top_logprobs"]) for t in asked.body["choices"][0]["logprobs"]["content"]] == [2] * 4

    asyncio.run(go())


def test_an_unsure_student_escalates_and_the_teacher_answers() -> None:
    async def go() -> None:
        async with cascade() as run:
            answer, exchange = await run("student=unsure")
            assert outcome(exchange) == (Tier.TEACHER, Reason.NOT_CONFIDENT, [Tier.STUDENT, Tier.TEACHER])
            assert exchange.confidence is not None and exchange.confidence < 0.5
            assert answer.body is not None and answer.body["model"] == "teacher-model"
            assert exchange.cost_usd == pytest.approx(sum(call.cost_usd for call in exchange.calls))

    asyncio.run(go())


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("student=fail", Reason.STUDENT_DOWN),
        ("student=unauthorized", Reason.STUDENT_DOWN),
        ("student=reject", Reason.STUDENT_CONTEXT),
        ("student=refuse", Reason.STUDENT_REFUSED),
    ],
)
def test_a_student_that_cannot_answer_hands_the_request_to_the_teacher(script: str, reason: Reason) -> None:
    async def go() -> None:
        async with cascade() as run:
            answer, exchange = await run(script)
            assert outcome(exchange) == (Tier.TEACHER, reason, [Tier.STUDENT, Tier.TEACHER])
            assert exchange.student is not None and exchange.student.error
            assert answer.body is not None and answer.body["model"] == "teacher-model"

    asyncio.run(go())


def test_a_failing_teacher_leaves_the_students_answer_marked_degraded_or_fails_when_so_configured() -> None:
    async def go() -> None:
        async with cascade() as run:
            answer, exchange = await run("student=unsure teacher=fail")
            assert outcome(exchange) == (Tier.STUDENT, Reason.NOT_CONFIDENT, [Tier.STUDENT, Tier.TEACHER])
            assert exchange.degraded == "teacher-unavailable"
            assert exchange.teacher is not None and exchange.teacher.error
            assert answer.body is not None and answer.body["model"] == "student-model"
        async with cascade(on_teacher_down="fail") as run:
            with pytest.raises(UpstreamError):
                await run("student=unsure teacher=fail")

    asyncio.run(go())


def test_an_invalid_tool_call_escalates_whatever_its_confidence() -> None:
    async def go() -> None:
        async with cascade() as run:
            tools = [WEATHER]
            answer, exchange = await run("student=badcall", tools=tools)
            assert outcome(exchange) == (Tier.TEACHER, Reason.INVALID_TOOL_CALL, [Tier.STUDENT, Tier.TEACHER])
            assert exchange.confidence is not None and exchange.confidence > 0.9  # confident, and wrong
            answer, exchange = await run("student=call", tools=tools)
            assert outcome(exchange) == (Tier.STUDENT, Reason.CONFIDENT, [Tier.STUDENT])
            assert answer.body is not None
            assert answer.body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"

    asyncio.run(go())


def test_a_pinned_model_goes_straight_to_its_tier() -> None:
    async def go() -> None:
        async with cascade() as run:
            answer, exchange = await run("student=unsure", model="student-model")
            assert outcome(exchange) == (Tier.STUDENT, Reason.PINNED, [Tier.STUDENT])
            assert exchange.confidence is None and answer.body is not None
            assert answer.body["choices"][0]["message"]["content"] == "Answer from student."  # unsure, and returned
            answer, exchange = await run("hello", model="teacher-model")
            assert outcome(exchange) == (Tier.TEACHER, Reason.PINNED, [Tier.TEACHER])
            assert answer.body is not None and answer.body["model"] == "teacher-model"

    asyncio.run(go())


def test_a_streamed_request_is_replayed_when_accepted_and_relayed_when_escalated() -> None:
    async def go() -> None:
        async with cascade() as run:
            answer, exchange = await run("hello", stream=True)
            assert answer.body is not None and answer.replay_as_stream and answer.stream is None
            answer, exchange = await run("student=unsure", stream=True)
            assert answer.stream is not None and answer.body is None
            relayed = b"".join([chunk async for chunk in answer.stream])
            assert b"Answer" in relayed and relayed.rstrip().endswith(b"data: [DONE]")
            assert exchange.teacher is not None and exchange.teacher.text == "Answer from teacher."

    asyncio.run(go())


@pytest.mark.parametrize(
    ("fields", "error", "param"),
    [
        ({"model": "no-such-model"}, ModelNotFound, "model"),
        ({"n": 2}, BadRequest, "n"),
        ({"max_tokens": 100}, BadRequest, "max_tokens"),
    ],
)
def test_requests_the_cascade_cannot_serve_are_refused_before_any_call(
    fields: dict[str, Any], error: type[Exception], param: str
) -> None:
    async def go() -> None:
        async with cascade(max_tokens=50) as run:
            with pytest.raises(error) as raised:
                await run("hello", **fields)
            assert getattr(raised.value, "param", None) == param

    asyncio.run(go())
