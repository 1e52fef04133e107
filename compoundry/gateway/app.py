"""The Prediction Service: single component calls and pipeline DAGs over HTTP.

``create_app(GatewayParts.build(settings, config, store))`` builds the FastAPI
app from explicit parts; the process entry point, which adds the control API
and the autoscaler, is :mod:`compoundry.platform.gateway_process`. The request
path touches only memory (route table, config, load) and replicas over HTTP;
the database is read by background refreshers alone.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from compoundry.config.loader import load_config
from compoundry.config.models import Config
from compoundry.config.settings import PlatformSettings
from compoundry.core.api_keys import KeyRing
from compoundry.core.routing.variants import ActiveExperiments
from compoundry.gateway.calls import CallRecord, caller_of
from compoundry.gateway.dispatch import Dispatcher
from compoundry.gateway.errors import (
    InvalidRequest,
    error_response,
    install_error_handlers,
    internal_error_response,
)
from compoundry.gateway.fast_path import FastPredictions
from compoundry.gateway.feedback import router as feedback_router
from compoundry.gateway.load import LoadBoard
from compoundry.gateway.metering_hook import RequestMetering, metering_callback
from compoundry.gateway.metrics import GatewayMetrics
from compoundry.gateway.openai_api import router as openai_router
from compoundry.gateway.predictions import (
    ERRORS,
    ComponentResponse,
    ErrorResponse,
    InvokeRequest,
    PipelineRequest,
    PipelineResponse,
    invoke_component,
    run_pipeline_request,
)
from compoundry.gateway.rate_limit import RateLimits
from compoundry.gateway.reload import ConfigReloader, LiveConfig
from compoundry.gateway.replica_client import ReplicaClient
from compoundry.gateway.security import Security
from compoundry.gateway.trust_layer import TrustLayer
from compoundry.metering import MeteringSink
from compoundry.store import PlatformStore
from compoundry.store.api_key_store import ApiKeys
from compoundry.store.experiment_runs import ExperimentStore
from compoundry.store.refresh import Refresher, RouteTable

log = logging.getLogger(__name__)


# --- middleware ---------------------------------------------------------------------
#: What a client may send as ``X-Request-Id``: it is stored (metering, feedback) and echoed in headers.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:/-]{1,100}")


class RequestContext:
    """Give every request an id (``X-Request-Id`` in or a new uuid), echo it, and turn crashes into JSON 500s.

    A malformed ``X-Request-Id`` (too long for the metering columns, or characters that do not belong in a
    header or a log line) is refused with 422 under a fresh id.

    A pure ASGI middleware: cheaper than ``BaseHTTPMiddleware`` on the hot path.
    """

    def __init__(self, app, metering: RequestMetering | None = None):
        self.app = app
        self.metering = metering

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = _header(scope, b"x-request-id")
        request_id = given if given and REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        if given and given != request_id:  # refused before anything is called or metered under it
            refusal = InvalidRequest("X-Request-Id must be 1-100 characters: letters, digits and . _ : - /",
                                     {"param": "X-Request-Id"})
            return await error_response(refusal, request_id)(scope, receive, send)
        started = delivered = False

        async def send_with_id(message):
            nonlocal started, delivered
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": headers + [(b"x-request-id", request_id.encode("latin-1"))]}
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                delivered = True

        held = self.metering.begin() if self.metering is not None else None
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s (request %s)", scope.get("method"), scope.get("path"), request_id)
            if started:
                raise
            await internal_error_response(request_id)(scope, receive, send)
        finally:
            if held is not None:
                self.metering.end(held, delivered)


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1").strip() or None
    return None


# --- the app ------------------------------------------------------------------------
class Scaler(Protocol):
    """The autoscaler as the gateway uses it: request-path hooks (cheap, never awaited) and its lifecycle."""

    def on_access(self, component: str, variant: str | None) -> None: ...

    def request_capacity(self, component: str, reason: str) -> None: ...

    def observe(self, call: CallRecord) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def describe(self) -> dict: ...


@dataclass(frozen=True)
class GatewayParts:
    """Everything the Prediction Service is made of, built before the app.

    The gateway process builds the real parts (and an autoscaler over the same
    route table and load board); a test replaces what it needs, e.g. a fake
    replica client, and serves the app in-process.
    """

    settings: PlatformSettings
    config: LiveConfig
    store: PlatformStore  # read by the background refreshers, written by the metering sink
    routes: RouteTable
    load: LoadBoard
    replica_client: Any  # ReplicaClient or anything with its invoke/post/stream/aclose
    metering_sink: MeteringSink
    scaler: Scaler | None = None
    routers: tuple[APIRouter, ...] = ()  # mounted beside the prediction routes (the control API)

    @classmethod
    def build(cls, settings: PlatformSettings, config: Config, store: PlatformStore, **given) -> "GatewayParts":
        """The default parts for ``settings``; a part ``given`` by its field name is used instead."""
        gateway = settings.config.gateway
        defaults = {
            "config": lambda: LiveConfig(config),
            "routes": lambda: RouteTable(store.routes, refresh_s=settings.config.route_refresh_s),
            "load": lambda: LoadBoard(gateway.replica_concurrency, gateway.queue_capacity, clock=time.perf_counter,
                                      processes=settings.gateway_workers),  # the leader counts other gateways
            "replica_client": ReplicaClient,
            "metering_sink": lambda: MeteringSink(store.engine, start=False),  # started by the app's lifespan
        }
        made = {name: make() for name, make in defaults.items() if name not in given}
        return cls(settings=settings, store=store, **made, **given)


def create_app(parts: GatewayParts, fast_path: bool = True) -> FastAPI:
    """The gateway app, complete: the lifespan only starts and stops the parts it was given.

    ``fast_path``: answer the prediction routes in :class:`FastPredictions` (False: all through FastAPI, as a
    test compares)."""
    settings, live, store, routes = parts.settings, parts.config, parts.store, parts.routes
    refresh_s = settings.config.route_refresh_s
    experiments = ActiveExperiments(live.experiments)
    metrics = GatewayMetrics(live.components)
    dispatcher = Dispatcher(routes, parts.replica_client, live.components, settings.config.gateway,
                            load=parts.load, scaler=parts.scaler,
                            on_call=_on_call(parts, metrics), experiments=experiments, clock=parts.load.clock)
    metrics.watch_state(routes, parts.load, dispatcher.breakers, parts.metering_sink)
    keys = KeyRing()
    background = [routes, *(() if parts.scaler is None else (parts.scaler,)),
                  Refresher("api keys", ApiKeys(store).active, keys.replace, refresh_s),
                  Refresher("experiment runs", ExperimentStore(store).ended, experiments.set_ended, refresh_s),
                  ConfigReloader(settings.config_dir, load_config, live.replace)]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        parts.metering_sink.start()
        for part in background:
            await part.start()
        try:
            yield
        finally:
            for part in reversed(background):
                await part.stop()
            await dispatcher.aclose()
            await parts.replica_client.aclose()
            if not await asyncio.to_thread(parts.metering_sink.close, 10.0):  # graceful shutdown flushes metering
                log.warning("metering: %s records not written at shutdown", parts.metering_sink.stats().pending)

    app = FastAPI(title="compoundry Prediction Service", version="0.1.0", lifespan=lifespan,
                  description="Call one component, or run a pipeline DAG with per-step timings and its critical path.")
    state = app.state
    state.settings, state.live, state.store, state.routes = settings, live, store, routes
    state.dispatcher, state.metrics, state.scaler = dispatcher, metrics, parts.scaler
    state.trust = TrustLayer(settings.config.gateway.blocked_terms)
    install_error_handlers(app)
    gateway_settings = settings.config.gateway
    if fast_path:
        app.add_middleware(FastPredictions, state=state)
    app.add_middleware(RateLimits, settings=settings, sink=parts.metering_sink, metrics=metrics)  # inside Security: after the key
    app.add_middleware(Security, keys=keys, auth_required=gateway_settings.auth_required,
                       max_body_bytes=gateway_settings.max_body_bytes, body_timeout_s=gateway_settings.body_timeout_s)
    app.add_middleware(RequestContext, metering=RequestMetering(parts.metering_sink))  # outermost: the request id
    # exists before any refusal, and metering knows whether the answer was sent
    _add_probe_routes(app)
    _add_prediction_routes(app)
    for router in (*parts.routers, openai_router, feedback_router):
        app.include_router(router)
    return app


def _on_call(parts: GatewayParts, metrics: GatewayMetrics) -> Callable[[CallRecord], None]:
    """What every finished call feeds: metering, metrics, and the autoscaler's view of its deployment."""
    meter = metering_callback(parts.metering_sink, parts.config.components)
    scaler = parts.scaler
    if scaler is None:
        return lambda call: (meter(call), metrics.on_call(call))
    return lambda call: (meter(call), metrics.on_call(call), scaler.observe(call))


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

    @app.get("/metrics", tags=["probes"], summary="Prometheus metrics (metrics or admin scope)")
    async def prometheus_metrics(request: Request):
        return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/scaling", tags=["routes"], summary="Replicas per deployment, warm-up floors, recent scaling")
    async def scaling_state(request: Request):
        scaler = request.app.state.scaler
        if scaler is None:
            return {"enabled": False}
        return {"enabled": True, **scaler.describe()}

    @app.get("/v1/routes", tags=["routes"], summary="Component -> deployment, model version, replica urls")
    async def list_routes(request: Request):
        table: RouteTable = request.app.state.routes
        return {"routes": table.describe(), "loaded": table.loaded, "last_refresh": table.last_ok,
                "last_refresh_error": table.last_error}


def _add_prediction_routes(app: FastAPI) -> None:
    """The prediction routes as FastAPI sees them: the OpenAPI docs, and every body the fast path hands over."""
    @app.post("/v1/components/{name}", tags=["predictions"], response_model=ComponentResponse, responses=ERRORS,
              summary="Call one component (for outside orchestrators)")
    async def invoke_component_route(name: str, body: InvokeRequest, request: Request) -> dict[str, Any]:
        return await invoke_component(request.app.state, name, body.inputs, caller_of(request))

    @app.post("/v1/pipelines/{name}", tags=["predictions"], response_model=PipelineResponse, responses=ERRORS,
              summary="Run a pipeline DAG: parallel steps, fallbacks, per-step timings, critical path")
    async def run_pipeline_route(name: str, body: PipelineRequest, request: Request) -> dict[str, Any]:
        return await run_pipeline_request(request.app.state, name, body.inputs, caller_of(request))
