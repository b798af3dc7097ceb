"""The ``cascade`` command line: assembles the command groups of ``cascade/commands/``."""

from __future__ import annotations

import typer

from cascade.commands.distill import distill_app
from cascade.commands.keys import keys_app
from cascade.commands.local import models_app, up
from cascade.commands.log import log_app
from cascade.commands.router import router_app
from cascade.commands.serve import serve

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Cascade: the cost-cutting LLM gateway.")


@app.callback()
def main() -> None:
    """Cascade: the cost-cutting LLM gateway."""


app.command()(serve)
app.command()(up)
app.add_typer(log_app, name="log")
app.add_typer(router_app, name="router")
app.add_typer(models_app, name="models")
app.add_typer(distill_app, name="distill")
app.add_typer(keys_app, name="keys")

if __name__ == "__main__":
    app()
