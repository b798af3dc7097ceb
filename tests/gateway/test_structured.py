"""Tool calls and JSON through a real gateway in front of the scripted upstreams, with the official client.

The last user message scripts each tier (see ``tests/fake_upstream.py``): ``call`` a valid call, ``badcall``
arguments that break the tool's schema, ``callmixed`` a call confident on its values only, ``parallel`` two
calls, ``json``/``badjson``/``padjson`` content for a ``response_format``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayFactory, Server, gateway_config
from tests.gateway.helpers import metric_sum, openai_client, wait_for_record
from tests.structured import PERSON, WEATHER


@pytest.fixture(scope="module")
def log_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('log') / 'log.db'}"


@pytest.fixture(scope="module")
def gateway(start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, log_url: str) -> Server:
    config = gateway_config(fake_student.url, fake_teacher.url)
    return start_gateway({**config, "log_store": {"url": log_url}})


def ask_tools(gateway: Server, script: str, **extra: Any) -> Any:
    messages = [{"role": "user", "content": f"What is the weather in Paris? {script}"}]
    raw = openai_client(gateway).chat.completions.with_raw_response.create(
        model="cascade", messages=messages, tools=[WEATHER], **extra
    )
    return raw.parse(), raw.headers


def arguments(completion: Any) -> list[dict[str, Any]]:
    return [json.loads(call.function.arguments) for call in completion.choices[0].message.tool_calls or ()]


def test_a_valid_student_call_is_served_at_the_students_price(gateway: Server) -> None:
    completion, headers = ask_tools(gateway, "student=call teacher=call")
    assert headers["x-cascade-tier"] == "student"
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert arguments(completion) == [{"city": "Paris"}]


def test_a_call_that_breaks_the_schema_escalates_whatever_its_confidence(gateway: Server, log_url: str) -> None:
    before = metric_sum(gateway, "cascade_escalations_total")
    completion, headers = ask_tools(gateway, "student=badcall teacher=parallel")
    assert headers["x-cascade-tier"] == "teacher" and "x-cascade-invalid" not in headers
    assert arguments(completion) == [{"city": "Paris"}, {"city": "Lyon"}]
    assert metric_sum(gateway, "cascade_escalations_total") == before + 1
    record = wait_for_record(log_url, headers["x-request-id"])
    assert record.reason == "invalid_tool_call"
    assert record.student is not None and "city: 7 is not of type 'string'" in (record.student.invalid or "")
    assert record.teacher is not None and record.teacher.tool_calls is not None
    assert [call["function"]["arguments"] for call in record.teacher.tool_calls] == [
        '{"city":"Paris"}',
        '{"city":"Lyon"}',
    ]
    assert (record.params or {})["tools"] == [WEATHER]


def test_an_invalid_answer_from_both_tiers_reaches_the_client_flagged(gateway: Server) -> None:
    completion, headers = ask_tools(gateway, "student=badcall teacher=badcall")
    assert headers["x-cascade-tier"] == "teacher" and headers["x-cascade-invalid"] == "invalid_tool_call"
    assert arguments(completion) == [{"city": 7}]  # the teacher's answer, as it gave it


def test_a_student_without_tools_leaves_the_call_to_the_teacher_whose_answer_is_checked_too(gateway: Server) -> None:
    completion, headers = ask_tools(gateway, "student=refuse teacher=call")
    assert headers["x-cascade-tier"] == "teacher" and "x-cascade-invalid" not in headers
    assert arguments(completion) == [{"city": "Paris"}]
    _, headers = ask_tools(gateway, "student=refuse teacher=badcall")
    assert headers["x-cascade-invalid"] == "invalid_tool_call"


def test_tool_choice_none_refuses_a_call(gateway: Server) -> None:
    _, headers = ask_tools(gateway, "student=call teacher=confident", tool_choice="none")
    assert headers["x-cascade-tier"] == "teacher"


def test_confidence_is_read_from_the_decision_tokens(
    gateway: Server, start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server
) -> None:
    """Unsure on the punctuation, sure on the name and the values: accepted on the decision tokens (the default),
    escalated when every token counts."""
    _, headers = ask_tools(gateway, "student=callmixed")
    assert headers["x-cascade-tier"] == "student"
    every_token = start_gateway(gateway_config(fake_student.url, fake_teacher.url, structured_tokens="all"))
    _, headers = ask_tools(every_token, "student=callmixed")
    assert headers["x-cascade-tier"] == "teacher"


@pytest.mark.parametrize(("script", "tier"), [("json", "student"), ("badjson", "teacher"), ("padjson", "teacher")])
def test_json_schema_content_is_validated(gateway: Server, script: str, tier: str) -> None:
    messages = [{"role": "user", "content": f"Who is Ada? student={script} teacher=json"}]
    raw = openai_client(gateway).chat.completions.with_raw_response.create(
        model="cascade",
        messages=messages,
        response_format=PERSON,  # type: ignore[arg-type]
    )
    assert raw.headers["x-cascade-tier"] == tier
    assert json.loads(raw.parse().choices[0].message.content or "") == {"name": "Ada", "age": 36}


def _streamed_calls(gateway: Server, script: str) -> tuple[list[tuple[str, dict[str, Any]]], str | None, str]:
    """The calls the official client's stream helper assembles from the deltas, the finish reason, and the tier
    that made them (the scripted upstreams' call ids name it)."""
    messages = [{"role": "user", "content": f"What is the weather? {script}"}]
    with openai_client(gateway).chat.completions.stream(model="cascade", messages=messages, tools=[WEATHER]) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    tier = (choice.message.tool_calls or [])[0].id.split("_")[1]
    calls = [(call.function.name, json.loads(call.function.arguments)) for call in choice.message.tool_calls or ()]
    return calls, choice.finish_reason, tier


def test_an_accepted_streamed_call_is_replayed_as_deltas(gateway: Server) -> None:
    calls, finish, tier = _streamed_calls(gateway, "student=call teacher=call")
    assert tier == "student" and finish == "tool_calls"
    assert calls == [("get_weather", {"city": "Paris"})]


def test_an_escalated_streamed_call_is_relayed(gateway: Server, log_url: str) -> None:
    calls, finish, tier = _streamed_calls(gateway, "student=badcall teacher=parallel")
    assert tier == "teacher" and finish == "tool_calls"
    assert calls == [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Lyon"})]


def test_the_replayed_deltas_fragment_the_arguments(gateway: Server) -> None:
    """Clients that assemble a call from deltas (LangChain, instructor) get the head once, then fragments."""
    messages = [{"role": "user", "content": "weather? student=call"}]
    chunks = list(
        openai_client(gateway).chat.completions.create(model="cascade", messages=messages, tools=[WEATHER], stream=True)
    )
    deltas = [call for chunk in chunks for choice in chunk.choices for call in choice.delta.tool_calls or ()]
    assert deltas[0].id and deltas[0].function.name == "get_weather" and deltas[0].function.arguments == ""
    assert all(delta.id is None and delta.function.name is None for delta in deltas[1:])
    assert "".join(delta.function.arguments for delta in deltas) == '{"city":"Paris"}'


def test_a_multi_turn_agent_conversation_passes_through_unchanged(gateway: Server, fake_student: Server) -> None:
    """An assistant turn with tool calls and the tool's result reach the student as the client sent them."""
    httpx.post(fake_student.root + "/_reset")
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Oslo? student=confident"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": -3}'},
        {"role": "user", "content": "And so? student=confident"},
    ]
    completion = openai_client(gateway).chat.completions.create(
        model="cascade",
        messages=messages,  # type: ignore[arg-type]
        tools=[WEATHER],
    )
    assert completion.choices[0].message.content == "Answer from student."
    (received,) = httpx.get(fake_student.root + "/_stats").json()["received"]
    assert received["messages"] == messages and received["tools"] == [WEATHER]
