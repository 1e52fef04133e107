"""The autoscaler loop that runs inside the gateway, where the load is seen.

Each tick it decides, for every routed deployment (serving routes and
experiment variants), how many replicas to run from that deployment's *own*
signals (completions, in-flight and queued calls; ``policy.ReplicaPolicy``),
raised by any scheduled warm-up floor, and asks the scaler target to converge.
Between ticks the request path may wake a deployment at once:

* a request held for a cold start (``request_capacity``) scales its component from zero;
* the first access of a component of a pre-warming pipeline (``on_access``)
  starts every cold component downstream of it in parallel
  (``warmup.prewarm_targets``), so cold starts overlap instead of adding up.

Both hooks are O(1) set look-ups while nothing is cold. Scaling actions are
blocking (processes, readiness polls) and run in threads, one at a time per
deployment; their outcome is re-read from the store at the next tick.

A replica the target finds dead (``ScalerTarget.lost``: its process is gone;
the target has marked it failed, so it is out of routing) is replaced at the
next decision, whatever the demand: the policy decides for the count that ran
before the death (``decide(..., lost=)``, reason ``replace``). The scale-down
window is the configured one or k cold starts of the component, whichever is
longer (``replica_policy.down_window_s``), the cold start measured from its
recent replicas (re-read every ``MEASURE_EVERY_S`` and after a start) or else
its configured ``timeouts.cold_start_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from compoundry.core.autoscaling.replica_policy import (
    COLD_STARTS_PER_DOWN_WINDOW,
    DEMAND_TTL_TICKS,
    Bounds,
    CompletionWindow,
    ReplicaPolicy,
    cold_start_s,
    decide,
    decision_reason,
    deployment_bounds,
)
from compoundry.core.autoscaling.warmup_plans import prewarm_hold_s, prewarm_targets
from compoundry.scaling.peers import ACCESS, Peers
from compoundry.scaling.targets.protocol import ScalerTarget, ScalingSpec
from compoundry.store.refresh import Periodic

log = logging.getLogger(__name__)
MEASURE_EVERY_S = 60.0  # how often the measured cold starts (seconds to ready) are re-read from the store


class LoadSource(Protocol):
    """Where the autoscaler reads a deployment's own load: the gateway's load board."""

    def load_of(self, component: str, deployment_id: str) -> tuple[int, int]: ...  # (in flight, queued)


@dataclass(frozen=True)
class ScalingEvent:
    at: float  # time.time()
    component: str
    deployment: str
    variant: str | None
    replicas_from: int
    replicas_to: int
    reason: str  # load | idle | floor | cold_start | prewarm | variant | replace


@dataclass
class _Tracked:
    """What the autoscaler keeps per routed deployment."""

    component: str
    variant: str | None
    policy: ReplicaPolicy
    window: CompletionWindow
    bento_tag: str | None = None
    live: int = 0
    lost: int = 0  # replicas found dead and not yet decided on (a death during a scaling action waits for it)
    demand_at: float | None = None  # last time a request waited for this deployment
    held_until: float | None = None  # pre-warmed: kept up until its first access (or this time)


class Autoscaler:
    def __init__(self, routes, load: LoadSource, config: Callable[[], object], target: ScalerTarget, capacity,
                 settings, clock: Callable[[], float] = time.monotonic, peers: Peers | None = None):
        """``routes``: the gateway's RouteTable; ``config()``: the current Config; ``capacity``: a CapacityStore;
        ``peers``: leadership among several gateway processes (None: this one always leads)."""
        self.routes, self.load, self.config = routes, load, config
        self.target, self.capacity, self.settings, self.clock = target, capacity, settings, clock
        self.peers = peers
        self.leading = peers is None
        self.tracked: dict[str, _Tracked] = {}
        self.events: deque[ScalingEvent] = deque(maxlen=200)
        self._actions: dict[str, asyncio.Task] = {}
        self._cold: set[str] = set()  # components whose serving deployment runs no replica
        self._cold_variants: dict[tuple[str, str], str] = {}  # (component, variant) -> deployment with none
        self._floors: dict[str, int] = {}
        self._held: dict[str, str] = {}  # component -> its pre-warmed serving deployment, until first access
        self._prewarm: tuple[object, dict[str, set[str]]] = (None, {})
        self._loop: Periodic | None = None
        self._measured: dict[str, float] = {}  # component -> median seconds to ready of its recent replicas
        self._measured_at: float | None = None  # None: read them at the next tick
        self._remote: dict[str, tuple[int, int]] = {}  # deployment -> (in flight, queued) on follower gateways
        self._leader_state: dict | None = None  # as a follower: what the leader last published

    # --- request path (sync, cheap) ------------------------------------------------------
    def on_access(self, component: str, variant: str | None) -> None:
        if not self.leading:
            self.peers.report.woke(component, variant, ACCESS, time.time())
            return
        if self._held and component in self._held:  # the request it was warmed for has arrived
            held = self.tracked.get(self._held.pop(component))
            if held is not None:
                held.held_until = None
        if self._cold:
            for name in (self._prewarm_for(component) | {component}) & self._cold:
                self._wake(name, "cold_start" if name == component else "prewarm")
        if variant is not None and self._cold_variants:
            deployment = self._cold_variants.get((component, variant))
            if deployment is not None:
                self._wake_deployment(deployment, "variant")

    def request_capacity(self, component: str, reason: str) -> None:
        if not self.leading:
            self.peers.report.woke(component, None, reason, time.time())
            return
        self._wake(component, reason)

    def observe(self, call) -> None:
        """A finished call (the dispatcher's ``on_call``): feeds its deployment's rate and latency."""
        if not self.leading:
            if call.deployment:
                self.peers.report.completed(call.deployment, call.compute_ms / 1000)
            return
        tracked = self.tracked.get(call.deployment) if call.deployment else None
        if tracked is not None:
            tracked.window.add(self.clock(), call.compute_ms / 1000)

    # --- loop ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.tick()
        self._loop = Periodic("autoscaler", self.tick, self.settings.tick_s).start()

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()
        for task in list(self._actions.values()):
            task.cancel()
        await asyncio.gather(*self._actions.values(), return_exceptions=True)
        if self.peers is not None:  # hand over now, not when the lease runs out
            await asyncio.to_thread(self.peers.leave)

    async def tick(self) -> None:
        if self.peers is not None and not await self._lead():
            return
        measure = self._measured_at is None or self.clock() - self._measured_at >= MEASURE_EVERY_S
        try:
            facts = await asyncio.to_thread(self._read_facts, self._routed(), measure)
        except Exception as exc:  # the database is down: keep the replicas we have
            log.warning("autoscaler: could not read replicas (%s); skipping this tick", exc)
            return
        self._floors, live, lost, tags, measured, demand = facts
        now = self.clock()
        if measured is not None:
            self._measured, self._measured_at = measured, now
        for deployment, (component, variant) in self._routed().items():
            tracked = self._track(deployment, component, variant, now)
            tracked.live, tracked.bento_tag = live.get(deployment, 0), tags.get(deployment)
            tracked.lost += lost.get(deployment, 0)
            if deployment not in self._actions:
                self._decide(deployment, tracked, now)
        for gone in set(self.tracked) - set(self._routed()):
            del self.tracked[gone]
        self._update_cold()
        self._apply(demand)
        if self.peers is not None and self.peers.followers:
            await asyncio.to_thread(self.peers.publish_state, self.describe())

    async def _lead(self) -> bool:
        """Whether this gateway leads this tick; a follower sends its report instead of deciding."""
        try:
            self.leading = await asyncio.to_thread(self.peers.lead_or_report, self.peers.document(self._own_load()))
            if not self.leading:
                self._leader_state = await asyncio.to_thread(self.peers.leader_state)
        except Exception as exc:
            log.warning("autoscaler: could not reach the platform database (%s); skipping this tick", exc)
            self.leading = False
        shared_by = self.peers.followers + 1 if self.leading else (self._leader_state or {}).get("processes")
        if shared_by:  # every gateway process takes its share of each replica's limits (gateway/load.py)
            self.load.share_among(shared_by)
        return self.leading

    def _own_load(self) -> dict[str, tuple[int, int]]:
        return {d: self.load.load_of(c, d) for d, (c, _) in self._routed().items()}

    def _apply(self, demand) -> None:
        """Followers' completions, load and wakes, as if they had happened here."""
        if demand is None:
            return
        now = self.clock()
        for deployment, (calls, service_s) in demand.completions.items():
            tracked = self.tracked.get(deployment)
            if tracked is not None:
                tracked.window.add(now, service_s / calls, calls)
        self._remote = demand.load
        for component, variant, reason in demand.wakes:
            if reason == ACCESS:
                self.on_access(component, variant)
            else:
                self._wake(component, reason)

    # --- decisions -----------------------------------------------------------------------
    def _decide(self, deployment: str, tracked: _Tracked, now: float) -> None:
        config = self.config().components.get(tracked.component)
        if config is None:
            return
        tracked.policy.set_bounds(self._bounds(config, tracked.component, tracked.variant))
        in_flight, queued = self.load.load_of(tracked.component, deployment)
        elsewhere = self._remote.get(deployment, (0, 0))
        in_flight, queued = in_flight + elsewhere[0], queued + elsewhere[1]
        waited_for = tracked.demand_at is not None and now - tracked.demand_at <= DEMAND_TTL_TICKS * self.settings.tick_s
        held = waited_for or self._prewarm_pending(tracked, now)
        lost, tracked.lost = tracked.lost, 0
        desired = decide(tracked.policy, tracked.window, now, in_flight, queued, tracked.live, held, lost)
        if desired != tracked.live:
            floor = self._floors.get(tracked.component, 0) if tracked.variant is None else 0
            self._act(deployment, tracked, desired, decision_reason(desired, tracked.live, lost, floor))

    def _prewarm_pending(self, tracked: _Tracked, now: float) -> bool:
        """Pre-warmed and the request that warmed it has not arrived yet (nor has the hold run out)."""
        if tracked.held_until is None:
            return False
        if now < tracked.held_until:
            return True
        tracked.held_until = None
        self._held.pop(tracked.component, None)
        return False

    def _bounds(self, config, component: str, variant: str | None) -> Bounds:
        """The component's bounds, raised by a warm-up floor on its serving deployment (not on variants)."""
        floor = self._floors.get(component, 0) if variant is None else 0
        return deployment_bounds(config.scaling, self.settings.up_stabilization_s,
                                 self.settings.down_stabilization_s, floor,
                                 cold_start=self._cold_start(component, config)[0])

    def _cold_start(self, component: str, config) -> tuple[float, str]:
        """``(seconds, "measured" | "configured")``: what the down window is bounded by."""
        measured = self._measured.get(component)
        return cold_start_s(measured, config.timeouts.cold_start_s), "configured" if measured is None else "measured"

    def _wake(self, component: str, reason: str) -> None:
        route = self.routes.routes.get(component)
        if route is None:
            return
        if reason == "prewarm":
            self._hold(component, route.deployment_id)
        self._wake_deployment(route.deployment_id, reason)

    def _hold(self, component: str, deployment: str) -> None:
        """Keep a pre-warmed deployment up until the request that warmed it arrives (its idle window would
        otherwise run out while upstream components are still starting)."""
        tracked = self.tracked.get(deployment)
        if tracked is None:
            return
        config = self.config()
        limits = {name: c.timeouts.cold_start_s for name, c in config.components.items()}
        tracked.held_until = self.clock() + prewarm_hold_s(config.pipelines, component, limits)
        self._held[component] = deployment

    def _wake_deployment(self, deployment: str, reason: str) -> None:
        tracked = self.tracked.get(deployment)
        if tracked is None:
            return
        tracked.demand_at = self.clock()
        tracked.policy.mark_active(tracked.demand_at)
        if tracked.variant is None:
            self._cold.discard(tracked.component)
        else:
            self._cold_variants.pop((tracked.component, tracked.variant), None)
        if deployment not in self._actions and tracked.live == 0 and tracked.bento_tag:
            self._act(deployment, tracked, 1, reason)

    def _act(self, deployment: str, tracked: _Tracked, replicas: int, reason: str) -> None:
        config = self.config().components.get(tracked.component)
        route = self._route_of(tracked)
        if config is None or route is None or not tracked.bento_tag:
            return
        spec = ScalingSpec.for_component(deployment, tracked.component, config, route.model_version,
                                         tracked.bento_tag, variant=tracked.variant)
        self.events.append(ScalingEvent(time.time(), tracked.component, deployment, tracked.variant,
                                        tracked.live, replicas, reason))
        log.info("scaling %s (%s) %d -> %d replicas: %s", tracked.component, deployment, tracked.live, replicas,
                 reason)
        task = asyncio.create_task(self._converge(spec, tracked, replicas))
        self._actions[deployment] = task
        task.add_done_callback(lambda _t: self._actions.pop(deployment, None))

    async def _converge(self, spec: ScalingSpec, tracked: _Tracked, replicas: int) -> None:
        before = tracked.live
        try:
            tracked.live = await asyncio.to_thread(self.target.set_replicas, spec, replicas)
        except Exception:
            log.exception("scaling %s to %d replicas failed", spec.deployment_id, replicas)
            return
        if tracked.live > before:  # a replica that has just become ready has not been idle yet
            tracked.policy.mark_active(self.clock())
            self._measured_at = None  # it measured a cold start: the down window may change
        await self.routes.refresh()  # new replicas serve now, not at the next refresh
        if spec.deployment_id not in self._routed():  # replaced by a redeploy meanwhile: leave nothing running
            await asyncio.to_thread(self.target.set_replicas, spec, 0)

    # --- state ---------------------------------------------------------------------------
    def _routed(self) -> dict[str, tuple[str, str | None]]:
        """``deployment -> (component, variant)`` for every serving and variant route."""
        routed: dict[str, tuple[str, str | None]] = {}
        for component, route in self.routes.routes.items():
            routed[route.deployment_id] = (component, None)
            for v in route.variants:
                routed.setdefault(v.deployment_id, (component, v.variant))
        return routed

    def _route_of(self, tracked: _Tracked):
        route = self.routes.routes.get(tracked.component)
        if route is None or tracked.variant is None:
            return route
        return route.variant_route(tracked.variant)

    def _track(self, deployment: str, component: str, variant: str | None, now: float) -> _Tracked:
        tracked = self.tracked.get(deployment)
        if tracked is None:
            config = self.config().components.get(component)
            bounds = self._bounds(config, component, variant) if config is not None else Bounds(0, 1, 1, 300)
            tracked = self.tracked[deployment] = _Tracked(component, variant, ReplicaPolicy(bounds, now),
                                                          CompletionWindow(self.settings.window_s))
        return tracked

    def _read_facts(self, routed: dict[str, tuple[str, str | None]], measure: bool):
        """In a worker thread: active floors, live and newly dead replicas per deployment, their Bento tags,
        and (when ``measure``) the measured cold starts per component."""
        floors = self.capacity.active_floors()
        live = {d: self.target.replicas(d) for d in routed}  # finds the dead ones: ``lost`` after it
        lost = {d: n for d in routed if (n := self.target.lost(d))}
        measured = self.capacity.cold_start_estimates() if measure else None
        demand = self.peers.followers_demand() if self.peers is not None else None
        return floors, live, lost, self.capacity.bento_tags(list(routed)), measured, demand

    def _update_cold(self) -> None:
        busy = set(self._actions)
        self._cold = {t.component for d, t in self.tracked.items()
                      if t.variant is None and t.live == 0 and d not in busy}
        self._cold_variants = {(t.component, t.variant): d for d, t in self.tracked.items()
                               if t.variant is not None and t.live == 0 and d not in busy}

    def _prewarm_for(self, component: str) -> set[str]:
        pipelines = self.config().pipelines
        if self._prewarm[0] is not pipelines:  # recomputed only after a config reload
            self._prewarm = (pipelines, {c: prewarm_targets(pipelines, c) for p in pipelines.values()
                                         for c in p.components})
        return self._prewarm[1].get(component, set())

    def describe(self) -> dict:
        """For ``GET /v1/scaling``: each deployment's replicas and bounds (the effective scale-down window
        and the cold start bounding it), recent decisions."""
        if not self.leading and self._leader_state is not None:  # any gateway answers with the leader's view
            return {**self._leader_state, "leader": False, "gateway": self.peers.gateway}
        config, now = self.config(), self.clock()
        deployments = {}
        for d, t in sorted(self.tracked.items()):
            component = config.components.get(t.component)
            cold, source = self._cold_start(t.component, component) if component is not None else (None, None)
            deployments[d] = {"component": t.component, "variant": t.variant, "replicas": t.live,
                              "scaling": d in self._actions, "min_replicas": t.policy.bounds.min_replicas,
                              "max_replicas": t.policy.bounds.max_replicas,
                              "down_stabilization_s": t.policy.bounds.down_window_s,
                              "cold_start_s": cold, "cold_start_source": source,
                              "scale_to_zero_at_s": _rel(t.policy.scale_to_zero_at(), now)}
        return {"leader": self.leading, "gateway": self.peers.gateway if self.peers is not None else None,
                "processes": self.load.processes,
                "deployments": deployments, "floors": self._floors, "cold": sorted(self._cold),
                "down_stabilization": {"configured_s": self.settings.down_stabilization_s,
                                       "cold_starts": COLD_STARTS_PER_DOWN_WINDOW},
                "events": [asdict(e) for e in list(self.events)[-50:]]}


def _rel(at: float | None, now: float) -> float | None:
    return None if at is None else round(max(0.0, at - now), 1)
