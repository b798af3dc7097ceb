"""``cascade distill``: one re-distillation cycle, or a rollback."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from cascade.commands.common import ConfigOption, settings_or_exit

distill_app = typer.Typer(no_args_is_help=True, help="Re-distillation: train the student on the teacher's answers.")


@distill_app.command("run")
def distill_run(
    config: ConfigOption = None,
    since: Annotated[
        datetime | None, typer.Option(help="Read the log from this time (default: the last promoted run's end)")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
) -> None:
    """One cycle: dataset from the log, train, gate, promote if better, report (exit 1 on failure)."""
    from distill.cycle import DistillError, run_cycle

    settings = settings_or_exit(config)
    try:
        result = run_cycle(settings, since, progress=not quiet)
    except DistillError as exc:
        typer.echo(f"cascade: distill: failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"cascade: distill: {result.message}")


@distill_app.command("rollback")
def distill_rollback(config: ConfigOption = None) -> None:
    """Serve the previous student version again (vLLM adapter and gateway switch)."""
    from distill.cycle import DistillError, rollback

    settings = settings_or_exit(config)
    try:
        message = rollback(settings)
    except DistillError as exc:
        typer.echo(f"cascade: distill: rollback failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"cascade: distill: {message}")
