"""The built-in page (``/ui``): a static shell, its script and Chart.js from the package, and the figures it polls
(``/ui/data``). With ``server.admin_key`` set the figures and reports are behind it; without one they are open
while auth is off, and off (404) while auth is on; ``server.page: false`` turns the whole page off."""

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
from gateway.periodic import repeat

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


def mount_static(app: Any, settings: Settings) -> None:
    if settings.server.page:
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
        "router": _router(cascade),
        "windows": history.windows(now),
        "series": history.series(now),
        "cycles": await asyncio.to_thread(recent_cycles, settings.distill.work_dir / "runs"),
    }


def _router(cascade: Cascade) -> dict[str, Any]:
    """The router that is serving: a loaded scorer artefact, or the configured signal at its threshold."""
    routing = cascade.routing
    if routing.scorer is not None:
        return {"kind": routing.router.kind, "signal": None, "threshold": routing.router.threshold,
                "version": routing.version}  # fmt: skip
    return {"kind": "signal", "signal": routing.signal.feature, "threshold": routing.signal.threshold,
            "version": routing.version}  # fmt: skip


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _cycle(folder: Path) -> dict[str, Any] | None:
    """One run's decision from its report.json; None for a run still writing it, or a damaged one."""
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict):
        return None
    metrics, counts, reasons = report.get("metrics"), report.get("counts"), report.get("reasons")
    metrics = metrics if isinstance(metrics, dict) else {}
    counts = counts if isinstance(counts, dict) else {}
    reasons = reasons if isinstance(reasons, list) else []

    def agreement(name: str) -> float | None:
        figures = metrics.get(name)
        return _number(figures.get("agreement")) if isinstance(figures, dict) else None

    return {
        "run_id": folder.name,
        "finished": str(report.get("finished") or "") or None,
        "decision": str(report.get("decision") or "unknown"),
        "reasons": [str(reason) for reason in reasons],
        "promoted_version": report.get("promoted_version"),
        "heldout_candidate": agreement("heldout_candidate"),
        "heldout_serving": agreement("heldout_serving"),
        "examples": _number(counts.get("train")),
        "report": f"/ui/runs/{folder.name}/report.html" if (folder / "report.html").is_file() else None,
    }


def recent_cycles(runs: Path, limit: int = RECENT_CYCLES) -> list[dict[str, Any]]:
    """The latest distillation runs' decisions, newest first (run ids are their start times)."""
    if not runs.is_dir():
        return []
    folders = sorted((f for f in runs.iterdir() if RUN_ID.fullmatch(f.name) and f.is_dir()), reverse=True)
    cycles = []
    for folder in folders:
        if (cycle := _cycle(folder)) is not None:
            cycles.append(cycle)
        if len(cycles) == limit:
            break
    return cycles


@figures.get("/runs/{run_id}/report.html", include_in_schema=False)
async def run_report(run_id: str, request: Request) -> FileResponse:
    settings: Settings = request.app.state.settings
    path = settings.distill.work_dir / "runs" / run_id / "report.html"
    if not RUN_ID.fullmatch(run_id) or not path.is_file():
        raise NotFound(f"no report for run {run_id!r}")
    return FileResponse(path, media_type="text/html")


async def sample(metrics: Metrics, history: History) -> None:
    """A snapshot of the totals every ``history.every_s`` (a reading that fails is logged and tried again)."""

    async def snapshot() -> None:
        history.add(read_totals(metrics.exposed().collect()))

    await repeat(history.every_s, snapshot, "the page's metrics snapshot")
