"""``cascade log``: export the escalation log as a dataset, print its statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cascade.commands.common import (
    ConfigOption,
    LogUrlOption,
    SinceOption,
    UntilOption,
    fail,
    log_store_url,
    settings_or_exit,
)

log_app = typer.Typer(no_args_is_help=True, help="The escalation log: export a dataset, print statistics.")


@log_app.command("export")
def log_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write")],
    format: Annotated[str, typer.Option(help="jsonl or parquet (parquet needs pyarrow)")] = "jsonl",
    config: ConfigOption = None,
    url: LogUrlOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Export the logged records of a time window as a dataset (schema: docs/log-store.md)."""
    import asyncio

    from logstore import export

    if format not in ("jsonl", "parquet"):
        fail([f"--format must be jsonl or parquet, got {format!r}"])
    count = asyncio.run(export(log_store_url(config, url), since, until, out, format))  # type: ignore[arg-type]
    typer.echo(f"cascade: exported {count} record(s) to {out}", err=True)


@log_app.command("stats")
def log_stats(
    config: ConfigOption = None,
    url: LogUrlOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    cost: Annotated[
        bool, typer.Option("--cost", help="Recompute the cost from token counts and --config's prices")
    ] = False,
) -> None:
    """Print counts, escalation rate, cost and top reasons of a time window as JSON."""
    import asyncio
    import json

    from logstore import stats
    from logstore.reader import token_totals

    log_url = log_store_url(config, url)
    summary = asyncio.run(stats(log_url, since, until)).to_dict()
    if cost:
        if config is None:
            fail(["--cost needs --config: the prices are in its student.price and teacher.price"])
        settings = settings_or_exit(config)
        totals = asyncio.run(token_totals(log_url, since, until))
        student = settings.student.price.cost_usd(totals.student_prompt, totals.student_completion)
        teacher = settings.teacher.price.cost_usd(totals.teacher_prompt, totals.teacher_completion)
        summary["cost_recomputed_usd"] = {"student": student, "teacher": teacher, "total": student + teacher}
    typer.echo(json.dumps(summary, indent=2))
