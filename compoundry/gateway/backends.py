"""HTTP calls to Bento replicas: ``POST {replica}/invoke {"inputs": ...}``.

One shared ``httpx.AsyncClient`` per gateway keeps connections to replicas
alive (a new TCP connection per step would be a visible share of a pipeline's
overhead). Every failure becomes a typed :mod:`compoundry.gateway.errors`
exception that keeps the replica's own message, so a client sees why its
inputs were refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from compoundry.gateway.errors import ComponentFailed, ComponentTimeout, InvalidInput
from compoundry.gateway.retry import ErrorKind

DEFAULT_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=128, keepalive_expiry=30)


class ReplicaClient:
    def __init__(self, client: httpx.AsyncClient | None = None, limits: httpx.Limits = DEFAULT_LIMITS):
        self._client = client or httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0), trust_env=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def invoke(self, url: str, inputs: Any, timeout: float, component: str | None = None) -> Any:
        """POST the inputs to one replica's ``/invoke`` and return its JSON output."""
        return await self.post(url, "/invoke", {"inputs": inputs}, timeout, component)

    async def post(self, url: str, path: str, body: Any, timeout: float, component: str | None = None,
                   headers: dict[str, str] | None = None) -> Any:
        """POST a JSON body to ``{replica}{path}`` and return the JSON answer (e.g. the llm's ``/v1/...``)."""
        where = {"component": component, "replica": url} if component else {"replica": url}
        try:
            response = await self._client.post(f"{url.rstrip('/')}{path}", json=body, timeout=timeout,
                                               headers=headers)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, component or url, timeout, where) from exc
        _raise_for_status(response, component or url, where)
        try:
            return response.json()
        except ValueError as exc:
            raise ComponentFailed(f"{component or url} answered non-JSON", where) from exc

    @asynccontextmanager
    async def stream(self, url: str, path: str, body: Any, timeout: float, component: str | None = None,
                     headers: dict[str, str] | None = None) -> AsyncIterator[AsyncIterator[str]]:
        """POST and iterate the answer's lines (server-sent events); errors before the first line are typed."""
        where = {"component": component, "replica": url} if component else {"replica": url}
        try:
            async with self._client.stream("POST", f"{url.rstrip('/')}{path}", json=body, timeout=timeout,
                                           headers=headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _raise_for_status(response, component or url, where)
                yield response.aiter_lines()
        except httpx.HTTPError as exc:
            raise _transport_error(exc, component or url, timeout, where) from exc


def _transport_error(exc: httpx.HTTPError, who: str, timeout: float, where: dict):
    if isinstance(exc, httpx.TimeoutException):
        error = ComponentTimeout(f"{who} did not answer within {timeout:.3f}s", where)
        return _kind(error, ErrorKind.CONNECT if isinstance(exc, httpx.ConnectTimeout) else ErrorKind.TIMEOUT)
    error = ComponentFailed(f"{who} unreachable: {type(exc).__name__}: {exc}", where)
    return _kind(error, transport_error_kind(exc))


def _raise_for_status(response: httpx.Response, who: str, where: dict) -> None:
    if response.status_code >= 500:
        error = ComponentFailed(f"{who} failed: {replica_message(response)}",
                                {**where, "replica_status": response.status_code})
        raise _kind(error, ErrorKind.HTTP_5XX)
    if response.status_code >= 400:
        raise InvalidInput(replica_message(response), {**where, "replica_status": response.status_code})


def transport_error_kind(exc: httpx.HTTPError) -> ErrorKind:
    """Whether the replica can have seen the request: only a refused connection or a close before
    any response byte prove it did not (what :func:`retry.should_retry` may retry)."""
    if isinstance(exc, httpx.ConnectError):
        return ErrorKind.CONNECT
    if isinstance(exc, httpx.RemoteProtocolError) and "without sending" in str(exc):
        return ErrorKind.RESET_BEFORE_RESPONSE
    return ErrorKind.RESET_AFTER_RESPONSE


def _kind(error, kind: ErrorKind):
    error.error_kind = kind
    return error


def replica_message(response: httpx.Response) -> str:
    """The error text a replica sent: BentoML's ``{"error": ...}``, ours, FastAPI's ``detail``, or raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        error = body.get("error", body.get("detail"))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return error if isinstance(error, str) else str(error)[:500]
    return str(body)[:500]
