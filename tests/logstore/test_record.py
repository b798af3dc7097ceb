from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from logstore import LogRecord, TokenLogprobs, redact
from logstore.schema import record_to_row, row_to_record, row_to_spool, spool_to_row
from tests.logstore.helpers import make_record, token_logprobs

EXPORT_KEYS = {
    "schema_version",
    "request_id",
    "time",
    "caller_key_id",
    "client_request_id",
    "messages",
    "params",
    "redacted",
    "decision",
    "reason",
    "tier",
    "signals",
    "shadow",
    "audit_share",
    "stream",
    "student",
    "teacher",
    "cost_usd",
    "status",
    "http_status",
    "error",
    "degraded",
    "duration_s",
}
ANSWER_KEYS = {
    "model",
    "text",
    "tokens",
    "logprobs",
    "top_tokens",
    "top_logprobs",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "finish_reason",
    "tool_calls",
    "invalid",
}


def test_token_arrays_round_trip_through_the_compact_blob() -> None:
    original = token_logprobs(n=200, k=5)
    blob = original.encode()
    decoded = TokenLogprobs.decode(blob)
    assert decoded.tokens == original.tokens
    assert decoded.top_tokens == original.top_tokens
    np.testing.assert_array_equal(decoded.logprobs, original.logprobs)
    np.testing.assert_array_equal(decoded.top_logprobs, original.top_logprobs)
    as_json = orjson.dumps(original.to_export_dict())
    assert len(blob) < len(as_json) / 2, (len(blob), len(as_json))


def test_openai_logprobs_content_becomes_token_arrays_with_ragged_top_k() -> None:
    content = [
        {
            "token": "Par",
            "logprob": -0.1,
            "top_logprobs": [{"token": "Par", "logprob": -0.1}, {"token": "L", "logprob": -2.5}],
        },
        {"token": "is", "logprob": -0.01, "top_logprobs": [{"token": "is", "logprob": -0.01}]},
    ]
    arrays = TokenLogprobs.from_openai(content)
    assert len(arrays) == 2 and arrays.k == 2
    assert arrays.tokens == ["Par", "is"]
    assert math.isnan(float(arrays.top_logprobs[1, 1]))
    exported = TokenLogprobs.decode(arrays.encode()).to_export_dict()
    assert exported["top_tokens"] == [["Par", "L"], ["is"]]
    assert exported["top_logprobs"] == [[pytest.approx(-0.1), pytest.approx(-2.5)], [pytest.approx(-0.01)]]


def test_record_survives_the_row_and_spool_forms() -> None:
    record = make_record("r-1")
    row = spool_to_row(orjson.loads(orjson.dumps(row_to_spool(record_to_row(record)))))
    back = row_to_record(row)
    assert back.to_export_dict() == record.to_export_dict()


def test_export_dict_has_the_documented_keys_and_is_json() -> None:
    exported = make_record("r-2").to_export_dict()
    assert set(exported) == EXPORT_KEYS
    assert set(exported["student"]) == ANSWER_KEYS and set(exported["teacher"]) == ANSWER_KEYS
    assert exported["time"].endswith("+00:00")
    assert orjson.loads(orjson.dumps(exported)) == exported


def test_redaction_drops_the_words_and_keeps_the_signals() -> None:
    record = make_record("r-3")
    redacted = redact(record)
    exported = redacted.to_export_dict()
    assert exported["redacted"] is True
    assert exported["messages"] == [{"role": "system"}, {"role": "user"}]
    assert "user" not in exported["params"] and exported["params"]["temperature"] == 0.0
    assert exported["signals"] == record.signals
    for tier in ("student", "teacher"):
        assert exported[tier]["text"] is None
        assert exported[tier]["tokens"] is None and exported[tier]["top_tokens"] is None
        assert exported[tier]["logprobs"] == record.to_export_dict()[tier]["logprobs"]
    assert "Paris" not in orjson.dumps(exported).decode()
    assert record.messages is not None and record.messages[1]["content"]  # the original is untouched


def tool_call_record(request_id: str) -> LogRecord:
    """An agent's turn: the tools offered, an invalid student call, the teacher's parallel calls."""
    record = make_record(request_id, reason="invalid_tool_call")
    record.params = {**(record.params or {}), "tools": [{"type": "function", "function": {"name": "get_weather"}}]}
    assert record.student is not None and record.teacher is not None
    bad = {"id": "s1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Par'}}
    record.student.tool_calls, record.student.invalid = [bad], "the call to 'get_weather': arguments are not JSON"
    record.teacher.text = None
    record.teacher.tool_calls = [
        {"id": f"t{i}", "type": "function", "function": {"name": "get_weather", "arguments": f'{{"city": "{c}"}}'}}
        for i, c in enumerate(("Paris", "Lyon"))
    ]
    return record


def test_tool_calls_survive_the_row_and_spool_forms_and_redaction_keeps_only_the_names() -> None:
    record = tool_call_record("r-tools")
    back = row_to_record(spool_to_row(orjson.loads(orjson.dumps(row_to_spool(record_to_row(record))))))
    assert back.to_export_dict() == record.to_export_dict()
    assert back.teacher is not None and back.teacher.tool_calls == record.teacher.tool_calls  # type: ignore[union-attr]
    redacted = redact(record).to_export_dict()
    assert [call["function"] for call in redacted["teacher"]["tool_calls"]] == [{"name": "get_weather"}] * 2
    assert redacted["student"]["invalid"] == "(redacted)"
    assert "Paris" not in orjson.dumps(redacted).decode() and "Lyon" not in orjson.dumps(redacted).decode()


def test_record_refuses_an_unknown_reason_or_a_contradicting_decision_and_treats_naive_time_as_utc() -> None:
    with pytest.raises(ValueError, match="reason"):
        make_record("r-4", reason="bored")
    with pytest.raises(ValueError, match="contradicts"):
        make_record("r-4", decision="accept", reason="not_confident")
    record = LogRecord("r-5", datetime(2026, 1, 1, 12), "bypass", "pinned", "student")
    assert record.time.tzinfo is UTC


def test_every_field_of_the_record_has_its_column() -> None:
    """The table is the one field list: a field added to LogRecord or TierAnswer without its column fails here."""
    from dataclasses import fields

    from logstore.record import LogRecord, TierAnswer
    from logstore.schema import ANSWER_FIELDS, RECORD_FIELDS

    assert set(RECORD_FIELDS) | {"time", "student", "teacher"} == {f.name for f in fields(LogRecord)}
    assert set(ANSWER_FIELDS) | {"logprobs"} == {f.name for f in fields(TierAnswer)}
