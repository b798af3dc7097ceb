"""The spool file on its own: order, replay offsets across reopenings, torn tails, one owner."""

from __future__ import annotations

import errno
from datetime import datetime
from pathlib import Path

import pytest

from logstore import spool as spool_module
from logstore.schema import record_to_row
from logstore.spool import Spool, open_slot, orphan_slots
from tests.logstore.helpers import make_record


def _rows(prefix: str, count: int) -> list[dict[str, object]]:
    return [record_to_row(make_record(f"{prefix}{i}")) for i in range(count)]


def test_replay_resumes_at_the_committed_offset_after_a_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(_rows("a", 5))
    spool.append(_rows("b", 5))
    rows, end, lines = spool.read(4)
    assert [row["request_id"] for row in rows] == ["a0", "a1", "a2", "a3"] and lines == 4
    spool.commit(end, lines)
    spool.close()  # as if the process died here

    again = Spool(tmp_path)
    assert again.records == 6 and again.pending_bytes > 0
    rows, end, lines = again.read(100)
    assert [row["request_id"] for row in rows] == ["a4", *(f"b{i}" for i in range(5))]
    assert isinstance(rows[0]["ts"], datetime) and rows[0]["ts"].tzinfo is not None
    again.commit(end, lines)
    assert (again.records, again.pending_bytes) == (0, 0)
    assert again.path.stat().st_size == 0  # fully replayed: the file starts over


def test_a_line_torn_by_a_crash_is_cut_and_later_appends_stay_readable(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(_rows("a", 2))
    spool.close()
    with open(tmp_path / "spool.jsonl", "ab") as file:
        file.write(b'{"request_id": "torn", "ts"')  # the crash hit mid-append: never acknowledged

    again = Spool(tmp_path)
    assert again.records == 2
    again.append(_rows("b", 1))
    rows, _, lines = again.read(100)
    assert [row["request_id"] for row in rows] == ["a0", "a1", "b0"] and lines == 3


def test_a_second_process_cannot_share_a_spool_folder(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    with pytest.raises(RuntimeError, match="in use by another process"):
        Spool(tmp_path)
    first.close()
    Spool(tmp_path).close()


def test_writers_sharing_a_spool_dir_take_free_slots(tmp_path: Path) -> None:
    first, second = open_slot(tmp_path), open_slot(tmp_path)
    assert (first.path.parent.name, second.path.parent.name) == ("slot-0", "slot-1")
    first.close()
    again = open_slot(tmp_path)  # a restarted worker takes over the slot a dead one left
    assert again.path.parent.name == "slot-0"
    again.close()
    second.close()


def test_a_write_that_fails_midway_is_cut_back_and_the_next_stays_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk: the torn bytes must not glue onto the next record, nor let a commit truncate unreplayed rows."""
    spool = Spool(tmp_path)
    spool.append(_rows("a", 2))
    real_fsync = spool_module.os.fsync

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        spool.append(_rows("lost", 3))
    monkeypatch.setattr(spool_module.os, "fsync", real_fsync)
    spool.append(_rows("b", 2))
    assert spool.records == 4
    rows, end, lines = spool.read(2)
    spool.commit(end, lines)  # a commit before the end must keep what follows
    rows, end, lines = spool.read(100)
    assert [row["request_id"] for row in rows] == ["b0", "b1"] and lines == 2
    assert not (tmp_path / "rejected.jsonl").exists()  # no unreadable line anywhere


def test_a_row_that_cannot_be_serialised_is_set_aside_alone(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    rows = _rows("a", 3)
    rows[1]["params"] = {"weird": object()}
    assert spool.append(rows) == 2
    stored, _, _ = spool.read(100)
    assert [row["request_id"] for row in stored] == ["a0", "a2"]
    [rejected] = (tmp_path / "rejected.jsonl").read_text().splitlines()
    assert "cannot be serialised" in rejected and "a1" in rejected


def test_slots_left_by_gone_writers_are_adopted(tmp_path: Path) -> None:
    """4 workers -> 2: the rows spooled in slot-2 and slot-3 must be replayed by someone."""
    held = [open_slot(tmp_path) for _ in range(4)]
    held[2].append(_rows("c", 2))
    held[3].append(_rows("d", 1))
    for spool in held[1:]:
        spool.close()  # workers 1-3 are gone; worker 0 lives on
    mine = open_slot(tmp_path)  # a new worker takes slot-1 (empty)
    assert mine.path.parent.name == "slot-1"
    orphans = orphan_slots(tmp_path, mine)
    assert sorted(spool.path.parent.name for spool in orphans) == ["slot-2", "slot-3"]
    assert orphan_slots(tmp_path, held[0]) == []  # held by the adopter now
    assert sum(spool.records for spool in orphans) == 3
