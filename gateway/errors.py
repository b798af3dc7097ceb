"""The one place that turns failures into OpenAI error objects.

Exceptions raised inside the gateway::

    GatewayError                     status  type
    ├── BadRequest                   400     invalid_request_error (param says which field)
    ├── ModelNotFound                404     invalid_request_error, code model_not_found
    ├── NotFound                     404     invalid_request_error, code not_found (e.g. a run's report)
    │   └── AdminDisabled            404     the admin endpoints or the page are off by configuration (admin.py)
    ├── BodyTooLarge                 413     invalid_request_error
    ├── UnsupportedMediaType         415     invalid_request_error (a body that is not declared JSON)
    ├── Unauthorized                 401     authentication_error, code invalid_api_key        (auth.py)
    ├── ModelNotAllowed              403     permission_error: the key may not use that model  (auth.py)
    ├── KeyStoreUnavailable          503     service_unavailable: keys cannot be checked now   (auth.py)
    ├── RateLimited                  429     rate_limit_error, with retry-after                (limits.py)
    ├── LimitsUnavailable            503     service_unavailable: limits cannot be counted now (limits.py)
    ├── AdminUnauthorized            401     authentication_error, code invalid_admin_key      (admin.py)
    └── UpstreamError                        (an upstream model server failed)
        ├── UpstreamUnavailable      503     service_unavailable (connection refused, reset, DNS)
        ├── UpstreamTimeout          504     timeout
        └── UpstreamBadResponse      the upstream answered an error status:
                                     429 rate_limit_error (its quota), 401/403/404 -> 502 (the upstream refused
                                     the gateway's key or lost its model: not the client's fault), other 4xx
                                     passed on as is (the request's fault), 5xx and garbage -> 502

Anything else becomes a 500 whose message hides the details (they go to the log, never to the client).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

log = logging.getLogger("cascade.gateway")


class GatewayError(Exception):
    status = 500
    type = "internal_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class BodyTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "body_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"

    def __init__(
        self, message: str, *, upstream: str, retryable: bool = False, retry_after: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.upstream = upstream
        self.retryable = retryable  # safe to send again: nothing reached the model, or it asked us to retry
        self.retry_after = retry_after

    @property
    def upstream_fault(self) -> bool:
        """The upstream failed or refused the gateway itself (down, slow, its key, quota or model), so another
        tier may answer; False when the request is at fault and every tier would refuse it."""
        return True

    @property
    def counts_against_breaker(self) -> bool:
        """A failure of the upstream server itself (not of one model name it stopped serving)."""
        return self.upstream_fault


class UpstreamUnavailable(UpstreamError):
    status = 503
    type = "service_unavailable"
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"


class UpstreamBadResponse(UpstreamError):
    """The upstream answered with an error status; its 4xx (the request's fault) is passed on as is."""

    def __init__(self, message: str, *, upstream: str, upstream_status: int, **kwargs: Any) -> None:
        super().__init__(message, upstream=upstream, **kwargs)
        self.upstream_status = upstream_status
        if upstream_status == 429:
            self.status, self.type, self.code = 429, "rate_limit_error", "upstream_rate_limited"
        elif upstream_status in (401, 403):
            self.code = "upstream_auth_failed"  # the gateway's key for that upstream: a 502, never the client's 401
        elif upstream_status == 404:
            self.code = "upstream_model_not_found"
        elif 400 <= upstream_status < 500:
            self.status = upstream_status
            self.type = "invalid_request_error"
            if self.context_too_long:
                self.param = self.param or "messages"

    @property
    def upstream_fault(self) -> bool:
        return self.upstream_status >= 500 or self.upstream_status in (401, 403, 404, 429)

    @property
    def counts_against_breaker(self) -> bool:
        return self.upstream_fault and not self.model_missing

    @property
    def model_missing(self) -> bool:
        """The server is up but does not serve the model name asked for (e.g. a LoRA adapter it forgot)."""
        return self.upstream_status == 404

    @property
    def context_too_long(self) -> bool:
        """The prompt (plus max_tokens) is longer than this upstream's context: a longer-context tier may answer."""
        text = self.message.lower()
        return self.upstream_status == 400 and ("context length" in text or "maximum context" in text)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_payload(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """Status and OpenAI error body for any exception."""
    if isinstance(exc, GatewayError):
        return exc.status, error_body(exc.message, exc.type, exc.param, exc.code)
    log.exception("unhandled error", exc_info=exc)
    return 500, error_body("internal error in the gateway", "internal_error")


def error_response(exc: BaseException, headers: dict[str, str] | None = None) -> Response:
    status, body = error_payload(exc)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None and status in (429, 503):
        headers = {**(headers or {}), "retry-after": str(max(1, round(retry_after)))}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def sse_error_event(exc: BaseException) -> bytes:
    """The SSE event that ends a stream whose upstream failed after the first byte."""
    _, body = error_payload(exc)
    return b"data: " + orjson.dumps(body) + b"\n\ndata: [DONE]\n\n"


def _validation_param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(part) for part in loc if part != "body"]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    async def on_gateway_error(request: Request, exc: Exception) -> Response:
        return error_response(exc, _request_id_header(request))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0]
        param = _validation_param(tuple(first.get("loc", ())))
        message = f"{param or 'body'}: {first.get('msg', 'invalid value')}"
        return error_response(BadRequest(message, param=param), _request_id_header(request))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        type_ = "invalid_request_error" if exc.status_code < 500 else "internal_error"
        code = "not_found" if exc.status_code == 404 else None
        body = error_body(str(exc.detail), type_, None, code)
        return Response(orjson.dumps(body), status_code=exc.status_code, media_type="application/json")

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return error_response(exc, _request_id_header(request))

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)


def _request_id_header(request: Request) -> dict[str, str] | None:
    request_id = getattr(request.state, "request_id", None)
    return {"x-request-id": request_id} if request_id else None
