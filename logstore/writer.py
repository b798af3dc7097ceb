"""The batch writer: records in, rows in the database out, never in the caller's way.

:meth:`LogWriter.submit` puts a record on an in-process asyncio queue and returns at once; it never blocks
and never raises. One task drains the queue in batches (``batch_size`` records, or whatever arrived within
``flush_interval_s`` of a batch's first record) and inserts each batch in one transaction. When the
database is unreachable, refuses, or does not answer within ``write_timeout_s``, the batch is appended to
the local spool (fsync'd) instead, and every later batch follows it there until the spool has been
replayed, in order, into the database; retries back off from 0.5 s to ``retry_max_s``.

What a crash (SIGKILL, power loss) can lose: only records not yet stored, i.e. those still in memory.
A record is stored (counted in :attr:`LogWriter.durable`) once its batch is committed or fsync'd to the
spool. While the writer keeps up, that is at most the records submitted during the last
``flush_interval_s`` plus those submitted while the current batch is being written; a writer that has
fallen behind (a slow database) holds at most ``queue_max`` records and ``queue_max_bytes`` bytes in its
queue: beyond either, ``submit`` spills the record straight to the spool (off the event loop), and later
batches follow it there, so memory stays bounded and nothing is dropped while the disk keeps up. Only when
the spills themselves fall ``queue_max_bytes`` behind (a disk slower than the traffic) is a record dropped,
counted in :attr:`LogWriter.dropped` (blocking the request path instead would stall serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cascade.config import LogStoreSettings
from logstore.db import delete_older_than, insert_rows, make_engine, migrate
from logstore.record import LogRecord, redact
from logstore.schema import record_to_row
from logstore.spool import Spool, open_slot, orphan_slots

log = logging.getLogger("cascade.logstore")


def _brief(exc: BaseException) -> str:
    """The first line of an error (SQLAlchemy appends the statement), shortened."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def _is_bad_data(exc: BaseException) -> bool:
    """True when the rows themselves were refused (retrying cannot help); False when the database is away."""
    if isinstance(exc, sa.exc.DataError | sa.exc.IntegrityError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        # SQLSTATE class 22 (data exception) or 23 (integrity constraint violation), e.g. a NUL in text
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(sqlstate, str) and sqlstate[:2] in ("22", "23")
    return isinstance(exc, sa.exc.StatementError)  # the values could not even be bound


class LogWriter:
    """Writes :class:`LogRecord` s to the log store in batches, spooling to disk while the database is away.

    Use: ``await writer.start()`` once, ``writer.submit(record)`` per request, ``await writer.close()`` at
    shutdown (it drains the queue). :attr:`queue_depth`, :attr:`spool_bytes`, :attr:`spool_records`,
    :attr:`submitted`, :attr:`durable` (stored: committed or spooled), :attr:`dropped`, :attr:`rejected` and
    :attr:`replayed` are plain numbers for metrics.
    """

    def __init__(
        self,
        settings: LogStoreSettings,
        *,
        write_timeout_s: float = 5.0,
        retry_max_s: float = 30.0,
        retention_every_s: float = 3600.0,
    ) -> None:
        self.settings = settings
        self.write_timeout_s = write_timeout_s
        self.retry_max_s = retry_max_s
        self.retention_every_s = retention_every_s
        self._queue: asyncio.Queue[tuple[LogRecord, int]] = asyncio.Queue(maxsize=settings.queue_max)
        self._queued_bytes = 0
        self._spilling_bytes = 0
        self._spills: set[asyncio.Task[None]] = set()
        self._engine: AsyncEngine | None = None
        self._spool: Spool | None = None
        self._orphans: list[Spool] = []  # slots a gone writer left with rows in them: replayed after ours
        self._spool_lock = asyncio.Lock()  # spills append while the batch task appends, reads and commits
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._migrated = False
        self._retry_at = 0.0
        self._backoff_s = 0.5
        self._retention: asyncio.Task[None] | None = None
        self.submitted = 0
        self.durable = 0
        self.dropped = 0
        self.rejected = 0
        self.replayed = 0
        self.spilled = 0

    # -- the caller's side -------------------------------------------------------------------------------

    def submit(self, record: LogRecord) -> None:
        """Queue a record for writing; never blocks, never raises (a full queue spills it to the spool)."""
        try:
            if self._closed:
                raise RuntimeError("the log writer is closed")
            size = record.approx_bytes
            self.submitted += 1
            if self._queue.full() or (self._queued_bytes and self._queued_bytes + size > self.settings.queue_max_bytes):
                self._spill(record, size)
                return
            self._queue.put_nowait((record, size))
            self._queued_bytes += size
        except Exception as exc:
            self._drop(1, exc)

    def _drop(self, count: int, why: object) -> None:
        self.dropped += count
        if self.dropped == count or self.dropped % 1000 < count:
            log.error("log store: dropped %d record(s) so far (%s)", self.dropped, why or type(why).__name__)

    def _spill(self, record: LogRecord, size: int) -> None:
        """The queue is full: write this record to the spool now, off the event loop (bounded too)."""
        if self._spool is None or self._spilling_bytes + size > self.settings.queue_max_bytes:
            self._drop(1, "the queue is full and the spool is that far behind too")
            return
        self._spilling_bytes += size

        async def spill() -> None:
            try:
                await self._to_spool(self._rows([record]))
                self.spilled += 1
            finally:
                self._spilling_bytes -= size

        task = asyncio.get_running_loop().create_task(spill())
        self._spills.add(task)
        task.add_done_callback(self._spills.discard)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def spool_bytes(self) -> int:
        return sum(spool.pending_bytes for spool in self._spools)

    @property
    def spool_records(self) -> int:
        return sum(spool.records for spool in self._spools)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def _spools(self) -> list[Spool]:
        return ([self._spool] if self._spool is not None else []) + self._orphans

    # -- life cycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool, migrate the database (if reachable; retried later if not), start the batch task."""
        self._spool = await asyncio.to_thread(open_slot, Path(self.settings.spool_dir))
        self._orphans = await asyncio.to_thread(orphan_slots, Path(self.settings.spool_dir), self._spool)
        if self.spool_records:
            log.warning(
                "log store: %d spooled record(s) to replay (%d slot(s) adopted)", self.spool_records, len(self._orphans)
            )
        self._engine = make_engine(self.settings.url, timeout_s=self.write_timeout_s, writer=True)
        await self._ensure_migrated()
        self._task = asyncio.create_task(self._run(), name="logstore-writer")
        if self.settings.retention_days is not None:
            self._retention = asyncio.create_task(self._retain(), name="logstore-retention")

    async def close(self) -> None:
        """Write out everything queued (to the database, or to the spool if it is away), then stop."""
        self._closing = True
        if self._retention is not None:
            self._retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention
        for _ in range(2):  # spills still in flight go in before the last replay, and any made during it after
            if self._spills:
                await asyncio.wait(set(self._spills))
            if self._task is not None:
                await self._task
        self._closed = True
        if self._engine is not None:
            await self._engine.dispose()
        for spool in self._spools:
            spool.close()

    async def purge(self, now: datetime | None = None) -> int:
        """Delete records older than ``retention_days``; return how many (0 when retention is off)."""
        if self.settings.retention_days is None or self._engine is None:
            return 0
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.settings.retention_days)
        deleted = await delete_older_than(self._engine, cutoff, timeout_s=self.write_timeout_s)
        if deleted:
            log.info("log store: retention deleted %d record(s) older than %s", deleted, cutoff.isoformat())
        return deleted

    # -- the batch task --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if batch:
                await self._flush(batch)
            if self.spool_records and time.monotonic() >= self._retry_at:
                try:
                    await self._replay()
                except Exception as exc:  # e.g. the spool's disk: keep writing, try again later
                    log.exception("log store: spool replay failed")
                    self._database_away(exc)
            if self._closing and self._queue.empty():
                return

    async def _retain(self) -> None:
        """Retention beside the batch task (its deletes go in small chunks, so writes are not held up)."""
        while True:
            try:
                await self.purge()
            except Exception as exc:
                log.warning("log store: retention skipped (%s)", _brief(exc))
            await asyncio.sleep(self.retention_every_s)

    async def _collect(self) -> list[LogRecord]:
        """A batch: up to batch_size records, waiting at most flush_interval_s after the first one."""
        interval = self.settings.flush_interval_s
        queue = self._queue
        try:
            first = queue.get_nowait() if not queue.empty() else await asyncio.wait_for(queue.get(), interval)
        except TimeoutError:
            return []
        batch = [first]
        deadline = time.monotonic() + interval
        while len(batch) < self.settings.batch_size:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - time.monotonic()
            if self._closing or remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        self._queued_bytes -= sum(size for _, size in batch)
        return [record for record, _ in batch]

    def _rows(self, batch: list[LogRecord]) -> list[dict[str, Any]]:
        rows = []
        for record in batch:
            try:
                rows.append(record_to_row(redact(record) if self.settings.redact_messages else record))
            except Exception:
                self.rejected += 1
                log.exception("log store: rejected a record that cannot be stored")
        return rows

    async def _flush(self, batch: list[LogRecord]) -> None:
        rows = self._rows(batch)
        if self.spool_records or time.monotonic() < self._retry_at:
            await self._to_spool(rows)  # behind the backlog, to keep the order
            return
        try:
            stored = await self._insert(rows)
        except Exception as exc:
            self._database_away(exc)
            await self._to_spool(rows)
            return
        self.durable += stored

    async def _to_spool(self, rows: list[dict[str, Any]]) -> None:
        assert self._spool is not None
        try:
            async with self._spool_lock:
                appended = await asyncio.to_thread(self._spool.append, rows)
        except Exception as exc:
            log.exception("log store: could not spool %d record(s); they are lost", len(rows))
            self._drop(len(rows), exc)
            return
        self.durable += appended
        self.rejected += len(rows) - appended

    async def _replay(self) -> None:
        """Move spooled rows into the database in order (our slot's, then adopted slots'), one chunk per
        transaction, for one flush interval."""
        until = time.monotonic() + self.settings.flush_interval_s
        for spool in list(self._spools):
            while spool.records and (time.monotonic() < until or self._closing):
                async with self._spool_lock:
                    rows, end, lines = await asyncio.to_thread(spool.read, self.settings.batch_size)
                try:
                    await self._insert(rows)
                except Exception as exc:
                    self._database_away(exc)
                    return
                async with self._spool_lock:
                    await asyncio.to_thread(spool.commit, end, lines)
                self.replayed += len(rows)
            if spool.records:
                return
            if spool is not self._spool:  # an adopted slot is empty: let it go
                self._orphans.remove(spool)
                await asyncio.to_thread(spool.close)
        log.warning("log store: spool replayed; writing to the database again")

    async def _insert(self, rows: list[dict[str, Any]]) -> int:
        """Insert rows in one transaction; rows the database refuses as bad data go one by one to rejected.

        Returns how many rows were stored (all but the rejected ones).
        """
        if not rows:
            return 0
        assert self._engine is not None
        async with asyncio.timeout(self.write_timeout_s):
            if not self._migrated:
                await self._ensure_migrated(raise_errors=True)
            try:
                async with self._engine.begin() as connection:
                    await insert_rows(connection, rows)
                self._backoff_s = 0.5
                return len(rows)
            except Exception as exc:
                if not _is_bad_data(exc):
                    raise
        stored = len(rows)
        for row in rows:  # one bad row must not keep the others out
            async with asyncio.timeout(self.write_timeout_s):
                try:
                    async with self._engine.begin() as connection:
                        await insert_rows(connection, [row])
                except Exception as exc:
                    if not _is_bad_data(exc):
                        raise
                    self.rejected += 1
                    stored -= 1
                    log.error("log store: the database refused record %s: %s", row["request_id"], _brief(exc))
                    assert self._spool is not None
                    await asyncio.to_thread(self._spool.reject, [row], _brief(exc))
        return stored

    async def _ensure_migrated(self, raise_errors: bool = False) -> None:
        try:
            async with asyncio.timeout(self.write_timeout_s * 4):
                await migrate(self.settings.url, timeout_s=self.write_timeout_s)
        except Exception as exc:
            if raise_errors:
                raise
            self._database_away(exc)
            return
        self._migrated = True

    def _database_away(self, exc: BaseException) -> None:
        if time.monotonic() >= self._retry_at:
            log.warning(
                "log store: database unavailable (%s); spooling, next try in %.1f s", _brief(exc), self._backoff_s
            )
        self._retry_at = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self.retry_max_s)
