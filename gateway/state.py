"""Runtime switches shared by every worker: which model name the student tier serves now.

The admin endpoint writes the state file atomically (a temporary file, then a rename); every worker polls
its modification time once a second and applies what changed, so a switch reaches all workers within a
second and survives a restart. Delete the file to go back to the configuration's ``student.model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from gateway.cascade import Cascade

log = logging.getLogger("cascade.gateway")
POLL_S = 1.0


@dataclass(slots=True)
class RuntimeState:
    student_model: str | None = None


class StateFile:
    def __init__(self, path: str | Path, cascade: Cascade) -> None:
        self.path = Path(path)
        self.cascade = cascade
        self._mtime: float | None = None

    def write(self, state: RuntimeState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(asdict(state)))
        os.replace(tmp, self.path)

    def apply_if_changed(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            state = RuntimeState(**orjson.loads(self.path.read_bytes()))
        except (OSError, orjson.JSONDecodeError, TypeError) as exc:
            log.error("state file %s is unreadable, keeping the current state: %s", self.path.name, exc)
            return
        if state.student_model and state.student_model != self.cascade.student.model:
            log.warning("student tier now serves %s", state.student_model)
            self.cascade.switch_student(state.student_model)

    async def watch(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.apply_if_changed()
            await asyncio.sleep(POLL_S)
