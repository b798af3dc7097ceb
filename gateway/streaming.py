"""Server-sent events: relaying an upstream's stream, and replaying a whole answer as a stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.errors import UpstreamError, sse_error_event

_DONE = b"data: [DONE]"


async def relay(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Pass an upstream's SSE bytes through as they arrive.

    A failure midway, or a stream that ends without ``data: [DONE]``, ends the client's stream with an SSE
    error event and ``data: [DONE]``, so the client never mistakes a cut answer for a whole one.
    """
    tail = b""
    try:
        async for chunk in chunks:
            tail = (tail + chunk)[-32:]
            yield chunk
    except UpstreamError as exc:
        yield sse_error_event(exc)
        return
    if _DONE not in tail:
        yield sse_error_event(
            UpstreamError("the model server ended the stream before it was complete", upstream="upstream")
        )


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def replay(body: dict[str, Any], include_usage: bool) -> bytes:
    """A whole chat completion as the SSE stream a streaming upstream would have sent.

    Per choice: a chunk with the role, one with the content (and logprobs, tool calls when present), one
    with the finish reason; then the usage chunk when the client asked for it; then ``data: [DONE]``.
    """
    base = {
        "id": body.get("id", ""),
        "object": "chat.completion.chunk",
        "created": body.get("created", 0),
        "model": body.get("model", ""),
    }
    if body.get("system_fingerprint") is not None:
        base["system_fingerprint"] = body["system_fingerprint"]
    events: list[bytes] = []
    for choice in body.get("choices", []):
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        events.append(
            _event(
                {
                    **base,
                    "choices": [
                        {
                            "index": index,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                }
            )
        )
        delta: dict[str, Any] = {}
        if message.get("content"):
            delta["content"] = message["content"]
        if message.get("reasoning_content"):
            delta["reasoning_content"] = message["reasoning_content"]
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        if delta:
            events.append(
                _event(
                    {
                        **base,
                        "choices": [
                            {
                                "index": index,
                                "delta": delta,
                                "logprobs": choice.get("logprobs"),
                                "finish_reason": None,
                            }
                        ],
                    }
                )
            )
        events.append(
            _event(
                {
                    **base,
                    "choices": [
                        {
                            "index": index,
                            "delta": {},
                            "logprobs": None,
                            "finish_reason": choice.get("finish_reason") or "stop",
                        }
                    ],
                }
            )
        )
    if include_usage and body.get("usage") is not None:
        events.append(_event({**base, "choices": [], "usage": body["usage"]}))
    events.append(_DONE + b"\n\n")
    return b"".join(events)
