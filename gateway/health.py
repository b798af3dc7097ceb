"""Both tiers' health, readiness, and keeping a promoted adapter loaded in the student server.

Each tier is in one :class:`TierState` at a time::

    ready            it serves the model the gateway asks for
    down             it cannot be reached, or does not answer GET /models
    circuit_open     its breaker is failing calls fast after repeated failures
    model_missing    it answers but does not serve the configured model
    adapter_missing  (student) it serves its base model but not the promoted adapter, e.g. after a restart

The gateway is ready (``/readyz`` 200) while the alias can still be answered under the configured policy: the
student is ready (or lost its adapter and ``router.on_adapter_missing`` is ``base``), or the teacher is ready.
A teacher outage alone keeps it ready, so ``router.on_teacher_down: degrade`` can do its job.

vLLM keeps runtime-loaded LoRA adapters in memory only: a restarted student serves the base model and answers
404 for the adapter. The gateway knows the promoted adapter's name and path (from the admin switch, kept in
the state file), and whoever notices first (the periodic check every ``server.health_check_s``, ``/readyz``,
or a request that got the student's 404) loads it again with ``POST /v1/load_lora_adapter``, one re-load at a
time per worker. Until it is back, the alias answers per ``router.on_adapter_missing``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from gateway.errors import UpstreamError
from gateway.periodic import repeat
from gateway.upstream import Upstream

log = logging.getLogger("cascade.gateway")


class TierState(StrEnum):
    READY = "ready"
    DOWN = "down"
    CIRCUIT_OPEN = "circuit_open"
    MODEL_MISSING = "model_missing"
    ADAPTER_MISSING = "adapter_missing"


@dataclass(slots=True)
class StudentAdapter:
    """The promoted adapter the student tier serves (``name`` None: the base model serves)."""

    base_model: str
    name: str | None = None
    path: str | None = None  # where the student server reads it (the path as that server sees it)
    missing: bool = False  # the student server answered that it does not serve ``name``

    def switch(self, model: str, path: str | None) -> None:
        self.name, self.path = (None, None) if model == self.base_model else (model, path)
        self.missing = False


Observe = Callable[[Mapping[str, str], bool], None]
Reloaded = Callable[[str], None]  # outcome: ok | failed | no_path


class Health:
    def __init__(
        self,
        student: Upstream,
        teacher: Upstream,
        on_adapter_missing: str,
        observe: Observe = lambda states, missing: None,
        reloaded: Reloaded = lambda outcome: None,
    ) -> None:
        self.student = student
        self.teacher = teacher
        self.adapter = StudentAdapter(student.model)
        self.on_adapter_missing = on_adapter_missing
        self._observe = observe
        self._reloaded = reloaded
        self._restoring: asyncio.Task[bool] | None = None
        self.last: dict[str, TierState] = {}  # the latest check's states (none before the first)

    async def check(self) -> dict[str, TierState]:
        """Both tiers' states now; re-loads the promoted adapter first if the student lost it."""
        student, teacher = await asyncio.gather(self._student_state(), _state(self.teacher, self.teacher.model))
        states = {"student": student, "teacher": teacher}
        self.last = states
        self._observe(states, self.adapter.missing)
        return states

    def can_answer(self, states: dict[str, TierState]) -> bool:
        """Can the alias still be answered under the configured policy?"""
        student = states["student"]
        fallback_to_base = student == TierState.ADAPTER_MISSING and self.on_adapter_missing == "base"
        return student == TierState.READY or fallback_to_base or states["teacher"] == TierState.READY

    async def _student_state(self) -> TierState:
        adapter = self.adapter
        state = await _state(self.student, self.student.model)
        if adapter.name is None or state != TierState.MODEL_MISSING:
            adapter.missing = adapter.missing and state != TierState.READY
            return state
        adapter.missing = True
        if await self.restore_adapter():
            return TierState.READY
        return TierState.ADAPTER_MISSING if await self.student.serves(adapter.base_model) else state

    def adapter_lost(self) -> None:
        """A request found the student without its adapter: fall back at once and re-load in the background."""
        if self.adapter.name is not None:
            self.adapter.missing = True
            self._start_restore()

    async def restore_adapter(self) -> bool:
        """Load the promoted adapter into the student again; True once it serves it. One re-load at a time."""
        return await asyncio.shield(self._start_restore())

    def _start_restore(self) -> asyncio.Task[bool]:
        if self._restoring is None or self._restoring.done():
            self._restoring = asyncio.create_task(self._load_adapter())
        return self._restoring

    async def _load_adapter(self) -> bool:
        adapter = self.adapter
        name, path = adapter.name, adapter.path
        if name is None:
            return True
        if path is None:
            log.error("the student server lost adapter %s and its path is unknown: switch to it again", name)
            self._reloaded("no_path")
            return False
        try:
            await self.student.load_lora_adapter(name, path)
        except UpstreamError as exc:
            log.error("re-loading adapter %s into the student failed: %s", name, exc.message)
            self._reloaded("failed")
            return False
        if adapter.name == name:  # not switched meanwhile
            adapter.missing = False
        log.warning("re-loaded adapter %s into the student server (it had forgotten it)", name)
        self._reloaded("ok")
        return True

    async def watch(self, every_s: float) -> None:
        """Check both tiers every ``every_s``; a check that breaks is logged (once per kind) and tried again."""
        await repeat(every_s, self.check, "the health check of the tiers")


async def _state(upstream: Upstream, model: str) -> TierState:
    if upstream.breaker.state == "open":
        return TierState.CIRCUIT_OPEN
    served = await upstream.served_models()
    if served is None:
        return TierState.DOWN
    return TierState.READY if model in served else TierState.MODEL_MISSING
