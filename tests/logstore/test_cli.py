from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from cascade.cli import app
from logstore import LogWriter
from tests.logstore.helpers import make_record, settings


def test_log_export_and_stats_commands_read_the_store(sqlite_url: str, tmp_path: Path) -> None:
    async def fill() -> None:
        writer = LogWriter(settings(sqlite_url, tmp_path))
        await writer.start()
        writer.submit(make_record("c1"))
        writer.submit(make_record("c2", decision="accept", reason="confident", tier="student"))
        await writer.close()

    asyncio.run(fill())
    runner = CliRunner()
    out = tmp_path / "dataset.jsonl"
    exported = runner.invoke(app, ["log", "export", "--url", sqlite_url, "--out", str(out), "--since", "2000-01-01"])
    assert exported.exit_code == 0, exported.output
    assert sorted(json.loads(line)["request_id"] for line in out.read_text().splitlines()) == ["c1", "c2"]

    summary = runner.invoke(app, ["log", "stats", "--url", sqlite_url])
    assert summary.exit_code == 0, summary.output
    numbers = json.loads(summary.stdout)
    assert numbers["requests"] == 2 and numbers["escalation_rate"] == 0.5

    wrong = runner.invoke(app, ["log", "export", "--url", sqlite_url, "--out", str(out), "--format", "csv"])
    assert wrong.exit_code == 2
