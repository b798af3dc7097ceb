"""The reading side: records back out, as a dataset (:func:`export`) or as a summary (:func:`stats`).

Time windows are half-open, ``since <= time < until``, either end optional; naive datetimes mean UTC.
The export schema (one object per record, :meth:`LogRecord.to_export_dict`) is documented in
docs/log-store.md and versioned by its ``schema_version`` field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import sqlalchemy as sa

from cascade.files import atomic_path
from cascade.terms import Decision
from logstore.db import make_engine
from logstore.record import LogRecord
from logstore.schema import log_records, row_to_record

ExportFormat = Literal["jsonl", "parquet"]
_PARQUET_ROW_GROUP = 2000


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _window(since: datetime | None, until: datetime | None) -> list[sa.ColumnElement[bool]]:
    conditions = []
    if (start := _utc(since)) is not None:
        conditions.append(log_records.c.ts >= start)
    if (end := _utc(until)) is not None:
        conditions.append(log_records.c.ts < end)
    return conditions


async def iter_records(
    url: str, since: datetime | None = None, until: datetime | None = None, *, chunk: int = 1000
) -> AsyncIterator[LogRecord]:
    """The records of a window in time order (then request id), streamed ``chunk`` rows at a time."""
    engine = make_engine(url)
    query = (
        sa.select(log_records)
        .where(*_window(since, until))
        .order_by(log_records.c.ts, log_records.c.request_id)
        .execution_options(yield_per=chunk)
    )
    try:
        async with engine.connect() as connection:
            result = await connection.stream(query)
            async for row in result.mappings():
                yield row_to_record(row)
    finally:
        await engine.dispose()


async def export(
    url: str,
    since: datetime | None,
    until: datetime | None,
    path: str | Path,
    format: ExportFormat = "jsonl",
) -> int:
    """Write the window's records to ``path`` (JSON lines, or Parquet with the ``parquet`` extra).

    The file appears complete or not at all (written beside it, then renamed). Returns the record count.
    """
    if format not in ("jsonl", "parquet"):
        raise ValueError(f"format must be 'jsonl' or 'parquet', got {format!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    records = iter_records(url, since, until)
    with atomic_path(target) as partial:
        return await (_write_jsonl if format == "jsonl" else _write_parquet)(records, partial)


async def _write_jsonl(records: AsyncIterator[LogRecord], path: Path) -> int:
    count = 0
    with open(path, "wb") as out:
        async for record in records:
            out.write(orjson.dumps(record.to_export_dict()) + b"\n")
            count += 1
    return count


async def _write_parquet(records: AsyncIterator[LogRecord], path: Path) -> int:
    import logstore.parquet as parquet  # pyarrow is an optional dependency (the `parquet` extra)

    count = 0
    with parquet.Writer(path) as writer:
        batch: list[dict[str, Any]] = []
        async for record in records:
            batch.append(record.to_export_dict())
            if len(batch) >= _PARQUET_ROW_GROUP:
                writer.write(batch)
                count += len(batch)
                batch = []
        writer.write(batch)
        count += len(batch)
    return count


@dataclass(frozen=True, slots=True)
class Stats:
    """A summary of a window of the log.

    ``escalation_rate`` is the share of routed requests (decision accept or escalate; pinned ones are not
    routed) that the teacher answered; None when there were none. ``cost_usd`` sums the known costs.
    """

    since: datetime | None
    until: datetime | None
    requests: int
    by_tier: dict[str, int] = field(default_factory=dict)
    by_decision: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    top_reasons: list[tuple[str, int]] = field(default_factory=list)
    escalation_rate: float | None = None
    shadow: int = 0
    cost_usd: float = 0.0
    student_tokens: int = 0
    teacher_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "requests": self.requests,
            "by_tier": self.by_tier,
            "by_decision": self.by_decision,
            "by_status": self.by_status,
            "top_reasons": [list(pair) for pair in self.top_reasons],
            "escalation_rate": self.escalation_rate,
            "shadow": self.shadow,
            "cost_usd": self.cost_usd,
            "student_tokens": self.student_tokens,
            "teacher_tokens": self.teacher_tokens,
        }


def _sum(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.func.coalesce(sa.func.sum(column), 0)


async def stats(url: str, since: datetime | None = None, until: datetime | None = None) -> Stats:
    """Counts, escalation rate, cost, tokens and top reasons of a window, in one grouped query."""
    c = log_records.c
    query = (
        sa.select(
            c.decision,
            c.reason,
            c.tier,
            c.status,
            sa.func.count().label("n"),
            _sum(sa.cast(c.shadow, sa.Integer)).label("shadow"),
            _sum(c.cost_usd).label("cost"),
            _sum(sa.func.coalesce(c.student_prompt_tokens, 0) + sa.func.coalesce(c.student_completion_tokens, 0)),
            _sum(sa.func.coalesce(c.teacher_prompt_tokens, 0) + sa.func.coalesce(c.teacher_completion_tokens, 0)),
        )
        .where(*_window(since, until))
        .group_by(c.decision, c.reason, c.tier, c.status)
    )
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            groups = (await connection.execute(query)).all()
    finally:
        await engine.dispose()

    def add(counts: dict[str, int], key: str, n: int) -> None:
        counts[key] = counts.get(key, 0) + n

    by_tier: dict[str, int] = {}
    by_decision: dict[str, int] = {}
    by_status: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    requests = shadow = student_tokens = teacher_tokens = 0
    cost = 0.0
    for decision, reason, tier, status, n, shadowed, group_cost, student, teacher in groups:
        requests += n
        add(by_tier, tier or "none", n)
        add(by_decision, decision, n)
        add(by_status, status, n)
        add(by_reason, reason, n)
        shadow += int(shadowed)
        cost += float(group_cost)
        student_tokens += int(student)
        teacher_tokens += int(teacher)
    routed = by_decision.get(Decision.ACCEPT, 0) + by_decision.get(Decision.ESCALATE, 0)
    return Stats(
        since=_utc(since),
        until=_utc(until),
        requests=requests,
        by_tier=by_tier,
        by_decision=by_decision,
        by_status=by_status,
        top_reasons=sorted(by_reason.items(), key=lambda item: (-item[1], item[0])),
        escalation_rate=by_decision.get(Decision.ESCALATE, 0) / routed if routed else None,
        shadow=shadow,
        cost_usd=cost,
        student_tokens=student_tokens,
        teacher_tokens=teacher_tokens,
    )


@dataclass(frozen=True, slots=True)
class TokenTotals:
    """Prompt and completion tokens of each tier over a window (shadow answers included)."""

    student_prompt: int
    student_completion: int
    teacher_prompt: int
    teacher_completion: int


async def token_totals(url: str, since: datetime | None = None, until: datetime | None = None) -> TokenTotals:
    """Token sums per tier: with each tier's price they give the window's cost again, independently of the
    ``cost_usd`` the gateway stored (``cascade log stats --cost``)."""
    c = log_records.c
    query = sa.select(
        _sum(c.student_prompt_tokens),
        _sum(c.student_completion_tokens),
        _sum(c.teacher_prompt_tokens),
        _sum(c.teacher_completion_tokens),
    ).where(*_window(since, until))
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            row = (await connection.execute(query)).one()
    finally:
        await engine.dispose()
    return TokenTotals(*(int(value) for value in row))
