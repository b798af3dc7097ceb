"""Log store fixtures: a fresh SQLite file or a fresh PostgreSQL schema per test, removed afterwards.

PostgreSQL is the real server on 127.0.0.1:5432 (database ``test``), or ``CASCADE_TEST_PG_URL``; each test
gets its own schema (the database is shared with other test runs), dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.logstore.helpers import PG_URL


def pg_base_url() -> str:
    return os.environ.get("CASCADE_TEST_PG_URL", PG_URL)


async def _pg_execute(statement: str) -> None:
    url = make_url(pg_base_url())
    connection = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password, database=url.database, timeout=5
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    schema = f"logstore_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_execute("SELECT 1"))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL at {pg_base_url()} is needed by the log store tests: {exc}")
    yield schema
    asyncio.run(_pg_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture
def pg_url(pg_schema: str) -> str:
    return f"{pg_base_url()}?schema={pg_schema}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))
