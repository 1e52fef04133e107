"""HTTP calls to Bento replicas: ``POST {replica}/invoke {"inputs": ...}``.

One shared client per gateway keeps connections to replicas alive (a new TCP
connection per step would be a visible share of a pipeline's overhead). Every
failure becomes a typed :mod:`compoundry.gateway.errors` exception that keeps
the replica's own message, so a client sees why its inputs were refused.

Plain calls go through an ``aiohttp`` session: httpx's connection pool checks
every pooled connection with a ``select()`` on each request, O(connections)
system calls per call, which capped a gateway at a few hundred calls/s at 64
clients (docs/decisions/0013-gateway-hot-path.md). aiohttp's pool learns of a
closed keep-alive connection from the event loop instead. Streams (and a
client passed in, as unit tests do with httpx's ``MockTransport``) use httpx.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx

from compoundry.core.routing.retry import ErrorKind
from compoundry.gateway.errors import ComponentFailed, ComponentTimeout, InvalidInput

DEFAULT_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=128, keepalive_expiry=30)
JSON_HEADERS = {"Content-Type": "application/json"}


class ReplicaClient:
    def __init__(self, client: httpx.AsyncClient | None = None, limits: httpx.Limits = DEFAULT_LIMITS):
        self._injected = client is not None  # tests hand in an httpx client: every call goes through it
        self._limits = limits
        self._client = client or httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0), trust_env=False)
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self._client.aclose()

    def _open_session(self) -> aiohttp.ClientSession:
        """Created on first use, inside the running loop, with httpx's pool limits."""
        connector = aiohttp.TCPConnector(limit=self._limits.max_connections or 0, limit_per_host=0,
                                         keepalive_timeout=self._limits.keepalive_expiry or 30, ttl_dns_cache=None)
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=True,
                                              timeout=aiohttp.ClientTimeout(total=30.0))
        return self._session

    async def invoke(self, url: str, inputs: Any, timeout: float, component: str | None = None) -> Any:
        """POST the inputs to one replica's ``/invoke`` and return its JSON output."""
        return await self.post(url, "/invoke", {"inputs": inputs}, timeout, component)

    async def post(self, url: str, path: str, body: Any, timeout: float, component: str | None = None,
                   headers: dict[str, str] | None = None) -> Any:
        """POST a JSON body to ``{replica}{path}`` and return the JSON answer (e.g. the llm's ``/v1/...``)."""
        if self._injected:
            return await self._post_httpx(url, path, body, timeout, component, headers)
        session = self._session if self._session is not None else self._open_session()
        try:
            async with session.post(f"{url.rstrip('/')}{path}", data=json.dumps(body).encode(),
                                    headers={**JSON_HEADERS, **headers} if headers else JSON_HEADERS,
                                    timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                status, raw = response.status, await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            where = {"component": component, "replica": url} if component else {"replica": url}
            raise _aiohttp_error(exc, component or url, timeout, where) from exc
        if status >= 400:
            where = {"component": component, "replica": url} if component else {"replica": url}
            _raise_for(status, _message(raw, status), component or url, where)
        try:
            return json.loads(raw)
        except ValueError as exc:
            where = {"component": component, "replica": url} if component else {"replica": url}
            raise ComponentFailed(f"{component or url} answered non-JSON", where) from exc

    async def _post_httpx(self, url: str, path: str, body: Any, timeout: float, component: str | None,
                          headers: dict[str, str] | None) -> Any:
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


def _aiohttp_error(exc: Exception, who: str, timeout: float, where: dict):
    """The typed error for an aiohttp failure, classified like :func:`transport_error_kind`."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return _kind(ComponentTimeout(f"{who} did not answer within {timeout:.3f}s", where), ErrorKind.CONNECT)
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return _kind(ComponentTimeout(f"{who} did not answer within {timeout:.3f}s", where), ErrorKind.TIMEOUT)
    error = ComponentFailed(f"{who} unreachable: {type(exc).__name__}: {exc}", where)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _kind(error, ErrorKind.CONNECT)
    if isinstance(exc, aiohttp.ServerDisconnectedError) and isinstance(exc.message, str):
        return _kind(error, ErrorKind.RESET_BEFORE_RESPONSE)  # closed before a response's headers arrived
    return _kind(error, ErrorKind.RESET_AFTER_RESPONSE)


def _raise_for(status: int, message: str, who: str, where: dict) -> None:
    if status >= 500:
        raise _kind(ComponentFailed(f"{who} failed: {message}", {**where, "replica_status": status}),
                    ErrorKind.HTTP_5XX)
    raise InvalidInput(message, {**where, "replica_status": status})


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
    return _message(response.content, response.status_code)


def _message(raw: bytes, status: int) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")[:500] or f"HTTP {status}"
    if isinstance(body, dict):
        error = body.get("error", body.get("detail"))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return error if isinstance(error, str) else str(error)[:500]
    return str(body)[:500]
