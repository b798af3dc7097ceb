"""``cascade router eval --live``: the configured student and teacher, a labelled task, every router."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cascade.commands.common import fail, settings_or_exit
from cascade.config import UpstreamSettings

SUMMARY_KEYS = ("task", "n", "student_quality", "teacher_quality", "oracle_quality", "teacher_only_cost_per_1k_usd")


def endpoint(name: str, upstream: UpstreamSettings) -> Any:
    from evaluation.collect import Endpoint

    return Endpoint(name, upstream.url, upstream.model, upstream.api_key)


def eval_live(
    config: Path | None,
    task_name: str,
    data_dir: Path,
    out_dir: Path,
    *,
    limit: int | None,
    intents: int,
    seed: int,
    recording: Path | None,
    collect_answers: bool,
    concurrency: int,
    teacher_from: Path | None = None,
) -> dict[str, Any]:
    """Record and evaluate; the short summary for the terminal (the whole result is in the JSON file)."""
    from evaluation.collect import CollectError
    from evaluation.live import run_live
    from evaluation.tasks import TaskError, load_task

    def progress(line: str) -> None:
        typer.echo(f"cascade: {line}", err=True)

    try:
        task = load_task(task_name, data_dir, limit, seed, intents)
        settings = settings_or_exit(config)
        result = run_live(
            task,
            endpoint("student", settings.student),
            endpoint("teacher", settings.teacher),
            recording or settings.local.var_dir / "live" / f"{task.name}.jsonl",
            out_dir,
            settings.student.price.cost_usd,
            settings.teacher.price.cost_usd,
            collect_answers=collect_answers,
            concurrency=concurrency,
            top_logprobs=settings.router.top_logprobs,
            progress=progress,
            teacher_from=teacher_from,
        )
    except (TaskError, CollectError, ValueError) as exc:
        fail([str(exc)])
        raise  # unreachable: fail() exits
    routers = {
        name: {key: value for key, value in router.items() if key.startswith(("teacher_quality", "best"))}
        for name, router in result["routers"].items()
    }
    return {key: result[key] for key in SUMMARY_KEYS} | {"routers": routers}
