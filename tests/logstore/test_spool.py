"""The spool file on its own: order, replay offsets across reopenings, torn tails, one owner."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from logstore.schema import record_to_row
from logstore.spool import Spool, open_slot
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
