"""The `small` pair (SmolLM2-135M student, Qwen2.5-Coder-0.5B teacher) answers a factual question sensibly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from serving.models import prepare_pair
from serving.process import stop_all
from tests.serving.helpers import MODELS_DIR, Servers, say, start_gateway, start_pair

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def small_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    paths = prepare_pair("small", MODELS_DIR, say)
    student, teacher = start_pair(paths, tmp_path_factory.mktemp("small-vllm"), lora_rank=None)
    yield Servers(student.options, teacher.options)
    stop_all([student, teacher])


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


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


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
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
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
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            tool_choice="auto",
            max_tokens=64,
            temperature=0.0,
        )
        assert answer.choices[0].finish_reason in ("stop", "tool_calls", "length")
    finally:
        gateway.stop()
