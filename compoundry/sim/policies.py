"""The policies compared side by side, each a :class:`~compoundry.sim.engine.Plan` built from the scenario.

They are cumulative, as the study's argument is:

* ``static`` - every component fixed at its peak need, 24/7 (the legacy deployment);
* ``uniform`` - autoscaling, but every component on the *user request* rate (one signal for all);
* ``per-component`` - each component on its own invocation rate (``policy.decide``), scale to zero;
* ``prewarm`` - + coordinated pre-warming of downstream components on first access;
* ``scheduled`` - + the scenario's scheduled warm-ups (capacity floors from ``schedules:``);
* ``hybrid`` - + per component the cheaper mode: ``serverless`` (pay per call) or ``auto``
  (own replicas, spill-over to serverless when they are cold or saturated); ``serverless`` only
  where the endpoint's concurrency limit carries the trace's 99th-percentile tick (ADR 0042).

Static sizing and the hybrid's mode choice use the production Little's-law
rule (``policy.needed_replicas``) on the trace's own rates.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime, timedelta

import numpy as np
from croniter import croniter

from compoundry.core.autoscaling.replica_policy import Load, needed_replicas
from compoundry.sim.engine import AUTO, SERVERLESS, Plan

POLICIES: tuple[str, ...] = ("static", "uniform", "per-component", "prewarm", "scheduled", "hybrid")
EPOCH = datetime(2026, 3, 2, tzinfo=zoneinfo.ZoneInfo("UTC"))  # a Monday, midnight: the virtual clock's zero
STATIC_PERCENTILE = 99.0  # static capacity covers this percentile of per-tick demand (ADR 0026)


def check_policies(names: list[str]) -> list[str]:
    """The names, or ValueError listing the valid ones."""
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policy {', '.join(unknown)}; valid: {', '.join(POLICIES)}")
    return names


def need(scenario, component: str, calls_per_tick: np.ndarray | float) -> int:
    """Replicas that carry ``calls_per_tick`` of ``component`` at its target concurrency."""
    model, scaling = scenario.models[component], scenario.components[component].scaling
    rate = float(calls_per_tick) / scenario.tick_s
    return min(needed_replicas(Load(arrival_rate=rate, latency_s=model.service_s), scaling.target_concurrency),
               scaling.max_replicas)


def static_sizes(scenario, calls: np.ndarray, components: list[str]) -> dict[str, int]:
    """Replicas per component for the ``STATIC_PERCENTILE`` of per-tick calls (at least one)."""
    return {c: max(1, need(scenario, c, np.percentile(calls[:, i], STATIC_PERCENTILE)))
            for i, c in enumerate(components)}


def schedule_floors(scenario, n_ticks: int) -> dict[str, np.ndarray]:
    """Per component, the min replicas the enabled ``scheduled-warmup`` entries hold at each tick."""
    floors: dict[str, np.ndarray] = {}
    dt, end = scenario.tick_s, EPOCH + timedelta(seconds=n_ticks * scenario.tick_s)
    for schedule in scenario.schedules.values():
        if schedule.flow != "scheduled-warmup" or not schedule.enabled:
            continue
        p = schedule.parameters
        names = list(p.get("components", [])) + [c for name in p.get("pipelines", [])
                                                  for c in scenario.pipelines[name].components]
        start = EPOCH.astimezone(zoneinfo.ZoneInfo(schedule.timezone))
        fires = croniter(schedule.cron, start - timedelta(seconds=1))
        while (at := fires.get_next(datetime)) < end:
            first = int((at - EPOCH).total_seconds() // dt)
            last = int(first + p.get("hold_minutes", 60) * 60 // dt)
            for c in dict.fromkeys(names):
                floor = floors.setdefault(c, np.zeros(n_ticks, dtype=np.int32))
                floor[first:last] = np.maximum(floor[first:last], int(p.get("min_replicas", 1)))
    return floors


def hybrid_modes(scenario, calls: np.ndarray, components: list[str]) -> dict[str, str]:
    """Per component the cheaper way to serve the trace: all calls serverless, or own replicas by the hour.

    Serverless is only chosen where its concurrency limit carries the ``STATIC_PERCENTILE`` tick:
    an endpoint that throttles ordinary traffic is not an option, whatever it costs."""
    per_hour = max(1, int(round(3600 / scenario.tick_s)))
    modes = {}
    for i, c in enumerate(components):
        column = calls[:, i]
        hours = column[: len(column) // per_hour * per_hour].reshape(-1, per_hour).sum(axis=1) / per_hour
        own = sum(need(scenario, c, h) for h in hours) * scenario.components[c].prices.replica_hour
        serverless = column.sum() * scenario.models[c].serverless_per_call
        model = scenario.models[c]
        limit = model.serverless.concurrency_limit
        call_s = model.service_s + model.serverless_overhead_s
        busy = np.percentile(column, STATIC_PERCENTILE) * call_s / scenario.tick_s  # calls in flight
        fits = limit is None or busy <= limit
        modes[c] = SERVERLESS if serverless < own and fits else AUTO
    return modes


def build_plan(name: str, scenario, calls: np.ndarray, components: list[str]) -> Plan:
    """The :class:`Plan` of one policy (``check_policies`` first)."""
    if name == "static":
        return Plan(name, static=static_sizes(scenario, calls, components))
    if name == "uniform":
        return Plan(name, signal="user")
    rank = POLICIES.index(name)
    floors = schedule_floors(scenario, calls.shape[0]) if rank >= POLICIES.index("scheduled") else {}
    modes = hybrid_modes(scenario, calls, components) if name == "hybrid" else {}
    return Plan(name, prewarm=rank >= POLICIES.index("prewarm"), floors=floors, modes=modes)
