"""BFCL as a live task: the questions and tools in OpenAI's words, and the AST rules that judge a call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from evaluation.bfcl import bfcl_match, calls_text, openai_schema
from evaluation.collect import _answer
from evaluation.tasks import TaskError, load_task

DATA = Path(__file__).resolve().parents[1] / "data"


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"id": "c", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def judged(*calls: dict[str, Any]) -> str:
    return calls_text(list(calls))


TRIANGLE = json.dumps([{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}])


def test_the_task_offers_openai_tools_and_spreads_its_sample_over_the_categories() -> None:
    task = load_task("bfcl", DATA, limit=8, seed=0)
    assert task.agreement_name == "bfcl" and len(task.items) == 8
    assert {item.id.rsplit("_", 1)[0] for item in task.items} == {
        "simple_python",
        "multiple",
        "parallel",
        "irrelevance",
    }
    for item in task.items:
        assert item.tools and item.messages[-1]["role"] == "user"
        for tool in item.tools:
            function = tool["function"]
            assert "." not in function["name"]
            jsonschema.Draft202012Validator.check_schema(function["parameters"])
            assert "dict" not in json.dumps(function["parameters"])
    irrelevant = [item for item in task.items if item.id.startswith("irrelevance")]
    assert irrelevant and all(json.loads(item.gold) == [] for item in irrelevant)
    assert load_task("bfcl", DATA, limit=8, seed=0).items == task.items  # seeded: the same sample again


def test_tool_choice_required_asks_only_the_categories_answered_by_a_call() -> None:
    task = load_task("bfcl", DATA, limit=6, seed=0, tool_choice="required")
    assert task.name == "bfcl_required" and task.options["tool_choice"] == "required"  # its own recording
    assert len(task.items) == 6 and all(item.tool_choice == "required" for item in task.items)
    assert not any(item.id.startswith("irrelevance") for item in task.items)
    with pytest.raises(TaskError, match="tool_choice"):
        load_task("bfcl", DATA, tool_choice="none")
    with pytest.raises(TaskError, match="tool_choice"):
        load_task("banking77", DATA, tool_choice="required")


def test_a_missing_data_folder_is_a_task_error(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="--data-dir"):
        load_task("bfcl", tmp_path)


def test_bfcl_schemas_become_json_schema() -> None:
    schema = {"type": "dict", "properties": {"x": {"type": "float"}, "p": {"type": "tuple", "items": {"type": "any"}}}}
    assert openai_schema(schema) == {
        "type": "object",
        "properties": {"x": {"type": "number"}, "p": {"type": "array", "items": {}}},
    }


@pytest.mark.parametrize(
    ("answer", "right"),
    [
        (judged(call("calculate_triangle_area", base=10, height=5)), True),  # the optional unit left out
        (judged(call("calculate_triangle_area", base=10, height=5, unit="Units")), True),  # case is ignored
        (judged(call("calculate_triangle_area", base=10.0, height=5)), True),  # numbers by value
        (judged(call("calculate_triangle_area", base=10, height=6)), False),  # a wrong value
        (judged(call("calculate_triangle_area", base=10)), False),  # a required argument missing
        (judged(call("calculate_triangle_area", base=10, height=5, colour="red")), False),  # one it does not take
        (judged(call("triangle_area", base=10, height=5)), False),  # another function
        (judged(call("calculate_triangle_area", base=10, height=5), call("calculate_triangle_area", base=1)), False),
        (judged(), False),  # no call
        ("The area is 25.", False),  # a text answer calls nothing
    ],
)
def test_one_call_is_judged_by_the_ast_rules(answer: str, right: bool) -> None:
    assert bfcl_match(answer, TRIANGLE) is right


def test_parallel_calls_match_in_any_order_each_once() -> None:
    gold = json.dumps(
        [{"play": {"artist": ["Taylor Swift"], "duration": [20]}}, {"play": {"artist": ["Maroon 5"], "duration": [15]}}]
    )
    swift, maroon = call("play", artist="Taylor Swift", duration=20), call("play", artist="maroon 5", duration=15)
    assert bfcl_match(judged(maroon, swift), gold)
    assert not bfcl_match(judged(swift, swift), gold)  # one expected call cannot answer for two
    assert not bfcl_match(judged(swift), gold)


def test_no_call_is_right_only_where_no_tool_fits() -> None:
    assert bfcl_match(judged(), "[]") and bfcl_match("I cannot help with that.", "[]")
    assert not bfcl_match(judged(call("anything", x=1)), "[]")


def test_a_recorded_answer_keeps_its_tool_calls_and_the_task_judges_them() -> None:
    body = {
        "model": "m",
        "choices": [{"message": {"content": None, "tool_calls": [call("calculate_triangle_area", base=10, height=5)]}}],
    }
    recorded = _answer(body, 0.1)
    assert recorded["tokens"] == [] and recorded["logprobs"] == []
    logprobs = {"content": [{"token": '"Paris', "logprob": -0.1, "top_logprobs": []}]}
    with_tokens = _answer({"model": "m", "choices": [{"message": {"content": "x"}, "logprobs": logprobs}]}, 0.1)
    assert with_tokens["tokens"] == ['"Paris'] and with_tokens["logprobs"] == [-0.1]  # for decision tokens
    task = load_task("bfcl", DATA, limit=1)
    assert task.agreement(task.judged(recorded), TRIANGLE)
    assert not task.agreement(task.judged({**recorded, "tool_calls": None}), TRIANGLE)
    banking = load_task("banking77", DATA, limit=1)
    assert banking.judged({"text": "card_arrival"}) == "card_arrival"


def test_the_cascade_replay_escalates_invalid_calls_whatever_their_confidence() -> None:
    from bench.bfcl_cascade import curve, summarise

    confidence = np.array([0.9, 0.8, 0.3, 0.95])
    invalid = np.array([False, False, False, True])  # the confident last answer calls a tool not offered
    student_ok = np.array([True, False, False, False])
    teacher_ok = np.array([True, True, True, True])
    points = curve(confidence, invalid, student_ok, teacher_ok)
    assert points[0] == {"threshold": -np.inf, "teacher_share": 0.25, "quality": 0.5}  # validity alone
    at = {p["threshold"]: p for p in points}
    assert at[0.9] == {"threshold": 0.9, "teacher_share": 0.75, "quality": 1.0}
    assert summarise(points, 1.0)["teacher_share_for_95pct_of_teacher"] == 0.75
    assert summarise(points, 1.0, budget=0.5)["quality_at_30pct_teacher"] == 0.75
    unforced = curve(confidence, np.zeros(4, dtype=bool), student_ok, teacher_ok)
    assert unforced[0]["teacher_share"] == 0.0 and unforced[0]["quality"] == 0.25


def test_the_cross_fitted_threshold_is_judged_on_the_half_it_was_not_fitted_on() -> None:
    from bench.bfcl_cascade import cross_fitted

    confidence = np.array([0.9, 0.2, 0.9, 0.2])
    student_ok = np.array([True, False, True, False])
    teacher_ok = np.ones(4, dtype=bool)
    held = cross_fitted(confidence, np.zeros(4, dtype=bool), student_ok, teacher_ok, np.array([0, 0, 1, 1]))
    assert held == {"teacher_share": 0.5, "quality": 1.0}  # each half's cut (0.9) escalates the other's 0.2
