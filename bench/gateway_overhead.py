"""Gateway overhead, side by side: direct to a loopback upstream, through Cascade (pinned tier and the
routed `cascade` model with a confident student), and through LiteLLM proxy (one worker), in ONE run,
alternating targets at each concurrency.

Writes bench/results/gateway_overhead.json. Usage:
    .venv/bin/python -m bench.gateway_overhead [--requests 2000] [--concurrency 1 16 64 256]
        [--litellm var/litellm-venv/bin/litellm]    # `make bench-litellm` installs LiteLLM in its own venv
The upstream is tests/fake_upstream.py (a real aiohttp OpenAI server answering at once). Cascade logs every
request to SQLite, as it does by default. CPU time is the gateway process's user + system time.
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

MESSAGES = [{"role": "user", "content": "hello"}]
BENCH_KEY = "sk-bench-0123456789abcdef0123456789abcdef"  # LiteLLM requires a master key; the others ignore it


async def load(url: str, model: str, requests: int, concurrency: int, stream: bool = False) -> dict[str, float]:
    latencies: list[float] = []
    first_chunks: list[float] = []
    errors = 0
    payload = json.dumps({"model": model, "messages": MESSAGES, "max_tokens": 8, "stream": stream}).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {BENCH_KEY}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        remaining = requests

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as response:
                    if stream:
                        await response.content.readany()
                        first_chunks.append(time.perf_counter() - started)
                    await response.read()
                    errors += response.status != 200
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started

    def q(values: list[float], p: float) -> float:
        values = sorted(values)
        return values[min(len(values) - 1, int(p * len(values)))] * 1000

    result = {
        "rps": len(latencies) / elapsed,
        "p50_ms": q(latencies, 0.50),
        "p90_ms": q(latencies, 0.90),
        "p99_ms": q(latencies, 0.99),
        "mean_ms": statistics.fmean(latencies) * 1000,
        "errors": errors,
    }
    if stream:
        result["first_chunk_p50_ms"] = q(first_chunks, 0.50)
    return result


def start_litellm(binary: Path, upstream_port: int, folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = {
        "model_list": [
            {
                "model_name": "s",
                "litellm_params": {
                    "model": "openai/s",
                    "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                    "api_key": "unused",
                },
            }
        ],
        "litellm_settings": {"drop_params": True, "telemetry": False},
        "general_settings": {"master_key": BENCH_KEY},
    }
    (folder / "litellm.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [
            str(binary),
            "--config",
            str(folder / "litellm.yaml"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "litellm.log").open("w"),
    )
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc, timeout_s=180)
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--litellm", type=Path, default=ROOT / "var/litellm-venv/bin/litellm")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/gateway_overhead.json")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="cascade-overhead-"))
    up_port, gw_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_upstream", "--port", str(up_port), "--model", "s", "--role", "student"],
        cwd=ROOT,
    )
    procs.append(upstream)
    config = {
        "student": {"url": f"http://127.0.0.1:{up_port}/v1", "model": "s"},
        "teacher": {"url": f"http://127.0.0.1:{up_port}/v1", "model": "t"},
        "server": {"port": gw_port, "state_file": str(folder / "state.json")},
        "log_store": {"url": f"sqlite+aiosqlite:///{folder / 'log.db'}", "spool_dir": str(folder / "spool")},
    }
    (folder / "cascade.yaml").write_text(yaml.safe_dump(config))
    gateway = subprocess.Popen(
        [sys.executable, "-m", "cascade.cli", "serve", "--config", str(folder / "cascade.yaml")], cwd=ROOT
    )
    procs.append(gateway)
    try:
        wait_http(f"http://127.0.0.1:{up_port}/v1/models", upstream)
        wait_http(f"http://127.0.0.1:{gw_port}/healthz", gateway)
        cascade_url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        targets: dict[str, tuple[str, str, psutil.Process | None]] = {
            "direct": (f"http://127.0.0.1:{up_port}/v1/chat/completions", "s", None),
            "cascade_pinned": (cascade_url, "s", psutil.Process(gateway.pid)),
            "cascade_routed": (cascade_url, "cascade", psutil.Process(gateway.pid)),
        }
        if args.litellm.exists():
            litellm, lt_port = start_litellm(args.litellm, up_port, folder)
            procs.append(litellm)
            targets["litellm"] = (f"http://127.0.0.1:{lt_port}/v1/chat/completions", "s", psutil.Process(litellm.pid))
        else:
            print(f"LiteLLM not found at {args.litellm}: measuring without it", file=sys.stderr)

        results: dict[str, dict[str, dict[str, float]]] = {name: {} for name in targets}
        for concurrency in args.concurrency:
            for name, (url, model, proc) in targets.items():  # alternate targets at each concurrency
                asyncio.run(load(url, model, min(200, args.requests), concurrency))  # warm-up
                cpu_before = sum(proc.cpu_times()[:2]) if proc else 0.0
                result = asyncio.run(load(url, model, args.requests, concurrency))
                if proc is not None:
                    result["cpu_ms_per_request"] = (sum(proc.cpu_times()[:2]) - cpu_before) / args.requests * 1000
                    direct = results["direct"][str(concurrency)]
                    result["added_p50_ms"] = result["p50_ms"] - direct["p50_ms"]
                results[name][str(concurrency)] = result
                print(name, concurrency, {k: round(v, 3) for k, v in result.items()}, flush=True)
        streaming: dict[str, dict[str, float]] = {}
        for name, (url, model, _) in targets.items():
            streaming[name] = asyncio.run(load(url, model, min(1000, args.requests), 16, stream=True))
            print("stream", name, {k: round(v, 3) for k, v in streaming[name].items()}, flush=True)
    finally:
        for proc in reversed(procs):
            stop(proc)
    ratios = {}
    for concurrency in map(str, args.concurrency):
        if "litellm" in results:
            ratios[concurrency] = results["cascade_routed"][concurrency]["rps"] / results["litellm"][concurrency]["rps"]
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {psutil.cpu_count()} cores, all processes on the same machine",
        "requests_per_point": args.requests,
        "results": results,
        "streaming_concurrency_16": streaming,
        "throughput_ratio_cascade_routed_vs_litellm": ratios,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
