"""``cascade serve``: the gateway."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer

from cascade.commands.common import ConfigOption, fail, settings_or_exit
from cascade.config import Settings


def _upstream_flags(url: str | None, model: str | None) -> dict[str, str]:
    return {key: value for key, value in (("url", url), ("model", model)) if value is not None}


def serve(
    config: ConfigOption = None,
    student_url: Annotated[str | None, typer.Option(help="Student base URL ending in /v1")] = None,
    student_model: Annotated[str | None, typer.Option(help="Student's served model name")] = None,
    teacher_url: Annotated[str | None, typer.Option(help="Teacher base URL ending in /v1")] = None,
    teacher_model: Annotated[str | None, typer.Option(help="Teacher's served model name")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (metrics stay exact across them)")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Run the gateway (OpenAI-compatible endpoint) until interrupted."""
    overrides: dict[str, Any] = {}
    if student := _upstream_flags(student_url, student_model):
        overrides["student"] = student
    if teacher := _upstream_flags(teacher_url, teacher_model):
        overrides["teacher"] = teacher
    server = {key: value for key, value in (("host", host), ("port", port)) if value is not None}
    if server:
        overrides["server"] = server
    settings = settings_or_exit(config, **overrides)
    run_gateway(settings, log_level, workers)


def run_gateway(settings: Settings, log_level: str = "warning", workers: int = 1) -> None:
    """Serve the gateway; with several workers, metrics go through prometheus-client's multiprocess mode."""
    import os
    import tempfile
    import time

    import uvicorn

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr)
    typer.echo(
        f"cascade: gateway on http://{settings.server.host}:{settings.server.port}/v1 "
        f"(student {settings.student.model} at {settings.student.url}, "
        f"teacher {settings.teacher.model} at {settings.teacher.url}; {workers} worker(s)); {settings.page_note()}",
        err=True,
    )
    common: dict[str, Any] = {
        "host": settings.server.host,
        "port": settings.server.port,
        "log_level": log_level,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "timeout_graceful_shutdown": settings.server.shutdown_grace_s,
    }
    from router.errors import RouterLoadError

    if workers == 1:
        from gateway.app import create_app

        try:
            application = create_app(settings)
        except RouterLoadError as exc:
            fail([f"router: {exc}"])
        uvicorn.run(application, **common)
        return
    try:  # each worker loads the routers itself; check them once here, so a mistake is one clear line
        from gateway.routing import Routing

        Routing(settings.router).load()
    except RouterLoadError as exc:
        fail([f"router: {exc}"])
    # Workers are new processes: they rebuild the app from the validated settings passed in the environment.
    os.environ["CASCADE_SETTINGS_JSON"] = settings.model_dump_json()
    with tempfile.TemporaryDirectory(prefix="cascade-metrics-") as metrics_dir:
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # a fresh folder: every counter starts at zero now
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            os.environ["CASCADE_STARTED_AT"] = str(time.time())
        uvicorn.run("gateway.app:app_from_environment", factory=True, workers=workers, **common)
