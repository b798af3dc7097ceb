"""The one atomic-write helper: the old content or the new, never half, and nothing left behind on failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.files import atomic_path, write_atomic


def test_write_atomic_replaces_the_file_and_leaves_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    write_atomic(target, '{"new": true}', durable=True)
    write_atomic(tmp_path / "blob", b"\x00\x01")
    assert target.read_text() == '{"new": true}' and (tmp_path / "blob").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob", "state.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_partial(tmp_path: Path) -> None:
    target = tmp_path / "current"
    target.write_text("v0001\n")
    with pytest.raises(RuntimeError), atomic_path(target) as partial:
        partial.write_text("half")
        raise RuntimeError("the disk filled up")
    assert target.read_text() == "v0001\n"
    assert [p.name for p in tmp_path.iterdir()] == ["current"]
