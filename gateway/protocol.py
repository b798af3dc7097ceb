"""The OpenAI chat-completions request, as far as the gateway needs to understand it.

Unknown fields are allowed and forwarded untouched (tools, response_format, seed, user, ...): the gateway
validates what it acts on and passes everything else to whichever tier answers.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import BadRequest


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


# JSON bodies; curl's default for -d (form-urlencoded) is let through because the body is parsed as JSON anyway.
_ACCEPTED_CONTENT_TYPES = ("application/json", "application/x-www-form-urlencoded", "text/plain")


def check_content_type(content_type: str | None) -> None:
    if content_type is None:
        return
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type and media_type not in _ACCEPTED_CONTENT_TYPES and not media_type.endswith("+json"):
        raise BadRequest(f"content-type must be application/json, got {media_type!r}")


def parse_chat_request(raw: bytes, max_messages: int) -> tuple[ChatCompletionRequest, dict[str, Any]]:
    """Validate a request body; return the typed view and the original dict (what is forwarded)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
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
    if request.top_logprobs and not request.logprobs:
        raise BadRequest("top_logprobs requires logprobs to be true", param="top_logprobs")
    return request, data


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
