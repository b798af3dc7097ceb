"""Server-sent events: relaying an upstream's stream, and replaying a whole answer as a stream."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from gateway.errors import UpstreamError, sse_error_event
from gateway.exchange import TierCall
from gateway.protocol import ClientAsk, trim_logprobs

_DONE = b"data: [DONE]"


class _Relay:
    """Reads an upstream's SSE events, records the answer on a TierCall, and re-emits what the client asked.

    The gateway always asks the upstream for usage (so streamed spend is counted) and sometimes for more
    logprobs than the client wants (for the log); those are removed here before the client sees them.
    """

    def __init__(self, call: TierCall, ask: ClientAsk, started: float, prompt_tokens: int) -> None:
        self.call = call
        self.ask = ask
        self.started = started
        self.prompt_tokens = prompt_tokens  # the estimate used when the usage chunk never comes
        self.texts: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.logprobs: list[dict[str, Any]] = []
        self.deltas = 0
        self.usage_seen = False
        self.done = False

    def event(self, raw: bytes) -> bytes | None:
        """One SSE event (without its blank line) -> the bytes to send on, or None to drop it."""
        if raw.startswith(_DONE):
            self.done = True
            return raw + b"\n\n"
        if not raw.startswith(b"data:"):
            return raw + b"\n\n"  # comments, keep-alives
        try:
            payload = orjson.loads(raw[5:])
        except orjson.JSONDecodeError:
            raise UpstreamError("the model server sent an event that is not JSON", upstream=self.call.tier) from None
        if not isinstance(payload, dict):
            return raw + b"\n\n"
        if "error" in payload:
            self.call.error = str(payload["error"])
        choices = payload.get("choices") or []
        usage = payload.get("usage")
        if usage:
            self.usage_seen = True
            self.call.take_usage(usage)
            if not choices and not self.ask.usage_in_stream:
                return None
        changed = False
        if usage and not self.ask.usage_in_stream:
            payload["usage"] = None
            changed = True
        for choice in choices:
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("tool_calls"):
                self.deltas += 1
            if delta.get("content"):
                if self.call.ttft_s is None:
                    self.call.ttft_s = time.perf_counter() - self.started
                self.texts.append(delta["content"])
            for fragment in delta.get("tool_calls") or ():
                if isinstance(fragment, dict):
                    _add_tool_call_delta(self.tool_calls, fragment)
            if choice.get("finish_reason"):
                self.call.finish_reason = choice["finish_reason"]
            logprobs = choice.get("logprobs")
            if isinstance(logprobs, dict) and logprobs.get("content"):
                self.logprobs.extend(dict(token) for token in logprobs["content"])
                if not self.ask.logprobs or self.ask.top_logprobs < len(
                    logprobs["content"][0].get("top_logprobs") or []
                ):
                    trim_logprobs(choice, self.ask.logprobs, self.ask.top_logprobs)
                    changed = True
        if changed:
            return b"data: " + orjson.dumps(payload) + b"\n\n"
        return raw + b"\n\n"

    def finish(self) -> None:
        self.call.latency_s = time.perf_counter() - self.started
        self.call.text = "".join(self.texts) if self.texts or not self.tool_calls else None
        self.call.tool_calls = [self.tool_calls[i] for i in sorted(self.tool_calls)] or None
        self.call.logprobs = self.logprobs or None
        if not self.usage_seen and (self.deltas or self.logprobs):
            # The client hung up after the last delta, or the upstream died mid-stream: what was relayed was
            # still generated (and billed). One token per logprob entry, else per delta (vLLM sends one each).
            self.call.prompt_tokens = self.prompt_tokens
            self.call.completion_tokens = max(len(self.logprobs), self.deltas)
            self.call.usage_estimated = True


def _add_tool_call_delta(calls: dict[int, dict[str, Any]], fragment: dict[str, Any]) -> None:
    """Fold one streamed ``tool_calls`` delta into the calls being assembled (by ``index``): the id, type and
    name come once, the arguments in fragments."""
    raw = fragment.get("index")
    index: int = raw if isinstance(raw, int) else len(calls)
    call = calls.setdefault(index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    if fragment.get("id"):
        call["id"] = fragment["id"]
    if fragment.get("type"):
        call["type"] = fragment["type"]
    function = fragment.get("function")
    if isinstance(function, dict):
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


def estimate_prompt_tokens(messages: Any) -> int:
    """A prompt's tokens when no tokenizer is at hand: a quarter of its characters (OpenAI's rule of thumb)."""
    return max(1, len(orjson.dumps(messages)) // 4)


async def relay(
    chunks: AsyncIterator[bytes], call: TierCall, ask: ClientAsk, started: float, prompt_tokens: int = 0
) -> AsyncGenerator[bytes, None]:
    """Pass an upstream's SSE stream through as it arrives, event by event.

    A failure midway, or a stream that ends without ``data: [DONE]``, ends the client's stream with an SSE
    error event and ``data: [DONE]``, so the client never mistakes a cut answer for a whole one. Without a
    usage chunk, the tokens relayed are counted (and ``prompt_tokens`` is taken as the prompt's).
    """
    relay = _Relay(call, ask, started, prompt_tokens)
    buffer = b""
    try:
        async for chunk in chunks:
            buffer += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
            if b"\n\n" not in buffer:
                continue
            *events, buffer = buffer.split(b"\n\n")
            out = [sent for raw in events if raw.strip() and (sent := relay.event(raw.strip())) is not None]
            if out:
                yield b"".join(out)
        if buffer.strip() and (sent := relay.event(buffer.strip())) is not None:
            yield sent
        if not relay.done:
            raise UpstreamError("the model server ended the stream before it was complete", upstream=call.tier)
    except UpstreamError as exc:
        call.error = exc.message
        yield sse_error_event(exc)
    finally:
        relay.finish()


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


_ARGUMENT_FRAGMENT = 24  # characters of a tool call's arguments per replayed delta


def _tool_call_deltas(index: int, call: dict[str, Any]) -> list[dict[str, Any]]:
    """One whole tool call as the deltas a streaming server sends: the head, then the arguments in pieces."""
    function = call.get("function") or {}
    head = {key: value for key, value in call.items() if key != "function"}
    head["index"] = index
    head["function"] = {"name": function.get("name", ""), "arguments": ""}
    arguments = function.get("arguments") or ""
    pieces = [arguments[i : i + _ARGUMENT_FRAGMENT] for i in range(0, len(arguments), _ARGUMENT_FRAGMENT)]
    return [head, *({"index": index, "function": {"arguments": piece}} for piece in pieces)]


def replay(body: dict[str, Any], include_usage: bool) -> bytes:
    """A whole chat completion as the SSE stream a streaming upstream would have sent.

    Per choice: a chunk with the role, one with the content (and the logprobs); then, per tool call, one with
    its index, id, type and name and one per fragment of its arguments (as OpenAI streams them, so that clients
    that assemble calls from deltas get them whole); then one with the finish reason; then the usage chunk when
    the client asked for it; then ``data: [DONE]``.
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
        first = {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        events.append(_event({**base, "choices": [first]}))
        delta: dict[str, Any] = {}
        if message.get("content"):
            delta["content"] = message["content"]
        if message.get("reasoning_content"):
            delta["reasoning_content"] = message["reasoning_content"]
        if delta or choice.get("logprobs"):
            content = {"index": index, "delta": delta, "logprobs": choice.get("logprobs"), "finish_reason": None}
            events.append(_event({**base, "choices": [content]}))
        for i, call in enumerate(message.get("tool_calls") or ()):
            for fragment in _tool_call_deltas(i, call):
                chunk = {"index": index, "delta": {"tool_calls": [fragment]}, "logprobs": None, "finish_reason": None}
                events.append(_event({**base, "choices": [chunk]}))
        last = {"index": index, "delta": {}, "logprobs": None, "finish_reason": choice.get("finish_reason") or "stop"}
        events.append(_event({**base, "choices": [last]}))
    if include_usage and body.get("usage") is not None:
        events.append(_event({**base, "choices": [], "usage": body["usage"]}))
    events.append(_DONE + b"\n\n")
    return b"".join(events)
