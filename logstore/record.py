"""What one request through the cascade leaves behind: :class:`LogRecord`.

Per-token arrays are the bulk of a record (an answer of n tokens with k alternatives each carries n + n*k
log-probabilities). They live in :class:`TokenLogprobs` as float32 numpy arrays and are stored as one
msgpack blob per answer (float32 bytes for the numbers, token strings or ids as msgpack lists), never one
row per token.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from cascade.logprobs import TokenLogprobs
from cascade.terms import Decision, Reason, Tier

EXPORT_SCHEMA_VERSION = 4

# Request parameters kept by redaction: knobs, never text (tools, stop strings, response formats and
# `user` can all carry the caller's words).
REDACTION_KEEPS_PARAMS = frozenset(
    {
        "model",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stream",
        "logprobs",
        "top_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "seed",
    }
)


@dataclass(slots=True)
class TierAnswer:
    """One tier's answer to the request: its text and tool calls, token logprobs, token counts and latency.
    ``invalid`` says why it is not the tool call or JSON the request asked for (None: it is, or it was not
    checked)."""

    model: str
    text: str | None = None
    logprobs: TokenLogprobs | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    invalid: str | None = None

    def to_export_dict(self) -> dict[str, Any]:
        """Every field, the logprobs as their four export lists (docs/log-store.md)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "logprobs"}
        empty: dict[str, Any] = {"tokens": None, "logprobs": None, "top_tokens": None, "top_logprobs": None}
        return out | (self.logprobs.to_export_dict() if self.logprobs is not None else empty)


@dataclass(slots=True)
class LogRecord:
    """Everything one request through the cascade leaves behind.

    ``decision`` is what the router did: ``accept`` (the student's answer went out), ``escalate`` (the
    teacher answered: not confident, pre-routed or the student was down) or ``bypass`` (a pinned model; the
    router was not asked). ``reason`` says why; ``tier`` is who answered the client (None when no tier
    did: the student's answer stands in when an escalation's teacher failed, with ``degraded`` saying so).
    ``teacher`` is also set on an accepted request sent to the teacher as a shadow (``shadow``).
    ``audit_share`` is the share the gateway audited at (``log_store.shadow_share``): the request is in the audit
    sample when :func:`router.audit.audit_draw` of its id is below it (None: an older gateway that drew at random).
    ``status`` is the outcome (ok | error | cancelled), ``http_status`` the status code the client got,
    ``duration_s`` the whole request's time in the gateway.
    After :meth:`LogWriter.submit <logstore.writer.LogWriter.submit>` the record belongs to the writer.
    """

    request_id: str
    time: datetime
    decision: Decision
    reason: Reason
    tier: Tier | None
    messages: list[dict[str, Any]] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    caller_key_id: str | None = None
    client_request_id: str | None = None
    signals: dict[str, float] = field(default_factory=dict)
    student: TierAnswer | None = None
    teacher: TierAnswer | None = None
    cost_usd: float | None = None
    status: str = "ok"
    http_status: int | None = None
    error: str | None = None
    degraded: str | None = None
    duration_s: float | None = None
    shadow: bool = False
    audit_share: float | None = None
    stream: bool = False
    redacted: bool = False

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("request_id must not be empty")
        if self.time.tzinfo is None:
            self.time = self.time.replace(tzinfo=UTC)
        self.decision = _member(Decision, "decision", self.decision)
        self.reason = _member(Reason, "reason", self.reason)
        self.tier = None if self.tier is None else _member(Tier, "tier", self.tier)
        if self.reason.decision != self.decision:
            raise ValueError(
                f"decision {self.decision.value!r} contradicts reason {self.reason.value!r} "
                f"(expected {self.reason.decision.value!r})"
            )

    @property
    def approx_bytes(self) -> int:
        """About the memory it holds (the writer bounds its queue by this): texts, messages, token arrays."""
        size = 2048  # the dataclass, its dicts and small fields
        for message in self.messages or ():
            content = message.get("content") if isinstance(message, dict) else None
            size += 64 + (len(content) if isinstance(content, str) else len(str(content or "")))
        for answer in (self.student, self.teacher):
            if answer is not None:
                size += len(answer.text or "") + (answer.logprobs.approx_bytes if answer.logprobs is not None else 0)
        return size

    def to_export_dict(self) -> dict[str, Any]:
        """The dataset form (schema in docs/log-store.md): JSON-ready, every field, the same keys for every record."""
        out: dict[str, Any] = {"schema_version": EXPORT_SCHEMA_VERSION}
        out |= {f.name: getattr(self, f.name) for f in fields(self)}
        out["time"] = self.time.astimezone(UTC).isoformat()
        out["signals"] = {name: float(value) for name, value in self.signals.items()}
        for tier in ("student", "teacher"):
            answer: TierAnswer | None = out[tier]
            out[tier] = answer.to_export_dict() if answer is not None else None
        return out


def redact(record: LogRecord) -> LogRecord:
    """A copy without the caller's words: message contents, answer texts and token strings are dropped.

    Kept: message roles and count, the names of the functions called, numeric request knobs, every signal, the
    logprob numbers, token counts, latencies, cost and outcome (status and error), so calibration and cost
    reports still work on a redacted log.
    """

    def answer(tier: TierAnswer | None) -> TierAnswer | None:
        if tier is None:
            return None
        logprobs = tier.logprobs.redacted() if tier.logprobs is not None else None
        calls = None
        if tier.tool_calls is not None:  # the function names stay, the arguments (the caller's words) go
            calls = [{"type": "function", "function": {"name": _call_name(call)}} for call in tier.tool_calls]
        invalid = "(redacted)" if tier.invalid is not None else None
        return replace(tier, text=None, tool_calls=calls, invalid=invalid, logprobs=logprobs)

    messages = None
    if record.messages is not None:
        messages = [{"role": message.get("role")} for message in record.messages]
    params = {key: value for key, value in record.params.items() if key in REDACTION_KEEPS_PARAMS}
    return replace(
        record,
        messages=messages,
        params=params,
        student=answer(record.student),
        teacher=answer(record.teacher),
        redacted=True,
    )


def _call_name(call: Any) -> str | None:
    function = call.get("function") if isinstance(call, dict) else None
    return function.get("name") if isinstance(function, dict) else None


_Term = TypeVar("_Term", Decision, Reason, Tier)


def _member(kind: type[_Term], name: str, value: str) -> _Term:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{name} must be one of {tuple(m.value for m in kind)}, got {value!r}") from None
