"""Local serving: start-up time, memory and generation speed of each pair's vLLM servers on this machine.

Writes bench/results/local_serving.json. Usage:
    .venv/bin/python -m bench.local_serving [--pairs tiny small demo] [--requests 5] [--max-tokens 128]
For each pair, both servers are started at once as `cascade up` starts them (same flags, graph compilation
on unless --enforce-eager), each one's seconds to healthy are recorded, then the RSS and USS of each server's
process tree, then generated tokens/s of one sequential stream per server (greedy, ``ignore_eos`` so every
answer is exactly --max-tokens long, after one warm-up request), and time to first token from a stream.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from serving.models import PAIR_NAMES, prepare_pair
from serving.process import stop_all, wait_ready
from serving.vllm import VllmOptions, VllmServer, split_cores

ROOT = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]


def tree_memory(pid: int) -> dict[str, float]:
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    rss = uss = 0
    for process in processes:
        info = process.memory_full_info()
        rss, uss = rss + info.rss, uss + info.uss
    return {"rss_gib": round(rss / 2**30, 2), "uss_gib": round(uss / 2**30, 2), "processes": len(processes)}


def generation_speed(options: VllmOptions, requests: int, max_tokens: int) -> dict[str, float]:
    body = {
        "model": options.served_name,
        "messages": PROMPT,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
    }
    url = f"{options.base_url}/chat/completions"
    with httpx.Client(timeout=600) as client:
        client.post(url, json={**body, "max_tokens": 8}).raise_for_status()  # warm-up
        tokens, started = 0, time.perf_counter()
        for _ in range(requests):
            response = client.post(url, json=body)
            response.raise_for_status()
            tokens += response.json()["usage"]["completion_tokens"]
        elapsed = time.perf_counter() - started
        first_token: float | None = None
        started = time.perf_counter()
        with client.stream("POST", url, json={**body, "stream": True, "max_tokens": 16}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: ") and '"content":"' in line:
                    first_token = time.perf_counter() - started
                    break
    return {
        "generated_tokens": tokens,
        "tokens_per_s": round(tokens / elapsed, 1),
        "time_to_first_token_ms": round(1000 * first_token, 1) if first_token is not None else float("nan"),
    }


def bench_pair(pair: str, args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    paths = prepare_pair(pair, args.models_dir)
    servers: list[VllmServer] = []
    cores = split_cores(2)
    for role, model in (("student", paths.student), ("teacher", paths.teacher)):
        options = VllmOptions(
            model_dir=model.path.resolve(),
            served_name=model.name,
            port=args.base_port + len(servers),
            log_path=work_dir / f"{pair}-{role}.log",
            cache_root=(ROOT / "var" / "vllm-cache").resolve(),
            max_model_len=args.max_model_len,
            max_lora_rank=16 if role == "student" else None,
            enforce_eager=args.enforce_eager,
            cpu_cores=cores[len(servers)],
        )
        servers.append(VllmServer(role, options))
    try:
        for server in servers:
            server.start()
        startup = wait_ready(servers, 1200, print)
        result: dict[str, Any] = {}
        for server in servers:
            assert server.pid is not None
            result[server.name] = {
                "model": server.options.served_name,
                "startup_s": round(startup[server.name], 1),
                **tree_memory(server.pid),
                **generation_speed(server.options, args.requests, args.max_tokens),
            }
            print(f"{pair} {server.name}: {result[server.name]}", flush=True)
        result["load_average_1m"] = round(os.getloadavg()[0], 2)  # the CPU may be shared: read speeds with this
        return result
    finally:
        stop_all(servers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", nargs="+", choices=PAIR_NAMES, default=["tiny", "small", "demo"])
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--enforce-eager", action="store_true", help="as the tests start vLLM")
    parser.add_argument("--base-port", type=int, default=18401)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "local_serving.json")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
        },
        "settings": {
            "requests": args.requests,
            "max_tokens": args.max_tokens,
            "dtype": "bfloat16",
            "kv_cache_gib": 1,
            "enforce_eager": args.enforce_eager,
        },
        "pairs": {},
    }
    with tempfile.TemporaryDirectory(prefix="cascade-bench-") as work:
        for pair in args.pairs:
            results["pairs"][pair] = bench_pair(pair, args, Path(work))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
