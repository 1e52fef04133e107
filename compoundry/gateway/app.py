"""The Prediction Service: single component calls and pipeline DAGs over HTTP.

``create_app(settings, config, store)`` builds the FastAPI app; the process
entry point is :mod:`compoundry.gateway.server`. The request path touches only
memory (route table, config) and replicas over HTTP; the database is read by
the background route refresher alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from compoundry.auth import KeyRing
from compoundry.gateway.backends import ReplicaClient
from compoundry.gateway.calls import CallContext, context_from_request
from compoundry.gateway.dispatch import Dispatcher
from compoundry.gateway.errors import (
    NotFound,
    PipelineOutputFailed,
    PipelineStepFailed,
    install_error_handlers,
    internal_error_response,
)
from compoundry.gateway.feedback import router as feedback_router
from compoundry.gateway.executor import CURRENT_STEP, ComponentReply, PipelineResult, run_pipeline
from compoundry.gateway.openai_api import router as openai_router
from compoundry.config.loader import load_config
from compoundry.gateway.metering_hook import metering_callback
from compoundry.gateway.reload import ConfigReloader
from compoundry.gateway.metrics import GatewayMetrics
from compoundry.gateway.routes import Refresher, RouteTable
from compoundry.gateway.trust_layer import TrustLayer
from compoundry.gateway.variants import ActiveExperiments
from compoundry.metering import MeteringSink
from compoundry.gateway.security import Security
from compoundry.store.experiments import ExperimentStore
from compoundry.store.keys import ApiKeys

log = logging.getLogger(__name__)


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


# --- middleware ---------------------------------------------------------------------
class RequestContext:
    """Give every request an id (``X-Request-Id`` in or a new uuid), echo it, and turn crashes into JSON 500s.

    A pure ASGI middleware: cheaper than ``BaseHTTPMiddleware`` on the hot path.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": headers + [(b"x-request-id", request_id.encode("latin-1"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s (request %s)", scope.get("method"), scope.get("path"), request_id)
            if started:
                raise
            await internal_error_response(request_id)(scope, receive, send)


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            text = value.decode("latin-1").strip()
            return text[:200] if text else None
    return None


# --- the app ------------------------------------------------------------------------
def create_app(settings, config, store) -> FastAPI:
    """The gateway app; ``store`` is read only by the background route refresher."""
    routes = RouteTable(store.routes, refresh_s=settings.config.route_refresh_s)
    experiments = ActiveExperiments(lambda: app.state.config.experiments)
    dispatcher = Dispatcher(routes, None, lambda: app.state.config.components, settings.config.gateway,
                            clock=time.perf_counter, experiments=experiments)

    keys = KeyRing()
    metrics = GatewayMetrics(lambda: app.state.config.components)
    reloader = ConfigReloader(settings.config_dir, load_config, lambda new: setattr(app.state, "config", new))
    key_refresher = Refresher("api keys", ApiKeys(store).active, keys.replace, settings.config.route_refresh_s)
    run_refresher = Refresher("experiment runs", ExperimentStore(store).ended, experiments.set_ended,
                              settings.config.route_refresh_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.backend = dispatcher.backend = ReplicaClient()
        app.state.metering = sink = MeteringSink(store.engine)
        meter = metering_callback(sink, lambda: app.state.config.components)
        metrics.watch_state(dispatcher, sink)
        await routes.start()
        from compoundry.scaling.runtime import build_autoscaler  # here: the scaling package imports gateway modules

        autoscaler = app.state.autoscaler = build_autoscaler(settings, store, routes, dispatcher, lambda: app.state.config)
        if autoscaler is None:
            dispatcher.on_call = lambda call: (meter(call), metrics.on_call(call))
        else:
            dispatcher.on_call = lambda call: (meter(call), metrics.on_call(call), autoscaler.observe(call))
            dispatcher.scaler = autoscaler
            await autoscaler.start()
        await key_refresher.start()
        await run_refresher.start()
        await reloader.start()
        try:
            yield
        finally:
            if autoscaler is not None:
                await autoscaler.stop()
            await reloader.stop()
            await key_refresher.stop()
            await run_refresher.stop()
            await routes.stop()
            await dispatcher.aclose()
            await app.state.backend.aclose()
            if not await asyncio.to_thread(sink.close, 10.0):  # graceful shutdown flushes metering
                log.warning("metering: %s records not written at shutdown", sink.stats().pending)

    app = FastAPI(title="compoundry Prediction Service", version="0.1.0", lifespan=lifespan,
                  description="Call one component, or run a pipeline DAG with per-step timings and its critical path.")
    app.state.settings, app.state.config, app.state.store, app.state.routes = settings, config, store, routes
    app.state.dispatcher, app.state.metrics, app.state.reloader = dispatcher, metrics, reloader
    app.state.autoscaler = None  # set at start-up when autoscaling is on (local target)
    app.state.trust = TrustLayer(settings.config.gateway.blocked_terms)
    install_error_handlers(app)
    gateway_settings = settings.config.gateway
    app.add_middleware(Security, keys=keys, auth_required=gateway_settings.auth_required,
                       max_body_bytes=gateway_settings.max_body_bytes)
    app.add_middleware(RequestContext)  # outermost: the request id exists before any refusal
    _add_probe_routes(app)
    _add_prediction_routes(app)
    try:
        from compoundry.gateway.control import router as control_router
    except Exception:  # the control API is optional: predictions must work without it
        log.warning("control API not available; serving predictions only", exc_info=True)
    else:
        app.include_router(control_router)
    app.include_router(openai_router)
    app.include_router(feedback_router)
    return app


def _add_probe_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["probes"], summary="The process is up")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], summary="Routes were loaded at least once",
             responses={503: {"model": ErrorResponse}})
    async def readyz(request: Request, response: Response):
        table: RouteTable = request.app.state.routes
        if not table.loaded:
            response.status_code = 503
            return {"error": {"code": "not_ready", "message": "routes not loaded yet", "last_error": table.last_error}}
        return {"status": "ready", "components": len(table.routes), "last_refresh_error": table.last_error}

    @app.get("/metrics", tags=["probes"], summary="Prometheus metrics (admin scope)")
    async def prometheus_metrics(request: Request):
        registry = request.app.state.metrics.registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/scaling", tags=["routes"], summary="Replicas per deployment, warm-up floors, recent scaling")
    async def scaling_state(request: Request):
        autoscaler = request.app.state.autoscaler
        if autoscaler is None:
            return {"enabled": False}
        return {"enabled": True, **autoscaler.describe()}

    @app.get("/v1/routes", tags=["routes"], summary="Component -> deployment, model version, replica urls")
    async def list_routes(request: Request):
        table: RouteTable = request.app.state.routes
        return {"routes": table.describe(), "loaded": table.loaded, "last_refresh": table.last_ok,
                "last_refresh_error": table.last_error}


def _add_prediction_routes(app: FastAPI) -> None:
    @app.post("/v1/components/{name}", tags=["predictions"], response_model=ComponentResponse, responses=ERRORS,
              summary="Call one component (for outside orchestrators)")
    async def invoke_component(name: str, body: InvokeRequest, request: Request) -> dict[str, Any]:
        state = request.app.state
        component = state.config.components.get(name)
        if component is None:
            raise NotFound(f"unknown component {name!r}", {"known": sorted(state.config.components)})
        started = time.perf_counter()
        ctx = context_from_request(request, component.latency_class)
        inputs = state.trust.before(component.trust, body.inputs)
        reply = await state.dispatcher.call(name, inputs, component.timeouts.request_s, ctx)
        return {"component": name, "deployment": reply.deployment, "model_version": reply.model_version,
                "variant": reply.variant,
                "outputs": state.trust.after(component.trust, reply.output),
                "timing_ms": round((time.perf_counter() - started) * 1000, 3)}

    @app.post("/v1/pipelines/{name}", tags=["predictions"], response_model=PipelineResponse, responses=ERRORS,
              summary="Run a pipeline DAG: parallel steps, fallbacks, per-step timings, critical path")
    async def run_pipeline_endpoint(name: str, body: PipelineRequest, request: Request) -> dict[str, Any]:
        state = request.app.state
        pipeline = state.config.pipelines.get(name)
        if pipeline is None:
            raise NotFound(f"unknown pipeline {name!r}", {"known": sorted(state.config.pipelines)})
        timeouts = {n: c.timeouts.request_s for n, c in state.config.components.items()}
        ctx = context_from_request(request, pipeline.latency_class, pipeline=name,
                            deadline=state.dispatcher.clock() + pipeline.sla_ms / 1000)
        inputs = state.trust.before(pipeline.trust, body.inputs)
        result = await run_pipeline(pipeline, inputs, _component_caller(state, ctx), timeouts=timeouts, name=name)
        state.metrics.on_pipeline(name, "ok" if result.ok else "failed", result.total_ms)
        request_id = request.state.request_id
        if not result.ok:
            raise _pipeline_error(name, request_id, result)
        return {"pipeline": name, "request_id": request_id, "output": state.trust.after(pipeline.trust, result.output),
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
    if result.failed_step is not None:
        record = result.steps[result.failed_step]
        return PipelineStepFailed(f"required step {result.failed_step!r} ({record.component}) failed: {record.error}",
                                  {"step": result.failed_step, "step_error_code": record.error_code, **details})
    return PipelineOutputFailed(result.error or "pipeline output failed", details)
