"""The stream relay and replay, in process: a replayed answer relayed back is the same answer, whatever the
chunking; what the client did not ask for is removed; a cut stream ends with an error event, never silently."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cascade.config import PriceSettings
from cascade.terms import Tier
from gateway.exchange import TierCall
from gateway.protocol import ClientAsk
from gateway.streaming import relay, replay

CALLS = [
    {"id": "call-1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris, France"}'}},
    {"id": "call-2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}},
]
LOGPROBS = {
    "content": [
        {"token": "Par", "logprob": math.log(0.9), "top_logprobs": [{"token": "Par", "logprob": math.log(0.9)}] * 3},
        {"token": "is", "logprob": math.log(0.6), "top_logprobs": [{"token": "is", "logprob": math.log(0.6)}] * 3},
    ]
}


def body(**message: Any) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "logprobs": LOGPROBS, "finish_reason": "stop"}
    return {
        "id": "c-1",
        "created": 1,
        "model": "m",
        "choices": [choice],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2},
    }


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def relayed(data: bytes, ask: ClientAsk, size: int = 7) -> tuple[TierCall, list[dict[str, Any]], bytes]:
    call = TierCall(Tier.STUDENT, "m", PriceSettings())

    async def run() -> bytes:
        return b"".join([part async for part in relay(_chunks(data, size), call, ask, 0.0)])

    sent = asyncio.run(run())
    events = [json.loads(line[6:]) for line in sent.decode().split("\n\n") if line.startswith("data: {")]
    return call, events, sent


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_a_replayed_answer_relayed_back_is_the_same_answer_in_any_chunking(size: int) -> None:
    ask = ClientAsk(logprobs=True, top_logprobs=3, usage_in_stream=True)
    call, events, sent = relayed(replay(body(content="Paris", tool_calls=CALLS), include_usage=True), ask, size)
    assert call.text == "Paris" and call.finish_reason == "stop"
    assert call.tool_calls == CALLS  # assembled from the head and argument fragments, in order
    assert call.logprobs == LOGPROBS["content"]
    assert (call.prompt_tokens, call.completion_tokens, call.usage_estimated) == (7, 2, False)
    assert sent.endswith(b"data: [DONE]\n\n") and events[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 2}


def test_what_the_client_did_not_ask_for_is_removed_but_still_recorded() -> None:
    ask = ClientAsk(logprobs=True, top_logprobs=1, usage_in_stream=False)
    call, events, _ = relayed(replay(body(content="Paris"), include_usage=True), ask)
    sent_logprobs = [e["choices"][0]["logprobs"] for e in events if e["choices"] and e["choices"][0]["logprobs"]]
    assert [len(token["top_logprobs"]) for token in sent_logprobs[0]["content"]] == [1, 1]
    assert all(not e.get("usage") for e in events)  # the gateway asked for usage, the client did not
    assert call.completion_tokens == 2 and len(call.tokens) == 2 and call.tokens.k == 3  # the log keeps all


def test_crlf_events_are_read_like_lf_ones() -> None:
    data = replay(body(content="Paris"), include_usage=True).replace(b"\n", b"\r\n")
    call, _, _ = relayed(data, ClientAsk(logprobs=False, top_logprobs=0, usage_in_stream=False))
    assert call.text == "Paris" and call.completion_tokens == 2


def test_a_stream_cut_before_done_ends_with_an_error_event_and_its_tokens_counted() -> None:
    whole = replay(body(content="Paris"), include_usage=False)
    cut = whole[: whole.index(b'"finish_reason":"stop"')].rsplit(b"\n\n", 1)[0] + b"\n\n"
    call, events, sent = relayed(cut, ClientAsk(logprobs=False, top_logprobs=0, usage_in_stream=False))
    assert "error" in events[-1] and sent.endswith(b"data: [DONE]\n\n")
    assert call.error is not None and "before it was complete" in call.error
    assert call.usage_estimated and call.completion_tokens == 2  # one per logprob entry relayed


def test_an_event_that_is_not_json_is_an_upstream_error() -> None:
    call, events, _ = relayed(b"data: {not json\n\n", ClientAsk(logprobs=False, top_logprobs=0, usage_in_stream=False))
    assert "error" in events[-1] and call.error == "the model server sent an event that is not JSON"
