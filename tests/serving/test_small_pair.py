"""The `small` pair (SmolLM2-135M student, Qwen2.5-Coder-0.5B teacher) through the gateway: a factual question,
and agents' traffic (tool calls, JSON) from the clients users have: the official `openai` client, LangChain's
`ChatOpenAI` and `instructor`, all through the model `cascade`.

SmolLM2 has no tool-call format, so on this pair a request with tools is refused by the student and answered by
the teacher (reason `student_refused`). To judge a real student's tool calls, a second gateway serves the Qwen
model as its student too (vLLM answers to a second name, ``qwen-student``): the router then checks and scores
the calls Qwen writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import instructor
import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import OpenAI
from pydantic import BaseModel

from serving.models import prepare_pair
from serving.process import ManagedProcess, stop_all
from tests.gateway.helpers import wait_for_record
from tests.serving.helpers import MODELS_DIR, Servers, assert_running, say, start_gateway, start_pair
from tests.structured import WEATHER

pytestmark = [pytest.mark.slow, pytest.mark.alone, pytest.mark.timeout(1200)]
QWEN_STUDENT = "qwen-student"
# A tier's first answer under a tool schema waits for vLLM to compile the schema's grammar; on a loaded 2-core
# CPU that took over the default 120 s read timeout once. These tests check what comes back, not how fast.
SLOW_FIRST_CALLS = {"CASCADE_STUDENT__READ_TIMEOUT_S": "600", "CASCADE_TEACHER__READ_TIMEOUT_S": "600"}


RUNNING: list[ManagedProcess] = []  # the module's vLLM servers, checked around every test


@pytest.fixture(scope="module")
def small_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    paths = prepare_pair("small", MODELS_DIR, say)
    student, teacher = start_pair(paths, tmp_path_factory.mktemp("small-vllm"), None, teacher_aliases=(QWEN_STUDENT,))
    RUNNING[:] = [student, teacher]
    yield Servers(student.options, teacher.options)
    RUNNING.clear()
    stop_all([student, teacher])


@pytest.fixture(autouse=True)
def servers_stay_up() -> Iterator[None]:
    """A server that died fails the test with its exit status and its log's last lines, not as an upstream 503
    (a status of -9 is the kernel's OOM killer, or another SIGKILL)."""
    assert_running(RUNNING)
    yield
    assert_running(RUNNING)


def test_capital_of_france_through_the_cascade(small_servers: Servers, tmp_path: Path) -> None:
    gateway = start_gateway(small_servers, tmp_path)
    try:
        client = OpenAI(base_url=gateway.ready_url.removesuffix("/healthz") + "/v1", api_key="unused")
        raw = client.chat.completions.with_raw_response.create(
            model="cascade",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=32,
            temperature=0.0,
        )
        answer = raw.parse().choices[0].message.content or ""
        say(f"small pair: {raw.headers['x-cascade-tier']} answered {answer!r}")
        assert raw.headers["x-cascade-tier"] in ("student", "teacher")
        assert "Paris" in answer
    finally:
        gateway.stop()


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}], ids=["required", "named"]
)
def test_a_tool_call_through_the_gateway_from_the_qwen_teacher(
    small_servers: Servers, tmp_path: Path, tool_choice: object
) -> None:
    """The Qwen2.5 teacher is served with tool calling on: the official client gets a parsed call. (With
    ``auto`` the 0.5B model writes the call's JSON without Qwen's <tool_call> tags, so it comes back as text.)"""
    gateway = start_gateway(small_servers, tmp_path)
    try:
        client = OpenAI(base_url=gateway.ready_url.removesuffix("/healthz") + "/v1", api_key="unused")
        answer = client.chat.completions.create(
            model=small_servers.teacher.served_name,
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice=tool_choice,  # type: ignore[arg-type]
            max_tokens=64,
            temperature=0.0,
        )
        calls = answer.choices[0].message.tool_calls or []
        say(f"small pair teacher ({tool_choice}): {answer.choices[0].message}")
        assert [call.function.name for call in calls] == ["get_weather"]  # type: ignore[union-attr]
        assert "paris" in json.loads(calls[0].function.arguments)["city"].lower()  # type: ignore[union-attr]
    finally:
        gateway.stop()


def test_auto_tool_choice_is_accepted_by_the_qwen_teacher(small_servers: Servers, tmp_path: Path) -> None:
    """``auto`` needs vLLM's --enable-auto-tool-choice and a parser: without them vLLM answers 400."""
    gateway = start_gateway(small_servers, tmp_path)
    try:
        client = OpenAI(base_url=gateway.ready_url.removesuffix("/healthz") + "/v1", api_key="unused", max_retries=0)
        answer = client.chat.completions.create(
            model=small_servers.teacher.served_name,
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice="auto",
            max_tokens=64,
            temperature=0.0,
        )
        assert answer.choices[0].finish_reason in ("stop", "tool_calls", "length")
    finally:
        gateway.stop()


class Person(BaseModel):
    name: str
    age: int


PERSON_PROMPT = "Ada Lovelace died at 36. Give her name and her age."
WEATHER_PROMPT = [{"role": "user", "content": "What is the weather in Paris?"}]


def _url(gateway: ManagedProcess) -> str:
    return gateway.ready_url.removesuffix("/healthz") + "/v1"


@pytest.fixture(scope="module")
def small_gateway(small_servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The cascade over the small pair as it is: SmolLM2 student, Qwen teacher."""
    gateway = start_gateway(small_servers, tmp_path_factory.mktemp("small-gateway"), **SLOW_FIRST_CALLS)
    yield _url(gateway)
    gateway.stop()


@pytest.fixture(scope="module")
def qwen_gateway(small_servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The cascade with the Qwen model as its student too; yields its URL and its log store's URL."""
    folder = tmp_path_factory.mktemp("qwen-gateway")
    servers = Servers(replace(small_servers.teacher, served_name=QWEN_STUDENT), small_servers.teacher)
    gateway = start_gateway(servers, folder, **SLOW_FIRST_CALLS)
    yield _url(gateway), f"sqlite+aiosqlite:///{folder}/cascade.db"
    gateway.stop()


def _client(url: str) -> OpenAI:
    return OpenAI(base_url=url, api_key="unused", max_retries=0)


def _ask(url: str, **body: Any) -> tuple[Any, Any]:
    raw = _client(url).chat.completions.with_raw_response.create(model="cascade", temperature=0.0, **body)
    completion = raw.parse()
    message = completion.choices[0].message
    say(f"{raw.headers['x-cascade-tier']} ({raw.headers.get('x-cascade-invalid')}): {message}")
    return completion, raw.headers


def _cities(completion: Any) -> list[str]:
    calls = completion.choices[0].message.tool_calls or []
    assert calls and all(call.function.name == "get_weather" for call in calls)
    return [json.loads(call.function.arguments)["city"].lower() for call in calls]


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}], ids=["required", "named"]
)
def test_openai_client_gets_the_call_through_the_cascade(
    small_gateway: str, qwen_gateway: tuple[str, str], tool_choice: Any
) -> None:
    completion, headers = _ask(small_gateway, messages=WEATHER_PROMPT, tools=[WEATHER], tool_choice=tool_choice)
    assert headers["x-cascade-tier"] == "teacher" and _cities(completion) == ["paris"]  # SmolLM2 refused the tools
    completion, headers = _ask(qwen_gateway[0], messages=WEATHER_PROMPT, tools=[WEATHER], tool_choice=tool_choice)
    assert _cities(completion) == ["paris"] and "x-cascade-invalid" not in headers


def test_auto_tool_choice_gets_a_call_or_a_flagged_answer(qwen_gateway: tuple[str, str]) -> None:
    """With ``auto`` the 0.5B model writes the call as JSON text, which vLLM's parser does not take for a call:
    the router escalates it (invalid_tool_call) and, the teacher writing the same, the client gets it flagged."""
    completion, headers = _ask(qwen_gateway[0], messages=WEATHER_PROMPT, tools=[WEATHER], max_tokens=64)
    if completion.choices[0].message.tool_calls:
        assert _cities(completion) == ["paris"]
    else:
        assert headers["x-cascade-tier"] == "teacher" and headers["x-cascade-invalid"] == "invalid_tool_call"


def test_parallel_calls_and_a_tool_turn(qwen_gateway: tuple[str, str]) -> None:
    """A question needing two calls gets valid calls (the 0.5B makes one, for the first city); the agent's next
    turn, with the tool's result, passes both tiers and reaches the log unchanged."""
    url, log_url = qwen_gateway
    both = [{"role": "user", "content": "What is the weather in Paris and in Lyon?"}]
    completion, _ = _ask(url, messages=both, tools=[WEATHER], tool_choice="required", max_tokens=96)
    assert set(_cities(completion)) <= {"paris", "lyon"}
    call = completion.choices[0].message.tool_calls[0]
    turn = [
        *both,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21, "sky": "sunny"}'},
    ]
    _, headers = _ask(url, messages=turn, tools=[WEATHER], max_tokens=48)
    record = wait_for_record(log_url, headers["x-request-id"], 30)
    assert record.messages == turn and (record.params or {})["tools"] == [WEATHER]


def test_response_format_json_schema_is_valid_json_from_either_pair(
    small_gateway: str, qwen_gateway: tuple[str, str]
) -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "person", "schema": Person.model_json_schema()}}
    for url in (small_gateway, qwen_gateway[0]):
        completion, headers = _ask(
            url, messages=[{"role": "user", "content": PERSON_PROMPT}], response_format=schema, max_tokens=48
        )
        person = Person.model_validate_json(completion.choices[0].message.content or "")
        assert "ada" in person.name.lower() and "x-cascade-invalid" not in headers


def test_a_streamed_call_is_assembled_by_the_official_client(qwen_gateway: tuple[str, str]) -> None:
    stream = _client(qwen_gateway[0]).chat.completions.stream(
        model="cascade", messages=WEATHER_PROMPT, tools=[WEATHER], tool_choice="required", temperature=0.0
    )
    with stream as events:
        final = events.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls" and _cities(final) == ["paris"]


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return "sunny"


def test_langchain_tools_and_structured_output(qwen_gateway: tuple[str, str]) -> None:
    llm = ChatOpenAI(base_url=qwen_gateway[0], api_key="unused", model="cascade", temperature=0, max_retries=0)
    message = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    assert [(call["name"], call["args"]["city"].lower()) for call in message.tool_calls] == [("get_weather", "paris")]
    for method in ("json_schema", "function_calling"):
        person = llm.with_structured_output(Person, method=method).invoke(PERSON_PROMPT)
        say(f"langchain {method}: {person}")
        assert isinstance(person, Person) and "ada" in person.name.lower()


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA], ids=["tools", "json_schema"])
def test_instructor_gets_a_validated_model(qwen_gateway: tuple[str, str], mode: instructor.Mode) -> None:
    client = instructor.from_openai(_client(qwen_gateway[0]), mode=mode)
    person = client.chat.completions.create(
        model="cascade",
        response_model=Person,
        max_retries=0,
        temperature=0,
        messages=[{"role": "user", "content": PERSON_PROMPT}],
    )
    say(f"instructor {mode}: {person}")
    assert "ada" in person.name.lower()
