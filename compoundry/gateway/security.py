"""Who may call what, and how big a request may be: one pure ASGI middleware.

Scopes by path (``ROUTE_SCOPES``): predictions need ``invoke``; the control API
and the route table (it shows internal replica URLs) need ``admin``; ``/metrics``
needs ``metrics`` (a scraper's key that can move nothing) or ``admin``; probes,
the OpenAPI docs and the MLflow webhook (authenticated by its own HMAC
signature, since MLflow cannot send an API key) are open. The caller's
principal (key id, tenant) is put in the request state for attribution.

Bodies over ``max_body_bytes`` are refused with 413 before the app reads them:
from ``Content-Length``, or while reading it. The body is read here, whole,
within ``body_timeout_s`` (else 408): a client that declares a length and
sends less, or trickles a chunked upload, cannot hold a connection and a
worker.
"""

from __future__ import annotations

import asyncio

from compoundry.core.api_keys import KeyRing, bearer_token
from compoundry.gateway.errors import GatewayError, error_response

OPEN_PATHS = ("/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/control/webhooks/mlflow")
ROUTE_SCOPES = (("/control/", "admin"), ("/v1/routes", "admin"), ("/v1/scaling", "admin"), ("/metrics", "metrics"),
                ("/v1/", "invoke"))


def required_scope(path: str) -> str | None:
    """The scope a path needs; None for open paths."""
    if path in OPEN_PATHS or path.startswith("/docs/"):
        return None
    for prefix, scope in ROUTE_SCOPES:
        if path.startswith(prefix):
            return scope
    return "invoke"


class Unauthorized(GatewayError):
    status, code = 401, "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="compoundry"'}


class Forbidden(GatewayError):
    status, code = 403, "forbidden"


class PayloadTooLarge(GatewayError):
    status, code = 413, "payload_too_large"


class RequestTimeout(GatewayError):
    status, code = 408, "request_timeout"


class Security:
    def __init__(self, app, keys: KeyRing, auth_required: bool, max_body_bytes: int, body_timeout_s: float = 10.0):
        self.app = app
        self.keys = keys
        self.auth_required = auth_required
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = _wanted_headers(scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            request_id = scope.get("state", {}).get("request_id")
            return await error_response(refusal, request_id)(scope, receive, send)
        request_id = scope.get("state", {}).get("request_id")
        try:  # the whole body, bounded in size and in time, before the app sees it
            async with asyncio.timeout(self.body_timeout_s):
                body = await self._read_limited(receive)
        except TimeoutError:
            late = RequestTimeout(f"the request body did not arrive within {self.body_timeout_s:g} s",
                                  {"body_timeout_s": self.body_timeout_s})
            return await error_response(late, request_id)(scope, receive, send)
        if body is None:
            return await error_response(self._too_large(), request_id)(scope, receive, send)
        await self.app(scope, replay_body(body, receive), send)

    def _refusal(self, scope, headers: dict[str, str]) -> GatewayError | None:
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return self._too_large()
        scope_needed = required_scope(scope.get("path", ""))
        if scope_needed is None or not self.auth_required:
            return None
        principal = self.keys.authenticate(bearer_token(headers.get("authorization"), headers.get("x-api-key")))
        if principal is None:
            return Unauthorized("a valid API key is required: Authorization: Bearer <key> "
                                "(create one with `compoundry keys create`)")
        if not principal.may(scope_needed):
            return Forbidden(f"this key lacks the {scope_needed!r} scope", {"key_id": principal.key_id})
        scope.setdefault("state", {})["principal"] = principal
        return None

    async def _read_limited(self, receive) -> bytes | None:
        """The whole body, or None as soon as it passes the limit."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"request body larger than {self.max_body_bytes} bytes",
                               {"max_body_bytes": self.max_body_bytes})


_WANTED = {b"content-length": "content-length", b"authorization": "authorization", b"x-api-key": "x-api-key"}


def _wanted_headers(scope) -> dict[str, str]:
    """The headers this middleware reads, in one pass (a repeated header: the last one, as before)."""
    found = {}
    for key, value in scope.get("headers", []):
        name = _WANTED.get(key) or _WANTED.get(key.lower())
        if name is not None:
            found[name] = value.decode("latin-1")
    return found


async def read_body(receive) -> bytes:
    """The whole request body (Security has bounded it already), for a middleware inside it that reads it."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def replay_body(body: bytes, receive):
    """A ``receive`` that gives the app ``body`` (already read by a middleware), then the client's next message."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would
    return replay
