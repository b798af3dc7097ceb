"""Gateway overhead: direct to a loopback upstream vs through Cascade (pinned and cascade), in one run.

Writes bench/results/gateway_overhead.json. Usage:
    .venv/bin/python -m bench.gateway_overhead [--requests 2000] [--concurrency 1 16 64]
The upstream is tests/fake_upstream.py (a real aiohttp OpenAI server); the student is always confident, so
`cascade` requests are answered by the student after the router's decision.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil
import yaml

from tests.conftest import ROOT, free_port, stop, wait_http

BODY = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


async def load(url: str, model: str, requests: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    payload = json.dumps({**BODY, "model": model}).encode()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        remaining = requests

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with session.post(url, data=payload, headers={"content-type": "application/json"}) as r:
                    await r.read()
                    errors += r.status != 200
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def q(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": q(0.50),
        "p90_ms": q(0.90),
        "p99_ms": q(0.99),
        "mean_ms": statistics.fmean(latencies) * 1000,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/gateway_overhead.json")
    args = parser.parse_args()

    up_port, gw_port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream", "--port", str(up_port), "--model", "s", "--role", "student"],
        cwd=ROOT,
    )
    config = {
        "student": {"url": f"http://127.0.0.1:{up_port}/v1", "model": "s"},
        "teacher": {"url": f"http://127.0.0.1:{up_port}/v1", "model": "t"},
        "server": {"port": gw_port},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(config, handle)
    gateway = subprocess.Popen([sys.executable, "-m", "cascade.cli", "serve", "--config", handle.name], cwd=ROOT)
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", upstream)
        wait_http(f"http://127.0.0.1:{gw_port}/healthz", gateway)
        gw_proc = psutil.Process(gateway.pid)
        targets = {
            "direct": (f"http://127.0.0.1:{up_port}/v1/chat/completions", "s"),
            "cascade_pinned": (f"http://127.0.0.1:{gw_port}/v1/chat/completions", "s"),
            "cascade_routed": (f"http://127.0.0.1:{gw_port}/v1/chat/completions", "cascade"),
        }
        results: dict[str, dict[str, dict[str, float]]] = {name: {} for name in targets}
        for concurrency in args.concurrency:
            for name, (url, model) in targets.items():  # alternate targets at each concurrency
                asyncio.run(load(url, model, 200, concurrency))  # warm-up
                cpu_before = sum(gw_proc.cpu_times()[:2])
                result = asyncio.run(load(url, model, args.requests, concurrency))
                cpu = sum(gw_proc.cpu_times()[:2]) - cpu_before
                if name != "direct":
                    result["gateway_cpu_ms_per_request"] = cpu / args.requests * 1000
                    direct = results["direct"][str(concurrency)]
                    result["added_p50_ms"] = result["p50_ms"] - direct["p50_ms"]
                results[name][str(concurrency)] = result
                print(name, concurrency, {k: round(v, 3) for k, v in result.items()}, flush=True)
    finally:
        stop(gateway)
        stop(upstream)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores",
        "requests_per_point": args.requests,
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
