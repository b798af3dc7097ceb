"""The cascade's cost and quality after one re-distillation cycle, through the real product loop.

    python -m bench.cascade_after_distill [--day1 160] [--steps 40] [--limit 300]

Runs after ``bench.cascade_cost_quality`` (it reuses that run's recording of the teacher's answers and
its threshold for 95% of the teacher's quality):

1. Day 1: starts ``cascade up`` with that threshold and a fresh log store, and sends Banking77 *train*
   queries (none of them in the test items) through the gateway as model ``cascade``; the gateway logs
   every escalation with the teacher's top-20 logprobs and token ids (``cascade.example.yaml``).
2. Night: stops the stack and runs ``cascade distill run`` on that log (white-box KD, LoRA).
3. Day 2: starts the stack again, loads the new adapter into the running vLLM student
   (``/v1/load_lora_adapter``) and records the distilled student on the same test items, reusing the
   recorded teacher answers (``router.recorded``): ``bench/results/router_live_banking77_distilled.*``.

Writes ``bench/results/cascade_after_distill.json``: the student's quality, the teacher-call share for 95%
of the teacher's quality and the cost per 1,000 requests there, before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench.cascade_cost_quality import ADMIN_KEY, start_stack, wait_ready
from evaluation.collect import Endpoint, read_recording, recorded_ids
from evaluation.router_eval import run_live
from evaluation.tasks import BANKING77_INTENTS, banking77_messages, load_task, read_banking77
from router.recorded import analyse, live_set
from serving.cpu import cpu_flags
from serving.up import serving_mode, up_settings
from serving.vllm import load_lora_adapter

ROOT = Path(__file__).resolve().parents[1]


def day_one(gateway: str, queries: list[list[dict[str, str]]], max_tokens: int) -> dict[str, int]:
    """Send the day's queries through the gateway (4 at a time); count who answered."""
    from openai import OpenAI

    client = OpenAI(base_url=gateway, api_key="unused", max_retries=0, timeout=600)

    def one(messages: list[dict[str, str]]) -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="cascade",
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=0.0,
        )
        return raw.headers["x-cascade-tier"]

    with ThreadPoolExecutor(4) as pool:
        tiers = list(pool.map(one, queries))
    return {tier: tiers.count(tier) for tier in set(tiers)}


async def answered_by(log_url: str) -> dict[str, int]:
    """Who answered the logged day-1 requests (for ``--reuse-day1``)."""
    from logstore import iter_records

    tiers = [record.tier async for record in iter_records(log_url)]
    return {str(tier): tiers.count(tier) for tier in set(tiers)}


def stop(stack: Any) -> None:
    stack.terminate()
    stack.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--day1", type=int, default=160, help="train queries sent through the gateway on day 1")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument(
        "--mixed-precision", default="no", choices=["bf16", "no"], help="bf16 only where the CPU has AVX512_BF16"
    )
    parser.add_argument("--reuse-day1", action="store_true", help="keep the day-1 log of an earlier run")
    parser.add_argument("--reuse-night", action="store_true", help="keep the adapter an earlier run trained")
    parser.add_argument("--limit", type=int, default=300, help="test items (as in bench.cascade_cost_quality)")
    parser.add_argument("--intents", type=int, default=10)
    parser.add_argument("--config", type=Path, default=ROOT / "cascade.example.yaml")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "var" / "bench-cascade")
    parser.add_argument("--before", type=Path, default=ROOT / "bench" / "results" / "cascade_cost_quality.json")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cascade_after_distill.json")
    args = parser.parse_args()
    started = time.monotonic()
    before = json.loads(args.before.read_text())
    threshold = before["cascade_at_95pct_teacher_quality"]["threshold"]
    work = args.work_dir
    log_url = f"sqlite+aiosqlite:///{work / 'day1.db'}"
    if not args.reuse_day1:
        (work / "day1.db").unlink(missing_ok=True)
    os.environ |= {
        "CASCADE_SERVER__ADMIN_KEY": ADMIN_KEY,
        "CASCADE_LOG_STORE__URL": log_url,
        "CASCADE_LOG_STORE__SPOOL_DIR": str(work / "day1-spool"),
    }
    settings = up_settings(args.config, pair="demo")
    gateway = f"http://127.0.0.1:{settings.server.port}"
    intents = list(BANKING77_INTENTS[: args.intents])
    train = read_banking77(args.data_dir.resolve() / "banking77" / "train.csv", intents)
    random.Random(1).shuffle(train)
    queries = [banking77_messages(text, intents) for text, _ in train[: args.day1]]
    timings: dict[str, float] = {}

    mark = time.monotonic()
    if args.reuse_day1:
        answered = asyncio.run(answered_by(log_url))
    else:
        os.environ["CASCADE_ROUTER__THRESHOLD"] = str(threshold)
        stack = start_stack(args.config, "demo", work / "up.log")
        try:
            wait_ready(f"{gateway}/readyz", stack)
            answered = day_one(f"{gateway}/v1", queries, 12)
        finally:
            stop(stack)
        del os.environ["CASCADE_ROUTER__THRESHOLD"]
        timings["day1_s"] = time.monotonic() - mark
    print(f"day 1: {answered}", flush=True)

    mark = time.monotonic()
    distill_dir = work / "distill"
    if not args.reuse_night:
        shutil.rmtree(distill_dir, ignore_errors=True)
        night = yaml.safe_load(args.config.read_text()) | {
            "log_store": {"url": log_url, "spool_dir": str(work / "night-spool")},
            "distill": {
                "base_model": str(ROOT / "models" / settings.student.model),
                "work_dir": str(distill_dir),
                "registry_dir": str(distill_dir / "registry"),
                "steps": args.steps,
                "agreement": "label",
                "min_examples": 16,
                "eval_max_new_tokens": 12,
                "hot_swap": False,
                "max_seq_len": 256,
                "mixed_precision": args.mixed_precision,
            },
        }
        (work / "night.yaml").write_text(yaml.safe_dump(night))
        # the real command, in its own process: its memory is free again before the servers restart
        subprocess.run(
            [sys.executable, "-m", "cascade.cli", "distill", "run", "-c", str(work / "night.yaml")], check=True
        )
        timings["night_s"] = time.monotonic() - mark
    report = json.loads(max((distill_dir / "runs").glob("*/report.json")).read_text())
    version = distill_dir / "registry" / "v0001"
    adapter = version if version.exists() else max((distill_dir / "runs").glob("*/candidate"))

    mark = time.monotonic()
    task = load_task("banking77", args.data_dir.resolve(), args.limit, 0, args.intents)
    name = f"{settings.student.model}-distilled"
    recording = work / "banking77-distilled.jsonl"
    if not args.reuse_night:
        recording.unlink(missing_ok=True)  # a new adapter: its answers are not the recorded ones
    complete = {item.id for item in task.items} <= recorded_ids(recording, task)
    stack = None if complete else start_stack(args.config, "demo", work / "up.log")
    try:
        if stack is not None:
            wait_ready(f"{gateway}/readyz", stack)
            load_lora_adapter(settings.student.url, name, adapter.resolve(), api_key=settings.student.api_key)
        after = run_live(
            task,
            Endpoint("student", settings.student.url, name),
            Endpoint.of("teacher", settings.teacher),
            recording,
            args.out.parent,
            settings.student.price.cost_usd,
            settings.teacher.price.cost_usd,
            collect_answers=not complete,
            top_logprobs=settings.router.top_logprobs,
            teacher_from=work / "banking77.jsonl",
            name="banking77_distilled",
        )
    finally:
        if stack is not None:
            stop(stack)
    timings["day2_s"] = time.monotonic() - mark
    # the serving student on the same items, from the recording of bench.cascade_cost_quality
    wanted = {item.id for item in task.items}
    rows = [row for row in read_recording(work / "banking77.jsonl") if row["id"] in wanted]
    prices = settings.student.price.cost_usd, settings.teacher.price.cost_usd
    base, _ = analyse(live_set(rows, task.agreement, *prices))

    def point(live: dict[str, Any]) -> dict[str, Any]:
        at95 = {name: router["teacher_quality_95%"] for name, router in live["routers"].items()}
        return {
            "student_quality": live["student_quality"],
            "teacher_quality": live["teacher_quality"],
            "student_only_cost_per_1k_usd": live["student_only_cost_per_1k_usd"],
            "teacher_only_cost_per_1k_usd": live["teacher_only_cost_per_1k_usd"],
            "at_95pct_teacher_quality": {
                k: at95[k] for k in ("signal mean_logprob", "post-hoc logreg (signals)", "oracle") if k in at95
            },
        }

    out = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "day1": {"queries": len(queries), "threshold": threshold, "answered_by": answered},
        "mixed_precision": args.mixed_precision,
        "reused_from_an_earlier_run": {"day1": args.reuse_day1, "night": args.reuse_night},
        "cycle": {k: report.get(k) for k in ("decision", "reasons", "counts", "training", "duration_s")},
        "adapter": str(adapter.resolve().relative_to(ROOT)),
        "items": len(task.items),
        "before": point(base),
        "after": point(after),
        "timings_s": timings,
        "total_s": round(time.monotonic() - started, 1),
        "serving": dict(zip(("dtype", "enforce_eager"), serving_mode(settings.local, cpu_flags()), strict=True)),
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("day1", "before", "after")}, indent=2))


if __name__ == "__main__":
    main()
