"""Log store: the sustained write rate of the batch writer (SQLite, PostgreSQL) and what a crash loses.

Writes bench/results/logstore_write_rate.json. Usage:
    .venv/bin/python -m bench.logstore_write_rate [--records 20000] [--crash-runs 5]
        [--pg-url postgresql+asyncpg://postgres@127.0.0.1:5432/test]

Write rate: ``--records`` records (two answers of ``--answer-tokens`` tokens with top-5 logprobs each, as an
escalated request leaves behind) are built first, then submitted at once; the rate is records over the
time from the first submit until ``close()`` returns with every record committed: the writer flat out,
batch by batch. PostgreSQL runs in a fresh schema, dropped afterwards.
Crash loss: the child of tests/logstore/crash_child.py logs at ``--crash-rate`` records/s into SQLite and
SIGKILLs itself after 1-2 s; records submitted minus records found after recovery is what the crash lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from cascade.config import LogStoreSettings
from logstore import LogRecord, LogWriter, TierAnswer, make_engine
from logstore.schema import log_records
from tests.logstore.crash_child import crash_once
from tests.logstore.helpers import PG_URL, token_logprobs

ROOT = Path(__file__).resolve().parents[1]


def build_records(count: int, tokens: int, run: str) -> list[LogRecord]:
    student, teacher = token_logprobs(n=tokens, seed=1), token_logprobs(n=tokens, seed=2)
    prompt = [{"role": "user", "content": "Classify the intent of: 'I want to move my flight to Friday.' " * 3}]
    now = datetime.now(UTC)
    return [
        LogRecord(
            request_id=f"{run}-{i:08d}",
            time=now,
            decision="escalate",
            reason="not_confident",
            tier="teacher",
            messages=prompt,
            params={"model": "cascade", "temperature": 0.0, "max_tokens": tokens},
            caller_key_id="bench",
            signals={"mean_logprob": 0.42, "min_prob": 0.07},
            student=TierAnswer("student", "change_flight" * 4, student, 60, tokens, 0.05, "stop"),
            teacher=TierAnswer("teacher", "change_flight" * 4, teacher, 60, tokens, 0.6, "stop"),
            cost_usd=0.0004,
        )
        for i in range(count)
    ]


async def count_rows(url: str) -> int:
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(sa.select(sa.func.count()).select_from(log_records))).scalar_one())
    finally:
        await engine.dispose()


async def write_rate(url: str, folder: Path, records: list[LogRecord], batch_size: int) -> dict[str, Any]:
    settings = LogStoreSettings(
        url=url,
        spool_dir=str(folder / "spool"),
        batch_size=batch_size,
        flush_interval_s=0.25,
        queue_max=len(records) + 1,
        retention_days=None,
    )
    writer = LogWriter(settings)
    await writer.start()
    started = time.perf_counter()
    for record in records:
        writer.submit(record)
    await writer.close()
    elapsed = time.perf_counter() - started
    stored = await count_rows(url)
    if stored != len(records) or writer.replayed or writer.dropped or writer.rejected:
        raise RuntimeError(f"stored {stored} of {len(records)} (spooled {writer.replayed}, dropped {writer.dropped})")
    return {"records": len(records), "seconds": round(elapsed, 3), "records_per_s": round(len(records) / elapsed)}


async def pg_admin(url: str, statement: str) -> Any:
    parsed = make_url(url)
    connection = await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, password=parsed.password, database=parsed.database
    )
    try:
        return await connection.fetchval(statement)
    finally:
        await connection.close()


def crash_losses(runs: int, rate: float, flush_interval_s: float, batch_size: int) -> dict[str, Any]:
    losses, stored_gaps = [], []
    rng = random.Random(0)
    for run in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite+aiosqlite:///{folder}/crash.db"
            crash = crash_once(
                url,
                url,
                Path(folder) / "spool",
                rate=rate,
                flush_interval_s=flush_interval_s,
                batch_size=batch_size,
                kill_after_s=1.0 + rng.random(),
            )
            if len(crash.survived) < crash.durable:
                raise RuntimeError(f"run {run}: a stored record was lost: {crash}")
            losses.append(crash.lost)
            stored_gaps.append(crash.submitted - crash.durable)
    return {
        "backend": "sqlite",
        "rate_records_per_s": rate,
        "flush_interval_s": flush_interval_s,
        "batch_size": batch_size,
        "runs": runs,
        "lost_records": losses,
        "lost_max": max(losses),
        "lost_mean": statistics.mean(losses),
        "lost_max_in_flush_intervals": round(max(losses) / (rate * flush_interval_s), 2),
        "not_yet_stored_at_kill": stored_gaps,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "benchmark": "logstore_write_rate",
        "command": " ".join(["python -m bench.logstore_write_rate", *args.argv]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_1m": os.getloadavg()[0]},
        "record": {"answer_tokens": args.answer_tokens, "top_k": 5, "answers": 2},
        "batch_size": args.batch_size,
        "write_rate": {},
    }
    run = uuid.uuid4().hex[:8]
    records = build_records(args.records, args.answer_tokens, run)
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{folder}/bench.db"
        rate = await write_rate(url, Path(folder), records, args.batch_size)
        rate["bytes_per_record"] = round(sum(p.stat().st_size for p in Path(folder).glob("bench.db*")) / len(records))
        results["write_rate"]["sqlite"] = rate
        print("sqlite", rate)
    schema = f"bench_logstore_{run}"
    try:
        with tempfile.TemporaryDirectory() as folder:
            url = f"{args.pg_url}?schema={schema}"
            rate = await write_rate(url, Path(folder), records, args.batch_size)
            size = await pg_admin(args.pg_url, f"SELECT pg_total_relation_size('{schema}.log_records')")
            rate["bytes_per_record"] = round(int(size) / len(records))
            results["write_rate"]["postgresql"] = rate
            print("postgresql", rate)
    finally:
        await pg_admin(args.pg_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--answer-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=LogStoreSettings().batch_size)
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--crash-runs", type=int, default=5)
    parser.add_argument("--crash-rate", type=float, default=1000.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "logstore_write_rate.json")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    results = asyncio.run(main_async(args))
    if args.crash_runs:
        results["crash_loss"] = crash_losses(args.crash_runs, args.crash_rate, 0.1, 256)
        print("crash", results["crash_loss"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
