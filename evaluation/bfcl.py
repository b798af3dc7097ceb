"""The Berkeley Function Calling Leaderboard (v4) as a live task: prompts with tools, judged by BFCL's AST rules.

Four categories: ``simple_python`` (one call of the one tool), ``multiple`` (one call, the right one of several
tools), ``parallel`` (several calls of one tool, in any order) and ``irrelevance`` (no tool fits: the right answer
calls none). BFCL's schemas are converted to OpenAI's (``dict`` -> ``object``, ``float`` -> ``number``, ``tuple``
-> ``array``) and its dotted function names (``spotify.play``) to the names OpenAI allows (``spotify_play``), in
the tools and the ground truth alike.

The ground truth lists, per argument, the values that count as right (``""`` among them: the argument may be
left out). :func:`bfcl_match` applies BFCL's AST checker's rules: the same number of calls, each matched to a
distinct expected call of the same name (order-insensitive), every argument the answer gives is one the function
takes with one of the listed values, every argument without ``""`` given. Strings compare as BFCL standardises
them (case, spaces and ``,./-_*^`` ignored); numbers by value (BFCL also accepts an integer for a float; it
refuses a float for an integer, which this does not).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BFCL_CATEGORIES: tuple[str, ...] = ("simple_python", "multiple", "parallel", "irrelevance")
_TYPES = {"dict": "object", "float": "number", "tuple": "array"}
_IGNORED = re.compile(r"[ ,./\-_*^]")
Question = tuple[str, list[dict[str, Any]], list[dict[str, Any]], str]  # id, messages, tools, gold


def openai_name(name: str) -> str:
    """A BFCL function name as OpenAI allows it (letters, digits, ``_`` and ``-``)."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)


def openai_schema(schema: Any) -> Any:
    """A BFCL parameter schema in JSON Schema's words (recursively); ``any`` leaves the type open."""
    if isinstance(schema, list):
        return [openai_schema(value) for value in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: openai_schema(value) for key, value in schema.items() if key != "type"}
    kind = schema.get("type")
    if isinstance(kind, str) and kind != "any":
        converted["type"] = _TYPES.get(kind, kind)
    return converted


def openai_tools(functions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": openai_name(function["name"]),
                "description": function.get("description", ""),
                "parameters": openai_schema(function.get("parameters") or {"type": "dict", "properties": {}}),
            },
        }
        for function in functions
    ]


def expected_calls(ground_truth: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """BFCL's ground truth (``[{name: {argument: [possible values]}}]``) with OpenAI names."""
    return [{openai_name(name): arguments for name, arguments in call.items()} for call in ground_truth]


def _standard(value: Any) -> Any:
    if isinstance(value, str):
        return _IGNORED.sub("", value).lower()
    if isinstance(value, list | tuple):
        return [_standard(item) for item in value]
    if isinstance(value, dict):
        return {key: _standard(item) for key, item in value.items()}
    return value


def _value_ok(value: Any, possible: Sequence[Any]) -> bool:
    if isinstance(value, bool):
        return any(isinstance(option, bool) and option == value for option in possible)
    return any(not isinstance(option, bool) and _standard(value) == _standard(option) for option in possible)


def _call_ok(call: dict[str, Any], expected: dict[str, Any]) -> bool:
    [(name, arguments)] = expected.items()
    if call.get("name") != name or not isinstance(call.get("arguments"), dict):
        return False
    given: dict[str, Any] = call["arguments"]
    if any(key not in arguments or not _value_ok(value, arguments[key]) for key, value in given.items()):
        return False
    return all(key in given for key, possible in arguments.items() if "" not in possible)


def _assign(calls: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    """Can each call be matched to a distinct expected call? (Backtracking: BFCL's parallel sets are small.)"""
    if not calls:
        return not expected
    first, rest = calls[0], calls[1:]
    for i, candidate in enumerate(expected):
        if _call_ok(first, candidate) and _assign(rest, expected[:i] + expected[i + 1 :]):
            return True
    return False


def parse_calls(answer: str) -> list[dict[str, Any]] | None:
    """The calls in an answer written by :func:`calls_text`, or None when it is not such a list."""
    try:
        calls = json.loads(answer)
    except json.JSONDecodeError:
        return None
    if not isinstance(calls, list) or not all(isinstance(call, dict) for call in calls):
        return None
    return calls


def calls_text(tool_calls: Sequence[dict[str, Any]] | None) -> str:
    """An answer's OpenAI ``tool_calls`` as the JSON list the BFCL agreement reads (arguments parsed; an argument
    string that is not JSON stays a string, which matches nothing); ``[]`` for an answer that calls none."""
    calls = []
    for call in tool_calls or ():
        function = call.get("function") or {}
        arguments = function.get("arguments")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except json.JSONDecodeError:
            parsed = arguments
        calls.append({"name": function.get("name"), "arguments": parsed})
    return json.dumps(calls)


def bfcl_match(answer: str, gold: str) -> bool:
    """Is the answer (:func:`calls_text`, or plain text: no call) right by BFCL's AST rules against ``gold``
    (the JSON of :func:`expected_calls`; ``[]``: no call is right)?"""
    expected = json.loads(gold)
    calls = parse_calls(answer)
    if calls is None:
        calls = []  # a text answer calls no function
    return len(calls) == len(expected) and _assign(calls, expected)


def read_category(data_dir: Path, category: str) -> list[Question]:
    """(id, messages, tools, gold) for every question of a BFCL category."""
    folder = data_dir / "bfcl"
    questions = folder / f"BFCL_v4_{category}.json"
    if not questions.is_file():
        raise FileNotFoundError(f"{questions}: no such file; pass --data-dir pointing at the shared data folder")
    answers: dict[str, list[dict[str, Any]]] = {}
    truth = folder / "possible_answer" / f"BFCL_v4_{category}.json"
    if category != "irrelevance":
        with truth.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    answers[row["id"]] = expected_calls(row["ground_truth"])
    items = []
    with questions.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            messages = [{"role": turn["role"], "content": turn["content"]} for turn in row["question"][0]]
            gold = json.dumps(answers.get(row["id"], []) if category != "irrelevance" else [])
            items.append((row["id"], messages, openai_tools(row["function"]), gold))
    return items


def sample(data_dir: Path, categories: Sequence[str], limit: int | None, rng: random.Random) -> list[Question]:
    """A seeded sample of at most ``limit`` questions, spread evenly over ``categories``."""
    unknown = [category for category in categories if category not in BFCL_CATEGORIES]
    if unknown:
        raise ValueError(f"unknown BFCL category {unknown[0]!r}; expected some of {list(BFCL_CATEGORIES)}")
    pools = []
    for category in categories:
        rows = read_category(data_dir, category)
        rng.shuffle(rows)
        pools.append(rows)
    picked: list[Question] = []
    while any(pools) and (limit is None or len(picked) < limit):  # round-robin: every category in any limit
        for pool in pools:
            if pool and (limit is None or len(picked) < limit):
                picked.append(pool.pop(0))
    return picked
