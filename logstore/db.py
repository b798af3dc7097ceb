"""Engines, migrations and the few statements the store runs.

URLs are SQLAlchemy async URLs:

- ``sqlite+aiosqlite:///var/cascade.db``: a file relative to the working directory (its folder is
  created); opened in WAL mode with ``synchronous=FULL``, so a committed batch survives a crash of the
  process and of the machine.
- ``postgresql+asyncpg://USER@HOST:PORT/DB``: optionally ``?schema=NAME`` to keep the tables in their own
  schema (created by :func:`migrate`); this parameter is the store's, not the driver's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import re
import weakref
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from cascade.config import safe_url
from logstore.schema import log_records

MIGRATIONS = Path(__file__).parent / "migrations"
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# pg_advisory_xact_lock key held while migrating, so that replicas starting together migrate one by one.
_MIGRATION_LOCK = 0x6C6F6773746F7265  # "logstore"


def _split_schema(url: URL) -> tuple[URL, str | None]:
    schema = url.query.get("schema")
    if schema is None:
        return url, None
    if isinstance(schema, tuple) or not _SCHEMA_NAME.match(schema):
        raise ValueError(f"schema={schema!r} in the log store URL is not a plain SQL identifier")
    return url.difference_update_query(["schema"]), schema


def schema_of(url: str) -> str | None:
    """The ``?schema=`` of a PostgreSQL log store URL, if any."""
    return _split_schema(make_url(url))[1]


def make_engine(url: str, *, timeout_s: float = 10.0, writer: bool = False) -> AsyncEngine:
    """An async engine for a log store URL; ``timeout_s`` bounds connecting and each statement.

    ``writer``: the engine makes only short transactions, so on PostgreSQL the server itself also ends a
    statement that runs longer than ``timeout_s`` and a transaction left idle that long. A connection cut in
    the middle of a transaction (a network partition, a process killed) otherwise leaves its backend holding
    the new rows' locks until TCP notices, hours later, and every retry of the same request ids waits on them.
    """
    parsed, schema = _split_schema(make_url(url))
    if parsed.get_backend_name() == "sqlite":
        if schema is not None:
            raise ValueError("schema= is for PostgreSQL URLs only")
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed, connect_args={"timeout": timeout_s}, hide_parameters=True)
        busy_ms = int(timeout_s * 500)  # a locked database answers "locked" before the caller's timeout

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        connect_args: dict[str, Any] = {"timeout": timeout_s, "command_timeout": timeout_s}
        settings: dict[str, str] = {}
        if schema is not None:
            settings["search_path"] = schema
        if writer:
            server_ms = str(max(1, round(timeout_s * 1000)))
            settings |= {"statement_timeout": server_ms, "idle_in_transaction_session_timeout": server_ms}
        if settings:
            connect_args["server_settings"] = settings
        return create_async_engine(parsed, connect_args=connect_args, pool_pre_ping=True, hide_parameters=True)
    raise ValueError(f"log store URL must be sqlite+aiosqlite:// or postgresql+asyncpg://, got {safe_url(url)!r}")


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


_in_process_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def _migration_lock(url: URL) -> AsyncIterator[None]:
    """One migration at a time: Alembic's context is process-global, and for SQLite a file lock beside the
    database keeps other processes out too (PostgreSQL uses an advisory lock, taken in :func:`migrate`)."""
    lock = _in_process_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock:
        if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
            yield
            return
        with open(f"{url.database}.migrate-lock", "a") as lock_file:
            while True:
                try:
                    fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


async def migrate(url: str, *, timeout_s: float = 30.0) -> None:
    """Bring the database at ``url`` to the newest schema (creating it from empty); safe to run again, and
    from several processes at once."""
    parsed, schema = _split_schema(make_url(url))
    engine = make_engine(url, timeout_s=timeout_s)
    try:
        async with _migration_lock(parsed), engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
                if schema is not None:
                    await connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await connection.run_sync(_upgrade)
    finally:
        await engine.dispose()


def _insert_ignoring_duplicates(dialect_name: str) -> Any:
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    return insert(log_records).on_conflict_do_nothing(index_elements=["request_id"])


def _insert_completing_shadows(dialect_name: str) -> Any:
    """A shadow's answer completes the record written while it ran (whose teacher is still empty), once."""
    statement = (postgresql.insert if dialect_name == "postgresql" else sqlite.insert)(log_records)
    columns = {c.name: statement.excluded[c.name] for c in log_records.columns if c.name != "request_id"}
    return statement.on_conflict_do_update(
        index_elements=["request_id"], set_=columns, where=log_records.c.teacher_model.is_(None)
    )


def completes_a_shadow(row: dict[str, Any]) -> bool:
    return bool(row["shadow"]) and row["teacher_model"] is not None


async def insert_rows(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Insert rows (from :func:`logstore.schema.record_to_row`); a request id already stored is skipped, except
    that a shadow's answer completes its pending record (a record is written before its shadow call returns,
    so that a crash cannot lose it)."""
    plain = [row for row in rows if not completes_a_shadow(row)]
    shadows = [row for row in rows if completes_a_shadow(row)]
    dialect = connection.dialect.name
    if plain:
        await connection.execute(_insert_ignoring_duplicates(dialect), plain)
    if shadows:
        await connection.execute(_insert_completing_shadows(dialect), shadows)


async def delete_older_than(
    engine: AsyncEngine, cutoff: datetime, *, chunk: int = 5000, timeout_s: float = 10.0
) -> int:
    """Delete the records logged before ``cutoff``, ``chunk`` rows per transaction; return how many went."""
    table = log_records
    oldest = sa.select(table.c.request_id).where(table.c.ts < cutoff).limit(chunk).scalar_subquery()
    statement = sa.delete(table).where(table.c.request_id.in_(oldest))
    deleted = 0
    while True:
        async with asyncio.timeout(timeout_s), engine.begin() as connection:
            result = await connection.execute(statement)
        deleted += int(result.rowcount)
        if result.rowcount < chunk:
            return deleted
