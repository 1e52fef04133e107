"""Warm-up plans: which components to start when a pipeline is first hit, and what keeping some warm buys.

Cold starts compound along a pipeline's dependency chain: if each component
starts only when the request reaches it, a 30 s embedder followed by a 150 s
LLM costs 180 s. Coordinated pre-warming starts every cold component
downstream of the first access at once, so the first request waits only for
the slowest *path* of cold starts, not their sum. Tiered provisioning keeps
min replicas on the components with the longest cold starts and lets the
cheap ones scale from zero. Everything here is pure: the gateway's autoscaler
and ``compoundry plan warmup`` call it with the config and measured times.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from compoundry.core.dag import topological_levels

HOURS_PER_MONTH = 730


def downstream_components(pipeline, component: str) -> set[str]:
    """Components of the steps at or after any step that calls ``component`` (the DAG's descendants)."""
    deps = pipeline.dependencies
    children: dict[str, list[str]] = {name: [] for name in deps}
    for name, parents in deps.items():
        for parent in parents:
            children[parent].append(name)
    frontier = [name for name, step in pipeline.steps.items() if step.component == component]
    seen: set[str] = set()
    while frontier:
        step = frontier.pop()
        if step not in seen:
            seen.add(step)
            frontier.extend(children[step])
    found = {pipeline.steps[s].component for s in seen}
    found |= {pipeline.steps[s].fallback.component for s in seen
              if pipeline.steps[s].fallback and pipeline.steps[s].fallback.component}
    return found


def prewarm_targets(pipelines: Mapping[str, object], component: str) -> set[str]:
    """What the first access of ``component`` should warm: its downstream in every pre-warming pipeline."""
    targets: set[str] = set()
    for pipeline in pipelines.values():
        if getattr(pipeline, "prewarm", False) and component in pipeline.components:
            targets |= downstream_components(pipeline, component)
    targets.discard(component)
    return targets


def prewarm_hold_s(pipelines: Mapping[str, object], component: str, cold_start_limit_s: Mapping[str, float]) -> float:
    """How long a pre-warmed ``component`` is kept up waiting for the request that warmed it.

    The request reaches it at the latest when every other component of the
    pipeline has cold-started within its limit (``timeouts.cold_start_s``), so the
    sum of those limits bounds the wait; the hold normally ends much earlier,
    at the component's first access.
    """
    holds = [sum(cold_start_limit_s.get(c, 0.0) for c in pipeline.components if c != component)
             for pipeline in pipelines.values()
             if getattr(pipeline, "prewarm", False) and component in pipeline.components]
    return max(holds, default=0.0)


def first_request_delay(pipeline, cold_start_s: Mapping[str, float], warm: set[str], prewarm: bool,
                        service_s: Mapping[str, float] | None = None) -> float:
    """Seconds the pipeline's first request takes, all components in ``warm`` being ready.

    Without pre-warming a cold component starts when the request first reaches
    one of its steps; with it, every cold component starts when the request
    arrives (time 0). A step begins when its dependencies are done and its
    component is ready. ``service_s`` adds each step's own run time (0 when
    omitted: the result is then the cold-start penalty alone).
    """
    service_s = service_s or {}
    deps = pipeline.dependencies
    ready_at: dict[str, float] = {}
    finished: dict[str, float] = {}
    for level in topological_levels(deps):
        for step in level:
            component = pipeline.steps[step].component
            arrival = max((finished[d] for d in deps[step]), default=0.0)
            if component not in ready_at:
                cold = 0.0 if component in warm else cold_start_s.get(component, 0.0)
                ready_at[component] = cold if prewarm else arrival + cold
            finished[step] = max(arrival, ready_at[component]) + service_s.get(component, 0.0)
    return max(finished.values(), default=0.0)


@dataclass(frozen=True)
class WarmupOption:
    name: str
    kept_warm: tuple[str, ...]  # components held at >= 1 replica
    prewarm: bool
    standing_cost_per_hour: float  # replicas kept up whatever the traffic
    worst_first_request_s: float  # cold-start delay of the first request after everything idled

    @property
    def standing_cost_per_month(self) -> float:
        return self.standing_cost_per_hour * HOURS_PER_MONTH


def warmup_options(pipeline, components: Mapping[str, object], cold_start_s: Mapping[str, float]) -> list[WarmupOption]:
    """The choices from "nothing warm, no pre-warming" to "everything warm", cheapest first.

    Tier *k* keeps warm the *k* components with the longest cold starts (the
    critical path's bottleneck first); components whose config already sets
    ``min_replicas >= 1`` are warm in every option, and their cost is counted.
    """
    names = [c for c in pipeline.components if c in components]
    always = {c for c in names if components[c].scaling.min_replicas >= 1}
    scalable = sorted((c for c in names if c not in always), key=lambda c: (-cold_start_s.get(c, 0.0), c))

    def option(name: str, warm: set[str], prewarm: bool) -> WarmupOption:
        cost = sum(components[c].prices.replica_hour * max(1, components[c].scaling.min_replicas) for c in warm)
        delay = first_request_delay(pipeline, cold_start_s, warm, prewarm)
        return WarmupOption(name, tuple(sorted(warm)), prewarm, round(cost, 4), round(delay, 3))

    options = [option("scale from zero, no pre-warming", set(always), False),
               option("scale from zero + coordinated pre-warming", set(always), True)]
    for k in range(1, len(scalable) + 1):
        kept = scalable[:k]
        label = "keep warm: " + ", ".join(kept) if k < len(scalable) else "everything warm"
        options.append(option(label, set(always) | set(kept), True))
    return options


def recommended(options: list[WarmupOption], sla_s: float) -> WarmupOption:
    """The cheapest option whose worst first request fits the SLA (else the fastest one)."""
    fitting = [o for o in options if o.worst_first_request_s <= sla_s]
    if fitting:
        return min(fitting, key=lambda o: (o.standing_cost_per_hour, o.worst_first_request_s))
    return min(options, key=lambda o: (o.worst_first_request_s, o.standing_cost_per_hour))
