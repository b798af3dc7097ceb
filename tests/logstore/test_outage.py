"""The database goes away (unreachable, cut mid-load, locked): records go to the spool and are replayed,
in order, each exactly once, when it is back."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

from logstore import LogWriter, make_engine, migrate
from logstore.db import insert_rows
from logstore.schema import record_to_row
from tests.logstore.conftest import pg_base_url
from tests.logstore.helpers import TcpProxy, free_port, make_record, settings, stored_ids, wait_until


def _through(proxy_port: int, schema: str) -> str:
    url = make_url(pg_base_url()).set(host="127.0.0.1", port=proxy_port)
    return url.render_as_string(hide_password=False) + f"?schema={schema}"


def test_unreachable_database_spools_then_replays_every_record_once(pg_schema: str, tmp_path: Path) -> None:
    proxy = TcpProxy(free_port(), make_url(pg_base_url()).port or 5432)
    url = _through(proxy.port, pg_schema)
    count = 600

    async def scenario() -> LogWriter:
        writer = LogWriter(settings(url, tmp_path), write_timeout_s=2.0, retry_max_s=0.3)
        await writer.start()  # nothing listens yet: start() must still succeed
        for i in range(count):
            writer.submit(make_record(f"u{i:04d}"))
        await wait_until(lambda: writer.spool_records == count, what="all records spooled")
        assert writer.durable == count and writer.spool_bytes > 0
        await proxy.start()
        await wait_until(lambda: writer.spool_records == 0, what="spool replayed")
        await writer.close()
        await proxy.cut()
        return writer

    writer = asyncio.run(scenario())
    assert writer.replayed == count and writer.spool_bytes == 0
    ids = asyncio.run(stored_ids(f"{pg_base_url()}?schema={pg_schema}"))
    assert sorted(ids) == [f"u{i:04d}" for i in range(count)]


def test_database_cut_mid_load_loses_nothing_and_duplicates_nothing(pg_schema: str, tmp_path: Path) -> None:
    proxy = TcpProxy(free_port(), make_url(pg_base_url()).port or 5432)
    url = _through(proxy.port, pg_schema)
    count = 3000

    async def scenario() -> LogWriter:
        await proxy.start()
        writer = LogWriter(settings(url, tmp_path, batch_size=50), write_timeout_s=1.0, retry_max_s=0.3)
        await writer.start()

        async def load() -> None:
            for i in range(count):
                writer.submit(make_record(f"m{i:05d}"))
                if i % 25 == 0:
                    await asyncio.sleep(0.01)  # about 2000 records/s, spread over 1.5 s

        async def outage() -> None:
            await asyncio.sleep(0.4)
            await proxy.cut()
            await wait_until(lambda: writer.spool_records > 0, what="records spooled during the outage")
            await asyncio.sleep(0.4)
            await proxy.start()

        await asyncio.gather(load(), outage())
        await wait_until(lambda: writer.spool_records == 0 and writer.queue_depth == 0, what="spool replayed")
        await writer.close()
        await proxy.cut()
        return writer

    writer = asyncio.run(scenario())
    assert writer.replayed > 0, "the outage never sent a record to the spool"
    assert (writer.durable, writer.dropped, writer.rejected) == (count, 0, 0)
    ids = asyncio.run(stored_ids(f"{pg_base_url()}?schema={pg_schema}"))
    assert len(ids) == count
    assert sorted(ids) == [f"m{i:05d}" for i in range(count)]


def test_stalled_database_times_out_to_the_spool_and_replays_exactly_once(pg_schema: str, tmp_path: Path) -> None:
    proxy = TcpProxy(free_port(), make_url(pg_base_url()).port or 5432)
    url = _through(proxy.port, pg_schema)

    async def scenario() -> LogWriter:
        await proxy.start()
        writer = LogWriter(settings(url, tmp_path, batch_size=20), write_timeout_s=0.5, retry_max_s=0.3)
        await writer.start()
        for i in range(100):
            writer.submit(make_record(f"s{i:03d}"))
        await wait_until(lambda: writer.durable == 100, what="first records stored")
        proxy.stall()  # answers stop coming: inserts in flight may or may not have committed
        for i in range(100, 300):
            writer.submit(make_record(f"s{i:03d}"))
        await wait_until(lambda: writer.spool_records == 200, what="records spooled while stalled")
        proxy.flow()
        await wait_until(lambda: writer.spool_records == 0, timeout_s=20, what="spool replayed")
        await writer.close()
        await proxy.cut()
        return writer

    writer = asyncio.run(scenario())
    assert writer.replayed == 200
    ids = asyncio.run(stored_ids(f"{pg_base_url()}?schema={pg_schema}"))
    assert len(ids) == 300 and sorted(ids) == [f"s{i:03d}" for i in range(300)]


def test_locked_sqlite_database_spools_then_replays(sqlite_url: str, tmp_path: Path) -> None:
    database = make_url(sqlite_url).database
    assert database is not None

    async def scenario() -> LogWriter:
        writer = LogWriter(settings(sqlite_url, tmp_path), write_timeout_s=0.4, retry_max_s=0.2)
        await writer.start()
        writer.submit(make_record("before"))
        await wait_until(lambda: writer.durable == 1, what="first record stored")
        lock = sqlite3.connect(database, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # another process holding the write lock, as a slow database would
        for i in range(200):
            writer.submit(make_record(f"l{i:03d}"))
        await wait_until(lambda: writer.spool_records == 200, what="records spooled while locked")
        lock.execute("COMMIT")
        lock.close()
        await wait_until(lambda: writer.spool_records == 0, what="spool replayed")
        await writer.close()
        return writer

    writer = asyncio.run(scenario())
    assert writer.replayed == 200
    assert sorted(asyncio.run(stored_ids(sqlite_url))) == ["before", *(f"l{i:03d}" for i in range(200))]


def test_a_transaction_abandoned_mid_write_is_ended_by_the_server(pg_url: str, tmp_path: Path) -> None:
    """A connection cut mid-transaction whose backend never hears of it (a partition) holds its new rows'
    locks; the writer's sessions tell PostgreSQL to end such a transaction after the write timeout, so the
    replay of the same request ids is held up seconds, not until TCP notices."""

    async def scenario() -> None:
        await migrate(pg_url)
        abandoned = make_engine(pg_url, timeout_s=1.0, writer=True)
        connection = await abandoned.connect()
        await connection.begin()
        await insert_rows(connection, [record_to_row(make_record("held"))])  # locked, never committed
        writer = LogWriter(settings(pg_url, tmp_path), write_timeout_s=1.0, retry_max_s=0.5)
        await writer.start()
        try:
            for request_id in ("held", "other"):
                writer.submit(make_record(request_id))
            await wait_until(lambda: writer.spool_records == 0 and writer.durable == 2, what="both records stored")
        finally:
            with contextlib.suppress(Exception):  # the server ended this session (or the test failed)
                await connection.invalidate()
            await abandoned.dispose()
            await writer.close()

    asyncio.run(scenario())
    assert sorted(asyncio.run(stored_ids(pg_url))) == ["held", "other"]
