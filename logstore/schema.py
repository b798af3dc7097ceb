"""The log table (SQLAlchemy Core) and the conversion between :class:`LogRecord` and its row.

The table is the one list of the record's stored fields: a column is named as the :class:`LogRecord` field it
holds (``time`` is ``ts``), and each answer's :class:`TierAnswer` fields are the ``student_*`` and
``teacher_*`` columns (its ``logprobs`` the ``*_tokens`` blob). The row, the record read back, the spool's
older rows and the Parquet export's types are derived from it: a new field is the dataclass field, its
column here and a migration.

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

TIERS = ("student", "teacher")


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
    sa.Column("audit_share", sa.Float),
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


# The fields the columns hold, read off the table (as plain str: SQLAlchemy names them with a str subclass):
# the record's plain ones, and each answer's but its logprobs
_COLUMNS = tuple(str(c.name) for c in log_records.columns)
RECORD_FIELDS = tuple(name for name in _COLUMNS if name != "ts" and not name.startswith(TIERS))
ANSWER_FIELDS = tuple(
    field for name in _COLUMNS if (field := name.removeprefix("student_")) != name and field != "tokens"
)
_BLOB_COLUMNS = tuple(f"{tier}_tokens" for tier in TIERS)
JSON_FIELDS = frozenset(
    str(c.name).removeprefix("student_").removeprefix("teacher_")
    for c in log_records.columns
    if isinstance(c.type, sa.JSON)
)


def _stored(name: str, value: Any) -> Any:
    """A field's value as its column holds it: no NUL in text (PostgreSQL refuses them)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if name in JSON_FIELDS and _has_nul(value):  # one fast scan; the walk only when there is one
        return _without_nul(value)
    return value


def record_to_row(record: LogRecord) -> dict[str, Any]:
    row = {name: _stored(name, getattr(record, name)) for name in RECORD_FIELDS}
    row["ts"] = record.time.astimezone(UTC)
    row["signals"] = {name: float(value) for name, value in record.signals.items()}
    for tier in TIERS:
        answer: TierAnswer | None = getattr(record, tier)
        for name in ANSWER_FIELDS:
            row[f"{tier}_{name}"] = None if answer is None else _stored(name, getattr(answer, name))
        logprobs = answer.logprobs if answer is not None else None
        row[f"{tier}_tokens"] = logprobs.encode() if logprobs is not None else None
    return row


def _answer(row: Any, tier: str) -> TierAnswer | None:
    if row[f"{tier}_model"] is None:
        return None
    blob = row[f"{tier}_tokens"]
    values = {name: row.get(f"{tier}_{name}") for name in ANSWER_FIELDS}
    return TierAnswer(**values, logprobs=TokenLogprobs.decode(bytes(blob)) if blob is not None else None)


def row_to_record(row: Any) -> LogRecord:
    """``row`` is a mapping (a SQLAlchemy ``RowMapping`` or a dict from :func:`record_to_row`)."""
    values = {name: row.get(name) for name in RECORD_FIELDS}
    return LogRecord(**values, time=row["ts"], student=_answer(row, "student"), teacher=_answer(row, "teacher"))


def row_to_spool(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON-ready values (for the spool file): blobs as base64, the time as ISO 8601."""
    out = dict(row)
    out["ts"] = row["ts"].isoformat()
    for column in _BLOB_COLUMNS:
        if out[column] is not None:
            out[column] = base64.b64encode(out[column]).decode("ascii")
    return out


def spool_to_row(data: dict[str, Any]) -> dict[str, Any]:
    row = {**dict.fromkeys(_COLUMNS), **data}  # spooled before some columns existed: null
    row["ts"] = datetime.fromisoformat(data["ts"])
    for column in _BLOB_COLUMNS:
        if row[column] is not None:
            row[column] = base64.b64decode(row[column])
    return row
