"""What one request may cost is bounded: a tier's max_tokens cap holds when the client sends none, n is bounded,
vLLM-only fields that change cost are refused, and a budget is checked against the worst case before sending."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import STUDENT_MODEL, TEACHER_MODEL, GatewayFactory, Server, gateway_config
from tests.gateway.helpers import chat
from tests.gateway.test_keys import REDIS_URL, Keys


def last_received(server: Server) -> dict[str, Any]:
    received: list[dict[str, Any]] = httpx.get(server.root + "/_stats").json()["received"]
    return received[-1]


def count(server: Server) -> int:
    return len(httpx.get(server.root + "/_stats").json()["received"])


@pytest.fixture(scope="module")
def bounded(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Server, Keys]:
    folder = tmp_path_factory.mktemp("bounds")
    url = f"sqlite+aiosqlite:///{folder / 'log.db'}"
    keys = Keys(url)
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["student"].update(max_tokens=32, price={"input_usd_per_mtok": 100.0, "output_usd_per_mtok": 100.0})
    config["teacher"].update(max_tokens=64, price={"input_usd_per_mtok": 1000.0, "output_usd_per_mtok": 1000.0})
    config["server"] = {"max_choices": 4}
    config["auth"] = {"enabled": True, "redis_url": REDIS_URL, "key_cache_s": 0}
    config["log_store"] = {"url": url, "spool_dir": str(folder / "spool"), "flush_interval_s": 0.05}
    return start_gateway(config), keys


def post(gateway: Server, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        gateway.url + "/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def test_each_tier_is_sent_its_cap_when_the_client_sends_no_max_tokens(
    bounded: tuple[Server, Keys], fake_student: Server, fake_teacher: Server
) -> None:
    gateway, keys = bounded
    _, plain = keys.create("caps")
    assert post(gateway, plain, chat("cascade", "student=unsure")).status_code == 200
    assert last_received(fake_student)["max_tokens"] == 32
    assert last_received(fake_teacher)["max_tokens"] == 64  # the escalation
    assert post(gateway, plain, chat(TEACHER_MODEL)).status_code == 200
    assert last_received(fake_teacher)["max_tokens"] == 64
    assert post(gateway, plain, chat(STUDENT_MODEL, max_completion_tokens=8)).status_code == 200
    sent = last_received(fake_student)
    assert sent["max_completion_tokens"] == 8 and "max_tokens" not in sent  # what the client asked stands


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 5}, "n"),
        ({"ignore_eos": True}, "ignore_eos"),
        ({"min_tokens": 10_000}, "min_tokens"),
        ({"echo": True}, "echo"),
        ({"prompt_logprobs": 20}, "prompt_logprobs"),
        ({"guided_json": {"type": "object"}}, "guided_json"),
        ({"chat_template": "{{ messages }}"}, "chat_template"),
        ({"request_id": "mine"}, "request_id"),
    ],
)
def test_fields_that_raise_the_cost_unbounded_are_refused(
    bounded: tuple[Server, Keys], fake_student: Server, extra: dict[str, Any], param: str
) -> None:
    gateway, keys = bounded
    _, plain = keys.create("fields")
    before = count(fake_student)
    response = post(gateway, plain, chat(STUDENT_MODEL, **extra))
    assert response.status_code == 400 and response.json()["error"]["param"] == param
    assert count(fake_student) == before


def test_n_up_to_the_limit_is_served_on_a_pinned_tier(bounded: tuple[Server, Keys]) -> None:
    gateway, keys = bounded
    _, plain = keys.create("choices")
    assert post(gateway, plain, chat(STUDENT_MODEL, n=4)).status_code == 200


def test_a_budget_refuses_a_request_whose_worst_case_does_not_fit(
    bounded: tuple[Server, Keys], fake_student: Server, fake_teacher: Server
) -> None:
    gateway, keys = bounded
    # Worst case on the alias: the body's ~80 bytes as prompt tokens and 32 completion tokens at the student's
    # 100 USD/Mtok, plus the same prompt and 64 at the teacher's 1,000 USD/Mtok: about 0.16 USD.
    _, plain = keys.create("tight", budget_usd=0.1, budget_period="month")
    before = count(fake_student), count(fake_teacher)
    refused = post(gateway, plain, chat("cascade"))
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded" and "could cost up to" in error["message"]
    assert (count(fake_student), count(fake_teacher)) == before  # refused before any tier was asked
    # The student alone with a small max_tokens fits, and a refusal reserved nothing.
    small = chat(STUDENT_MODEL, max_tokens=4)
    assert [post(gateway, plain, small).status_code for _ in range(3)] == [200, 200, 200]


def test_concurrent_requests_cannot_overspend_a_budget_together(bounded: tuple[Server, Keys]) -> None:
    gateway, keys = bounded
    # Each slow teacher request may cost up to ~0.14 USD: with a 0.2 USD budget only one may be in flight.
    _, plain = keys.create("together", budget_usd=0.2, budget_period="month")

    async def both() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            headers = {"authorization": f"Bearer {plain}"}
            url = gateway.url + "/chat/completions"
            slow = chat(TEACHER_MODEL, "teacher=slow")
            first = asyncio.create_task(client.post(url, json=slow, headers=headers))
            await asyncio.sleep(0.5)
            second = await client.post(url, json=slow, headers=headers)
            return [second.status_code, (await first).status_code]

    second, first = asyncio.run(both())
    assert second == 429 and first == 504  # the first ran (the fake teacher is slow beyond the read timeout)
