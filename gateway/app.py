"""The gateway application: services built once at start-up and hung on ``app.state``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from cascade.config import Settings
from gateway.accounting import Accountant
from gateway.admin import admin
from gateway.auth import Authenticator
from gateway.cascade import STUDENT, TEACHER, Cascade
from gateway.dashboard import History, Totals, read_totals
from gateway.errors import install_error_handlers
from gateway.health import Health
from gateway.limits import Counters, Limiter, MemoryCounters, RedisCounters
from gateway.metrics import Metrics
from gateway.page import figures, mount_static, page, sample
from gateway.routes import api
from gateway.routing import Routing
from gateway.shadows import ShadowSampler
from gateway.state import StateFile
from gateway.upstream import Upstream
from logstore import LogWriter
from logstore.keys import KeyStore
from router.agreement import get_agreement


def create_app(settings: Settings) -> FastAPI:
    student = Upstream(STUDENT, settings.student)
    teacher = Upstream(TEACHER, settings.teacher)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await student.start()
        await teacher.start()
        await writer.start()
        await state_file.apply_if_changed()
        watchers = [
            asyncio.create_task(state_file.watch()),
            asyncio.create_task(health.watch(settings.server.health_check_s)),
            asyncio.create_task(sample(metrics, history)),
        ]
        try:
            yield
        finally:
            for watcher in watchers:
                watcher.cancel()
            await accountant.close()  # shadows in flight, then the log queue is drained
            await student.close()
            await teacher.close()
            if keys is not None:
                await keys.close()
            if isinstance(counters, RedisCounters):
                await counters.close()

    app = FastAPI(title="Cascade", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    metrics = Metrics(settings.teacher.price)
    metrics.prime([settings.student.model, settings.teacher.model])
    metrics.breakers = {STUDENT: student.breaker, TEACHER: teacher.breaker}
    app.state.metrics = metrics
    # The page's first reading: zero when `cascade serve --workers N` started the counters (each worker starts
    # later), else the counters as this process finds them (zero for its own registry).
    started = os.environ.get("CASCADE_STARTED_AT")
    first = Totals(float(started)) if started else read_totals(metrics.exposed().collect())
    app.state.history = history = History(settings.server.page_sample_s, first)
    writer = LogWriter(settings.log_store)
    app.state.log_writer = writer
    keys, counters = _auth_services(settings)
    app.state.authenticator = (
        Authenticator(keys, settings.auth.key_cache_s, settings.auth.key_outage_s) if keys is not None else None
    )
    app.state.limiter = limiter = Limiter(counters) if counters is not None else None
    accountant = Accountant(metrics, writer, limiter, drain_s=settings.server.shadow_drain_s)
    if settings.log_store.shadow_share > 0:
        accountant.shadows = ShadowSampler(
            teacher,
            settings.log_store.shadow_share,
            get_agreement(settings.log_store.shadow_agreement),
            metrics,
            accountant.write,
            settings.log_store.shadow_max_in_flight,
        )
    app.state.finish_exchange = accountant.finish
    routing = Routing(settings.router, on_error=metrics.router_errors.inc)
    routing.load()
    metrics.set_version("router", routing.version)
    metrics.set_version("student", settings.student.model)
    app.state.routing = routing
    health = Health(
        student,
        teacher,
        settings.router.on_adapter_missing,
        metrics.observe_tiers,
        lambda outcome: metrics.adapter_reloads.labels(outcome).inc(),
    )
    app.state.health = health
    app.state.cascade = Cascade(
        settings.alias,
        student,
        teacher,
        routing,
        settings.router.top_logprobs,
        settings.router.on_teacher_down,
        health,
    )

    def on_change() -> None:
        metrics.set_version("router", routing.version)
        metrics.set_version("student", student.model)

    state_file = StateFile(settings.server.state_file, app.state.cascade, on_change)
    app.state.state_file = state_file
    install_error_handlers(app)
    app.include_router(api)
    app.include_router(admin)
    app.include_router(page)
    app.include_router(figures)
    mount_static(app, settings)
    _document_request_schema(app)
    return app


def _auth_services(settings: Settings) -> tuple[KeyStore | None, Counters | None]:
    if not settings.auth.enabled:
        return None, None
    counters: Counters = RedisCounters(settings.auth.redis_url) if settings.auth.redis_url else MemoryCounters()
    return KeyStore(settings.log_store.url), counters


def _document_request_schema(app: FastAPI) -> None:
    """The chat request is parsed by hand (orjson, then pydantic); publish its schema in the OpenAPI document."""
    from fastapi.openapi.utils import get_openapi

    from gateway.protocol import ChatCompletionRequest

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            request = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(request.pop("$defs", {}))
            # This deployment's models: generated clients and API fuzzers learn the names that exist.
            request["properties"]["model"]["enum"] = app.state.cascade.model_names
            components["ChatCompletionRequest"] = request
            schema["paths"]["/v1/chat/completions"] = {
                "post": {
                    "summary": "Chat completion (OpenAI-compatible); model 'cascade' routes, a tier's name pins it",
                    "operationId": "chat_completions",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}
                        },
                    },
                    "responses": {"200": {"description": "A chat completion, or an SSE stream of chunks"}},
                }
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_environment() -> FastAPI:
    """The app of one worker of ``cascade serve --workers N``, from the settings its parent validated."""
    return create_app(Settings.model_validate_json(os.environ["CASCADE_SETTINGS_JSON"]))
