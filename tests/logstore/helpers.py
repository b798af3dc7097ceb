"""Records to write, ways to read back what was stored, and a TCP proxy that can cut the database off."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from cascade.config import LogStoreSettings
from logstore import LogRecord, TierAnswer, TokenLogprobs, make_engine
from logstore.schema import log_records

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def token_logprobs(n: int = 12, k: int = 5, seed: int = 0) -> TokenLogprobs:
    rng = np.random.default_rng(seed)
    top = -np.abs(rng.normal(size=(n, k))).astype(np.float32)
    top.sort(axis=1)
    top = top[:, ::-1]
    tokens: list[str | int] = [f"tok{i}" for i in range(n)]
    top_tokens: list[list[str | int]] = [[f"alt{i}_{j}" for j in range(k)] for i in range(n)]
    return TokenLogprobs(top[:, 0], top, tokens, top_tokens)


def make_record(
    request_id: str,
    *,
    time: datetime | None = None,
    decision: str = "escalate",
    reason: str = "not_confident",
    tier: str | None = "teacher",
    cost_usd: float | None = 0.002,
    text: str = "The capital of France is Paris.",
) -> LogRecord:
    escalated = tier == "teacher"
    return LogRecord(
        request_id=request_id,
        time=time or datetime.now(UTC),
        decision=decision,  # type: ignore[arg-type]
        reason=reason,  # type: ignore[arg-type]
        tier=tier,  # type: ignore[arg-type]
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        params={"model": "cascade", "temperature": 0.0, "max_tokens": 32, "user": "alice@example.com"},
        caller_key_id="key-1",
        signals={"mean_logprob": 0.41, "min_prob": 0.12},
        student=TierAnswer("student-model", "Paris?", token_logprobs(seed=1), 20, 12, 0.05, "stop"),
        teacher=TierAnswer("teacher-model", text, token_logprobs(seed=2), 20, 12, 0.4, "stop") if escalated else None,
        cost_usd=cost_usd,
        http_status=200,
        duration_s=0.47 if escalated else 0.06,
    )


def settings(url: str, folder: Path, **overrides: object) -> LogStoreSettings:
    values: dict[str, object] = {
        "url": url,
        "spool_dir": str(folder / "spool"),
        "batch_size": 64,
        "flush_interval_s": 0.05,
        "retention_days": None,
    }
    values.update(overrides)
    return LogStoreSettings.model_validate(values)


async def stored_ids(url: str) -> list[str]:
    """Every stored request id, duplicates included (the table's key forbids them; this shows it)."""
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(sa.select(log_records.c.request_id))
            return [row[0] for row in result]
    finally:
        await engine.dispose()


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout_s} s")
        await asyncio.sleep(0.02)


class TcpProxy:
    """A loopback TCP proxy to a server; :meth:`cut` closes the port and every open connection,
    :meth:`stall` holds every byte (a partition without resets: the database looks slow), :meth:`flow`
    lets them through again."""

    def __init__(self, port: int, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.port = port
        self.target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def stall(self) -> None:
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()
