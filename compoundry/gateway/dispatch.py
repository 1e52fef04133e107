"""One component call, the way the Prediction Service makes it.

Every call, whether from ``/v1/components/{name}`` or a pipeline step, goes
through :meth:`Dispatcher.call`, which applies the request-path policies in
order (docs/architecture.md):

1. **cold-start holding**: a deployed component with no ready replica holds the
   request (asking the scaler for capacity) until a replica is ready or the
   latency-class hold, the component's ``cold_start_s`` or the request's own
   deadline runs out;
2. **circuit breaker** per deployment: an open breaker answers at once with
   ``component_unavailable`` and ``retry_after``;
3. **load balancing** over the deployment's ready replicas (power of two
   choices over outstanding requests, optional per-replica limit);
4. **retry** on another replica, only for transport failures that prove the
   replica never processed the request, within the deadline.

The policies themselves are pure (``breaker``, ``balancer``, ``retry``); this
module is the thin asyncio adapter that wires them to the route table and the
replica client, with an injected clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, nullcontext
from dataclasses import replace
from typing import Any, Protocol

from compoundry.core.routing.breaker import BreakerBoard
from compoundry.core.routing.lanes import Lane, Shed
from compoundry.core.routing.modes import EXTERNAL, DedicatedState, choose_backend
from compoundry.core.routing.retry import should_retry
from compoundry.core.routing.route_view import RouteView
from compoundry.core.routing.variants import VariantRouter
from compoundry.gateway.abandoned import AbandonedCalls
from compoundry.gateway.breaker_verdict import breaker_verdict
from compoundry.gateway.calls import CallContext, CallRecord, stream_usage, token_usage
from compoundry.gateway.errors import (
    ComponentFailed,
    ComponentTimeout,
    ComponentUnavailable,
    GatewayError,
    NotFound,
    Overloaded,
)
from compoundry.gateway.executor import ComponentReply
from compoundry.gateway.external import external_backend, external_route
from compoundry.gateway.limits import check_limits
from compoundry.gateway.load import LoadBoard
from compoundry.gateway.shadow import ShadowMirror
from compoundry.store.refresh import RouteTable

HOLD_POLL_S = 0.05
_NO_EXPERIMENTS: dict = {}


def _no_experiments() -> dict:
    return _NO_EXPERIMENTS  # the same object every time, so the variant router builds its plans once


class CapacityRequester(Protocol):
    """The autoscaler, as the request path sees it: both calls are cheap, in-memory, never awaited."""

    def on_access(self, component: str, variant: str | None) -> None: ...  # pre-warming, cold variants

    def request_capacity(self, component: str, reason: str) -> None: ...  # a request is held: scale from zero


class Dispatcher:
    def __init__(self, routes: RouteTable, backend, components: Callable[[], dict], gateway_settings, *,
                 load: LoadBoard | None = None, scaler: CapacityRequester | None = None,
                 on_call: Callable[[CallRecord], None] | None = None, experiments: Callable[[], dict] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        """Every part is given here, none later. ``components()`` and ``experiments()`` return the current
        configs (a config reload is seen at once); ``load`` holds the balancers and lanes (the autoscaler and
        metrics read it too); ``scaler`` is told of accesses and held requests; ``on_call`` gets every record."""
        self.routes = routes
        self.backend = backend
        self.components = components
        self.settings = gateway_settings
        self.clock = clock
        self.load = load or LoadBoard(gateway_settings.replica_concurrency, gateway_settings.queue_capacity, clock)
        self.scaler = scaler
        self.on_call = on_call
        self.breakers = BreakerBoard(clock)
        self._externals: dict[str, tuple[object, object]] = {}  # component -> (serverless block, adapter)
        self.variants = VariantRouter(experiments or _no_experiments)
        self.shadows = ShadowMirror(self._call_route, self._record, lambda: self.settings.shadow_max_in_flight,
                                    clock)
        self.abandoned = AbandonedCalls()

    async def call(self, component: str, inputs: Any, timeout_s: float, ctx: CallContext,
                   path: str = "/invoke") -> ComponentReply:
        """Call one component; raises a ``GatewayError`` subclass the caller can route around.

        ``path`` ``/invoke`` wraps ``inputs`` in the Bento protocol; another path (the llm's
        ``/v1/chat/completions``) posts ``inputs`` as the body itself.
        """
        config = self._config(component)
        started = self.clock()
        route, attempts, held_ms, variant, unit_key = None, 0, 0.0, config.alias, None
        try:
            check_limits(component, config.limits, inputs)
            external = self._external_if_chosen(component, config)
            if external is not None:
                route = external_route(component, config, external)
                output, attempts = await self._call_external(external, route, config, inputs, timeout_s, ctx, path)
            else:
                assignment = self._assign(component, ctx)
                route, variant = await self._ready_route(component, config, ctx, assignment.variant)
                unit_key = assignment.unit_key
                held_ms = (self.clock() - started) * 1000
                self._mirror(component, config, assignment.shadow, inputs, ctx, path)
                output, attempts = await self._call_route(route, config, inputs, timeout_s, ctx, path)
        except GatewayError as exc:
            self._record(ctx, component, route, exc.code, attempts, started, variant=variant, unit_key=unit_key)
            raise
        self._record(ctx, component, route, "ok", attempts, started, held_ms, token_usage(output), variant=variant,
                     unit_key=unit_key)
        return ComponentReply(output, route.deployment_id, route.model_version, variant)

    # --- A/B and shadow: which variant answers, which one gets a mirrored copy ------------
    def _assign(self, component: str, ctx: CallContext):
        return self.variants.assign(component, session=ctx.session, user=ctx.user, request_id=ctx.request_id)

    def _lookup(self, component: str, config, variant: str | None) -> tuple[RouteView | None, str | None]:
        """The route for ``variant`` (its own when ready, else the serving route) and the label that answers."""
        route, label = self.variants.resolve(component, self.routes.routes.get(component), config.alias, variant)
        return route, label or config.alias

    def _mirror(self, component: str, config, shadow: str | None, inputs: Any, ctx: CallContext, path: str) -> None:
        """Send a copy to the shadow variant in the background: never awaited, never seen by the client."""
        if shadow is not None:
            route = self.variants.shadow_route(component, self.routes.routes.get(component), config.alias, shadow)
            self.shadows.send(route, config, inputs, replace(ctx, deadline=None), path, shadow)

    async def aclose(self) -> None:
        """Cancel mirrored and abandoned calls still in flight (at shutdown: nobody waits for their answers)."""
        await self.shadows.aclose()
        await self.abandoned.aclose()

    # --- 0. mode: own replicas or the external serverless endpoint ------------------------
    def _external_if_chosen(self, component: str, config):
        """The external backend when the mode sends this call there, else None."""
        external = self._external(component, config)
        if external is None:
            return None
        route = self.routes.routes.get(component)
        if route is None:
            healthy, in_flight, breaker_open = [], 0, False
        else:  # an ejected replica is no capacity: count only those the balancer would pick
            healthy = self.load.outliers(route.deployment_id).healthy([r.url for r in route.replicas], self.clock())
            in_flight = self.load.in_flight(route.deployment_id, healthy)
            breaker_open = self.breakers.get(route.deployment_id, config.breaker).state == "open"
        threshold = self.load.share(config.scaling.target_concurrency)  # this process's share of each replica
        state = DedicatedState(len(healthy), in_flight, threshold, breaker_open)
        return external if choose_backend(config.mode, True, state) == EXTERNAL else None

    def _external(self, component: str, config):
        """One adapter per component, rebuilt only when a reload changes its ``serverless:`` block."""
        if config.serverless is None:
            return None
        cached = self._externals.get(component)
        if cached is None or cached[0] != config.serverless:
            cached = self._externals[component] = (config.serverless, external_backend(config.serverless, self.backend))
        return cached[1]

    async def _call_external(self, external, route: RouteView, config, inputs: Any, timeout_s: float,
                             ctx: CallContext, path: str) -> tuple[Any, int]:
        breaker, admission = self._admit(route, config)
        timeout = self._timeout(timeout_s, ctx)
        with breaker_verdict(breaker, admission):
            if path == "/invoke":
                return await external.invoke(config.engine, inputs, timeout, route.component), 1
            return await external.openai(path, inputs, timeout, route.component), 1

    def _config(self, component: str):
        config = self.components().get(component)
        if config is None:  # removed by a config reload while a pipeline still names it
            raise NotFound(f"unknown component {component!r}", {"component": component})
        return config

    # --- 1. cold-start holding ---------------------------------------------------
    async def _ready_route(self, component: str, config, ctx: CallContext,
                           variant: str | None = None) -> tuple[RouteView, str | None]:
        """The route to call and the variant label it answers for, after holding through a cold start."""
        if self.scaler is not None:
            self.scaler.on_access(component, variant)
        route, label = self._lookup(component, config, variant)
        if route is not None and route.replicas:
            return route, label
        if route is None and self.scaler is None:
            raise ComponentUnavailable(f"component {component!r} has no route (not deployed yet)",
                                       {"component": component}, retry_after=self.routes.retry_after_s)
        hold_until = self._hold_until(config, ctx)
        while self.clock() < hold_until:
            if self.scaler is not None:  # on every poll: a held request is demand until it is served
                self.scaler.request_capacity(component, reason="cold_start")
            await asyncio.sleep(min(HOLD_POLL_S, max(0.0, hold_until - self.clock())))
            route, label = self._lookup(component, config, variant)
            if route is not None and route.replicas:
                return route, label
        held = self.clock() - (hold_until - self._hold_budget(config, ctx))
        raise ComponentUnavailable(
            f"component {component!r} has no ready replica (held {held:.1f}s for a cold start)",
            {"component": component, "deployment": route.deployment_id if route else None,
             "latency_class": ctx.latency_class}, retry_after=max(1.0, config.timeouts.cold_start_s / 4))

    def _hold_budget(self, config, ctx: CallContext) -> float:
        by_class = getattr(self.settings.cold_start_hold_s, ctx.latency_class)
        return min(by_class, config.timeouts.cold_start_s)

    def _hold_until(self, config, ctx: CallContext) -> float:
        until = self.clock() + self._hold_budget(config, ctx)
        return until if ctx.deadline is None else min(until, ctx.deadline)

    # --- 2-4. breaker, balancer, retry ------------------------------------------------
    def _admit(self, route: RouteView, config):
        """The deployment's breaker and this call's admission; an open breaker refuses at once."""
        breaker = self.breakers.get(route.deployment_id, config.breaker)
        admission = breaker.allow()
        if not admission.allowed:
            raise ComponentUnavailable(
                f"component {route.component!r} is failing: circuit open on {route.deployment_id}",
                {"component": route.component, "deployment": route.deployment_id, "breaker": breaker.state},
                retry_after=admission.retry_after_s)
        return breaker, admission

    async def _call_route(self, route: RouteView, config, inputs: Any, timeout_s: float,
                          ctx: CallContext, path: str, lane: bool = True) -> tuple[Any, int]:
        breaker, admission = self._admit(route, config)
        deadline = ctx.deadline if ctx.deadline is not None else self.clock() + timeout_s
        with breaker_verdict(breaker, admission):
            try:
                async with self._lane(route, config).slot(ctx.latency_class, deadline) if lane else nullcontext():
                    return await self._attempts(route, inputs, timeout_s, ctx, path, config.limits.abandoned_busy_s)
            except Shed as shed:
                raise _overloaded(route, shed) from None

    async def _attempts(self, route: RouteView, inputs: Any, timeout_s: float, ctx: CallContext,
                        path: str, busy_s: float = 0.0) -> tuple[Any, int]:
        """Try the deployment's healthy replicas until one answers, retrying only what ``should_retry`` allows.

        A replica that keeps failing is ejected (``core.routing.outliers``) and skipped while the others
        carry the traffic; its failures reach the deployment's breaker only when no healthy replica is left.
        """
        balancer, outliers = self.load.balancer(route.deployment_id), self.load.outliers(route.deployment_id)
        urls = outliers.healthy([r.url for r in route.replicas], self.clock())
        if not urls:
            raise ComponentUnavailable(
                f"component {route.component!r}: every replica failed recently and is ejected for a while",
                {"component": route.component, "deployment": route.deployment_id},
                retry_after=max(1.0, outliers.back_in_s([r.url for r in route.replicas], self.clock())))
        tried: set[str] = set()
        attempt = 0
        while True:
            url = balancer.pick(urls, exclude=tried)
            if url is None:
                raise ComponentUnavailable(
                    f"component {route.component!r}: every replica is at its concurrency limit",
                    {"component": route.component, "deployment": route.deployment_id},
                    retry_after=self.routes.retry_after_s)
            attempt += 1
            call_started = self.clock()
            try:
                output = await self.abandoned.call(balancer, url, self._sender(url, path, inputs, route.component),
                                                   self._timeout(timeout_s, ctx), busy_s, route.component)
            except (ComponentFailed, ComponentTimeout) as exc:
                outliers.record_failure(url, self.clock(), peers=urls)
                tried.add(url)
                others = [u for u in outliers.healthy(urls, self.clock()) if u not in tried]
                if not others or not self._may_retry(exc, attempt, ctx, self.clock() - call_started):
                    # the deployment's fault only when no other replica of it is healthy
                    exc.replica_fault = any(u != url for u in outliers.healthy(urls, self.clock()))
                    raise
                continue
            outliers.record_success(url)
            return output, attempt

    async def stream(self, component: str, path: str, body: Any, timeout_s: float,
                     ctx: CallContext) -> AsyncIterator[str]:
        """Stream a replica's answer line by line (server-sent events), under the same hold, breaker,
        lane and balancer as :meth:`call`. Not retried: a stream may have delivered part of its answer."""
        config = self._config(component)
        check_limits(component, config.limits, body)
        timeout = self._timeout(timeout_s, ctx)
        external = self._external_if_chosen(component, config)
        held = AsyncExitStack()  # the lane slot and the replica's in-flight count, for the stream's lifetime
        if external is not None:
            route = external_route(component, config, external)
            breaker, admission = self._admit(route, config)

            def opener():
                return external.stream(path, body, timeout, component)
        else:
            route, _ = await self._ready_route(component, config, ctx, self._assign(component, ctx).variant)
            breaker, admission = self._admit(route, config)
            deadline = ctx.deadline if ctx.deadline is not None else self.clock() + timeout_s
            try:
                await held.enter_async_context(self._lane(route, config).slot(ctx.latency_class, deadline))
            except Shed as shed:
                breaker.record_cancel(admission)
                raise _overloaded(route, shed) from None
            balancer = self.load.balancer(route.deployment_id)
            url = balancer.pick(self.load.outliers(route.deployment_id).healthy([r.url for r in route.replicas],
                                                                                self.clock()))
            if url is None:
                breaker.record_cancel(admission)
                await held.aclose()
                raise ComponentUnavailable(f"component {component!r}: every replica is at its concurrency limit",
                                           {"component": component}, retry_after=self.routes.retry_after_s)
            balancer.acquire(url)
            held.callback(balancer.release, url)

            def opener():
                return self.backend.stream(url, path, body, timeout, component)
        started, outcome, usage = self.clock(), "client_closed", (0, 0)  # metered like a call, when it ends
        try:
            with breaker_verdict(breaker, admission):
                async with opener() as lines:
                    async for line in lines:
                        if '"usage"' in line:
                            usage = stream_usage(line) or usage
                        yield line
            outcome = "ok"
        except GatewayError as exc:
            outcome = exc.code
            raise
        finally:
            await held.aclose()
            self._record(ctx, component, route, outcome, 1, started, usage=usage, variant=route.variant or config.alias)

    def _sender(self, url: str, path: str, inputs: Any, component: str):
        if path == "/invoke":
            return lambda timeout: self.backend.invoke(url, inputs, timeout, component)
        return lambda timeout: self.backend.post(url, path, inputs, timeout, component)

    def _may_retry(self, exc: GatewayError, attempt: int, ctx: CallContext, call_s: float) -> bool:
        remaining = float("inf") if ctx.deadline is None else ctx.deadline - self.clock()
        return should_retry(getattr(exc, "error_kind", None) or "", True, attempt, self.settings.max_attempts,
                            remaining, call_s)

    def _timeout(self, timeout_s: float, ctx: CallContext) -> float:
        if ctx.deadline is None:
            return timeout_s
        remaining = ctx.deadline - self.clock()
        if remaining <= 0:
            raise ComponentTimeout("the request's deadline passed before the call")
        return min(timeout_s, remaining)

    def _lane(self, route: RouteView, config) -> Lane:
        """The component's own priority lane, sized to its ready replicas x target concurrency (at most the
        per-replica cap, so calls past the cap wait their turn here instead of being refused)."""
        per_replica = config.scaling.target_concurrency
        if self.settings.replica_concurrency:
            per_replica = min(per_replica, self.settings.replica_concurrency)
        return self.load.lane(route.component, max(1, len(route.replicas)) * self.load.share(per_replica))

    # --- observability ---------------------------------------------------------------
    def _record(self, ctx: CallContext, component: str, route: RouteView | None, outcome: str, attempts: int,
                started: float, held_ms: float = 0.0, usage: tuple[int, int] = (0, 0), *,
                variant: str | None = None, shadow: bool = False, unit_key: str | None = None) -> None:
        if self.on_call is None:
            return
        total_ms = (self.clock() - started) * 1000
        self.on_call(CallRecord(ctx, component, route.deployment_id if route else None,
                                route.model_version if route else None, outcome, attempts,
                                round(held_ms, 3), round(max(0.0, total_ms - held_ms), 3), *usage,
                                variant=variant, shadow=shadow, unit_key=unit_key))


def _overloaded(route: RouteView, shed: Shed) -> Overloaded:
    return Overloaded(f"component {route.component!r} is overloaded ({shed.reason}); retry later",
                      {"component": route.component, "reason": shed.reason}, retry_after=shed.retry_after_s)
