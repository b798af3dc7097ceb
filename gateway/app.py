"""The gateway application: services built once at start-up and hung on ``app.state``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cascade.config import Settings
from gateway.cascade import STUDENT, TEACHER, Cascade
from gateway.errors import install_error_handlers
from gateway.metrics import Metrics
from gateway.routes import api
from gateway.upstream import Upstream
from router import make_router


def create_app(settings: Settings) -> FastAPI:
    student = Upstream(STUDENT, settings.student)
    teacher = Upstream(TEACHER, settings.teacher)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await student.start()
        await teacher.start()
        try:
            yield
        finally:
            await student.close()
            await teacher.close()

    app = FastAPI(title="Cascade", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    metrics = Metrics(settings.teacher.price)
    metrics.prime([settings.student.model, settings.teacher.model])
    metrics.set_version("router", f"{settings.router.signal}@{settings.router.threshold}")
    metrics.breakers = {STUDENT: student.breaker, TEACHER: teacher.breaker}
    app.state.metrics = metrics
    app.state.finish_exchange = metrics.observe
    app.state.cascade = Cascade(
        settings.alias,
        student,
        teacher,
        make_router(settings.router.signal, settings.router.threshold),
        settings.router.top_logprobs,
        settings.router.on_teacher_down,
    )
    install_error_handlers(app)
    app.include_router(api)
    return app


def app_from_environment() -> FastAPI:
    """The app of one worker of ``cascade serve --workers N``, from the settings its parent validated."""
    return create_app(Settings.model_validate_json(os.environ["CASCADE_SETTINGS_JSON"]))
