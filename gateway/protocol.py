"""The OpenAI chat-completions request, as far as the gateway needs to understand it.

Unknown fields are allowed and forwarded untouched (tools, response_format, seed, user, ...): the gateway
validates what it acts on and passes everything else to whichever tier answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import BadRequest, UnsupportedMediaType


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[Any] | None = None


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)


_CLIENT_ID_MAX = 128


def client_request_id(headers: Mapping[str, str]) -> str | None:
    """The client's own id for a request (``x-client-request-id``, as OpenAI's API takes it, or
    ``x-request-id``), kept beside the gateway's: printable ASCII only, at most 128 characters."""
    raw = headers.get("x-client-request-id") or headers.get("x-request-id") or ""
    kept = "".join(char for char in raw[: _CLIENT_ID_MAX * 4] if "!" <= char <= "~")[:_CLIENT_ID_MAX]
    return kept or None


def check_content_type(content_type: str | None) -> None:
    """Serve only bodies declared JSON. A web page can send ``text/plain``, form or untyped bodies cross-site
    without a CORS preflight, so accepting them would let any site a user visits spend a local gateway's teacher
    money (with auth off, the local default); ``application/json`` needs a preflight the gateway never grants."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise UnsupportedMediaType(
            f"content-type must be application/json, got {media_type or 'none'!r} "
            "(curl: add -H 'content-type: application/json')"
        )


# Fields vLLM accepts beyond the OpenAI API that change what a call costs or how the server treats it: a client of
# the gateway may not set them (structured output goes through response_format, which every tier understands).
SERVER_ONLY_FIELDS = frozenset(
    {
        "ignore_eos",
        "min_tokens",
        "echo",
        "prompt_logprobs",
        "chat_template",
        "request_id",
        "priority",
        "guided_json",
        "guided_regex",
        "guided_choice",
        "guided_grammar",
        "guided_decoding_backend",
        "guided_whitespace_pattern",
        "structured_outputs",
        "return_tokens_as_token_ids",
        "kv_transfer_params",
        "vllm_xargs",
    }
)


def parse_chat_request(
    raw: bytes, max_messages: int, max_choices: int = 128
) -> tuple[ChatCompletionRequest, dict[str, Any]]:
    """Validate a request body; return the typed view and the original dict (what is forwarded)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:  # what is forwarded and logged must serialise again: orjson stops at 254 levels of nesting
        orjson.dumps(data)
    except orjson.JSONEncodeError:
        raise BadRequest("request body is nested too deeply (more than 254 levels)") from None
    try:
        request = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise BadRequest(f"{param or 'body'}: {first['msg']}", param=param) from None
    if len(request.messages) > max_messages:
        raise BadRequest(
            f"messages has {len(request.messages)} entries, above the limit of {max_messages}", param="messages"
        )
    if request.n is not None and request.n > max_choices:
        raise BadRequest(f"n is {request.n}, above the limit of {max_choices}", param="n")
    refused = sorted(SERVER_ONLY_FIELDS.intersection(data))
    if refused:
        raise BadRequest(
            f"{refused[0]} is not part of the OpenAI chat API and is not accepted by this gateway "
            "(for structured output send response_format)",
            param=refused[0],
        )
    if request.top_logprobs and not request.logprobs:
        raise BadRequest("top_logprobs requires logprobs to be true", param="top_logprobs")
    return request, data


@dataclass(frozen=True, slots=True)
class ClientAsk:
    """What the client asked to see, which may be less than what the gateway asks of a tier."""

    logprobs: bool
    top_logprobs: int
    usage_in_stream: bool

    @classmethod
    def of(cls, request: ChatCompletionRequest) -> ClientAsk:
        return cls(
            logprobs=bool(request.logprobs),
            top_logprobs=(request.top_logprobs or 0) if request.logprobs else 0,
            usage_in_stream=bool(request.stream_options and request.stream_options.include_usage),
        )


def trim_logprobs(choice: dict[str, Any], wanted: bool, top_k: int) -> None:
    """Make a choice's logprobs what the client asked for: none, or each token's top ``top_k``."""
    if not wanted:
        choice["logprobs"] = None
        return
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return
    for token in logprobs.get("content") or []:
        if isinstance(token, dict) and isinstance(token.get("top_logprobs"), list):
            token["top_logprobs"] = token["top_logprobs"][:top_k]
