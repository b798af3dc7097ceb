"""A crash (SIGKILL) loses only records still in memory: everything the writer had stored survives, and
what survives is exactly the oldest records, each once."""

from __future__ import annotations

from pathlib import Path

from tests.logstore.conftest import pg_base_url
from tests.logstore.crash_child import Crash, crash_once
from tests.logstore.helpers import free_port

RATE, FLUSH_S, BATCH = 1000.0, 0.1, 256


def _check(crash: Crash) -> None:
    kept = len(crash.survived)
    print(f"crash: submitted {crash.submitted}, stored before the kill {crash.durable}, survived {kept}")
    assert crash.durable > 0, "nothing was stored before the kill: the experiment says nothing"
    assert sorted(crash.survived) == [f"c{i:07d}" for i in range(kept)], "survivors must be a gap-free prefix"
    assert crash.durable <= kept <= crash.submitted
    # what was lost had not been reported stored: the loss is bounded by the records still in memory
    assert crash.lost <= crash.submitted - crash.durable


def test_crash_loses_only_records_not_yet_written(store_url: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    crash = crash_once(
        store_url, store_url, spool, rate=RATE, flush_interval_s=FLUSH_S, batch_size=BATCH, kill_after_s=1.0
    )
    _check(crash)


def test_crash_while_spooling_loses_only_records_not_yet_fsynced(pg_url: str, tmp_path: Path) -> None:
    unreachable = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test"
    assert pg_url.startswith(pg_base_url())
    crash = crash_once(
        unreachable, pg_url, tmp_path / "spool", rate=RATE, flush_interval_s=FLUSH_S, batch_size=BATCH, kill_after_s=1.0
    )
    assert crash.durable > 0
    _check(crash)
