"""Bounded load test: N requests at concurrency C through the cascade against loopback upstreams.

Reports errors (goal 0), log records lost (goal 0: every request id the client saw has its record), latency
p50/p99 and the gateway's RSS growth (goal < 50 MB). Writes bench/results/load_test.json. Usage:
    .venv/bin/python -m bench.load_test [--requests 10000] [--concurrency 200] [--postgres]
A mix: 70% accepted by the student, 20% escalated, 10% streamed; the log store is SQLite (or the local
PostgreSQL with --postgres).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
import yaml

from logstore import iter_records
from tests.conftest import ROOT, drop_schema, free_port, stop, wait_http


def body(i: int) -> bytes:
    kind = i % 10
    text = "student=unsure" if kind in (7, 8) else "hello"
    payload = {"model": "cascade", "messages": [{"role": "user", "content": f"{text} #{i}"}], "stream": kind == 9}
    return json.dumps(payload).encode()


async def load(url: str, requests: int, concurrency: int) -> tuple[list[float], list[str], int]:
    latencies: list[float] = []
    ids: list[str] = []
    errors = 0
    next_i = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal next_i, errors
            while next_i < requests:
                i, next_i = next_i, next_i + 1
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body(i), headers={"content-type": "application/json"}) as r:
                        raw = await r.read()
                        ok = r.status == 200 and b'"error"' not in raw
                        errors += not ok
                        ids.append(r.headers.get("x-request-id", ""))
                except aiohttp.ClientError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, ids, errors


async def logged_ids(url: str) -> set[str]:
    return {record.request_id async for record in iter_records(url)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--postgres", action="store_true", help="log to postgresql://postgres@127.0.0.1/test")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/load_test.json")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="cascade-load-"))
    ports = {"student": free_port(), "teacher": free_port(), "gateway": free_port()}
    schema = f"load_{int(time.time())}"
    log_url = (
        f"postgresql+asyncpg://postgres@127.0.0.1:5432/test?schema={schema}"
        if args.postgres
        else f"sqlite+aiosqlite:///{folder / 'log.db'}"
    )
    fakes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.fake_upstream", "--port", str(ports[role]), "--model", role, "--role", role],
            cwd=ROOT,
        )
        for role in ("student", "teacher")
    ]
    config = {
        "student": {"url": f"http://127.0.0.1:{ports['student']}/v1", "model": "student"},
        "teacher": {"url": f"http://127.0.0.1:{ports['teacher']}/v1", "model": "teacher"},
        "server": {"port": ports["gateway"], "state_file": str(folder / "state.json")},
        "log_store": {"url": log_url, "spool_dir": str(folder / "spool")},
    }
    (folder / "cascade.yaml").write_text(yaml.safe_dump(config))
    gateway = subprocess.Popen(
        [sys.executable, "-m", "cascade.cli", "serve", "--config", str(folder / "cascade.yaml")], cwd=ROOT
    )
    try:
        for proc, port in zip((*fakes, gateway), (ports["student"], ports["teacher"], ports["gateway"]), strict=True):
            wait_http(
                f"http://127.0.0.1:{port}/healthz" if proc is gateway else f"http://127.0.0.1:{port}/v1/models", proc
            )
        url = f"http://127.0.0.1:{ports['gateway']}/v1/chat/completions"
        asyncio.run(load(url, 500, 50))  # warm-up
        rss_before = psutil.Process(gateway.pid).memory_info().rss
        started = time.perf_counter()
        latencies, ids, errors = asyncio.run(load(url, args.requests, args.concurrency))
        elapsed = time.perf_counter() - started
        rss_after = psutil.Process(gateway.pid).memory_info().rss
    finally:
        stop(gateway)  # a clean shutdown drains the log queue
        for fake in fakes:
            stop(fake)
    logged = asyncio.run(logged_ids(log_url))
    if args.postgres:
        drop_schema(schema)
    latencies.sort()
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores",
        "log_store": "postgresql" if args.postgres else "sqlite",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "errors": errors,
        "lost_log_records": len(set(ids) - logged),
        "throughput_rps": args.requests / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "rss_growth_mb": (rss_after - rss_before) / 2**20,
    }
    print(json.dumps(report, indent=2))
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
