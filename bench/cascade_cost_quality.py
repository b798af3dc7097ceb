"""Cascade cost and quality on real models: student alone, teacher alone, oracle, the cascade's thresholds.

    python -m bench.cascade_cost_quality [--task banking77] [--limit 300] [--validate 60] [--start]

On a CPU without bf16 matrix instructions (no AVX512_BF16/AMX) serve in float32, eagerly: about five
times faster than bf16 there: ``CASCADE_LOCAL__DTYPE=float32 CASCADE_LOCAL__ENFORCE_EAGER=true``.

1. Records the task through the running local pair (``cascade up``; with ``--start`` this script starts it
   and stops it at the end): both tiers answer every item, greedily, with logprobs (``evaluation.collect``;
   a recording is resumed, so a second run only analyses).
2. Evaluates every router on the recording (``router.recorded``, the same as ``cascade router eval --live``):
   writes ``bench/results/router_live_<task>.{json,png}`` and ``..._cost.png``.
3. Sweeps the serving router's threshold (``mean_prob``), and finds the lowest threshold whose cascade
   reaches 95% of the teacher's quality on the recording.
4. Checks the recording's prediction through the real gateway: sets that threshold with ``POST
   /admin/threshold`` and sends ``--validate`` of the items with the official ``openai`` client to model
   ``cascade``; reports how often the gateway's tier, confidence and answer match the prediction, and the
   measured quality and teacher share next to the predicted ones.

Prices are the config's (default ``cascade.example.yaml``: a self-hosted student priced by GPU time, an
API teacher at list prices). Writes ``bench/results/cascade_cost_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from distill.promote import set_gateway_threshold
from evaluation.collect import Endpoint
from evaluation.router_eval import run_live
from evaluation.tasks import Item, Task, load_task
from serving.cpu import cpu_flags
from serving.up import serving_mode, up_settings

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY = "bench-admin-key-0123456789"


def lowest_threshold_for(
    confidence: np.ndarray, student_ok: np.ndarray, teacher_ok: np.ndarray, target: float
) -> float:
    """The smallest serving threshold whose cascade quality on the recording is at least ``target``."""
    for threshold in np.unique(np.concatenate(([0.0], confidence, [1.0]))):
        if np.where(confidence < threshold, teacher_ok, student_ok).mean() >= target:
            return float(threshold)
    return 1.0


def start_stack(config: Path, pair: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CASCADE_SERVER__ADMIN_KEY": ADMIN_KEY}
    argv = [sys.executable, "-m", "cascade.cli", "up", "--config", str(config), "--pair", pair]
    return subprocess.Popen(argv, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def wait_ready(url: str, process: subprocess.Popen[bytes] | None, timeout_s: float = 1800) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"cascade up exited with status {process.returncode}; see its log")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(5)
    raise SystemExit(f"{url} not ready after {timeout_s:.0f} s")


def validate(gateway: str, items: list[Item], task: Task, predicted: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Send ``items`` through the gateway as ``cascade``; compare with the recording's prediction."""
    from openai import OpenAI

    client = OpenAI(base_url=gateway, api_key="unused", max_retries=0, timeout=600)
    same_tier = same_answer = 0
    ok, teacher, confidence_gap = [], [], []
    for item in items:
        raw = client.chat.completions.with_raw_response.create(
            model="cascade",
            messages=item.messages,
            max_tokens=task.max_tokens,
            temperature=0.0,  # type: ignore[arg-type]
        )
        answer = raw.parse().choices[0].message.content or ""
        tier = raw.headers["x-cascade-tier"]
        expected = predicted[item.id]
        same_tier += tier == expected["tier"]
        same_answer += answer.strip() == expected["text"].strip()
        confidence_gap.append(abs(float(raw.headers["x-cascade-confidence"]) - expected["confidence"]))
        ok.append(task.agreement(answer, item.gold))
        teacher.append(tier == "teacher")
    n = len(items)
    return {
        "n": n,
        "tier_matches_prediction": same_tier / n,
        "answer_matches_prediction": same_answer / n,
        "max_confidence_difference": float(max(confidence_gap)),
        "measured_quality": float(np.mean(ok)),
        "measured_teacher_share": float(np.mean(teacher)),
        "predicted_quality": float(np.mean([predicted[i.id]["ok"] for i in items])),
        "predicted_teacher_share": float(np.mean([predicted[i.id]["tier"] == "teacher" for i in items])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="banking77", choices=["banking77", "gsm8k"])
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--intents", type=int, default=10)
    parser.add_argument("--pair", default="demo", choices=["demo", "small", "tiny"])
    parser.add_argument("--config", type=Path, default=ROOT / "cascade.example.yaml")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--validate", type=int, default=60, help="items also sent through the gateway (0: none)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--start", action="store_true", help="start `cascade up` and stop it at the end")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "var" / "bench-cascade")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cascade_cost_quality.json")
    args = parser.parse_args()
    started = time.monotonic()
    settings = up_settings(args.config, pair=args.pair)
    task = load_task(args.task, args.data_dir.resolve(), args.limit, 0, args.intents)
    host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::") else settings.server.host
    gateway_root = f"http://{host}:{settings.server.port}"
    args.work_dir.mkdir(parents=True, exist_ok=True)
    stack = start_stack(args.config, args.pair, args.work_dir / "up.log") if args.start else None
    try:
        wait_ready(f"{gateway_root}/readyz", stack)
        live = run_live(
            task,
            Endpoint.of("student", settings.student),
            Endpoint.of("teacher", settings.teacher),
            args.work_dir / f"{task.name}.jsonl",
            args.out.parent,
            settings.student.price.cost_usd,
            settings.teacher.price.cost_usd,
            concurrency=args.concurrency,
            top_logprobs=settings.router.top_logprobs,
        )
        from evaluation.collect import read_recording
        from router.recorded import live_set, threshold_sweep

        wanted = {item.id for item in task.items}
        rows = [row for row in read_recording(args.work_dir / f"{task.name}.jsonl") if row["id"] in wanted]
        data = live_set(rows, task.agreement, settings.student.price.cost_usd, settings.teacher.price.cost_usd)
        t95 = lowest_threshold_for(data.confidence, data.student_ok, data.teacher_ok, 0.95 * live["teacher_quality"])
        sweep = threshold_sweep(data, sorted({0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, round(t95, 4)}))
        at95 = threshold_sweep(data, [t95])[0]
        predicted = {
            row_id: {
                "tier": "teacher" if conf < t95 else "student",
                "text": row["teacher" if conf < t95 else "student"]["text"],
                "confidence": float(conf),
                "ok": bool(t_ok if conf < t95 else s_ok),
            }
            for row_id, row, conf, s_ok, t_ok in zip(
                data.ids, rows, data.confidence, data.student_ok, data.teacher_ok, strict=True
            )
        }
        checked = None
        if args.validate:
            set_gateway_threshold(gateway_root, t95, os.environ.get("CASCADE_SERVER__ADMIN_KEY", ADMIN_KEY))
            items = [item for item in task.items if item.id in predicted][: args.validate]
            checked = validate(f"{gateway_root}/v1", items, task, predicted)
    finally:
        if stack is not None:
            stack.terminate()
            stack.wait(timeout=120)
    teacher_only = live["teacher_only_cost_per_1k_usd"]
    result = {
        "task": task.name,
        "task_options": task.options,
        "pair": args.pair,
        "serving": dict(zip(("dtype", "enforce_eager"), serving_mode(settings.local, cpu_flags()), strict=True)),
        "student": settings.student.model,
        "teacher": settings.teacher.model,
        "n": live["n"],
        "prices": {
            "student": settings.student.price.model_dump(exclude_none=True),
            "teacher": settings.teacher.price.model_dump(exclude_none=True),
        },
        "mean_tokens": live["mean_tokens"],
        "points": {
            "student alone": {
                "teacher_share": 0.0,
                "quality": live["student_quality"],
                "cost_per_1k_usd": live["student_only_cost_per_1k_usd"],
            },
            "teacher alone": {
                "teacher_share": 1.0,
                "quality": live["teacher_quality"],
                "cost_per_1k_usd": teacher_only,
            },
            "oracle": {
                "teacher_share": live["routers"]["oracle"]["teacher_quality_100%"]["teacher_share"],
                "quality": live["oracle_quality"],
            },
        },
        "cascade_thresholds": sweep,
        "cascade_at_95pct_teacher_quality": at95
        | {"cost_reduction_vs_teacher_only": teacher_only / at95["cost_per_1k_usd"]},
        "routers_at_95pct_teacher_quality": {
            name: router["teacher_quality_95%"] for name, router in live["routers"].items()
        },
        "gateway_check": checked,
        "machine": "2 CPU cores; vLLM CPU build; both servers and the gateway on the same cores",
        "seconds": round(time.monotonic() - started, 1),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("points", "cascade_at_95pct_teacher_quality", "gateway_check")}, indent=2))


if __name__ == "__main__":
    main()
