"""Agreement functions on hand-written answer/reference pairs."""

from __future__ import annotations

from decimal import Decimal

import pytest

from router.agreement import (
    AGREEMENTS,
    answers_agree,
    exact_match,
    extract_label,
    final_number,
    final_number_match,
    get_agreement,
    json_match,
    label_match,
    tool_calls_match,
)


@pytest.mark.parametrize(
    ("answer", "reference", "agree"),
    [
        ("Paris.", "paris", True),
        ("  The   Eiffel Tower ", "the eiffel tower", True),
        ("\uff30\uff21\uff32\uff29\uff33", "Paris", True),  # full-width letters normalise (NFKC)
        ("Paris, France", "Paris", False),
    ],
)
def test_exact_match(answer: str, reference: str, agree: bool) -> None:
    assert exact_match(answer, reference) is agree


def test_final_number_prefers_the_gsm8k_marker() -> None:
    assert final_number("She has 16 - 3 = 13 eggs, sells 9 * $2 = $18.\n#### 18") == Decimal(18)
    assert final_number("The total is $1,234.50 after 3 weeks") == Decimal("3")
    assert final_number("#### $1,234.50") == Decimal("1234.50")
    assert final_number("no digits here") is None


@pytest.mark.parametrize(
    ("answer", "reference", "agree"),
    [
        ("So she makes 9 * 2 = 18 dollars.", "#### 18", True),
        ("#### 18.0", "#### 18", True),
        ("The answer is 17", "#### 18", False),
        ("I cannot tell", "#### 18", False),  # nothing parsable disagrees
        ("-5 degrees", "#### -5", True),
    ],
)
def test_final_number_match(answer: str, reference: str, agree: bool) -> None:
    assert final_number_match(answer, reference) is agree


@pytest.mark.parametrize(
    ("text", "label"),
    [("B", "B"), ("(c) because ...", "C"), ("Answer: d. Dolphins", "D"), ("card_arrival", "card_arrival")],
)
def test_extract_label(text: str, label: str) -> None:
    assert extract_label(text) == label


def test_label_match() -> None:
    assert label_match("The answer is B.", "B")
    assert not label_match("A", "B")
    assert label_match("Card_Arrival", "card_arrival")
    assert not label_match("", "")


def test_registry() -> None:
    assert get_agreement("final_number") is final_number_match
    with pytest.raises(ValueError, match="unknown agreement"):
        get_agreement("vibes")


def _call(name: str, arguments: str) -> dict[str, object]:
    return {"id": "x", "type": "function", "function": {"name": name, "arguments": arguments}}


SCHEMAS = {
    "book": {
        "type": "dict",
        "properties": {"city": {"type": "string"}, "nights": {"type": "integer", "default": 1}},
        "required": ["city"],
    }
}


@pytest.mark.parametrize(
    ("answer", "reference", "same"),
    [
        ('{"city": "Oslo", "nights": 2}', '{"nights": 2, "city": "Oslo"}', True),  # key order
        ('{"city": "Oslo", "nights": 2}', '{"city": "Oslo", "nights": 2.0}', True),  # 2 == 2.0
        ('{"city": "Oslo", "nights": 1}', '{"city": "Oslo"}', True),  # the schema's default
        ('{"city": "Oslo", "nights": 3}', '{"city": "Oslo"}', False),
        ('{"city": "Oslo", "flag": true}', '{"city": "Oslo", "flag": 1}', False),  # true is not 1
        ('{"city": "oslo"}', '{"city": "Oslo"}', False),
        ('{"city": "Oslo"', '{"city": "Oslo"}', False),  # arguments that do not parse never match
    ],
)
def test_tool_call_arguments_are_compared_as_json_values(answer: str, reference: str, same: bool) -> None:
    assert tool_calls_match([_call("book", answer)], [_call("book", reference)], SCHEMAS) is same


def test_parallel_calls_match_in_any_order_but_not_as_a_different_multiset() -> None:
    oslo, rome = _call("book", '{"city": "Oslo"}'), _call("book", '{"city": "Rome"}')
    assert tool_calls_match([oslo, rome], [rome, oslo], SCHEMAS)
    assert not tool_calls_match([oslo, oslo], [oslo, rome], SCHEMAS)
    assert not tool_calls_match([oslo], [oslo, rome], SCHEMAS)
    assert not tool_calls_match([_call("cancel", '{"city": "Oslo"}')], [oslo], SCHEMAS)
    assert tool_calls_match(None, [], SCHEMAS)


def test_json_content_agrees_on_the_required_fields() -> None:
    schema = {"type": "object", "required": ["name", "age"]}
    assert json_match('{"age": 36, "name": "Ada", "note": "x"}', '{"name": "Ada", "age": 36.0}', schema)
    assert not json_match('{"name": "Ada", "age": 37}', '{"name": "Ada", "age": 36}', schema)
    assert not json_match('{"name": "Ada"', '{"name": "Ada", "age": 36}', schema)
    assert json_match('{"b": [1, 2], "a": 1}', '{"a": 1, "b": [1, 2]}') and not json_match("[1, 2]", "[2, 1]")


def test_answers_agree_picks_the_rule_from_the_request_and_the_answers() -> None:
    tools = {"tools": [{"type": "function", "function": {"name": "book", "parameters": SCHEMAS["book"]}}]}
    calls = {"role": "assistant", "content": None, "tool_calls": [_call("book", '{"city": "Oslo"}')]}
    same_calls = {"role": "assistant", "content": "", "tool_calls": [_call("book", '{"nights": 1, "city": "Oslo"}')]}
    words = {"role": "assistant", "content": "Booked Oslo."}
    exact = AGREEMENTS["exact"]
    assert answers_agree(tools, calls, same_calls, exact)  # the default fills in
    assert not answers_agree(tools, calls, words, exact)  # a call against a text answer
    assert answers_agree(tools, words, {"role": "assistant", "content": "booked oslo"}, exact)
    person = {"response_format": {"type": "json_schema", "json_schema": {"schema": {"required": ["name"]}}}}
    one, other = {"content": '{"name": "Ada", "x": 1}'}, {"content": '{"x": 2, "name": "Ada"}'}
    assert answers_agree(person, one, other, exact) and not exact(one["content"], other["content"])
