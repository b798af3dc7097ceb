"""`cascade router eval --live`: record a task through the real tiers, then evaluate every router on it.

Writes ``<out_dir>/router_live_<task>.json`` (the summary of :func:`router.recorded.analyse` plus what was
run), ``router_live_<task>.png`` (quality against teacher calls) and ``router_live_<task>_cost.png``
(quality against cost per 1,000 requests).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.collect import Endpoint, collect, read_recording, tier_answers
from evaluation.tasks import Task
from router.recorded import Price, RouterResult, analyse, live_set

PLOTTED = (
    "signal mean_logprob",
    "signal prob_q10",
    "signal mean_entropy",
    "signal first_margin",
    "post-hoc logreg (signals)",
    "post-hoc logreg (signals + prompt embedding)",
    "pre-generation (prompt embedding)",
    "oracle",
    "random",
)


def plot_cost(results: dict[str, RouterResult], summary: dict[str, Any], title: str, path: Path) -> None:
    """Quality against cost per 1,000 requests, with the student-only and teacher-only points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from router.evaluate import save_figure

    fig, ax = plt.subplots(figsize=(8, 4.8))
    grid = np.linspace(0.0, 1.0, 801)  # dense: a segment between two cuts is not straight on a log axis
    for name in PLOTTED:
        if name in results:
            result = results[name]
            cost = [1000 * result.cost.quality_at(share) for share in grid]
            quality = [100 * result.curve.quality_at(share) for share in grid]
            ax.plot(cost, quality, label=name, linewidth=1.3)
    ax.scatter([summary["student_only_cost_per_1k_usd"]], [100 * summary["student_quality"]], color="grey", zorder=3)
    ax.annotate("student only", (summary["student_only_cost_per_1k_usd"], 100 * summary["student_quality"]))
    ax.scatter([summary["teacher_only_cost_per_1k_usd"]], [100 * summary["teacher_quality"]], color="red", zorder=3)
    ax.annotate("teacher only", (summary["teacher_only_cost_per_1k_usd"], 100 * summary["teacher_quality"]))
    ax.set_xscale("log")
    ax.set_xlabel("cost per 1,000 requests (USD, log scale)")
    save_figure(fig, ax, title, path, legend_loc="upper left", legend_size=7)


def run_live(
    task: Task,
    student: Endpoint,
    teacher: Endpoint,
    recording: Path,
    out_dir: Path,
    student_price: Price,
    teacher_price: Price,
    *,
    collect_answers: bool = True,
    concurrency: int = 4,
    top_logprobs: int = 5,
    embed: bool = True,
    progress: Callable[[str], None] = print,
    teacher_from: Path | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Record what is missing (unless ``collect_answers`` is off), analyse the recording, write the results
    as ``router_live_<name or task>``. ``teacher_from``: a recording of the same task whose teacher answers
    are reused instead of asking the teacher (a new student against the same teacher)."""
    from router.evaluate import plot

    started = time.monotonic()
    if teacher_from is not None and teacher_from.resolve() == recording.resolve():
        raise ValueError("--teacher-from must name another recording than --recording (the new student's)")
    if collect_answers:
        reused = tier_answers(teacher_from, task, "teacher") if teacher_from is not None else None
        asyncio.run(
            collect(
                task,
                student,
                teacher,
                recording,
                concurrency=concurrency,
                top_logprobs=top_logprobs,
                progress=progress,
                teacher_answers=reused,
            )
        )
    wanted = {item.id for item in task.items}
    rows = [row for row in read_recording(recording) if row["id"] in wanted]
    if not rows:
        raise ValueError(f"{recording} holds none of this task's {len(wanted)} items; run without --no-collect")
    rows = [
        {**row, **{tier: {**row[tier], "text": task.judged(row[tier])} for tier in ("student", "teacher")}}
        for row in rows
    ]
    data = live_set(rows, task.agreement, student_price, teacher_price)
    embeddings = None
    if embed:
        from router.embedding import PromptEmbedder

        embeddings = PromptEmbedder().embed_cached(data.prompts)
    summary, results = analyse(data, embeddings)
    result: dict[str, Any] = {
        "task": task.name,
        "task_options": task.options,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "student": {"url": student.url, "model": student.model},
        "teacher": {"url": teacher.url, "model": teacher.model},
        "recording": os.path.relpath(recording),  # relative: results files carry no machine paths
        "teacher_answers_from": None if teacher_from is None else os.path.relpath(teacher_from),
        "items_requested": len(task.items),
        "agreement": task.agreement_name,
        "top_logprobs": top_logprobs,
        "mean_latency_s": {
            tier: float(np.mean([row[tier]["latency_s"] for row in rows])) for tier in ("student", "teacher")
        },
        **summary,
        "seconds": round(time.monotonic() - started, 1),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"router_live_{name or task.name}"
    title = f"{task.name}, {len(rows)} items: {student.model} / {teacher.model}"
    plot({k: results[k].curve for k in PLOTTED if k in results}, title, out_dir / f"{name}.png")
    plot_cost(results, summary, title, out_dir / f"{name}_cost.png")
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
