"""Soak: mixed traffic through the cascade for N minutes while the student restarts, the teacher answers 429 and
the log's PostgreSQL is cut off, each twice.

Reports the errors clients saw (goal 0: the cascade answers through every one of these faults), log records
lost (goal 0: every request id a client saw has its record once the gateway has drained), concurrency slots
left held in Redis (goal 0), and the gateway's RSS over time. Writes bench/results/soak.json. Usage:
    .venv/bin/python -m bench.soak [--minutes 30] [--concurrency 16]
Loopback upstreams (tests/fake_upstream.py: faults on demand), the local PostgreSQL behind a TCP proxy that
can cut it, the local Redis for the limit counters, API keys on. The mix: 70% accepted by the student, 20%
escalated, 10% escalated and streamed. Faults at fixed fractions of the run: student killed (SIGKILL) and
restarted 10 s later, the teacher answering 429 to everything for a tenth of the run, the database cut for
a tenth of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
import redis
import yaml

from logstore import iter_records
from logstore.db import migrate
from logstore.keys import KeyStore
from tests.conftest import ROOT, drop_schema, free_port, stop, wait_http
from tests.gateway.test_faults import CuttableProxy

REDIS_URL = "redis://127.0.0.1:6379/0"


def body(i: int) -> dict[str, Any]:
    kind = i % 10
    text = "student=unsure" if kind >= 7 else "hello"
    return {"model": "cascade", "messages": [{"role": "user", "content": f"{text} #{i}"}], "stream": kind == 9}


def fake(role: str, port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "tests.fake_upstream", "--port", str(port), "--model", role, "--role", role]
    proc = subprocess.Popen(argv, cwd=ROOT)
    wait_http(f"http://127.0.0.1:{port}/v1/models", proc)
    return proc


class Run:
    def __init__(self, url: str, key: str, seconds: float, concurrency: int) -> None:
        self.url, self.key, self.seconds, self.concurrency = url, key, seconds, concurrency
        self.started = time.monotonic()
        self.answered: list[str] = []  # request ids of the answers (200), each must have its record
        self.refused: list[str] = []  # request ids of the errors
        self.outcomes: Counter[str] = Counter()
        self.errors: Counter[tuple[str, int | None, str]] = Counter()  # (phase, status, message) -> count
        self.phase = "steady"

    async def worker(self, session: aiohttp.ClientSession, first: int) -> None:
        i = first
        headers = {"authorization": f"Bearer {self.key}", "content-type": "application/json"}
        while time.monotonic() - self.started < self.seconds:
            i += self.concurrency
            try:
                async with session.post(self.url, data=json.dumps(body(i)), headers=headers) as response:
                    raw = await response.read()
                    failed = response.status != 200 or b'"error"' in raw
                    request_id = response.headers.get("x-request-id", "")
                    (self.refused if failed else self.answered).append(request_id)
                    kind = "error" if failed else ("degraded" if "x-cascade-degraded" in response.headers else "ok")
                    self.outcomes[kind] += 1
                    if failed:
                        self.error(response.status, raw.decode(errors="replace"))
            except aiohttp.ClientError as exc:
                self.outcomes["error"] += 1
                self.error(None, repr(exc))
            await asyncio.sleep(0.01)

    def error(self, status: int | None, text: str) -> None:
        self.errors[(self.phase, status, text[:120])] += 1

    async def traffic(self) -> None:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency), timeout=aiohttp.ClientTimeout(total=60)
        ) as session:
            await asyncio.gather(*(self.worker(session, n) for n in range(self.concurrency)))


def create_key(url: str) -> tuple[str, str]:
    async def run() -> tuple[str, str]:
        await migrate(url)
        store = KeyStore(url)
        try:
            key, plain = await store.create("soak", max_concurrent=1000)
            return key.id, plain
        finally:
            await store.close()

    return asyncio.run(run())


def logged_ids(url: str) -> list[str]:
    async def collect() -> list[str]:
        return [record.request_id async for record in iter_records(url)]

    return asyncio.run(collect())


def rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/soak.json")
    args = parser.parse_args()
    seconds = args.minutes * 60

    folder = Path(tempfile.mkdtemp(prefix="cascade-soak-"))
    ports = {"student": free_port(), "teacher": free_port(), "gateway": free_port()}
    schema = f"soak_{int(time.time())}"
    proxy = CuttableProxy(5432)
    direct = f"postgresql+asyncpg://postgres@127.0.0.1:5432/test?schema={schema}"
    through_proxy = f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/test?schema={schema}"
    key_id, key = create_key(direct)
    student, teacher = fake("student", ports["student"]), fake("teacher", ports["teacher"])
    config = {
        "student": {"url": f"http://127.0.0.1:{ports['student']}/v1", "model": "student", "breaker_reset_s": 2.0},
        "teacher": {"url": f"http://127.0.0.1:{ports['teacher']}/v1", "model": "teacher", "breaker_reset_s": 2.0},
        "server": {"port": ports["gateway"], "state_file": str(folder / "state.json"), "health_check_s": 2.0},
        "auth": {"enabled": True, "redis_url": REDIS_URL},
        "log_store": {"url": through_proxy, "spool_dir": str(folder / "spool"), "shadow_share": 0.05},
    }
    (folder / "cascade.yaml").write_text(yaml.safe_dump(config))
    gateway = subprocess.Popen(
        [sys.executable, "-m", "cascade.cli", "serve", "--config", str(folder / "cascade.yaml")], cwd=ROOT
    )
    wait_http(f"http://127.0.0.1:{ports['gateway']}/healthz", gateway)
    run = Run(f"http://127.0.0.1:{ports['gateway']}/v1/chat/completions", key, seconds, args.concurrency)
    rss: list[dict[str, float]] = []
    faults: list[dict[str, Any]] = []
    outage = seconds / 10

    def at(fraction: float) -> float:
        return fraction * seconds

    schedule = [
        (at(0.10), "student_restart"),
        (at(0.25), "teacher_429"),
        (at(0.40), "database_cut"),
        (at(0.55), "student_restart"),
        (at(0.70), "teacher_429"),
        (at(0.85), "database_cut"),
    ]

    async def conductor() -> None:
        nonlocal student
        pending = list(schedule)
        next_rss = 0.0
        while (now := time.monotonic() - run.started) < seconds:
            if now >= next_rss:
                rss.append({"t_s": round(now, 1), "rss_mb": round(rss_mb(gateway.pid), 1)})
                next_rss += 30.0
            if pending and now >= pending[0][0]:
                _, fault = pending.pop(0)
                faults.append({"t_s": round(now, 1), "fault": fault})
                run.phase = fault
                if fault == "student_restart":
                    student.send_signal(signal.SIGKILL)
                    student.wait()
                    await asyncio.sleep(10)
                    student = await asyncio.to_thread(fake, "student", ports["student"])
                elif fault == "teacher_429":
                    httpx.post(f"http://127.0.0.1:{ports['teacher']}/_behave", json={"behaviour": "limited"})
                    await asyncio.sleep(outage)
                    httpx.post(f"http://127.0.0.1:{ports['teacher']}/_behave", json={"behaviour": None})
                else:
                    proxy.cut()
                    await asyncio.sleep(outage)
                    proxy.restore()
                run.phase = "steady"
            await asyncio.sleep(0.5)

    async def both() -> None:
        await asyncio.gather(run.traffic(), conductor())

    try:
        asyncio.run(both())
        time.sleep(5)  # the database is back: let the spool replay
        rss.append({"t_s": round(time.monotonic() - run.started, 1), "rss_mb": round(rss_mb(gateway.pid), 1)})
    finally:
        stop(gateway)  # a clean shutdown drains the log queue (or spools what is left)
        stop(student)
        stop(teacher)
    proxy.close()
    logged = logged_ids(direct)
    held_slots = redis.Redis.from_url(REDIS_URL).zcard(f"cascade:slots:{key_id}:")
    drop_schema(schema)
    stored = set(logged)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores",
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "requests": sum(run.outcomes.values()),
        "outcomes": dict(run.outcomes),
        "client_errors": run.outcomes["error"],
        "errors": [
            {"phase": phase, "status": status, "message": text, "count": count}
            for (phase, status, text), count in run.errors.most_common()
        ],
        "records_lost": len(set(run.answered) - stored),
        "errors_without_record": len(set(run.refused) - stored),
        "records_duplicated": len(logged) - len(set(logged)),
        "slots_left_held": held_slots,
        "faults": faults,
        "rss_mb": rss,
        "rss_growth_mb": round(rss[-1]["rss_mb"] - rss[1]["rss_mb"], 1) if len(rss) > 2 else None,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "rss_mb"}, indent=2))
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
