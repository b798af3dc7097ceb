"""Judging a structured answer (a tool call, or JSON content) against what the request asked for.

Pure functions over the OpenAI request and the answer's ``message``; no HTTP.

- :func:`check_answer`: validity first. A tool call whose name is not among the request's tools, or left in
  the content as text (markup, or a bare JSON call the server did not parse), that
  ``tool_choice`` forbids (``none``, another function), whose arguments do not parse as a JSON object or do not
  validate against the tool's JSON schema; no tool call where ``tool_choice`` requires one; content that does
  not parse or validate against the request's ``response_format``; a structured answer cut at ``max_tokens``.
  Such an answer is escalated whatever its confidence (reasons ``invalid_tool_call`` / ``invalid_json``).
- :func:`decision_mask`: which of the answer's tokens carry the decision, the JSON values (function name,
  argument values), not the keys, quotes, braces or the tool-call markup around them. Confidence over those
  tokens is the router's signal for a structured answer.

Schemas are checked with ``jsonschema`` (the validator each schema's ``$schema`` names, else Draft 2020-12).
The type names some tool catalogues use in place of JSON Schema's (``dict``, ``float``, ``tuple``, ``any``:
Python's, as in the Berkeley Function Calling Leaderboard) are read as ``object``, ``number``, ``array`` and no
constraint. A schema that is still not valid JSON Schema is not applied: the call is then checked for its name
and for arguments that parse, and :attr:`Verdict.schema_checked` says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from jsonschema import exceptions as schema_errors
from jsonschema import validators

from cascade.logprobs import TokenLogprobs
from cascade.terms import Reason

_TYPE_ALIASES = {"dict": "object", "float": "number", "tuple": "array", "list": "array", "int": "integer"}
# Markup a tool-calling model writes around a call (Qwen2.5's hermes format); left in the content, the server
# could not parse the call.
_CALL_MARKUP = ("<tool_call>", "</tool_call>")
_DECODER = json.JSONDecoder()
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a structured answer is invalid (``reason`` None: it is valid), in words a log reader understands."""

    reason: Reason | None = None
    detail: str = ""
    schema_checked: bool = True

    @property
    def valid(self) -> bool:
        return self.reason is None


VALID = Verdict()


def is_structured(request: Mapping[str, Any]) -> bool:
    """The request offers tools or asks for JSON content: its answer is judged by :func:`check_answer`."""
    return bool(request.get("tools")) or json_format(request) is not None


def tool_schemas(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request's functions by name: their ``parameters`` schema (``{}`` when a tool declares none)."""
    out: dict[str, Any] = {}
    for tool in request.get("tools") or []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            out[function["name"]] = function.get("parameters") or {}
    return out


def normalise_schema(schema: Any) -> Any:
    """``schema`` with Python type names (``dict``, ``float``, ``tuple``, ``any``) as JSON Schema's."""
    if isinstance(schema, list):
        return [normalise_schema(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {key: normalise_schema(value) for key, value in schema.items()}
    kind = out.get("type")
    if isinstance(kind, str):
        if kind == "any":
            del out["type"]
        else:
            out["type"] = _TYPE_ALIASES.get(kind, kind)
    elif isinstance(kind, list):
        out["type"] = [_TYPE_ALIASES.get(k, k) for k in kind if isinstance(k, str) and k != "any"] or None
        if out["type"] is None:
            del out["type"]
    return out


def schema_error(instance: Any, schema: Any) -> tuple[str | None, bool]:
    """The first way ``instance`` breaks ``schema`` (None if it conforms), and whether the schema was usable."""
    schema = normalise_schema(schema)
    if schema in ({}, None, True):
        return None, True
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except schema_errors.SchemaError:
        return None, False
    error = schema_errors.best_match(cls(schema).iter_errors(instance))
    if error is None:
        return None, True
    where = "/".join(str(part) for part in error.absolute_path)
    return (f"{where}: {error.message}" if where else error.message), True


def json_format(request: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The request's ``response_format`` when it asks for JSON (``json_object`` or ``json_schema``), else None."""
    response_format = request.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") in ("json_object", "json_schema"):
        return response_format
    return None


def _tool_choice(request: Mapping[str, Any]) -> str:
    """``none``, ``auto``, ``required`` or the one function's name that must be called."""
    choice = request.get("tool_choice")
    if isinstance(choice, Mapping):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        return f"function:{name}"
    if choice in ("none", "auto", "required"):
        return str(choice)
    return "auto" if request.get("tools") else "none"


def parse_arguments(raw: Any) -> tuple[dict[str, Any] | None, str]:
    """A tool call's ``arguments`` (a JSON string, or already an object) as a dict, or None and why not."""
    if isinstance(raw, Mapping):
        return dict(raw), ""
    if not isinstance(raw, str):
        return None, "its arguments are not a JSON string"
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError as exc:
        return None, f"its arguments are not JSON ({exc.msg})"
    if not isinstance(value, dict):
        return None, "its arguments are not a JSON object"
    return value, ""


_HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def message_from_text(text: str) -> dict[str, Any]:
    """An assistant message from raw generated text, as vLLM's ``hermes`` tool parser reads it: each
    ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` becomes an OpenAI tool call (arguments as a JSON
    string), the rest is the content. A block that is not such JSON stays in the content, as the parser leaves
    it."""
    calls: list[dict[str, Any]] = []

    def take(match: re.Match[str]) -> str:
        try:
            value = json.loads(match.group(1))
        except ValueError:
            return match.group(0)
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            return match.group(0)
        arguments = value.get("arguments", value.get("parameters", {}))
        calls.append(
            {
                "id": f"call_{len(calls)}",
                "type": "function",
                "function": {
                    "name": value["name"],
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False),
                },
            }
        )
        return ""

    content = _HERMES_CALL.sub(take, text).strip()
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    return message | ({"tool_calls": calls} if calls else {})


def _written_as_text(content: str, tools: Mapping[str, Any]) -> bool:
    """The content is a tool call the server left as text: Hermes ``<tool_call>`` markup, or (what small models
    write with ``tool_choice: auto``) content that starts with a JSON ``{"name": <one of the tools>,
    "arguments": ...}``, a list of them, or one in a Markdown code fence."""
    if not tools:
        return False
    if any(tag in content for tag in _CALL_MARKUP):
        return True
    text = _FENCE.sub("", content.strip()).strip()
    if not text.startswith(("{", "[")):
        return False
    try:
        value, _ = _DECODER.raw_decode(text)  # the JSON value the content starts with
    except ValueError:
        return False
    items = value if isinstance(value, list) else [value]
    return bool(items) and all(
        isinstance(item, dict) and item.get("name") in tools and ("arguments" in item or "parameters" in item)
        for item in items
    )


def _invalid_call(detail: str) -> Verdict:
    return Verdict(Reason.INVALID_TOOL_CALL, detail)


def _check_calls(request: Mapping[str, Any], message: Mapping[str, Any]) -> Verdict:
    choice = _tool_choice(request)
    calls = message.get("tool_calls") or []
    if not calls:
        content = message.get("content") or ""
        if isinstance(content, str) and _written_as_text(content, tool_schemas(request)):
            return _invalid_call("the call is written as text: the model server did not parse it as a tool call")
        if choice == "required" or choice.startswith("function:"):
            return _invalid_call(f"no tool call, but tool_choice is {choice.removeprefix('function:')!r}")
        return VALID
    if choice == "none":
        return _invalid_call("a tool call, but tool_choice is 'none' (or no tools were offered)")
    schemas = tool_schemas(request)
    checked = True
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        name = function.get("name") if isinstance(function, Mapping) else None
        if name not in schemas:
            return _invalid_call(f"it calls {name!r}, which is not among the request's tools")
        if choice.startswith("function:") and name != choice.removeprefix("function:"):
            return _invalid_call(f"it calls {name!r}, but tool_choice names {choice.removeprefix('function:')!r}")
        arguments, why = parse_arguments(function.get("arguments") if isinstance(function, Mapping) else None)
        if arguments is None:
            return _invalid_call(f"the call to {name!r}: {why}")
        error, usable = schema_error(arguments, schemas[name])
        checked = checked and usable
        if error is not None:
            return _invalid_call(f"the call to {name!r} breaks its schema: {error}")
    return VALID if checked else Verdict(schema_checked=False)


def _check_content(response_format: Mapping[str, Any], message: Mapping[str, Any]) -> Verdict:
    content = message.get("content")
    if not isinstance(content, str):
        return Verdict(Reason.INVALID_JSON, "no content, but response_format asks for JSON")
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        return Verdict(Reason.INVALID_JSON, f"the content is not JSON ({exc.msg})")
    if response_format.get("type") == "json_object":
        if not isinstance(value, dict):
            return Verdict(Reason.INVALID_JSON, "the content is JSON but not an object")
        return VALID
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    error, usable = schema_error(value, schema or {})
    if error is not None:
        return Verdict(Reason.INVALID_JSON, f"the content breaks the response_format schema: {error}")
    return VALID if usable else Verdict(schema_checked=False)


def check_answer(request: Mapping[str, Any], message: Mapping[str, Any], finish_reason: str | None) -> Verdict:
    """Is this answer (a chat completion's ``message``) the tool call or JSON the request asked for?"""
    if not is_structured(request):
        return VALID
    calls = bool(message.get("tool_calls"))
    response_format = json_format(request)
    if finish_reason == "length" and (calls or response_format is not None):
        reason = Reason.INVALID_TOOL_CALL if calls else Reason.INVALID_JSON
        return Verdict(reason, "the answer was cut at max_tokens")
    verdict = _check_calls(request, message)
    if not verdict.valid or calls or response_format is None:
        return verdict
    return _check_content(response_format, message)


_LITERAL = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null")


def value_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the JSON values in ``text``: string values (inside the quotes), numbers and
    ``true``/``false``/``null``; object keys, punctuation and text around the JSON are not values."""
    spans: list[tuple[int, int]] = []
    i, n = 0, len(text)
    previous = ""  # the last significant character outside strings
    while i < n:
        char = text[i]
        if char == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            after = end + 1
            while after < n and text[after] in " \t\r\n":
                after += 1
            if not (after < n and text[after] == ":") and end > i + 1:
                spans.append((i + 1, min(end, n)))
            previous, i = '"', end + 1
            continue
        if previous in (":", "[", ","):
            literal = _LITERAL.match(text, i)
            if literal:
                spans.append(literal.span())
                previous, i = "0", literal.end()
                continue
        if not char.isspace():
            previous = char
        i += 1
    return spans


def decision_mask(tokens: Sequence[str]) -> np.ndarray:
    """True for each token whose characters overlap a JSON value of the joined text (see :func:`value_spans`)."""
    ends = np.cumsum([len(token) for token in tokens])
    starts = ends - np.array([len(token) for token in tokens], dtype=ends.dtype)
    mask = np.zeros(len(tokens), dtype=bool)
    for start, end in value_spans("".join(tokens)):
        mask |= (starts < end) & (ends > start)
    return mask


def confidence_tokens(tokens: TokenLogprobs, structured: bool, mode: str) -> TokenLogprobs:
    """The tokens a confidence is read from: for a structured answer (a tool call, JSON content) with ``mode``
    ``decision`` (``router.structured_tokens``), the ones :func:`decision_mask` marks, when there are any and the
    token strings are known; else all of them."""
    if mode == "all" or not structured or tokens.tokens is None:
        return tokens
    mask = decision_mask([str(token) for token in tokens.tokens])
    return tokens.select(mask) if mask.any() else tokens
