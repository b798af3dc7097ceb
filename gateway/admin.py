"""Admin endpoints (``/admin/...``): off (404) unless ``server.admin_key`` is set; a bearer key guards them."""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from gateway.errors import BadRequest, GatewayError, NotFound
from gateway.routes import CascadeDep
from gateway.state import StateFile
from router.errors import RouterLoadError


class AdminDisabled(NotFound):
    """Off by configuration (no admin key; the page switched off)."""


class AdminUnauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_admin_key"


def require_admin(request: Request) -> None:
    key: str | None = request.app.state.settings.server.admin_key
    if key is None:
        raise AdminDisabled("admin endpoints are off; set server.admin_key to use them")
    check_admin_key(request, key)


def check_admin_key(request: Request, key: str) -> None:
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise AdminUnauthorized("a valid admin key is required (Authorization: Bearer ...)")


def get_state_file(request: Request) -> StateFile:
    state_file: StateFile = request.app.state.state_file
    return state_file


admin = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])
StateDep = Annotated[StateFile, Depends(get_state_file)]


class StudentSwitch(BaseModel):
    model: str = Field(min_length=1, description="The model name the student server now serves (e.g. a LoRA adapter)")
    lora_path: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="The adapter's folder as the student server sees it: the gateway loads it again from there "
        "if a restarted student forgets it",
    )


@admin.get("/state")
async def get_state(cascade: CascadeDep) -> dict[str, object]:
    adapter = cascade.health.adapter
    return {
        "student_model": cascade.student.model,
        "teacher_model": cascade.teacher.model,
        "alias": cascade.alias,
        "student_adapter": {"name": adapter.name, "path": adapter.path, "missing": adapter.missing},
        "router": {"signal": cascade.routing.signal.feature, "threshold": cascade.routing.signal.threshold},
    }


@admin.post("/student")
async def switch_student(switch: StudentSwitch, cascade: CascadeDep, state_file: StateDep) -> dict[str, object]:
    """Point the student tier at another served model, after checking the student server serves it."""
    if not await cascade.student.serves(switch.model):
        raise BadRequest(f"the student server does not serve {switch.model!r}; load the adapter first", param="model")
    previous = cascade.student.model
    cascade.switch_student(switch.model, switch.lora_path)
    state_file.update(student_model=switch.model, student_lora_path=switch.lora_path)
    state_file.on_change()
    return {"student_model": switch.model, "previous": previous}


class RouterSwap(BaseModel):
    path: str = Field(min_length=1, description="A router artefact folder (a version, or a root with `current`)")
    which: Literal["post", "pre"] = Field(default="post", description="post-generation scorer or pre-router")


@admin.post("/router")
async def swap_router(swap: RouterSwap, cascade: CascadeDep, state_file: StateDep) -> dict[str, object]:
    """Load, validate and warm a router artefact, then swap it in (every worker follows within a second)."""
    try:
        source = await cascade.routing.reload(swap.which, swap.path)
    except (RouterLoadError, OSError, ValueError) as exc:
        raise BadRequest(f"router not loaded, the current one stays: {exc}", param="path") from None
    state_file.update(**{"scorer" if swap.which == "post" else "pre_router": swap.path})
    state_file.on_change()
    return {"which": swap.which, "router": source, "version": cascade.routing.version}


class ThresholdChange(BaseModel):
    threshold: float = Field(ge=0.0, le=1.0, description="Accept the student's answer when confidence >= this")


@admin.post("/threshold")
async def set_threshold(change: ThresholdChange, cascade: CascadeDep, state_file: StateDep) -> dict[str, object]:
    """A new threshold for the configured confidence signal (every worker follows within a second)."""
    previous = cascade.routing.signal.threshold
    cascade.routing.set_threshold(change.threshold)
    state_file.update(threshold=change.threshold)
    state_file.on_change()
    return {"threshold": change.threshold, "previous": previous, "signal": cascade.routing.signal.feature}
