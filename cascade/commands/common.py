"""What every ``cascade`` command shares: the --config option, one-line failures, settings, the log store's URL."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from cascade.config import ConfigError, Settings, load_settings

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (see docs/config.md)", show_default=False),
]


def fail(lines: list[str]) -> None:
    """Print one line per problem to stderr and exit with status 2 (never a traceback)."""
    for line in lines:
        typer.echo(f"cascade: {line}", err=True)
    raise typer.Exit(2)


def settings_or_exit(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        fail(["configuration is not valid:", *(f"  {line}" for line in exc.lines)])
        raise  # unreachable: fail() exits


LogUrlOption = Annotated[
    str | None,
    typer.Option("--url", help="Log store URL (default: log_store.url of --config, else var/cascade.db)"),
]
SinceOption = Annotated[datetime | None, typer.Option(help="From this time on (UTC unless an offset is given)")]
UntilOption = Annotated[datetime | None, typer.Option(help="Before this time (UTC unless an offset is given)")]


def log_store_url(config: Path | None, url: str | None) -> str:
    """--url, else --config's log_store.url, else the default SQLite file."""
    if url is not None:
        return url
    if config is not None:
        return settings_or_exit(config).log_store.url
    from cascade.config import LogStoreSettings

    return LogStoreSettings().url
