"""The store against SQLite and the real PostgreSQL: migrations, concurrent writes, shutdown, retention,
redaction, export and stats."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from logstore import LogRecord, LogWriter, export, iter_records, make_engine, migrate, stats
from logstore import writer as writer_module
from logstore.db import MIGRATIONS, delete_older_than
from logstore.parquet import SCHEMA
from logstore.record import EXPORT_SCHEMA_VERSION
from logstore.schema import metadata, record_to_row
from logstore.spool import Spool, open_slot
from tests.logstore.helpers import make_record, settings, stored_ids
from tests.logstore.test_record import EXPORT_KEYS, tool_call_record


async def read_all(url: str) -> list[LogRecord]:
    return [record async for record in iter_records(url)]


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


async def _tables_and_version(url: str) -> tuple[set[str], list[str]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
            versions = [row[0] for row in await connection.execute(sa.text("SELECT version_num FROM alembic_version"))]
    finally:
        await engine.dispose()
    return tables, versions


def test_migrations_build_the_schema_from_empty_and_run_again_harmlessly(store_url: str) -> None:
    async def scenario() -> None:
        await asyncio.gather(*(migrate(store_url) for _ in range(3)))  # replicas starting together
        await migrate(store_url)
        tables, versions = await _tables_and_version(store_url)
        assert {"log_records", "alembic_version"} <= tables
        assert versions == [_head()]
        # the tables this metadata declares (other modules of the package add theirs when imported)
        known = {"include_name": lambda name, kind, _parent: kind != "table" or name in metadata.tables}
        engine = make_engine(store_url)
        try:
            async with engine.connect() as connection:
                drift = await connection.run_sync(
                    lambda sync: compare_metadata(MigrationContext.configure(sync, opts=known), metadata)
                )
        finally:
            await engine.dispose()
        assert drift == [], "logstore/schema.py and the migrations disagree"

    asyncio.run(scenario())


def test_concurrent_submitters_and_writers_get_every_record_stored_once(store_url: str, tmp_path: Path) -> None:
    """Two writers (as two gateway replicas would be) on one database, eight submitting tasks each."""
    tasks, per_task = 16, 125

    async def scenario() -> list[LogWriter]:
        writers = [LogWriter(settings(store_url, tmp_path / f"replica{n}", batch_size=50)) for n in range(2)]
        for writer in writers:
            await writer.start()

        async def submitter(t: int) -> None:
            writer = writers[t % 2]
            for i in range(per_task):
                writer.submit(make_record(f"t{t:02d}-{i:04d}"))
                if i % 10 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(*(submitter(t) for t in range(tasks)))
        await asyncio.gather(*(writer.close() for writer in writers))
        return writers

    writers = asyncio.run(scenario())
    ids = asyncio.run(stored_ids(store_url))
    assert len(ids) == tasks * per_task
    assert set(ids) == {f"t{t:02d}-{i:04d}" for t in range(tasks) for i in range(per_task)}
    for writer in writers:
        assert (writer.durable, writer.dropped, writer.rejected, writer.spool_records) == (
            tasks * per_task // 2,
            0,
            0,
            0,
        )

    async def first() -> dict[str, object]:
        async for record in iter_records(store_url):
            if record.request_id == "t03-0007":
                return record.to_export_dict()
        raise AssertionError("record t03-0007 not found")

    stored = asyncio.run(first())
    expected = make_record("t03-0007").to_export_dict()
    assert {k: v for k, v in stored.items() if k != "time"} == {k: v for k, v in expected.items() if k != "time"}


def test_clean_shutdown_drains_the_queue(store_url: str, tmp_path: Path) -> None:
    async def scenario() -> LogWriter:
        writer = LogWriter(settings(store_url, tmp_path, batch_size=500, flush_interval_s=30.0))
        await writer.start()
        for i in range(2000):
            writer.submit(make_record(f"d{i:05d}"))
        assert writer.queue_depth > 0
        await asyncio.wait_for(writer.close(), 20)
        return writer

    writer = asyncio.run(scenario())
    assert writer.queue_depth == 0
    assert sorted(asyncio.run(stored_ids(store_url))) == [f"d{i:05d}" for i in range(2000)]


def test_retention_deletes_only_records_older_than_the_limit(store_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ages = {"old-1": 40, "old-2": 31, "old-3": 30, "new-1": 29, "new-2": 0}

    async def scenario() -> None:
        keep_all = LogWriter(settings(store_url, tmp_path))
        await keep_all.start()
        for request_id, days in ages.items():
            keep_all.submit(make_record(request_id, time=now - timedelta(days=days, hours=1)))
        await keep_all.close()
        assert len(await stored_ids(store_url)) == 5
        engine = make_engine(store_url)
        try:  # deletes go in chunks (here of one row) until nothing older is left
            assert await delete_older_than(engine, now - timedelta(days=35), chunk=1) == 1
        finally:
            await engine.dispose()
        # the writer runs retention itself when it starts, then every retention_every_s
        writer = LogWriter(settings(store_url, tmp_path, retention_days=30), retention_every_s=0.1)
        await writer.start()
        for _ in range(100):
            if len(await stored_ids(store_url)) == 2:
                break
            await asyncio.sleep(0.05)
        assert await writer.purge() == 0
        await writer.close()

    asyncio.run(scenario())
    assert sorted(asyncio.run(stored_ids(store_url))) == ["new-1", "new-2"]


def test_redaction_setting_stores_no_text_but_keeps_signals(store_url: str, tmp_path: Path) -> None:
    async def scenario() -> dict[str, object]:
        writer = LogWriter(settings(store_url, tmp_path, redact_messages=True))
        await writer.start()
        writer.submit(make_record("secret-1", text="The launch code is 0000."))
        await writer.close()
        out = tmp_path / "out.jsonl"
        assert await export(store_url, None, None, out) == 1
        return dict(json.loads(out.read_text()))

    exported = asyncio.run(scenario())
    assert exported["redacted"] is True
    assert exported["messages"] == [{"role": "system"}, {"role": "user"}]
    assert exported["signals"] == {"mean_logprob": 0.41, "min_prob": 0.12}
    teacher = exported["teacher"]
    assert isinstance(teacher, dict) and teacher["text"] is None and len(teacher["logprobs"]) == 12
    assert "launch code" not in json.dumps(exported) and "France" not in json.dumps(exported)


def _mixed_records(now: datetime) -> list[tuple[str, dict[str, object]]]:
    return [
        ("a1", {"decision": "accept", "reason": "confident", "tier": "student", "cost_usd": 0.001}),
        ("a2", {"decision": "accept", "reason": "confident", "tier": "student", "cost_usd": 0.001}),
        ("a3", {"decision": "accept", "reason": "confident", "tier": "student", "cost_usd": None}),
        ("e1", {"decision": "escalate", "reason": "not_confident", "tier": "teacher", "cost_usd": 0.01}),
        ("e2", {"decision": "escalate", "reason": "student_down", "tier": "teacher", "cost_usd": 0.01}),
        ("p1", {"decision": "bypass", "reason": "pinned", "tier": "teacher", "cost_usd": 0.02}),
        (
            "late",
            {"decision": "escalate", "reason": "not_confident", "tier": "teacher", "time": now + timedelta(hours=2)},
        ),
    ]


def test_export_and_stats_cover_exactly_the_window(store_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    since, until = now - timedelta(hours=1), now + timedelta(hours=1)

    async def scenario() -> tuple[int, int]:
        writer = LogWriter(settings(store_url, tmp_path))
        await writer.start()
        for request_id, fields in _mixed_records(now):
            writer.submit(make_record(request_id, **{"time": now, **fields}))  # type: ignore[arg-type]
        await writer.close()
        jsonl = await export(store_url, since, until, tmp_path / "out.jsonl")
        parquet = await export(store_url, since, until, tmp_path / "out.parquet", format="parquet")
        return jsonl, parquet

    jsonl_count, parquet_count = asyncio.run(scenario())
    assert jsonl_count == parquet_count == 6
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(line["request_id"] for line in lines) == ["a1", "a2", "a3", "e1", "e2", "p1"]
    assert all(set(line) == EXPORT_KEYS and line["schema_version"] == EXPORT_SCHEMA_VERSION for line in lines)
    assert not list(tmp_path.glob("*.partial"))

    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.equals(SCHEMA)
    rows = {row["request_id"]: row for row in table.to_pylist()}
    assert json.loads(rows["e1"]["messages"])[1]["content"] == "What is the capital of France?"
    assert rows["e1"]["teacher"]["top_tokens"][0][:2] == ["alt0_0", "alt0_1"]
    assert rows["a1"]["teacher"] is None and dict(rows["a1"]["signals"])["min_prob"] == 0.12

    summary = asyncio.run(stats(store_url, since, until))
    assert summary.requests == 6
    assert summary.by_tier == {"student": 3, "teacher": 3}
    assert summary.escalation_rate == pytest.approx(2 / 5)  # pinned requests are not routed
    assert summary.cost_usd == pytest.approx(0.042)
    assert summary.top_reasons == [("confident", 3), ("not_confident", 1), ("pinned", 1), ("student_down", 1)]
    assert summary.student_tokens == 6 * 32 and summary.teacher_tokens == 3 * 32
    assert asyncio.run(stats(store_url, until, None)).requests == 1


def test_tool_calls_and_the_verdict_are_stored_and_exported(store_url: str, tmp_path: Path) -> None:
    record = tool_call_record("tools-1")

    async def scenario() -> list[LogRecord]:
        writer = LogWriter(settings(store_url, tmp_path))
        await writer.start()
        writer.submit(record)
        await writer.close()
        await export(store_url, None, None, tmp_path / "out.parquet", format="parquet")
        return [stored async for stored in iter_records(store_url)]

    (stored,) = asyncio.run(scenario())
    assert stored.to_export_dict() == record.to_export_dict()
    (row,) = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert json.loads(row["teacher"]["tool_calls"]) == record.teacher.tool_calls  # type: ignore[union-attr]
    assert row["student"]["invalid"] == record.student.invalid  # type: ignore[union-attr]
    assert row["student"]["text"] == "Paris?" and row["teacher"]["text"] is None


def test_submit_never_blocks_or_raises_when_full_or_closed(store_url: str, tmp_path: Path) -> None:
    async def scenario() -> LogWriter:
        writer = LogWriter(settings(store_url, tmp_path, queue_max=10))
        for i in range(15):
            writer.submit(make_record(f"q{i}"))
        assert (writer.queue_depth, writer.dropped) == (10, 5)
        await writer.start()
        await writer.close()
        writer.submit(make_record("after-close"))
        return writer

    writer = asyncio.run(scenario())
    assert (writer.durable, writer.dropped) == (10, 6)
    assert sorted(asyncio.run(stored_ids(store_url))) == sorted(f"q{i}" for i in range(10))


def test_a_record_postgresql_refuses_is_set_aside_and_the_rest_are_stored(pg_url: str, tmp_path: Path) -> None:
    async def scenario() -> LogWriter:
        writer = LogWriter(settings(pg_url, tmp_path))
        await writer.start()
        for i in range(9):
            writer.submit(make_record(f"ok-{i}"))
        writer.submit(replace(make_record("bad"), caller_key_id="k" * 200))  # longer than its varchar(128)
        writer.submit(make_record("nul", text="a NUL \x00 byte PostgreSQL text cannot hold: stored as U+FFFD"))
        await writer.close()
        return writer

    writer = asyncio.run(scenario())
    assert sorted(asyncio.run(stored_ids(pg_url))) == sorted([*(f"ok-{i}" for i in range(9)), "nul"])
    assert (writer.rejected, writer.durable) == (1, 10)
    [nul] = [record for record in asyncio.run(read_all(pg_url)) if record.request_id == "nul"]
    assert (
        nul.teacher is not None
        and nul.teacher.text == "a NUL \ufffd byte PostgreSQL text cannot hold: stored as U+FFFD"
    )
    rejected = (tmp_path / "spool" / "slot-0" / "rejected.jsonl").read_text().splitlines()
    assert [json.loads(line)["row"]["request_id"] for line in rejected] == ["bad"]


def test_a_slow_database_cannot_grow_memory_past_the_byte_bound(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Escalations are large (top-20 logprobs): the queue holds queue_max_bytes at most, the rest is spilled to the
    spool as it comes, and every record still reaches the database."""
    big = make_record("big", text="x" * 200_000)
    assert big.approx_bytes > 200_000
    real_insert = writer_module.insert_rows

    async def slow_insert(connection: Any, rows: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0.5)  # a database that takes half a second per transaction
        await real_insert(connection, rows)

    monkeypatch.setattr(writer_module, "insert_rows", slow_insert)

    async def scenario() -> tuple[LogWriter, int]:
        writer = LogWriter(settings(store_url, tmp_path, queue_max_bytes=1024 * 1024))
        await writer.start()
        peak = 0
        for i in range(40):  # 8 MB at 200 records/s: far more than the database takes
            writer.submit(replace(big, request_id=f"big-{i}"))
            peak = max(peak, writer.queued_bytes)
            await asyncio.sleep(0.005)
        await writer.close()
        return writer, peak

    writer, peak = asyncio.run(scenario())
    assert peak <= 1024 * 1024
    assert writer.spilled > 0 and writer.dropped == 0 and writer.durable == 40
    assert sorted(asyncio.run(stored_ids(store_url))) == sorted(f"big-{i}" for i in range(40))


def test_slots_a_scale_down_left_are_replayed_by_the_next_writer(store_url: str, tmp_path: Path) -> None:
    base = tmp_path / "spool"
    held = [open_slot(base) for _ in range(3)]
    held[2].append([record_to_row(make_record(f"left-{i}")) for i in range(3)])
    for spool in held:
        spool.close()  # 3 workers -> 1: slot-2's rows have no writer any more

    async def scenario() -> None:
        writer = LogWriter(settings(store_url, tmp_path))
        await writer.start()
        writer.submit(make_record("new"))
        await writer.close()

    asyncio.run(scenario())
    assert sorted(asyncio.run(stored_ids(store_url))) == ["left-0", "left-1", "left-2", "new"]
    assert Spool(base / "slot-2").records == 0


def test_a_shadows_answer_completes_its_pending_record_once(store_url: str, tmp_path: Path) -> None:
    accepted = make_record("s1", decision="accept", reason="confident", tier="student")
    pending = replace(accepted, shadow=True)  # written when the answer went out
    completed = replace(pending, teacher=make_record("t").teacher)  # the shadow's answer
    later = replace(completed, teacher=replace(completed.teacher, text="a second answer must not replace it"))  # type: ignore[type-var]

    async def scenario() -> list[LogRecord]:
        writer = LogWriter(settings(store_url, tmp_path))
        await writer.start()
        for record in (pending, completed, later, replace(accepted, status="error")):
            writer.submit(record)
            await asyncio.sleep(0.1)  # separate batches, as in the gateway
        await writer.close()
        return await read_all(store_url)

    [stored] = asyncio.run(scenario())
    assert stored.shadow and stored.status == "ok"
    assert stored.teacher is not None and stored.teacher.text == "The capital of France is Paris."
