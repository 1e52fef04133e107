"""OpenAI-compatible API: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``.

The ``model`` field names a **component**, so the official ``openai`` client
works unchanged (``OpenAI(base_url="http://gateway/v1", api_key=...)``) and a
model version change in MLflow never changes client code. Chat and text
completions are passed to the llm replica's own OpenAI routes (streaming
included), embeddings are translated from the Bento protocol. Every call goes
through the dispatcher: cold-start hold, breaker, balancing, retries.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compoundry.gateway.calls import Caller, caller_context, caller_of
from compoundry.gateway.errors import InvalidRequest, NotFound

router = APIRouter(tags=["openai"])

LLM_ENGINES = {"llm"}
EMBEDDING_ENGINES = {"sentence-transformers"}


class _OpenAIBody(BaseModel):
    """Fields every completion body shares, validated as OpenAI does (the rest passes through to the
    replica, but never a NaN or an infinity, which no JSON parser on the other side accepts)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="one choice per request (compoundry's llm Bento answers one)")
    max_tokens: int | None = Field(None, ge=1, description="bounded above by the component's limits.max_tokens")
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _finite_numbers(cls, body: Any) -> Any:
        where = _non_finite(body)
        if where:
            raise ValueError(f"{where} is not a finite number (NaN and Infinity are not JSON)")
        return body


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_OpenAIBody):
    model: str = Field(description="a component name, e.g. dialogue-llm")
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_OpenAIBody):
    model: str
    prompt: str


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(description="a component name, e.g. embedder")
    input: str | list[str]


def _non_finite(body: Any) -> str | None:
    """Where the body holds a NaN or an infinity, anywhere (a loop, not recursion: any depth is safe)."""
    stack: list[tuple[str, Any]] = [("body", body)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return where
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}", v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
    return None


@router.get("/v1/models", summary="Components, as OpenAI models (id = component name)")
async def list_models(request: Request) -> dict[str, Any]:
    state = request.app.state
    routed = state.routes.routes
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "compoundry", "engine": component.engine,
         "model_version": routed[name].model_version if name in routed else None}
        for name, component in sorted(state.live.components().items())]}


@router.post("/v1/chat/completions", summary="OpenAI chat completions, routed by component name")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    return await complete(request.app.state, caller_of(request), body.model_dump(exclude_unset=True),
                          "/v1/chat/completions")


@router.post("/v1/completions", summary="OpenAI text completions, routed by component name")
async def completions(body: CompletionRequest, request: Request):
    return await complete(request.app.state, caller_of(request), body.model_dump(exclude_unset=True),
                          "/v1/completions")


@router.post("/v1/embeddings", summary="OpenAI embeddings, routed by component name")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    return await embed(request.app.state, caller_of(request), body)


async def embed(state, caller: Caller, body: EmbeddingRequest) -> dict[str, Any]:
    """Embeddings through the Bento protocol (``{texts}`` -> ``{embeddings}``), answered in OpenAI's shape."""
    component = _component(state, body.model, EMBEDDING_ENGINES, "/v1/embeddings")
    texts = state.trust.before(component.trust, [body.input] if isinstance(body.input, str) else body.input)
    reply = await state.dispatcher.call(body.model, {"texts": texts}, component.timeouts.request_s,
                                        _context(state, caller, component, getattr(body, "user", None)))
    vectors = reply.output["embeddings"]
    return {"object": "list", "model": body.model,
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": 0, "total_tokens": 0}}


async def complete(state, caller: Caller, body: dict[str, Any], path: str):
    """A chat or text completion from the component's replicas (or external endpoint): the answer as a dict,
    or a streaming response when the body asks for a stream."""
    name = body["model"]
    component = _component(state, name, LLM_ENGINES, path)
    dispatcher, trust = state.dispatcher, state.trust
    ctx = _context(state, caller, component, body.get("user"))
    body = trust.before(component.trust, body)
    if not body.get("stream"):
        reply = await dispatcher.call(name, body, component.timeouts.request_s, ctx, path=path)
        return {**trust.after(component.trust, reply.output), "model": name}
    lines = dispatcher.stream(name, path, body, component.timeouts.request_s, ctx)
    first = await anext(lines)  # errors before the first byte are still a JSON error response
    return StreamingResponse(_relabel(first, lines, name), media_type="text/event-stream")


async def _relabel(first: str, lines, model: str):
    """Re-emit the replica's events with ``model`` set to the component name the client asked for."""
    yield _event_line(first, model)
    async for line in lines:
        yield _event_line(line, model)


def _event_line(line: str, model: str) -> str:
    if line.startswith("data: {"):
        try:
            payload = json.loads(line[6:])
        except ValueError:
            return line + "\n"
        payload["model"] = model
        return f"data: {json.dumps(payload)}\n"
    return line + "\n"


def _component(state, name: str, engines: set[str], path: str):
    component = state.live.components().get(name)
    if component is None:
        raise NotFound(f"unknown model {name!r}: the model field names a component",
                       {"param": "model", "known": sorted(state.live.components())}, code="model_not_found")
    if component.engine not in engines:
        raise InvalidRequest(f"component {name!r} is a {component.engine} model; {path} needs one of "
                             f"{', '.join(sorted(engines))}",
                             {"param": "model", "component": name, "engine": component.engine},
                             status=400, code="model_not_supported")
    return component


def _context(state, caller: Caller, component, user: Any = None):
    """The call context; OpenAI's ``user`` field is the sticky experiment key when no X-User-Id is sent."""
    ctx = caller_context(caller.headers, state.live.current.pipelines, caller.principal, caller.request_id,
                         component.latency_class)
    return replace(ctx, user=user[:200]) if ctx.user is None and isinstance(user, str) and user else ctx
