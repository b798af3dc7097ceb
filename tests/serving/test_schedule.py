"""`cascade up`'s re-distillation schedule: runs the job periodically, reports failures, stops cleanly."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from serving.schedule import DistillSchedule


def test_runs_periodically_reports_failures_and_stops(tmp_path: Path) -> None:
    lines: list[str] = []
    marker = tmp_path / "runs.txt"
    script = f"open({str(marker)!r}, 'a').write('x'); raise SystemExit(3)"
    schedule = DistillSchedule(0.2, [sys.executable, "-c", script], {}, tmp_path / "distill.log", lines.append)
    schedule.start()
    deadline = time.monotonic() + 10
    while schedule.runs < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    schedule.stop()
    assert schedule.runs >= 2 and marker.read_text().count("x") == schedule.runs
    assert any("FAILED (exit 3" in line for line in lines)
    runs = schedule.runs
    time.sleep(0.5)
    assert schedule.runs == runs  # stopped: no more runs


def test_stop_ends_a_run_in_progress(tmp_path: Path) -> None:
    schedule = DistillSchedule(
        0.05, [sys.executable, "-c", "import time; time.sleep(60)"], {}, tmp_path / "distill.log", lambda _: None
    )
    schedule.start()
    time.sleep(0.5)
    started = time.monotonic()
    schedule.stop()
    assert time.monotonic() - started < 10
