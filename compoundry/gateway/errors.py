"""One error shape for every gateway response: ``{"error": {"code", "message", ...}}``.

Clients (and the OpenAI-style SDKs outside orchestrators use) branch on a
stable ``code``, never on free text or on FastAPI's default ``{"detail": ...}``.
Each failure the gateway knows about is a :class:`GatewayError` subclass with
its HTTP status; :func:`install_error_handlers` turns them (and FastAPI's own
validation and routing errors) into that shape.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """An error with an HTTP status, a stable code and extra JSON ``details`` merged into the body."""

    status: int = 500
    code: str = "internal_error"
    error_kind: str | None = None  # transport classification (retry.ErrorKind) for replica failures
    replica_fault: bool = False  # one replica failed while others of its deployment are healthy

    def __init__(self, message: str, details: dict[str, Any] | None = None, *,
                 status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        """OpenAI's error shape (``message``, ``type``, ``param``, ``code``), the details beside them."""
        return {"error": {"code": self.code, "message": self.message, "type": error_type(self.status),
                          "param": self.details.get("param"), **self.details}}

    def headers(self) -> dict[str, str]:
        return {}


#: OpenAI's ``type`` by status: its clients pick the exception from the status, people read the type.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 408: "timeout_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error"}


def error_type(status: int) -> str:
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


class NotFound(GatewayError):
    status, code = 404, "not_found"


class InvalidRequest(GatewayError):
    status, code = 422, "invalid_request"


class ComponentUnavailable(GatewayError):
    """No route or no ready replica: the client may retry after ``retry_after`` seconds."""

    status, code = 503, "component_unavailable"

    def __init__(self, message: str, details: dict[str, Any] | None = None, retry_after: float = 1.0):
        super().__init__(message, {**(details or {}), "retry_after": retry_after})
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after)))}


class Overloaded(ComponentUnavailable):
    """Shed by a priority lane: the queue is full or the deadline cannot be met; retry after ``retry_after``."""

    status, code = 429, "overloaded"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class InvalidInput(GatewayError):
    """The replica refused the inputs (its 4xx); its message is kept."""

    status, code = 400, "invalid_input"


class LimitExceeded(InvalidInput):
    """The call breaks its component's ``limits`` (too many inputs, too long a text: 413; too many tokens
    asked for: 400); refused before any replica sees it. A pipeline reports it as its step's rejection."""

    status, code = 413, "request_too_large"


class ComponentFailed(GatewayError):
    """The replica answered 5xx or could not be reached."""

    status, code = 502, "component_failed"


class ComponentTimeout(GatewayError):
    status, code = 504, "timeout"


class PipelineStepFailed(GatewayError):
    """A required step failed; ``details`` carry the step name and the partial step timings."""

    status, code = 502, "pipeline_step_failed"


class PipelineStepUnavailable(ComponentUnavailable):
    """A required step's component is temporarily unavailable (no ready or healthy replica, breaker open):
    503 with ``Retry-After``, so a client retries instead of treating it as a broken pipeline."""

    code = "pipeline_step_unavailable"


class PipelineStepOverloaded(Overloaded):
    """A required step's component shed the call (full lane, unmeetable deadline): 429 with ``Retry-After``."""

    code = "pipeline_step_overloaded"


class PipelineStepRejected(GatewayError):
    """A required step's model refused the inputs the request gave it (its 4xx): the client's error."""

    status, code = 400, "pipeline_step_rejected"


class PipelineOutputFailed(GatewayError):
    """Every step ran but the pipeline's ``output`` template could not be rendered."""

    status, code = 502, "pipeline_output_failed"


def error_response(exc: GatewayError, request_id: str | None = None) -> JSONResponse:
    headers = exc.headers()
    if request_id:
        headers["X-Request-Id"] = request_id
    return JSONResponse(status_code=exc.status, content=jsonable_encoder(exc.body()), headers=headers)


def internal_error_response(request_id: str | None = None) -> JSONResponse:
    """The body of an unexpected failure: no traceback, only the id to find it in the logs."""
    details = {"request_id": request_id} if request_id else {}
    return error_response(GatewayError("internal error; see the gateway log", details), request_id)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
    return error_response(exc, _request_id(request))


#: The OpenAI routes answer a body their model refuses as OpenAI does: 400 (the clients' ``BadRequestError``).
OPENAI_BODIES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                for e in exc.errors()]
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"]) or "body"
    param = ".".join(str(p) for p in first["loc"][1:]) or None  # the field, as OpenAI names it
    status = 400 if request.url.path in OPENAI_BODIES else None
    refusal = InvalidRequest(f"{where}: {first['msg']}", {"param": param, "errors": problems}, status=status)
    return error_response(refusal, _request_id(request))


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 401: "unauthorized",
               403: "forbidden", 413: "payload_too_large", 415: "unsupported_media_type"}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    err = GatewayError(str(exc.detail), status=exc.status_code, code=code)
    response = error_response(err, _request_id(request))
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Route every known error type to the one JSON shape (unexpected ones: see ``RequestContext``)."""
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
