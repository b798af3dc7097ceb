"""In process: whatever JSON a client sends, parsing ends in a typed request or a 4xx, never anything else."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import BadRequest, GatewayError, UnsupportedMediaType
from gateway.protocol import check_content_type, parse_chat_request

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=40,
)


def chain(levels: int, leaf: Any = 1) -> Any:
    for _ in range(levels):
        leaf = {"a": leaf}
    return leaf


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "cascade", "messages": [{"role": "user", "content": "hi"}], **extra}


@settings(max_examples=300, deadline=None)
@given(extra=st.dictionaries(st.text(max_size=12), JSON, max_size=4), depth=st.integers(0, 300))
def test_any_extra_fields_parse_or_are_refused_as_a_4xx(extra: dict[str, Any], depth: int) -> None:
    data = {**body(), **extra, "deep": chain(depth)}
    try:
        raw = orjson.dumps(data)
    except orjson.JSONEncodeError:
        raw = b'{"model": "cascade", "messages": [{"role": "user", "content": "hi"}], "deep": '
        raw += b'{"a": ' * depth + b"1" + b"}" * depth + b"}"
    try:
        request, forwarded = parse_chat_request(raw, max_messages=16)
    except GatewayError as exc:
        assert 400 <= exc.status < 500
        return
    assert request.model == "cascade"
    orjson.dumps(forwarded)  # what is forwarded and logged serialises again


def test_nesting_beyond_what_serialises_is_a_400() -> None:
    raw = orjson.dumps(body()).removesuffix(b"}") + b', "x": ' + b'{"a": ' * 300 + b"1" + b"}" * 300 + b"}"
    with pytest.raises(BadRequest, match="nested too deeply"):
        parse_chat_request(raw, max_messages=16)
    request, _ = parse_chat_request(orjson.dumps(body(x=chain(200))), max_messages=16)
    assert request.model == "cascade"


@pytest.mark.parametrize(
    "content_type", [None, "", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "text/json"]
)
def test_only_bodies_declared_json_are_read(content_type: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        check_content_type(content_type)


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=utf-8", "application/x+json"])
def test_json_media_types_pass(content_type: str) -> None:
    check_content_type(content_type)
