"""The log table (SQLAlchemy Core) and the conversion between :class:`LogRecord` and its row.

One row per request, keyed on ``request_id``, the gateway's own id (inserts are idempotent: a second insert of
the same id is ignored); the client's ``x-request-id`` is kept beside it, never trusted as a key. Text holds no
NUL character (PostgreSQL refuses them): each is stored as U+FFFD. Per-answer token arrays are one
``LargeBinary`` blob each (:meth:`TokenLogprobs.encode`). Changing this table means adding an Alembic
migration under ``logstore/migrations/versions``.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

from logstore.record import LogRecord, TierAnswer, TokenLogprobs


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, in UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

metadata = sa.MetaData()

TIER_COLUMNS = (
    "model",
    "text",
    "tool_calls",
    "invalid",
    "tokens",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "finish_reason",
)


def _tier_columns(tier: str) -> list[sa.Column[Any]]:
    return [
        sa.Column(f"{tier}_model", sa.String(200)),
        sa.Column(f"{tier}_text", sa.Text),
        sa.Column(f"{tier}_tool_calls", Json),
        sa.Column(f"{tier}_invalid", sa.Text),
        sa.Column(f"{tier}_tokens", sa.LargeBinary),
        sa.Column(f"{tier}_prompt_tokens", sa.Integer),
        sa.Column(f"{tier}_completion_tokens", sa.Integer),
        sa.Column(f"{tier}_latency_s", sa.Float),
        sa.Column(f"{tier}_finish_reason", sa.String(32)),
    ]


log_records = sa.Table(
    "log_records",
    metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("ts", UTCDateTime(), nullable=False, index=True),
    sa.Column("caller_key_id", sa.String(128)),
    sa.Column("client_request_id", sa.String(128), index=True),
    sa.Column("messages", Json),
    sa.Column("params", Json, nullable=False),
    sa.Column("redacted", sa.Boolean, nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("tier", sa.String(16)),
    sa.Column("signals", Json, nullable=False),
    sa.Column("shadow", sa.Boolean, nullable=False),
    sa.Column("stream", sa.Boolean, nullable=False),
    *_tier_columns("student"),
    *_tier_columns("teacher"),
    sa.Column("cost_usd", sa.Float),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("http_status", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("degraded", sa.String(64)),
    sa.Column("duration_s", sa.Float),
)


def _without_nul(value: Any) -> Any:
    """``value`` with every NUL in its strings (keys included) replaced by U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


def _has_nul(value: Any) -> bool:
    return value is not None and b"\\u0000" in orjson.dumps(value)


def record_to_row(record: LogRecord) -> dict[str, Any]:
    messages, params = record.messages, record.params
    if _has_nul(messages) or _has_nul(params):
        messages, params = _without_nul(messages), _without_nul(params)
    row: dict[str, Any] = {
        "request_id": record.request_id,
        "ts": record.time.astimezone(UTC),
        "caller_key_id": record.caller_key_id,
        "client_request_id": record.client_request_id,
        "messages": messages,
        "params": params,
        "redacted": record.redacted,
        "decision": record.decision,
        "reason": record.reason,
        "tier": record.tier,
        "signals": {name: float(value) for name, value in record.signals.items()},
        "shadow": record.shadow,
        "stream": record.stream,
        "cost_usd": record.cost_usd,
        "status": record.status,
        "http_status": record.http_status,
        "error": _without_nul(record.error),
        "degraded": record.degraded,
        "duration_s": record.duration_s,
    }
    for name, answer in (("student", record.student), ("teacher", record.teacher)):
        if answer is None:
            row.update({f"{name}_{column}": None for column in TIER_COLUMNS})
            continue
        row[f"{name}_model"] = answer.model
        row[f"{name}_text"] = _without_nul(answer.text)
        row[f"{name}_tool_calls"] = _without_nul(answer.tool_calls)
        row[f"{name}_invalid"] = _without_nul(answer.invalid)
        row[f"{name}_tokens"] = answer.logprobs.encode() if answer.logprobs is not None else None
        row[f"{name}_prompt_tokens"] = answer.prompt_tokens
        row[f"{name}_completion_tokens"] = answer.completion_tokens
        row[f"{name}_latency_s"] = answer.latency_s
        row[f"{name}_finish_reason"] = answer.finish_reason
    return row


def _answer(row: Any, name: str) -> TierAnswer | None:
    model = row[f"{name}_model"]
    if model is None:
        return None
    blob = row[f"{name}_tokens"]
    return TierAnswer(
        model=model,
        text=row[f"{name}_text"],
        tool_calls=row.get(f"{name}_tool_calls"),
        invalid=row.get(f"{name}_invalid"),
        logprobs=TokenLogprobs.decode(bytes(blob)) if blob is not None else None,
        prompt_tokens=row[f"{name}_prompt_tokens"],
        completion_tokens=row[f"{name}_completion_tokens"],
        latency_s=row[f"{name}_latency_s"],
        finish_reason=row[f"{name}_finish_reason"],
    )


def row_to_record(row: Any) -> LogRecord:
    """``row`` is a mapping (a SQLAlchemy ``RowMapping`` or a dict from :func:`record_to_row`)."""
    return LogRecord(
        request_id=row["request_id"],
        time=row["ts"],
        decision=row["decision"],
        reason=row["reason"],
        tier=row["tier"],
        messages=row["messages"],
        params=row["params"],
        caller_key_id=row["caller_key_id"],
        client_request_id=row.get("client_request_id"),
        signals=row["signals"],
        student=_answer(row, "student"),
        teacher=_answer(row, "teacher"),
        cost_usd=row["cost_usd"],
        status=row["status"],
        http_status=row["http_status"],
        error=row["error"],
        degraded=row["degraded"],
        duration_s=row["duration_s"],
        shadow=row["shadow"],
        stream=row["stream"],
        redacted=row["redacted"],
    )


_BLOB_COLUMNS = ("student_tokens", "teacher_tokens")
_ADDED = ("tool_calls", "invalid")  # per-tier columns of migration 0004


def row_to_spool(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON-ready values (for the spool file): blobs as base64, the time as ISO 8601."""
    out = dict(row)
    out["ts"] = row["ts"].isoformat()
    for column in _BLOB_COLUMNS:
        if out[column] is not None:
            out[column] = base64.b64encode(out[column]).decode("ascii")
    return out


def spool_to_row(data: dict[str, Any]) -> dict[str, Any]:
    added = ("client_request_id", *(f"{tier}_{column}" for tier in ("student", "teacher") for column in _ADDED))
    row = {**dict.fromkeys(added), **data}  # spooled before these columns existed
    row["ts"] = datetime.fromisoformat(data["ts"])
    for column in _BLOB_COLUMNS:
        if row[column] is not None:
            row[column] = base64.b64decode(row[column])
    return row
