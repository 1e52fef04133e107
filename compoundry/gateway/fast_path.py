"""The prediction routes without FastAPI's per-request machinery (docs/decisions/0040-raw-asgi-fast-path.md).

Profiled under load (py-spy, 64 clients), FastAPI and Starlette took about a fifth of the gateway's
GIL time per component call: routing, dependency solving, request-model validation and the response
model. This middleware answers ``POST /v1/components/{name}``, ``/v1/pipelines/{name}``,
``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` itself when the body is JSON
that the route's request model accepts (and asks for no stream): headers read once from the scope,
the body parsed by pydantic-core, the same functions as the routes
(:mod:`~compoundry.gateway.predictions`, :mod:`~compoundry.gateway.openai_api`), the answer written
as FastAPI would write it and errors through the same :func:`~compoundry.gateway.errors.error_response`.
Anything else (another content type, JSON the parser or the request model refuses, a stream, another
method or path) goes on to FastAPI with its body, so every refusal keeps the one shape FastAPI's
handlers give it.

It sits inside ``Security`` (the key is checked, the body read and bounded) and ``RequestContext``
(the request id, metering, crashes as JSON 500s).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json

from compoundry.gateway.calls import Caller
from compoundry.gateway.errors import GatewayError, error_response
from compoundry.gateway.openai_api import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    complete,
    embed,
)
from compoundry.gateway.predictions import (
    COMPONENT_JSON,
    PIPELINE_JSON,
    invoke_component,
    run_pipeline_request,
)
from compoundry.gateway.security import read_body, replay_body

JSON_HEADERS = [(b"content-type", b"application/json")]

#: (app state, path name, parsed body, caller) -> the answer's JSON bytes, or None: the body is FastAPI's to judge
Answer = Callable[[Any, str, Any, Caller], Awaitable[bytes | None]]


async def _component(state, name: str, parsed: Any, caller: Caller) -> bytes | None:
    inputs = parsed.get("inputs") if type(parsed) is dict else None
    if type(inputs) is not dict:  # the request model takes an ``inputs`` object and ignores any other key
        return None
    return _as_model(COMPONENT_JSON, await invoke_component(state, name, inputs, caller))


async def _pipeline(state, name: str, parsed: Any, caller: Caller) -> bytes | None:
    inputs = parsed.get("inputs") if type(parsed) is dict else None
    if type(inputs) is not dict:
        return None
    return _as_model(PIPELINE_JSON, await run_pipeline_request(state, name, inputs, caller))


def _completion(model, path: str) -> Answer:
    async def answer(state, _: str, parsed: Any, caller: Caller) -> bytes | None:
        try:
            body = model.model_validate(parsed)  # what FastAPI does with the parsed body
        except ValidationError:
            return None
        if body.stream:  # a stream is FastAPI's StreamingResponse
            return None
        return _as_plain(await complete(state, caller, body.model_dump(exclude_unset=True), path))
    return answer


async def _embeddings(state, _: str, parsed: Any, caller: Caller) -> bytes | None:
    try:
        body = EmbeddingRequest.model_validate(parsed)
    except ValidationError:
        return None
    return _as_plain(await embed(state, caller, body))


def _as_model(adapter, answer: dict) -> bytes:
    """The bytes FastAPI writes for a route's ``response_model``."""
    return adapter.dump_json(adapter.validate_python(answer, from_attributes=True), by_alias=True)


def _as_plain(answer: dict) -> bytes:
    """The bytes Starlette's ``JSONResponse`` writes for a route without one (the answer is JSON-native data)."""
    return json.dumps(answer, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


PREFIXED: dict[str, Answer] = {"/v1/components/": _component, "/v1/pipelines/": _pipeline}
EXACT: dict[str, Answer] = {"/v1/chat/completions": _completion(ChatCompletionRequest, "/v1/chat/completions"),
                            "/v1/completions": _completion(CompletionRequest, "/v1/completions"),
                            "/v1/embeddings": _embeddings}


class FastPredictions:
    def __init__(self, app, state):
        self.app = app
        self.state = state  # the FastAPI app's state: live config, dispatcher, trust layer, metrics

    async def __call__(self, scope, receive, send):
        route = _route(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            return await self.app(scope, receive, send)
        answer, name = route
        headers = _headers(scope)
        body = await read_body(receive)
        parsed = _parsed(headers.get("content-type"), body)
        state = scope.get("state", {})
        request_id = state.get("request_id")
        try:
            payload = None if parsed is None else await answer(self.state, name, parsed,
                                                               Caller(request_id, headers, state.get("principal")))
        except GatewayError as exc:
            return await error_response(exc, request_id)(scope, receive, send)
        if payload is None:  # FastAPI's handlers say what is wrong with it, in their words
            return await self.app(scope, replay_body(body, receive), send)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(payload)).encode()), *JSON_HEADERS]})
        await send({"type": "http.response.body", "body": payload})


def _route(path: str) -> tuple[Answer, str] | None:
    """(what answers, the path's name) for a fast path; None for any other path, or a name FastAPI would not
    match as one path segment."""
    exact = EXACT.get(path)
    if exact is not None:
        return exact, ""
    for prefix, answer in PREFIXED.items():
        if path.startswith(prefix):
            name = path[len(prefix):]
            return (answer, name) if name and "/" not in name else None
    return None


def _headers(scope) -> dict[str, str]:
    """Every header once, by lower-case name; a repeated header keeps its first value, as Starlette's ``get``."""
    found: dict[str, str] = {}
    for key, value in scope["headers"]:
        found.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def _parsed(content_type: str | None, body: bytes) -> Any:
    """The parsed body when it is declared and parses as JSON; None for anything FastAPI should judge."""
    if content_type is None or content_type.split(";", 1)[0].strip().lower() != "application/json":
        return None  # FastAPI reads no content type as "not JSON" (its strict default), and knows +json types
    try:
        return from_json(body)  # pydantic's parser: exact big integers and NaN, as json.loads; orjson differs
    except ValueError:
        return None
