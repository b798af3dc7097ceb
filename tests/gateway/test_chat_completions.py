"""The cascade endpoint driven by the official openai client, against scripted loopback upstreams."""

from __future__ import annotations

import asyncio
import math

import httpx
import openai
import pytest

from tests.conftest import STUDENT_MODEL, TEACHER_MODEL, Server
from tests.gateway.helpers import openai_client


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_confident_student_answers_with_headers(gateway: Server, fake_student: Server) -> None:
    raw = openai_client(gateway).chat.completions.with_raw_response.create(
        model="cascade", messages=ask("hello"), extra_headers={"x-request-id": "req-123"}
    )
    answer = raw.parse()
    assert raw.headers["x-cascade-tier"] == "student"
    assert float(raw.headers["x-cascade-confidence"]) == pytest.approx(math.exp(-0.01), abs=1e-6)
    assert raw.headers["x-client-request-id"] == "req-123"  # the client's id, kept beside the gateway's own
    assert len(raw.headers["x-request-id"]) == 32 and raw.headers["x-request-id"] != "req-123"
    assert answer.model == STUDENT_MODEL
    assert answer.choices[0].message.content == "Answer from student."
    assert answer.choices[0].logprobs is None  # the client did not ask for them
    assert answer.usage is not None and answer.usage.completion_tokens == 4
    sent = httpx.get(fake_student.root + "/_stats").json()["received"][-1]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 3 and sent["stream"] is False


def test_unsure_student_escalates_to_teacher(gateway: Server) -> None:
    raw = openai_client(gateway).chat.completions.with_raw_response.create(
        model="cascade", messages=ask("student=unsure")
    )
    answer = raw.parse()
    assert raw.headers["x-cascade-tier"] == "teacher"
    assert float(raw.headers["x-cascade-confidence"]) == pytest.approx(math.exp(-3.0), abs=1e-6)
    assert raw.headers["x-request-id"]  # generated when the client sends none
    assert answer.model == TEACHER_MODEL
    assert answer.choices[0].message.content == "Answer from teacher."


def test_logprobs_the_client_asked_for_are_trimmed_to_its_top_k(gateway: Server) -> None:
    answer = openai_client(gateway).chat.completions.create(
        model="cascade", messages=ask("hello"), logprobs=True, top_logprobs=1
    )
    content = answer.choices[0].logprobs.content  # type: ignore[union-attr]
    assert [token.token for token in content] == ["Answer", " from", " student", "."]
    assert all(len(token.top_logprobs) == 1 for token in content)


def test_pinned_tiers_pass_straight_through(gateway: Server, fake_teacher: Server) -> None:
    for model, tier in ((STUDENT_MODEL, "student"), (TEACHER_MODEL, "teacher")):
        raw = openai_client(gateway).chat.completions.with_raw_response.create(
            model=model, messages=ask("student=unsure"), temperature=0.3, seed=7
        )
        assert raw.headers["x-cascade-tier"] == tier
        assert raw.headers["x-cascade-confidence"] == "none"
        assert raw.parse().model == model
    forwarded = httpx.get(fake_teacher.root + "/_stats").json()["received"][-1]
    assert forwarded["temperature"] == 0.3 and forwarded["seed"] == 7 and "logprobs" not in forwarded


def test_models_lists_the_alias_and_both_tiers(gateway: Server) -> None:
    ids = [model.id for model in openai_client(gateway).models.list()]
    assert ids == ["cascade", STUDENT_MODEL, TEACHER_MODEL]


def test_accepted_answer_is_replayed_as_a_stream(gateway: Server) -> None:
    stream = openai_client(gateway).chat.completions.create(
        model="cascade", messages=ask("hello"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Answer from student."
    assert {c.model for c in chunks} == {STUDENT_MODEL}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_escalated_stream_is_the_teachers_alone(gateway: Server) -> None:
    with openai_client(gateway).chat.completions.with_streaming_response.create(
        model="cascade", messages=ask("student=unsure"), stream=True
    ) as raw:
        assert raw.headers["x-cascade-tier"] == "teacher"
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Answer from teacher."
    assert all(c.usage is None for c in chunks)  # not asked for


def test_async_client_streams_and_answers(gateway: Server) -> None:
    async def run() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=gateway.url, api_key="unused", max_retries=0) as aclient:
            whole = await aclient.chat.completions.create(model="cascade", messages=ask("student=unsure"))
            stream = await aclient.chat.completions.create(model="cascade", messages=ask("hi"), stream=True)
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return whole.choices[0].message.content or "", streamed

    whole, streamed = asyncio.run(run())
    assert whole == "Answer from teacher."
    assert streamed == "Answer from student."


def test_health_and_readiness(gateway: Server) -> None:
    assert httpx.get(gateway.root + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.root + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["upstreams"] == {"student": "ready", "teacher": "ready"}
