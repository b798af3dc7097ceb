"""Runtime switches shared by every worker: which model name the student tier serves now, which router
artefacts are in use.

The admin endpoint writes the state file atomically (a temporary file, then a rename); every worker polls
its modification time once a second and applies what changed, so a switch reaches all workers within a
second and survives a restart. Delete the file to go back to the configuration's ``student.model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from cascade.files import write_atomic
from gateway.cascade import Cascade

log = logging.getLogger("cascade.gateway")
POLL_S = 1.0


@dataclass(slots=True)
class RuntimeState:
    student_model: str | None = None
    student_lora_path: str | None = None  # where the student server reads that adapter (to re-load it)
    scorer: str | None = None  # path of the post-generation router artefact
    pre_router: str | None = None  # path of the pre-generation router artefact
    threshold: float | None = None  # the configured signal's threshold, recalibrated at runtime


class StateFile:
    def __init__(self, path: str | Path, cascade: Cascade, on_change: Callable[[], None] = lambda: None) -> None:
        self.path = Path(path)
        self.cascade = cascade
        self.on_change = on_change
        self._mtime: float | None = None

    def read(self) -> RuntimeState:
        try:
            return RuntimeState(**orjson.loads(self.path.read_bytes()))
        except FileNotFoundError:
            return RuntimeState()

    def update(self, **changes: str | float | None) -> None:
        """Record switches (merged with the others) for every worker, atomically."""
        state = asdict(self.read()) | changes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, orjson.dumps(state))

    async def apply_if_changed(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            state = self.read()
        except (OSError, orjson.JSONDecodeError, TypeError) as exc:
            log.error("state file %s is unreadable, keeping the current state: %s", self.path.name, exc)
            return
        routing = self.cascade.routing
        if state.student_model and state.student_model != self.cascade.student.model:
            log.warning("student tier now serves %s", state.student_model)
            self.cascade.switch_student(state.student_model, state.student_lora_path)
        if state.threshold is not None and state.threshold != routing.signal.threshold:
            log.warning("router threshold now %s", state.threshold)
            routing.set_threshold(state.threshold)
        for which, path, slot in (("post", state.scorer, routing.scorer), ("pre", state.pre_router, routing.pre)):
            if path and (slot is None or str(slot.source) != path):
                try:
                    await routing.reload(which, path)
                    log.warning("router %s now %s", which, path)
                except Exception as exc:
                    log.error("router %s %s cannot be loaded, keeping the current one: %s", which, path, exc)
        self.on_change()

    async def watch(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.apply_if_changed()
            await asyncio.sleep(POLL_S)
