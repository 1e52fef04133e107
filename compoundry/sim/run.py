"""Run policies over one trace and summarise each: cost, P95 per pipeline, SLO breaches, cold starts, provisioning.

``run_policies`` runs the policies in worker processes (one per core: each
policy's clock is independent) and returns plain :class:`Outcome` objects.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np

from compoundry.sim.engine import simulate
from compoundry.sim.latency import pipeline_latency
from compoundry.sim.policies import build_plan, check_policies, need
from compoundry.sim.traffic import Trace, component_calls


@dataclass
class ComponentOutcome:
    cost: float
    replica_hours: float
    serverless_calls: int
    held_calls: int  # calls that met a cold start (no ready replica when they arrived)
    replica_starts: int
    over_hours: float  # replica-hours above what Little's law needed
    under_hours: float  # replica-hours short of it (ready replicas only)
    mode: str
    serverless_cold_calls: int = 0  # serverless calls that met the backend's cold start
    throttled_calls: int = 0  # serverless calls the backend throttled (retried at its concurrency limit)


@dataclass
class PipelineOutcome:
    sla_s: float
    steady_p95_s: float
    median_p95_s: float
    worst_p95_s: float
    within_slo: float  # share of intervals (with traffic) whose P95 met the SLA
    cold_share: float
    p95_series: list[float] = field(default_factory=list)  # per interval, for charts


@dataclass
class Outcome:
    policy: str
    cost: float
    components: dict[str, ComponentOutcome]
    pipelines: dict[str, PipelineOutcome]
    replicas_series: dict[str, list[float]]  # mean replicas per interval, for charts
    seconds: float = 0.0  # wall time of this policy's run


def prepare(scenario, trace: Trace) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Components, their calls per tick and the user requests per tick (shared by all policies)."""
    components = list(scenario.components)
    calls = component_calls(trace, scenario, components, seed=scenario.traffic.seed)
    return components, calls, sum(trace.counts.values())


def run_policy(scenario, trace: Trace, name: str, samples: int = 200, progress=None) -> Outcome:
    """One policy over the trace, summarised."""
    import time

    started = time.perf_counter()
    components, calls, users = prepare(scenario, trace)
    plan = build_plan(name, scenario, calls, components)
    result = simulate(scenario, calls, users, plan, components, progress=progress)
    per_interval = max(1, int(round(scenario.interval_s / scenario.tick_s)))
    outcome = Outcome(name, 0.0, {}, {}, {})
    for i, c in enumerate(components):
        outcome.components[c] = _component(scenario, c, calls[:, i], result, i, plan.modes.get(c, "replicas"))
        outcome.replicas_series[c] = _per_interval(result.records.replicas[:, i], per_interval)
    outcome.cost = sum(o.cost for o in outcome.components.values())
    for p, counts in trace.counts.items():
        lat = pipeline_latency(scenario, p, counts, result, calls, trace.cv, samples, seed=scenario.traffic.seed)
        seen = lat.p95_s[~np.isnan(lat.p95_s)]
        outcome.pipelines[p] = PipelineOutcome(
            lat.sla_s, lat.steady_p95_s, float(np.median(seen)) if len(seen) else 0.0,
            float(seen.max()) if len(seen) else 0.0, 1.0 - lat.breach_share, lat.cold_share,
            [round(float(x), 3) for x in lat.p95_s])
    outcome.seconds = time.perf_counter() - started
    return outcome


def run_policies(scenario, trace: Trace, names: list[str], workers: int = 2, samples: int = 200,
                 on_done=None) -> list[Outcome]:
    """Every named policy (in that order); ``on_done(outcome)`` as each finishes."""
    check_policies(names)
    if workers <= 1 or len(names) == 1:
        outcomes = []
        for name in names:
            outcomes.append(run_policy(scenario, trace, name, samples))
            if on_done:
                on_done(outcomes[-1])
        return outcomes
    done: dict[str, Outcome] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_policy, scenario, trace, name, samples) for name in _slowest_first(names)]
        for future in as_completed(futures):
            outcome = future.result()
            done[outcome.policy] = outcome
            if on_done:
                on_done(outcome)
    return [done[n] for n in names]


def _slowest_first(names: list[str]) -> list[str]:
    """Static and hybrid are cheap; start the autoscaled ones first so the two workers end together."""
    return sorted(names, key=lambda n: n in ("static", "hybrid"))


def _component(scenario, name: str, calls: np.ndarray, result, i: int, mode: str) -> ComponentOutcome:
    prices, model, dt = scenario.components[name].prices, scenario.models[name], scenario.tick_s
    values, inverse = np.unique(calls, return_inverse=True)
    needed = np.array([need(scenario, name, v) for v in values])[inverse]
    rec = result.records
    hours = result.replica_seconds[i] / 3600
    return ComponentOutcome(
        cost=float(hours * prices.replica_hour + result.external_calls[i] * model.serverless_per_call),
        replica_hours=float(hours), serverless_calls=int(result.external_calls[i]),
        held_calls=int(result.held_calls[i]), replica_starts=int(result.cold_starts[i]),
        over_hours=float(np.maximum(0, rec.replicas[:, i] - needed).sum() * dt / 3600) if mode != "serverless" else 0.0,
        under_hours=float(np.maximum(0, needed - rec.ready[:, i]).sum() * dt / 3600) if mode != "serverless" else 0.0,
        mode=mode, serverless_cold_calls=int(result.serverless_cold[i]), throttled_calls=int(result.throttled[i]))


def _per_interval(series: np.ndarray, per: int) -> list[float]:
    n = len(series) // per * per
    return [round(float(x), 2) for x in series[:n].reshape(-1, per).mean(axis=1)]
