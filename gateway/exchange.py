"""What happened to one request: which tiers were called, what they answered, what it cost.

An :class:`Exchange` is filled in as the request runs and closed once the client has its whole answer (for a
stream, when the last byte is sent); the metrics and the escalation log are both written from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cascade.config import PriceSettings
from cascade.logprobs import TokenLogprobs
from cascade.terms import Reason, Tier
from gateway.limits import Admission
from router.signals import features
from router.structured import Verdict


@dataclass(slots=True)
class TierCall:
    """One call to one tier."""

    tier: Tier
    model: str
    price: PriceSettings
    latency_s: float = 0.0
    ttft_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    text: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # the OpenAI `message.tool_calls` list
    verdict: Verdict | None = None  # is it the tool call or JSON the request asked for? None: not checked
    logprobs: list[dict[str, Any]] | None = None  # the OpenAI `logprobs.content` list
    finish_reason: str | None = None
    error: str | None = None
    usage_estimated: bool = False  # a stream ended without its usage chunk: the tokens were counted by the gateway
    _tokens: TokenLogprobs | None = field(default=None, repr=False)
    _features: tuple[TokenLogprobs, dict[str, float]] | None = field(default=None, repr=False)

    @property
    def tokens(self) -> TokenLogprobs:
        """The answer's token logprobs, parsed once from ``logprobs`` (re-parsed only if more arrived since, as
        in a stream being relayed): routing, the signals and the log record all read this one object."""
        content = self.logprobs or []
        if self._tokens is None or len(self._tokens) != len(content):
            self._tokens = TokenLogprobs.from_openai(content)
        return self._tokens

    @property
    def features(self) -> dict[str, float]:
        """The features of :attr:`tokens` (:func:`router.signals.features`), computed once: the router reads
        them to decide, the log record keeps them."""
        tokens = self.tokens
        if self._features is None or self._features[0] is not tokens:
            self._features = (tokens, features(tokens))
        return self._features[1]

    @property
    def invalid(self) -> str | None:
        """Why the answer is not the tool call or JSON the request asked for; None when it is, or unchecked."""
        return self.verdict.detail if self.verdict is not None and not self.verdict.valid else None

    @property
    def message(self) -> dict[str, Any]:
        """The answer as an OpenAI assistant message (content and tool calls)."""
        return {"role": "assistant", "content": self.text, "tool_calls": self.tool_calls}

    @property
    def cost_usd(self) -> float:
        return self.price.cost_usd(self.prompt_tokens, self.completion_tokens)

    def take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)

    def take_completion(self, body: dict[str, Any], latency_s: float) -> None:
        self.latency_s = latency_s
        self.take_usage(body.get("usage"))
        choices = body.get("choices") or [{}]
        choice = choices[0]
        message = choice.get("message") or {}
        self.text = message.get("content")
        self.tool_calls = message.get("tool_calls") or None
        self.finish_reason = choice.get("finish_reason")
        logprobs = choice.get("logprobs")
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        # Copies: what the client gets may be trimmed afterwards, what is logged is not.
        self.logprobs = [dict(token) for token in content] if content else None


@dataclass(slots=True)
class Exchange:
    request_id: str
    requested_model: str
    request: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    created: float = field(default_factory=time.time)
    tier: Tier | None = None  # the tier whose answer the client got
    reason: Reason | None = None  # None before routing
    caller_key_id: str | None = None
    client_request_id: str | None = None  # the client's x-request-id, sanitised; the log keeps it beside ours
    admission: Admission | None = None  # set once admitted by the limiter: released when the request ends
    confidence: float | None = None
    degraded: str | None = None  # teacher-unavailable: the student's answer stands in for the teacher's
    signals: dict[str, float] = field(default_factory=dict)
    student: TierCall | None = None
    teacher: TierCall | None = None
    shadow: TierCall | None = None  # the teacher's shadow answer to an accepted request, once it is back
    shadow_pending: bool = False  # a shadow was sent and has not come back (its record says so meanwhile)
    audit_share: float | None = None  # log_store.shadow_share, when the log is kept (router/audit.py)
    outcome: str = "ok"  # ok | error | cancelled
    status: int = 200
    error: str | None = None
    duration_s: float = 0.0
    ttft_s: float | None = None

    @property
    def calls(self) -> list[TierCall]:
        return [call for call in (self.student, self.teacher, self.shadow) if call is not None]

    @property
    def answered_by(self) -> TierCall | None:
        return self.teacher if self.tier == "teacher" else self.student if self.tier == "student" else None

    @property
    def cost_usd(self) -> float:
        """Every call the request paid for: an escalation both tiers, a shadowed answer its shadow too."""
        return sum(call.cost_usd for call in self.calls)

    def teacher_only_cost_usd(self, teacher_price: PriceSettings) -> float:
        """What the request would have cost had it gone straight to the teacher.

        The teacher's own answer is used when there is one; otherwise the answer the client got stands in
        for the teacher's length (the teacher's exact count is unknown for answers it never wrote).
        """
        call = self.teacher or self.answered_by
        if call is None:
            return 0.0
        return teacher_price.cost_usd(call.prompt_tokens, call.completion_tokens)

    def close(self, outcome: str = "ok", status: int = 200, error: str | None = None) -> None:
        self.outcome, self.status, self.error = outcome, status, error
        self.duration_s = time.perf_counter() - self.started
