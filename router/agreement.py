"""Agreement functions: does the student's answer match the reference (the teacher's answer or gold)?

Each is ``(answer, reference) -> bool``. They label the pairs that :func:`router.calibration.calibrate`
certifies quality on, so they err on the strict side: an answer without a parsable value disagrees.

- ``exact``: equal after normalisation (Unicode NFKC, case, whitespace, surrounding punctuation).
- ``final_number``: the same final number; GSM8K's ``#### N`` marker wins, else the last number in the
  text ("$1,234.50" = 1234.5).
- ``label``: the same label: a choice letter (``A``, ``(b)``, ``Answer: C``) or a short class name.
- :func:`embedding_agreement`: cosine similarity of sentence embeddings >= a threshold.

Structured answers are compared as values, not text (:func:`answers_agree` picks the rule from the request):

- :func:`tool_calls_match`: the same calls, order-insensitive (parallel calls are a multiset), each with the
  same function name and equal arguments after JSON normalisation: parsed, key order ignored, ``1 == 1.0``
  (but ``true != 1``), and a property the schema gives a default filled in where it was left out.
- :func:`json_match`: equal parsed values on the schema's required fields (all of it without a schema).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import orjson

from router.embedding import PromptEmbedder, default_embedder
from router.structured import json_format, normalise_schema, parse_arguments, tool_schemas

Agreement = Callable[[str, str], bool]

_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = " \t\n.,;:!?\"'`()[]{}"
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")
_GSM8K_FINAL = re.compile(r"####\s*(.+)")
_LETTER = re.compile(r"^\(?([A-Za-z])\)?(?:[.):]|\s|$)")
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is)?\s*[:\-]?\s*", re.IGNORECASE)


def normalize(text: str) -> str:
    """NFKC, lower case, single spaces, no surrounding punctuation."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", text).strip(_EDGE_PUNCT)


def exact_match(answer: str, reference: str) -> bool:
    return normalize(answer) == normalize(reference)


def _to_decimal(token: str) -> Decimal | None:
    cleaned = token.replace("$", "").replace(",", "")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def final_number(text: str) -> Decimal | None:
    """The answer's final number: after GSM8K's ``####`` if present, else the last number in the text."""
    marked = _GSM8K_FINAL.search(text)
    scope = marked.group(1) if marked else text
    numbers = _NUMBER.findall(scope)
    if not numbers:
        return None
    return _to_decimal(numbers[0] if marked else numbers[-1])


def final_number_match(answer: str, reference: str) -> bool:
    a, b = final_number(answer), final_number(reference)
    return a is not None and b is not None and a == b


def extract_label(text: str) -> str | None:
    """A choice letter if the answer starts with one (after an optional "Answer:"), else the text."""
    body = _ANSWER_PREFIX.sub("", unicodedata.normalize("NFKC", text).strip())
    letter = _LETTER.match(body)
    if letter:
        return letter.group(1).upper()
    label = normalize(body)
    return label or None


def label_match(answer: str, reference: str) -> bool:
    a, b = extract_label(answer), extract_label(reference)
    return a is not None and a == b


def embedding_agreement(threshold: float = 0.9, embedder: PromptEmbedder | None = None) -> Agreement:
    """Agreement when the cosine similarity of the two texts' embeddings is at least ``threshold``."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")

    def agree(answer: str, reference: str) -> bool:
        model = embedder or default_embedder()
        vectors = model.embed([answer, reference])
        return bool(float(np.dot(vectors[0], vectors[1])) >= threshold)

    return agree


AGREEMENTS: dict[str, Agreement] = {
    "exact": exact_match,
    "final_number": final_number_match,
    "label": label_match,
}


def get_agreement(name: str, embedding_threshold: float = 0.9) -> Agreement:
    """An agreement function by name: one of :data:`AGREEMENTS` or ``embedding``."""
    if name == "embedding":
        return embedding_agreement(embedding_threshold)
    try:
        return AGREEMENTS[name]
    except KeyError:
        raise ValueError(f"unknown agreement {name!r}; expected one of {[*AGREEMENTS, 'embedding']}") from None


def _canonical(value: Any) -> Any:
    """A hashable form in which equal JSON values are equal: key order ignored, numbers by value, and booleans
    apart from numbers (Python's ``True == 1`` would say otherwise)."""
    if isinstance(value, Mapping):
        return ("object", tuple(sorted((str(key), _canonical(item)) for key, item in value.items())))
    if isinstance(value, list | tuple):
        return ("array", tuple(_canonical(item) for item in value))
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return ("number", Decimal(repr(value)).normalize() if math.isfinite(value) else str(value))
    return ("string", value)


def _with_defaults(arguments: dict[str, Any], schema: Any) -> dict[str, Any]:
    properties = normalise_schema(schema).get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping):
        return arguments
    defaults = {
        name: spec["default"]
        for name, spec in properties.items()
        if isinstance(spec, Mapping) and "default" in spec and name not in arguments
    }
    return {**defaults, **arguments}


def _call_key(call: Any, schemas: Mapping[str, Any]) -> Any:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping):
        return None
    name = function.get("name")
    arguments, _ = parse_arguments(function.get("arguments"))
    if arguments is None:
        return None
    return (name, _canonical(_with_defaults(arguments, schemas.get(str(name)))))


def tool_calls_match(
    answer: Sequence[Mapping[str, Any]] | None,
    reference: Sequence[Mapping[str, Any]] | None,
    schemas: Mapping[str, Any] | None = None,
) -> bool:
    """The same tool calls (see the module docstring); a call whose arguments do not parse never matches,
    and two answers without calls match (both answered in text)."""
    keys = [_call_key(call, schemas or {}) for call in answer or ()]
    reference_keys = [_call_key(call, schemas or {}) for call in reference or ()]
    if None in keys or None in reference_keys:
        return False
    return Counter(keys) == Counter(reference_keys)


def json_match(answer: str, reference: str, schema: Mapping[str, Any] | None = None) -> bool:
    """Both parse as JSON and are equal on the schema's top-level required fields (on all of it without
    ``required``); an answer that does not parse never matches."""
    try:
        a, b = orjson.loads(answer), orjson.loads(reference)
    except orjson.JSONDecodeError:
        return False
    required = schema.get("required") if isinstance(schema, Mapping) else None
    if isinstance(required, list) and required and isinstance(a, dict) and isinstance(b, dict):
        return all(key in a and key in b and _canonical(a[key]) == _canonical(b[key]) for key in required)
    return bool(_canonical(a) == _canonical(b))


def answers_agree(
    request: Mapping[str, Any], answer: Mapping[str, Any], reference: Mapping[str, Any], text: Agreement
) -> bool:
    """Does ``answer`` agree with ``reference`` (both OpenAI assistant messages) for this request? Tool calls
    when either side made one, JSON content when the request asks for JSON, else ``text`` on the contents."""
    if answer.get("tool_calls") or reference.get("tool_calls"):
        return tool_calls_match(answer.get("tool_calls"), reference.get("tool_calls"), tool_schemas(request))
    content, reference_content = answer.get("content") or "", reference.get("content") or ""
    response_format = json_format(request)
    if response_format is not None:
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        return json_match(content, reference_content, schema)
    return text(content, reference_content)
