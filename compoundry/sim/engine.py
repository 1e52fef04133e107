"""The simulator's clock: replicas, queues and the production autoscaling policy, one tick at a time.

Each tick (``scenario.tick_s`` virtual seconds) and for each component:

1. a call for a component with no replica wakes it at once, as the gateway's
   cold-start hold does (``Autoscaler.request_capacity``); with pre-warming
   the first access also starts every cold downstream component
   (``warmup.prewarm_targets``); without it a downstream component is only
   woken when the request reaches it, after the upstream cold starts;
2. replicas that finish their cold start join; the tick's calls are served
   by a fluid queue (capacity = ready replica-seconds x slots / service time);
   in ``auto`` mode what exceeds the replicas' concurrency threshold spills
   over to the serverless backend (``modes.spill_over``), and ``serverless``
   components send everything there; that backend has its own cold starts,
   concurrency limit and throttling (:mod:`compoundry.sim.serverless`, ADR 0042);
3. completions feed a ``CompletionWindow`` and ``policy.decide`` returns the
   replica count, exactly the gateway autoscaler's decision; the count is
   applied at the end of the tick (new replicas are ready ``cold_start_s`` later).
   The scale-down window is the gateway's too: ``down_stabilization_s``, never
   under k x the model's ``cold_start_s`` (what the gateway measures as seconds
   to ready; ``policy.deployment_bounds``).

What a request *experiences* is reconstructed afterwards from the per-tick
records (:mod:`compoundry.sim.latency`); this loop only moves capacity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from compoundry.config.platform_config import GatewaySettings
from compoundry.core.autoscaling.replica_policy import (
    DEMAND_TTL_TICKS,
    Bounds,
    CompletionWindow,
    ReplicaPolicy,
    decide,
    deployment_bounds,
)
from compoundry.core.autoscaling.warmup_plans import prewarm_targets
from compoundry.core.dag import topological_levels
from compoundry.core.routing.modes import DedicatedState, spill_over
from compoundry.sim.serverless import ServerlessPool

REPLICAS, AUTO, SERVERLESS = "replicas", "auto", "serverless"
HELD_TICKS = DEMAND_TTL_TICKS  # a held call counts as queued demand this many ticks
PROGRESS_TICKS = 8640  # report progress this often (a virtual day at 10 s ticks)
LANE_CAPACITY = GatewaySettings().queue_capacity  # the autoscaler sees at most this many queued calls per lane


@dataclass(frozen=True)
class Plan:
    """How one policy runs the components (built by :mod:`compoundry.sim.policies`)."""

    name: str
    static: dict[str, int] | None = None  # fixed replica counts, no autoscaling
    signal: str = "component"  # component: each scales on its own calls; user: on user requests
    prewarm: bool = False
    floors: dict[str, np.ndarray] = field(default_factory=dict)  # component -> floor per tick
    modes: dict[str, str] = field(default_factory=dict)  # component -> replicas | auto | serverless
    min_replicas: dict[str, int] = field(default_factory=dict)  # overrides components.yaml (tiering)


@dataclass
class Records:
    """Per tick and component (arrays ``[n_ticks, n_components]``): what the latency model needs."""

    ready_in: np.ndarray  # seconds after the tick start until a replica can serve (inf: none starting)
    ahead_s: np.ndarray  # fluid queue wait ahead of this tick's arrivals
    servers: np.ndarray  # mean busy-able slots over the tick
    external: np.ndarray  # share of the tick's calls sent to the serverless backend
    ext_cold: np.ndarray  # share of those that met the backend's cold start (new concurrency)
    ext_wait_s: np.ndarray  # their queue wait when the backend throttled (retries at its limit)
    replicas: np.ndarray  # replicas running or starting at the tick's end
    ready: np.ndarray  # replicas ready at the tick's end


@dataclass
class Result:
    plan: str
    components: list[str]
    records: Records
    replica_seconds: np.ndarray  # per component
    external_calls: np.ndarray  # per component
    held_calls: np.ndarray  # calls that arrived while their component had no ready replica
    cold_starts: np.ndarray  # replicas started per component
    serverless_cold: np.ndarray = None  # serverless calls that met the backend's cold start, per component
    throttled: np.ndarray = None  # serverless calls the backend throttled, per component
    events: list[tuple[float, str, int, int, str]] = field(default_factory=list)  # (t, component, from, to, why)


class _Component:
    """One component's replicas, queue and autoscaler state."""

    __slots__ = ("ready", "starting", "backlog", "policy", "window", "held_at", "floor", "cold", "slots", "s",
                 "tc", "mode", "scaling", "started", "last_in_flight", "observe_own", "remote")

    def __init__(self, model, config, mode: str, min_replicas: int | None, down_s: float, window_s: float,
                 tick_s: float):
        self.scaling = config.scaling.model_copy(update={"min_replicas": min_replicas}) \
            if min_replicas is not None else config.scaling
        self.ready, self.starting, self.backlog = 0, [], 0.0
        self.cold, self.slots, self.s = model.cold_start_s, model.slots_per_replica, model.service_s
        self.policy = ReplicaPolicy(self.bounds(down_s), now=0.0)
        self.window = CompletionWindow(window_s)
        self.held_at, self.floor, self.started, self.last_in_flight = -math.inf, 0, 0, 0
        self.tc, self.mode = config.scaling.target_concurrency, mode
        self.observe_own = True  # False when the policy scales on user requests instead
        self.remote = ServerlessPool(model, tick_s) if mode in (AUTO, SERVERLESS) else None

    @property
    def total(self) -> int:
        return self.ready + len(self.starting)

    def bounds(self, down_s: float, floor: int = 0) -> Bounds:
        """The gateway's bounds for this component: its cold start is what the gateway would measure."""
        return deployment_bounds(self.scaling, 0.0, down_s, floor, cold_start=self.cold)

    def start(self, when: float, count: int) -> None:
        self.starting.extend([when + self.cold] * count)
        self.started += count

    def set_total(self, when: float, desired: int) -> None:
        if desired > self.total:
            self.start(when, desired - self.total)
        while desired < self.total and self.starting:
            self.starting.pop()
        if desired < self.total:
            self.ready = desired


def component_order(scenario) -> tuple[list[str], dict[str, set[str]]]:
    """Components in dependency order, and each one's direct upstream components."""
    order: list[str] = []
    upstream: dict[str, set[str]] = {c: set() for c in scenario.components}
    for pipeline in scenario.pipelines.values():
        for level in topological_levels(pipeline.dependencies):
            for step in level:
                name = pipeline.steps[step].component
                upstream[name] |= {pipeline.steps[d].component for d in pipeline.steps[step].depends_on} - {name}
                if name not in order:
                    order.append(name)
    order += [c for c in scenario.components if c not in order]
    return order, upstream


def simulate(scenario, calls: np.ndarray, user_requests: np.ndarray, plan: Plan, components: list[str],
             progress=None) -> Result:
    """Run ``plan`` over per-tick ``calls`` (``[n_ticks, len(components)]``); pure and deterministic."""
    dt, n = scenario.tick_s, calls.shape[0]
    idx = {c: i for i, c in enumerate(components)}
    order, upstream = component_order(scenario)
    order_idx = [idx[c] for c in order]
    up_idx = {idx[c]: [idx[u] for u in upstream[c]] for c in order}
    targets = {idx[c]: [idx[t] for t in prewarm_targets(scenario.pipelines, c)] if plan.prewarm else []
               for c in components}
    state = [_Component(scenario.models[c], scenario.components[c], plan.modes.get(c, REPLICAS),
                        plan.min_replicas.get(c), scenario.down_stabilization_s, scenario.window_s, dt)
             for c in components]
    for i, c in enumerate(components):
        if plan.static is not None:
            state[i].ready = plan.static.get(c, 0)
        elif state[i].mode != SERVERLESS:
            state[i].ready = state[i].scaling.min_replicas  # the deployment starts at its provisioned floor
    for comp in state:
        comp.observe_own = plan.signal == "component"
    floors = [plan.floors[c].tolist() if c in plan.floors else None for c in components]
    width = len(components)
    rec = _Lists(n * width)
    rep_s, ext, held = [0.0] * width, [0.0] * width, [0.0] * width
    result = Result(plan.name, components, None, rep_s, ext, held, [0] * width)
    rows, users = calls.tolist(), user_requests.tolist()
    ready_at_row = [0.0] * len(components)
    for k in range(n):
        t0, t1 = k * dt, (k + 1) * dt
        row, base = rows[k], k * width
        for i in order_idx:
            comp = state[i]
            rep_s[i] += (comp.ready + len(comp.starting)) * dt
            if comp.mode == SERVERLESS:
                ext[i] += row[i]
                rec.external[base + i] = 1.0
                rec.ext_cold[base + i], rec.ext_wait_s[base + i] = comp.remote.serve(row[i], k, dt)
                continue
            if row[i] and not comp.ready and not comp.starting and comp.mode == REPLICAS:
                when = t0 + _reach_delay(i, t0, up_idx, state, ready_at_row)
                _wake(comp, when, t1, rep_s, i, result, components, "cold_start")
                for j in targets[i]:
                    if state[j].total == 0 and state[j].mode == REPLICAS:
                        _wake(state[j], when, t1, rep_s, j, result, components, "prewarm")
            ready_at_row[i] = t0 if comp.ready else (min(comp.starting) if comp.starting else math.inf)
            _serve(comp, row[i], t0, t1, dt, base + i, i, rec, ext, held, k)
        for i in order_idx:
            comp = state[i]
            if comp.mode == SERVERLESS or plan.static is not None:
                rec.replicas[base + i], rec.ready[base + i] = comp.ready + len(comp.starting), comp.ready
                continue
            floor = floors[i][k] if floors[i] is not None else 0
            if floor != comp.floor:
                comp.floor = floor
                comp.policy.set_bounds(comp.bounds(scenario.down_stabilization_s, floor))
            if plan.signal == "user":
                comp.window.add(t0 + dt / 2, comp.s, users[k])
            queued = min(int(comp.backlog), LANE_CAPACITY) if comp.ready else 0  # held calls wait outside the lane
            total = comp.ready + len(comp.starting)
            desired = decide(comp.policy, comp.window, t1, comp.last_in_flight, queued, total,
                             held=t1 - comp.held_at <= HELD_TICKS * dt)
            if desired != total:
                result.events.append((t1, components[i], total, desired, "load"))
                comp.set_total(t1, desired)
            rec.replicas[base + i], rec.ready[base + i] = comp.ready + len(comp.starting), comp.ready
        if progress is not None and k % PROGRESS_TICKS == 0:
            progress(k, n)
    result.records = rec.arrays(n, width)
    result.replica_seconds, result.external_calls = np.array(rep_s), np.array(ext)
    result.held_calls, result.cold_starts = np.array(held), np.array([c.started for c in state])
    result.serverless_cold = np.array([c.remote.cold_calls if c.remote else 0.0 for c in state])
    result.throttled = np.array([c.remote.throttled_calls if c.remote else 0.0 for c in state])
    return result


class _Lists:
    """The records as flat Python lists while the clock runs (a list store is ~10x cheaper than numpy's)."""

    def __init__(self, size: int):
        self.ready_in, self.ahead_s, self.servers, self.external, self.ext_cold, self.ext_wait_s = (
            [0.0] * size for _ in range(6))
        self.replicas, self.ready = [0] * size, [0] * size

    def arrays(self, n: int, width: int) -> Records:
        def arr(values, dtype):
            return np.asarray(values, dtype=dtype).reshape(n, width)

        f32 = np.float32
        return Records(arr(self.ready_in, f32), arr(self.ahead_s, f32), arr(self.servers, f32),
                       arr(self.external, f32), arr(self.ext_cold, f32), arr(self.ext_wait_s, f32),
                       arr(self.replicas, np.int32), arr(self.ready, np.int32))


def _reach_delay(i: int, t0: float, up_idx, state, ready_at_row) -> float:
    """Seconds after the tick start when a request reaches component ``i``: after its cold upstream."""
    delay = 0.0
    for u in up_idx[i]:
        wait = max(0.0, ready_at_row[u] - t0) if ready_at_row[u] != math.inf else 0.0
        delay = max(delay, wait + state[u].s)
    return delay


def _wake(comp: _Component, when: float, t1: float, rep_s, i: int, result: Result, components, why: str) -> None:
    comp.start(when, 1)
    comp.held_at = when
    comp.policy.mark_active(when)
    rep_s[i] += max(0.0, t1 - when)
    result.events.append((when, components[i], 0, 1, why))


def _serve(comp: _Component, arrivals: int, t0: float, t1: float, dt: float, pos: int, i: int, rec: _Lists,
           ext: list, held: list, tick: int) -> None:
    """Move finished cold starts to ready, serve the tick's calls, record what the latency model needs."""
    ready_s, first = comp.ready * dt, (t0 if comp.ready else math.inf)
    if comp.starting:
        joined = [r for r in comp.starting if r <= t1]
        if joined:
            comp.starting = [r for r in comp.starting if r > t1]
            ready_s += sum(t1 - max(r, t0) for r in joined)
            first = min(first, max(min(joined), t0))
            comp.ready += len(joined)
    if first > t0:
        if comp.mode != AUTO:  # auto mode sends these to the serverless backend instead of holding them
            held[i] += arrivals * min(1.0, (first - t0) / dt)
        rec.ready_in[pos] = first - t0 if first != math.inf else (min(comp.starting) - t0 if comp.starting
                                                                    else math.inf)
    if comp.mode == AUTO:
        _spill(comp, arrivals, ready_s, t0, dt, pos, i, rec, ext, tick)
        return
    rate = comp.ready * comp.slots / comp.s  # calls per second once this tick's replicas are all ready
    work = comp.backlog + arrivals
    served = min(work, ready_s * comp.slots / comp.s)
    backlog = work - served
    rec.ahead_s[pos] = (comp.backlog + backlog) / 2 / rate if rate > 0 else 0.0
    rec.servers[pos] = ready_s * comp.slots / dt
    comp.backlog = backlog
    if comp.observe_own:
        comp.window.add(t0 + dt / 2, comp.s, int(served))
    comp.last_in_flight = min(round(served * comp.s / dt), comp.ready * comp.slots)


def _spill(comp: _Component, arrivals: int, ready_s: float, t0: float, dt: float, pos: int, i: int, rec: _Lists,
           ext: list, tick: int) -> None:
    """``auto`` mode: own replicas up to their concurrency threshold, the rest to the serverless backend.

    ``spill_over`` with nothing in flight says whether there is dedicated
    capacity at all; within the tick the threshold (``target_concurrency``
    per ready replica) caps what the replicas take, as the per-call check does.
    """
    limit = 0.0 if spill_over(DedicatedState(comp.ready, 0, comp.tc, False)) else ready_s * comp.tc / comp.s
    retries = comp.remote.take_retries()  # the backend's throttled calls come back through the gateway
    work = arrivals + retries
    own = min(work, limit)
    before = comp.remote.served
    rec.ext_cold[pos], rec.ext_wait_s[pos] = comp.remote.serve(work - own, tick, dt, min(retries, work - own),
                                                               limit / dt)
    ext[i] += comp.remote.served - before  # billed when the backend serves them
    rec.external[pos] = (work - own) / work if work else 0.0
    rec.servers[pos] = ready_s * comp.slots / dt
    if comp.observe_own:
        comp.window.add(t0 + dt / 2, comp.s, arrivals)  # spilled calls are metered on the serving route too
    comp.last_in_flight = round(own * comp.s / dt)
