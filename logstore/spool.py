"""The local spool: rows waiting for the database, in an append-only file that survives crashes.

``spool.jsonl`` holds one JSON row per line (:func:`logstore.schema.row_to_spool`), appended one batch at
a time and fsync'd before the batch counts as stored. ``spool.offset`` holds how many bytes of it are
already in the database; it is replaced atomically (write, fsync, rename) after each replayed chunk, and
both are reset once everything is replayed. A crash between a replayed chunk's commit and the offset
update replays that chunk again, which the database ignores (inserts are keyed on the request id): each
record ends up stored exactly once. A line cut short by a crash mid-append (never acknowledged) is cut
off when the spool is opened again.

One process owns a spool folder at a time (an exclusive ``flock``, released when the process ends).
Writers sharing a ``spool_dir`` (the workers of ``cascade serve --workers N``) each take the first free
slot folder ``slot-0``, ``slot-1``, ... (:func:`open_slot`), so a restarted worker takes over, and replays,
the slot a dead one left; slots no live writer holds and that still hold rows (left by a scale-down, 4 -> 2
workers, or by a pod a rollout deleted when the folder is a shared volume) are adopted and replayed too
(:func:`orphan_slots`). An append that fails midway (a full disk) is cut back before anything else is
written, and a row that cannot be serialised is set aside alone. The methods block on disk I/O: the writer
calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

import orjson

from cascade.files import write_atomic
from logstore.schema import row_to_spool, spool_to_row

log = logging.getLogger("cascade.logstore")


class SpoolInUse(RuntimeError):
    """Another live process holds this spool folder."""


SLOTS = 64


def open_slot(base: Path, slots: int = SLOTS) -> Spool:
    """The first spool slot under ``base`` that no other live process holds."""
    for index in range(slots):
        try:
            return Spool(base / f"slot-{index}")
        except SpoolInUse:
            continue
    raise SpoolInUse(f"all {slots} spool slots under {base} are in use; give these writers another spool_dir")


def orphan_slots(base: Path, own: Spool, slots: int = SLOTS) -> list[Spool]:
    """The other slots under ``base`` that no live process holds and that still hold rows, now held by us."""
    found = []
    for index in range(slots):
        folder = base / f"slot-{index}"
        if folder == own.path.parent or not (folder / "spool.jsonl").exists():
            continue
        try:
            spool = Spool(folder)
        except SpoolInUse:
            continue
        if spool.records:
            found.append(spool)
        else:
            spool.close()
    return found


class Spool:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "spool.jsonl"
        self._offset_path = folder / "spool.offset"
        self._rejected_path = folder / "rejected.jsonl"
        self._file = open(self.path, "a+b")  # noqa: SIM115 (kept open for the writer's lifetime)
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise SpoolInUse(f"log store spool {self.path} is in use by another process") from None
        self._cut_torn_tail()
        self._size = self._file.seek(0, os.SEEK_END)
        self.offset = self._read_offset()
        self.records = self._count_lines(self.offset)

    @property
    def pending_bytes(self) -> int:
        return self._size - self.offset

    def append(self, rows: list[dict[str, Any]]) -> int:
        """Append rows and fsync: once this returns, the rows survive a crash. Returns how many were appended:
        a row that cannot be serialised goes to rejected.jsonl instead, alone. A failed write (a full disk)
        is cut back to the last whole line and raised: nothing of it counts, nothing torn stays."""
        lines = []
        for row in rows:
            try:
                lines.append(orjson.dumps(row_to_spool(row)) + b"\n")
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                log.error(
                    "log store spool: set aside record %s that cannot be serialised: %s", row.get("request_id"), exc
                )
                self.reject([row], f"cannot be serialised: {exc}")
        if not lines:
            return 0
        data = b"".join(lines)
        if self._file.seek(0, os.SEEK_END) != self._size:  # a torn earlier write that could not be cut back
            self._file.truncate(self._size)
        try:
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                self._file.truncate(self._size)
            raise
        self._size += len(data)
        self.records += len(lines)
        return len(lines)

    def read(self, limit: int) -> tuple[list[dict[str, Any]], int, int]:
        """Up to ``limit`` rows from the replay offset, the offset just after them and the lines consumed."""
        rows: list[dict[str, Any]] = []
        end = self.offset
        lines = 0
        with open(self.path, "rb") as reader:
            reader.seek(self.offset)
            while lines < limit:
                line = reader.readline()
                if not line.endswith(b"\n"):
                    break
                end += len(line)
                lines += 1
                try:
                    rows.append(spool_to_row(orjson.loads(line)))
                except (ValueError, KeyError, TypeError):
                    log.error("log store spool: skipped an unreadable line at byte %d of %s", end, self.path)
                    self.reject_lines([line])
        return rows, end, lines

    def commit(self, end: int, lines: int) -> None:
        """Mark everything before byte ``end`` (``lines`` records) as stored in the database."""
        self.records = max(0, self.records - lines)
        if end >= self._size:
            self._file.truncate(0)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._size = 0
            self.records = 0
            end = 0
        elif self.records == 0:
            self.records = self._count_lines(end)
        self._write_offset(end)
        self.offset = end

    def reject(self, rows: list[dict[str, Any]], why: str) -> None:
        """Keep rows the database refused (bad data) aside in rejected.jsonl, for a person to look at."""
        lines = []
        for row in rows:
            try:
                line = orjson.dumps({"why": why, "row": row_to_spool(row)}, default=str)
            except Exception:  # whatever cannot be written as it is is written as its repr
                line = orjson.dumps({"why": why, "row": repr(row)})
            lines.append(line + b"\n")
        self.reject_lines(lines)

    def reject_lines(self, lines: list[bytes]) -> None:
        with open(self._rejected_path, "ab") as rejected:
            rejected.write(b"".join(lines))
            rejected.flush()
            os.fsync(rejected.fileno())

    def close(self) -> None:
        self._file.close()

    def _cut_torn_tail(self) -> None:
        size = self._file.seek(0, os.SEEK_END)
        if size == 0:
            return
        self._file.seek(size - 1)
        if self._file.read(1) == b"\n":
            return
        self._file.seek(0)
        data = self._file.read()
        keep = data.rfind(b"\n") + 1
        log.warning("log store spool: cut %d bytes of a line torn by a crash", size - keep)
        self._file.truncate(keep)
        self._file.flush()
        os.fsync(self._file.fileno())

    def _read_offset(self) -> int:
        try:
            offset = int(self._offset_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        return offset if 0 <= offset <= self._size else 0

    def _write_offset(self, offset: int) -> None:
        write_atomic(self._offset_path, str(offset), durable=True)

    def _count_lines(self, start: int) -> int:
        with open(self.path, "rb") as reader:
            reader.seek(start)
            return sum(chunk.count(b"\n") for chunk in iter(lambda: reader.read(1 << 20), b""))
