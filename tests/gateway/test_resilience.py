"""When upstreams fail: retries where safe, circuit breakers, degrade or fail policies, request limits."""

from __future__ import annotations

import time
import uuid

import httpx
import openai
import pytest

from tests.conftest import STUDENT_MODEL, TEACHER_MODEL, GatewayFactory, Server, free_port, gateway_config
from tests.gateway.helpers import chat, eventually, post, received


def test_teacher_down_on_escalation_degrades_to_the_students_answer(gateway: Server) -> None:
    response = post(gateway, json=chat("cascade", "student=unsure teacher=fail"))
    assert response.status_code == 200
    assert response.headers["x-cascade-tier"] == "student"
    assert response.headers["x-cascade-degraded"] == "teacher-unavailable"
    assert response.json()["choices"][0]["message"]["content"] == "Answer from student."


def test_teacher_down_fails_under_the_fail_policy(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server
) -> None:
    gateway = start_gateway(gateway_config(fake_student.url, fake_teacher.url, on_teacher_down="fail"))
    response = post(gateway, json=chat("cascade", "student=unsure teacher=busy"))
    assert response.status_code == 503 and response.json()["error"]["type"] == "service_unavailable"


def test_503_is_retried_and_then_answered(gateway: Server, fake_teacher: Server) -> None:
    before = received(fake_teacher)
    response = post(gateway, json=chat(TEACHER_MODEL, f"teacher=flaky {uuid.uuid4()}"))
    assert response.status_code == 200
    assert received(fake_teacher) == before + 2  # the refused try and the retry


def test_429_is_retried_then_passed_on_with_retry_after(gateway: Server, fake_teacher: Server) -> None:
    before = received(fake_teacher)
    response = post(gateway, json=chat(TEACHER_MODEL, "teacher=limited"))
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert response.headers["retry-after"] == "1"
    assert received(fake_teacher) == before + 3  # one try and the two configured retries


def test_circuit_breaker_opens_fails_fast_and_shows_in_readiness(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server
) -> None:
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["student"].update(breaker_failures=2, breaker_reset_s=1.0, retries=0)
    gateway = start_gateway(config)
    for _ in range(2):  # two failures open the student's breaker; the teacher answers both
        response = post(gateway, json=chat("cascade", "student=fail"))
        assert response.headers["x-cascade-tier"] == "teacher"
    before = received(fake_student)
    response = post(gateway, json=chat("cascade", "student=fail"))
    assert response.status_code == 200 and response.headers["x-cascade-tier"] == "teacher"
    assert received(fake_student) == before  # open: the student was not even called
    assert httpx.get(gateway.root + "/readyz").json()["upstreams"]["student"] == "circuit_open"
    metrics = httpx.get(gateway.root + "/metrics").text
    assert 'cascade_upstream_circuit_open{upstream="student"} 1.0' in metrics
    eventually(  # half-open after breaker_reset_s: one probe goes out and, succeeding, closes the breaker
        lambda: httpx.get(gateway.root + "/readyz").json()["upstreams"]["student"] != "circuit_open",
        10,
        "the student's breaker half-open",
    )
    response = post(gateway, json=chat("cascade", "hello"))
    assert response.headers["x-cascade-tier"] == "student"
    assert received(fake_student) == before + 1
    assert httpx.get(gateway.root + "/readyz").json()["upstreams"]["student"] == "ready"


def test_both_tiers_down_is_503_fast(start_gateway: GatewayFactory) -> None:
    dead = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    gateway = start_gateway(gateway_config(*dead))
    started = time.monotonic()
    response = post(gateway, json=chat("cascade", "hello"))
    assert response.status_code == 503
    assert time.monotonic() - started < 2.0  # refused connections, a few short retries: no hanging


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat("cascade", "hi", max_tokens=100_000), "max_tokens"),
        (chat(STUDENT_MODEL, "hi", max_completion_tokens=5000), "max_completion_tokens"),
        ({"model": "cascade", "messages": [{"role": "user", "content": "hi"}] * 600}, "messages"),
    ],
)
def test_request_limits_are_400_with_param(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, body: dict, param: str
) -> None:
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["student"]["max_tokens"] = 1024
    gateway = start_gateway(config)
    response = post(gateway, json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


@pytest.mark.parametrize(
    "content_type",
    [
        "application/xml",
        "text/plain",  # what a web page's form or fetch() may send cross-site without a CORS preflight
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",  # also curl's default for -d
        "multipart/form-data; boundary=x",
        None,  # fetch() with an untyped Blob body
    ],
)
def test_a_body_not_declared_json_is_refused_before_any_upstream_call(
    gateway: Server, fake_student: Server, content_type: str | None
) -> None:
    body = b'{"model": "cascade", "messages": [{"role": "user", "content": "hi"}]}'
    before = received(fake_student)
    response = post(gateway, content=body, headers={"content-type": content_type} if content_type else {})
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
    assert received(fake_student) == before


def test_json_media_types_are_served(gateway: Server) -> None:
    body = b'{"model": "cascade", "messages": [{"role": "user", "content": "hi"}]}'
    for content_type in ("application/json", "application/json; charset=utf-8", "application/vnd.api+json"):
        assert post(gateway, content=body, headers={"content-type": content_type}).status_code == 200


def test_official_client_gets_degraded_answer_streamed(gateway: Server) -> None:
    client = openai.OpenAI(base_url=gateway.url, api_key="unused", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="cascade", messages=[{"role": "user", "content": "student=unsure teacher=busy"}], stream=True
    ) as raw:
        assert raw.headers["x-cascade-degraded"] == "teacher-unavailable"
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "Answer from student."
