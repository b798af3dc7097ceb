"""``cascade keys``: create, list and revoke API keys (stored hashed in the log store's database)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from cascade.commands.common import fail, log_store_url

keys_app = typer.Typer(no_args_is_help=True, help="API keys: create (shown once), list, revoke.")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (its log_store.url)")]
UrlOption = Annotated[str | None, typer.Option("--url", help="Log store URL (overrides --config)")]


def _run(url: str, work: Any) -> Any:
    from logstore import migrate
    from logstore.keys import KeyStore

    async def run() -> Any:
        await migrate(url)
        store = KeyStore(url)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Who the key is for (a team, a service)")],
    models: Annotated[list[str] | None, typer.Option("--model", help="Allowed model (repeat); default: all")] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="Requests per minute")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="Tokens per minute")] = None,
    budget_usd: Annotated[float | None, typer.Option(min=0, help="USD budget per period")] = None,
    budget_period: Annotated[str, typer.Option(help="day or month")] = "day",
    max_concurrent: Annotated[int | None, typer.Option(min=1, help="Concurrent requests")] = None,
    config: ConfigOption = None,
    url: UrlOption = None,
) -> None:
    """Create a key; its plain form is printed once and never stored."""

    if budget_period not in ("day", "month"):
        fail([f"--budget-period must be day or month, got {budget_period!r}"])
    period: Literal["day", "month"] = "month" if budget_period == "month" else "day"
    key, plain = _run(
        log_store_url(config, url),
        lambda store: store.create(
            name,
            models=models,
            rpm=rpm,
            tpm=tpm,
            budget_usd=budget_usd,
            budget_period=period,
            max_concurrent=max_concurrent,
        ),
    )
    typer.echo(json.dumps({**key.public(), "key": plain}, indent=2))
    typer.echo("cascade: store this key now: it is not shown again", err=True)


@keys_app.command("list")
def list_keys(config: ConfigOption = None, url: UrlOption = None) -> None:
    """List keys (ids, names, limits; never secrets)."""
    keys = _run(log_store_url(config, url), lambda store: store.list())
    typer.echo(json.dumps([key.public() for key in keys], indent=2))


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id")], config: ConfigOption = None, url: UrlOption = None
) -> None:
    """Revoke a key (gateways stop accepting it within auth.key_cache_s seconds)."""

    if not _run(log_store_url(config, url), lambda store: store.revoke(key_id)):
        fail([f"no active key with id {key_id!r}"])
    typer.echo(f"cascade: revoked {key_id}", err=True)
