"""The two prediction calls, apart from how a request arrives.

``POST /v1/components/{name}`` and ``POST /v1/pipelines/{name}`` reach these
functions from two doors: the raw ASGI fast path (:mod:`compoundry.gateway.fast_path`,
every well-formed JSON body) and the FastAPI routes (the OpenAPI docs, and every
body the fast path hands over: odd content types, invalid JSON, missing
``inputs``). One implementation behind both is what keeps their answers equal.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from compoundry.core.request_inputs import problems
from compoundry.core.templating import TemplateError
from compoundry.gateway.calls import CallContext, Caller, caller_context
from compoundry.gateway.errors import (
    ComponentUnavailable,
    InvalidInput,
    InvalidRequest,
    NotFound,
    Overloaded,
    PipelineOutputFailed,
    PipelineStepFailed,
    PipelineStepOverloaded,
    PipelineStepRejected,
    PipelineStepUnavailable,
)
from compoundry.gateway.executor import (
    CURRENT_STEP,
    ComponentReply,
    PipelineResult,
    run_pipeline,
)


# --- request / response models (they make /docs meaningful) -------------------------
class InvokeRequest(BaseModel):
    inputs: dict[str, Any] = Field(description="component inputs, e.g. {\"texts\": [\"hello\"]}; see the engine table")


class PipelineRequest(BaseModel):
    inputs: dict[str, Any] = Field(description="the pipeline's request inputs, read by ${request.<key>} templates")


class ComponentResponse(BaseModel):
    component: str
    deployment: str
    model_version: str
    variant: str | None = Field(None, description="experiment variant that answered (else the serving alias)")
    outputs: Any
    timing_ms: float = Field(description="gateway-measured time of the replica call")


class StepTiming(BaseModel):
    model_config = ConfigDict(extra="allow")
    component: str
    status: str = Field(description="ok | fallback | failed | skipped")
    deployment: str | None = None
    started_ms: float | None = Field(None, description="since the pipeline started")
    ended_ms: float | None = None
    duration_ms: float | None = None
    error: str | None = None


class PipelineResponse(BaseModel):
    pipeline: str
    request_id: str
    output: Any
    steps: dict[str, StepTiming]
    critical_path: list[str]
    critical_path_ms: float
    total_ms: float
    overhead_ms: float = Field(description="total_ms minus the durations of the critical path's steps")


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 422, 429, 502, 503, 504)}

#: The JSON bytes FastAPI writes for a route's ``response_model``: the fast path serializes through the same.
COMPONENT_JSON = TypeAdapter(ComponentResponse)
PIPELINE_JSON = TypeAdapter(PipelineResponse)


# --- the calls ----------------------------------------------------------------------
async def invoke_component(state, name: str, inputs: dict[str, Any], caller: Caller) -> dict[str, Any]:
    """One component call; ``state`` is the app's state (live config, dispatcher, trust layer)."""
    components = state.live.components()
    component = components.get(name)
    if component is None:
        raise NotFound(f"unknown component {name!r}", {"known": sorted(components)})
    started = time.perf_counter()
    ctx = caller_context(caller.headers, state.live.current.pipelines, caller.principal, caller.request_id,
                         component.latency_class)
    inputs = state.trust.before(component.trust, inputs)
    reply = await state.dispatcher.call(name, inputs, component.timeouts.request_s, ctx)
    return {"component": name, "deployment": reply.deployment, "model_version": reply.model_version,
            "variant": reply.variant,
            "outputs": state.trust.after(component.trust, reply.output),
            "timing_ms": round((time.perf_counter() - started) * 1000, 3)}


async def run_pipeline_request(state, name: str, inputs: dict[str, Any], caller: Caller) -> dict[str, Any]:
    """One pipeline run: its DAG through the dispatcher, under the pipeline's SLA as the deadline."""
    config = state.live.current
    pipeline = config.pipelines.get(name)
    if pipeline is None:
        raise NotFound(f"unknown pipeline {name!r}", {"known": sorted(config.pipelines)})
    found = problems(inputs, pipeline.inputs, pipeline.request_keys)
    if found:
        raise InvalidRequest(f"pipeline {name!r}: {'; '.join(found)}", {"param": "inputs", "problems": found})
    timeouts = {n: c.timeouts.request_s for n, c in config.components.items()}
    ctx = caller_context(caller.headers, config.pipelines, caller.principal, caller.request_id,
                         pipeline.latency_class, pipeline=name,
                         deadline=state.dispatcher.clock() + pipeline.sla_ms / 1000)
    inputs = state.trust.before(pipeline.trust, inputs)
    result = await run_pipeline(pipeline, inputs, _component_caller(state, ctx), timeouts=timeouts, name=name)
    state.metrics.on_pipeline(name, "ok" if result.ok else "failed", result.total_ms)
    if not result.ok:
        raise _pipeline_error(name, caller.request_id, result)
    return {"pipeline": name, "request_id": caller.request_id,
            "output": state.trust.after(pipeline.trust, result.output),
            "steps": result.steps_dict(), "critical_path": result.critical_path,
            "critical_path_ms": result.critical_path_ms, "total_ms": result.total_ms,
            "overhead_ms": result.overhead_ms}


def _component_caller(state, ctx: CallContext):
    """The executor's ``call``: every step goes through the dispatcher with the request's context."""
    async def call(component: str, inputs: Any, timeout: float) -> ComponentReply:
        return await state.dispatcher.call(component, inputs, timeout, replace(ctx, step=CURRENT_STEP.get()))
    return call


def _pipeline_error(name: str, request_id: str, result: PipelineResult):
    details = {"pipeline": name, "request_id": request_id, "steps": result.steps_dict(),
               "total_ms": result.total_ms}
    if result.failed_step is None:
        return PipelineOutputFailed(result.error or "pipeline output failed", details)
    record = result.steps[result.failed_step]
    message = f"required step {result.failed_step!r} ({record.component}) failed: {record.error}"
    details |= {"step": result.failed_step, "step_error_code": record.error_code}
    if isinstance(result.cause, ComponentUnavailable):  # temporary: the client should retry, not give up
        kind = PipelineStepOverloaded if isinstance(result.cause, Overloaded) else PipelineStepUnavailable
        return kind(message, details, retry_after=result.cause.retry_after)
    wrong_request = isinstance(result.cause, TemplateError) and result.cause.path.startswith("request")
    if isinstance(result.cause, InvalidInput) or wrong_request:  # the request's inputs were wrong for a model
        return PipelineStepRejected(message, details)
    return PipelineStepFailed(message, details)
