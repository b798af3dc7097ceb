"""The built-in page (``/ui``): a static shell, its script and Chart.js from the package, and the figures it polls
(``/ui/data``). While auth is off the page is open; with auth on it is behind ``server.admin_key`` (and off
until one is set), so the page never shows more than the admin endpoints would."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from cascade.config import Settings
from gateway.admin import AdminDisabled, check_admin_key
from gateway.cascade import Cascade
from gateway.dashboard import History, read_totals
from gateway.errors import NotFound
from gateway.metrics import Metrics

STATIC = Path(__file__).parent / "static"
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
RECENT_CYCLES = 10


def page_access(request: Request) -> None:
    """The shell is harmless without its figures, but off is off: 404 for the shell, its data and its reports."""
    settings: Settings = request.app.state.settings
    if not settings.server.page:
        raise AdminDisabled("the page is off (server.page: false)")


def figures_access(request: Request) -> None:
    page_access(request)
    settings: Settings = request.app.state.settings
    key = settings.server.admin_key
    if key is not None:
        check_admin_key(request, key)
    elif settings.auth.enabled:
        raise AdminDisabled("auth is on, so the page's figures are behind server.admin_key: set it to see them")


page = APIRouter(prefix="/ui", dependencies=[Depends(page_access)])
figures = APIRouter(prefix="/ui", dependencies=[Depends(figures_access)])


def mount_static(app: Any) -> None:
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")


@page.get("", include_in_schema=False)
async def shell() -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text())


@figures.get("/data")
async def data(request: Request) -> dict[str, Any]:
    """The page's figures: the tiers, the router, the hour and day windows, chart series and recent cycles."""
    state = request.app.state
    metrics: Metrics = state.metrics
    history: History = state.history
    cascade: Cascade = state.cascade
    now = read_totals(metrics.exposed().collect())
    adapter = cascade.health.adapter
    settings: Settings = state.settings
    return {
        "now": now.at,
        "sample_s": history.every_s,
        "tiers": {
            "student": {"model": cascade.student.model, "state": cascade.health.last.get("student")},
            "teacher": {"model": cascade.teacher.model, "state": cascade.health.last.get("teacher")},
        },
        "adapter": {"name": adapter.name, "missing": adapter.missing},
        "router": {
            "signal": cascade.routing.signal.feature,
            "threshold": cascade.routing.signal.threshold,
            "version": cascade.routing.version,
        },
        "windows": history.windows(now),
        "series": history.series(now),
        "cycles": await asyncio.to_thread(recent_cycles, settings.distill.work_dir / "runs"),
    }


def recent_cycles(runs: Path, limit: int = RECENT_CYCLES) -> list[dict[str, Any]]:
    """The latest distillation runs' decisions, newest first, from their report.json files."""
    cycles = []
    for path in runs.glob("*/report.json") if runs.is_dir() else ():
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a run still writing its report, or a damaged one: not a cycle to show
        metrics = report.get("metrics") or {}
        has_html = (path.parent / "report.html").is_file()
        cycles.append(
            {
                "run_id": report.get("run_id", path.parent.name),
                "finished": report.get("finished"),
                "decision": report.get("decision"),
                "reasons": report.get("reasons") or [],
                "promoted_version": report.get("promoted_version"),
                "heldout_candidate": (metrics.get("heldout_candidate") or {}).get("agreement"),
                "heldout_serving": (metrics.get("heldout_serving") or {}).get("agreement"),
                "examples": (report.get("counts") or {}).get("train"),
                "report": f"/ui/runs/{path.parent.name}/report.html" if has_html else None,
            }
        )
    cycles.sort(key=lambda cycle: str(cycle["finished"] or ""), reverse=True)
    return cycles[:limit]


@figures.get("/runs/{run_id}/report.html", include_in_schema=False)
async def run_report(run_id: str, request: Request) -> FileResponse:
    settings: Settings = request.app.state.settings
    path = settings.distill.work_dir / "runs" / run_id / "report.html"
    if not RUN_ID.match(run_id) or not path.is_file():
        raise NotFound(f"no report for run {run_id!r}")
    return FileResponse(path, media_type="text/html")


async def sample(metrics: Metrics, history: History) -> None:
    """One snapshot every ``history.every_s``, the first at once."""
    while True:
        history.add(read_totals(metrics.exposed().collect()))
        await asyncio.sleep(history.every_s)
