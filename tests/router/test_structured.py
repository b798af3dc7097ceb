"""Validity of tool calls and JSON answers, and the tokens that carry a structured answer's decision."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cascade.terms import Reason
from router.structured import (
    check_answer,
    decision_mask,
    is_structured,
    message_from_text,
    normalise_schema,
    value_spans,
)
from tests.structured import PERSON

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
# As the Berkeley Function Calling Leaderboard writes schemas: Python's type names.
BFCL_AREA = {
    "type": "function",
    "function": {
        "name": "calculate_triangle_area",
        "parameters": {
            "type": "dict",
            "properties": {"base": {"type": "integer"}, "height": {"type": "float"}, "dims": {"type": "tuple"}},
            "required": ["base", "height"],
        },
    },
}


def call(name: str, arguments: Any) -> dict[str, Any]:
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": "call_1", "type": "function", "function": {"name": name, "arguments": raw}}


def calls(*items: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": list(items)}


def text(content: str) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def request(**extra: Any) -> dict[str, Any]:
    return {"model": "cascade", "messages": [{"role": "user", "content": "weather in Paris?"}], **extra}


def test_a_plain_request_is_not_judged() -> None:
    plain = request()
    assert not is_structured(plain)
    assert check_answer(plain, text("<tool_call>{}</tool_call>"), "length").valid


def test_a_valid_call_passes() -> None:
    verdict = check_answer(request(tools=[WEATHER]), calls(call("get_weather", {"city": "Paris"})), "tool_calls")
    assert verdict.valid and verdict.schema_checked


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (calls(call("get_wether", {"city": "Paris"})), "not among the request's tools"),
        (calls(call("get_weather", '{"city": "Par')), "arguments are not JSON"),
        (calls(call("get_weather", "[1, 2]")), "not a JSON object"),
        (calls(call("get_weather", {"town": "Paris"})), "'city' is a required property"),
        (calls(call("get_weather", {"city": "Paris", "unit": "k"})), "unit: 'k' is not one of"),
        (calls(call("get_weather", {"city": 7})), "city: 7 is not of type 'string'"),
        (text('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}\n'), "written as text"),
        (text('{"name": "get_weather", "arguments": {"city": "Paris"}}'), "written as text"),
        (text('{"name": "get_weather", "arguments": {"city": "Paris"}}\n{"temp": 21}'), "written as text"),
        (text('```json\n[{"name": "get_weather", "parameters": {"city": "Paris"}}]\n```'), "written as text"),
    ],
)
def test_an_invalid_call_is_named_and_explained(answer: dict[str, Any], words: str) -> None:
    verdict = check_answer(request(tools=[WEATHER]), answer, "tool_calls")
    assert verdict.reason is Reason.INVALID_TOOL_CALL
    assert words in verdict.detail


def test_json_text_that_is_no_call_of_an_offered_tool_is_a_text_answer() -> None:
    for content in ('{"name": "Paris", "arguments": 1}', '{"city": "Paris"}', "Sunny, 21 C.", '{"name": "get_weather"'):
        assert check_answer(request(tools=[WEATHER]), text(content), "stop").valid


def test_a_call_cut_at_max_tokens_is_invalid() -> None:
    verdict = check_answer(request(tools=[WEATHER]), calls(call("get_weather", {"city": "Paris"})), "length")
    assert verdict.reason is Reason.INVALID_TOOL_CALL and "max_tokens" in verdict.detail


@pytest.mark.parametrize(
    ("choice", "answer", "valid"),
    [
        ("auto", text("It is sunny."), True),
        ("required", text("It is sunny."), False),
        ({"type": "function", "function": {"name": "get_weather"}}, text("It is sunny."), False),
        ({"type": "function", "function": {"name": "get_time"}}, calls(call("get_weather", {"city": "P"})), False),
        ("none", calls(call("get_weather", {"city": "Paris"})), False),
        ("none", text("It is sunny."), True),
    ],
)
def test_tool_choice_is_honoured(choice: Any, answer: dict[str, Any], valid: bool) -> None:
    time = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    verdict = check_answer(request(tools=[WEATHER, time], tool_choice=choice), answer, "stop")
    assert verdict.valid is valid
    if not valid:
        assert verdict.reason is Reason.INVALID_TOOL_CALL


def test_parallel_calls_are_each_checked() -> None:
    good, bad = call("get_weather", {"city": "Paris"}), call("get_weather", {"city": ["Paris"]})
    assert check_answer(request(tools=[WEATHER]), calls(good, good), "tool_calls").valid
    assert not check_answer(request(tools=[WEATHER]), calls(good, bad), "tool_calls").valid


def test_bfcl_python_type_names_are_read_as_json_schema() -> None:
    schema = normalise_schema(BFCL_AREA["function"]["parameters"])
    assert schema["type"] == "object"
    assert schema["properties"]["height"]["type"] == "number"
    assert schema["properties"]["dims"]["type"] == "array"
    tools = request(tools=[BFCL_AREA])
    ok = calls(call("calculate_triangle_area", {"base": 10, "height": 5.5, "dims": [1, 2]}))
    assert check_answer(tools, ok, "tool_calls").valid
    wrong = calls(call("calculate_triangle_area", {"base": 10.5, "height": 5}))
    verdict = check_answer(tools, wrong, "tool_calls")
    assert verdict.reason is Reason.INVALID_TOOL_CALL and "base" in verdict.detail


def test_a_schema_that_is_not_json_schema_is_not_applied_and_says_so() -> None:
    broken = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "required": 3}}}
    verdict = check_answer(request(tools=[broken]), calls(call("f", {"anything": 1})), "tool_calls")
    assert verdict.valid and not verdict.schema_checked
    # the name and the arguments' syntax are still checked
    assert not check_answer(request(tools=[broken]), calls(call("f", "{")), "tool_calls").valid


@pytest.mark.parametrize(
    ("content", "finish", "words"),
    [
        ('{"name": "Ada", "age": 36}', "stop", None),
        ('{"name": "Ada", "age": "36"}', "stop", "age: '36' is not of type 'integer'"),
        ('{"name": "Ada"', "stop", "not JSON"),
        ('{"name": "Ada", "age": 36}' + " " * 40, "length", "max_tokens"),
        ('{"name": "Ada"}', "stop", "'age' is a required property"),
    ],
)
def test_json_schema_content_is_validated(content: str, finish: str, words: str | None) -> None:
    verdict = check_answer(request(response_format=PERSON), text(content), finish)
    if words is None:
        assert verdict.valid
    else:
        assert verdict.reason is Reason.INVALID_JSON and words in verdict.detail


def test_json_object_content_must_be_an_object() -> None:
    json_object = request(response_format={"type": "json_object"})
    assert check_answer(json_object, text('{"a": 1}'), "stop").valid
    assert check_answer(json_object, text("[1]"), "stop").reason is Reason.INVALID_JSON
    assert check_answer(json_object, {"role": "assistant", "content": None}, "stop").reason is Reason.INVALID_JSON
    assert check_answer(request(response_format={"type": "text"}), text("hi"), "stop").valid


def test_value_spans_are_the_values_not_the_keys_or_punctuation() -> None:
    raw = '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3, "metric": true, "tags": ["a", -1.5]}}'
    values = [raw[start:end] for start, end in value_spans(raw)]
    assert values == ["get_weather", "Paris", "3", "true", "a", "-1.5"]


def test_decision_mask_over_hermes_tool_call_tokens() -> None:
    # Qwen2.5's tokens for a hermes tool call, as vLLM reports them with logprobs
    tokens = [
        "<tool_call>", "\n", '{"', "name", '":', ' "', "get", "_weather", '",', ' "', "arguments", '":',
        ' {"', "city", '":', ' "', "Paris", '"}}', "\n", "</tool_call>",
    ]  # fmt: skip
    mask = decision_mask(tokens)
    assert [token for token, keep in zip(tokens, mask, strict=True) if keep] == ["get", "_weather", "Paris"]


def test_decision_mask_with_escaped_quotes_and_no_json() -> None:
    tokens = ['{"q": "say \\"', "hi", '\\""}']
    assert decision_mask(tokens).tolist() == [True, True, True]
    assert not decision_mask(["plain", " text"]).any()


def test_calls_are_read_from_generated_text_as_the_hermes_parser_reads_them() -> None:
    text = (
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Lyon\\"}"}</tool_call>'
    )
    message = message_from_text(text)
    assert message["content"] == "Let me check."
    assert [json.loads(call["function"]["arguments"]) for call in message["tool_calls"]] == [
        {"city": "Paris"},
        {"city": "Lyon"},
    ]
    assert {call["function"]["name"] for call in message["tool_calls"]} == {"get_weather"}
    broken = message_from_text("<tool_call>\nnot json\n</tool_call>")
    assert "tool_calls" not in broken and broken["content"] == "<tool_call>\nnot json\n</tool_call>"
    assert message_from_text("Just text.") == {"role": "assistant", "content": "Just text."}
