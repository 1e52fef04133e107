"""The study's analyses (sections 3.2, 4.2-4.4, 5.1), computed on our models: plain dicts for the report.

Each function is pure: it builds the small trace or pipeline it needs, runs
the production functions (``warmup.first_request_delay``,
``warmup.warmup_options``) or the simulator, and returns numbers.
"""

from __future__ import annotations

import numpy as np

from compoundry.config.models import Pipeline
from compoundry.core.autoscaling.warmup_plans import first_request_delay, warmup_options
from compoundry.sim.engine import simulate
from compoundry.sim.latency import pipeline_latency
from compoundry.sim.policies import build_plan

#: Section 4.2.2: embedding 30 s, dialogue LLM 150 s, classifier 20 s; the LLM needs the embedding.
STUDY_COLD_S = {"embedder": 30.0, "dialogue-llm": 150.0, "intent-classifier": 20.0}
STUDY_CHAIN = Pipeline(steps={"embed": {"component": "embedder"}, "classify": {"component": "intent-classifier"},
                              "answer": {"component": "dialogue-llm", "depends_on": ["embed", "classify"]}})


def cascade(scenario) -> dict:
    """First request after everything idled: naive, pre-warmed, LLM kept warm; formula and simulator agree."""
    formula = {"naive": first_request_delay(STUDY_CHAIN, STUDY_COLD_S, set(), prewarm=False),
               "prewarm": first_request_delay(STUDY_CHAIN, STUDY_COLD_S, set(), prewarm=True),
               "llm_warm": first_request_delay(STUDY_CHAIN, STUDY_COLD_S, {"dialogue-llm"}, prewarm=True)}
    simulated = {"naive": first_request_s(scenario, "per-component"), "prewarm": first_request_s(scenario, "prewarm")}
    return {"cold_start_s": STUDY_COLD_S, "formula_s": formula, "simulated_s": simulated,
            "study_s": {"naive": 180.0, "prewarm": 65.0}}


def single_request_scenario(scenario):
    """The scenario reduced to the study's 3-model chain and cold starts, for one request."""
    models = {c: m.model_copy(update={"cold_start_s": STUDY_COLD_S[c], "service_cv": 0.0})
              for c, m in scenario.models.items() if c in STUDY_COLD_S}
    components = {c: scenario.components[c] for c in STUDY_COLD_S}
    return scenario.model_copy(update={"components": components, "models": models, "invocation": {},
                                       "pipelines": {"chain": STUDY_CHAIN.model_copy(update={"prewarm": True})},
                                       "schedules": {}})


def first_request_s(scenario, policy: str) -> float:
    """Latency of one request arriving at time 0 with every component at zero, by the simulator."""
    small = single_request_scenario(scenario)
    counts = np.zeros(60, dtype=np.int64)
    counts[0] = 1
    components = list(small.components)
    calls = np.zeros((60, len(components)), dtype=np.int64)
    calls[0, :] = 1
    result = simulate(small, calls, counts, build_plan(policy, small, calls, components), components)
    lat = pipeline_latency(small, "chain", counts, result, calls, 1.0, samples=1)
    return float(np.nanmax(lat.p95_s)) - _service_total(small)


def _service_total(small) -> float:
    m = small.models
    return max(m["embedder"].service_s, m["intent-classifier"].service_s) + m["dialogue-llm"].service_s


def tiering(scenario) -> dict:
    """Provisioned concurrency on the bottleneck only: its share of 'all warm', and the delay it removes."""
    components = {c: scenario.components[c] for c in STUDY_COLD_S}
    options = warmup_options(STUDY_CHAIN, components, STUDY_COLD_S)
    naive, everything = options[0], options[-1]
    bottleneck = options[2]  # the first "keep warm" tier: the longest cold start
    return {"options": [{"name": o.name, "cost_per_hour": o.standing_cost_per_hour,
                         "first_request_s": o.worst_first_request_s} for o in options],
            "bottleneck": list(bottleneck.kept_warm),
            "cost_share": bottleneck.standing_cost_per_hour / everything.standing_cost_per_hour,
            "delay_removed": 1 - bottleneck.worst_first_request_s / naive.worst_first_request_s,
            "study": {"cost_share": 0.20, "delay_removed": 0.70}}


def spike_factors(scenario, base_per_s: float = 28.0, factor: float = 10.0) -> dict:
    """Section 4.2.3: replicas per component at the end of a sustained spike, over the steady state before it."""
    tick = scenario.tick_s
    before, during = int(3600 / tick), int(1800 / tick)
    counts = np.full(before + during, base_per_s * tick)
    counts[before:] *= factor
    counts = np.round(counts).astype(np.int64)
    pipeline = scenario.traffic.pipeline
    steps = scenario.pipelines[pipeline].steps
    components = list(scenario.components)
    calls = np.zeros((len(counts), len(components)), dtype=np.int64)
    for name, step in steps.items():
        calls[:, components.index(step.component)] += np.round(counts * scenario.ratio(pipeline, name)).astype(np.int64)
    rows = {}
    for policy in ("per-component", "uniform"):
        result = simulate(scenario, calls, counts, build_plan(policy, scenario, calls, components), components)
        reps = result.records.replicas
        for i, c in enumerate(components):
            steady, peak = reps[before - 30: before, i].mean(), reps[-30:, i].mean()
            rows.setdefault(c, {})[policy] = {"steady": float(steady), "spike": float(peak),
                                              "factor": float(peak / steady) if steady else float("nan")}
    ratios = {steps[s].component: scenario.ratio(pipeline, s) for s in steps}
    return {"factor": factor, "base_per_s": base_per_s, "components": rows, "ratios": ratios}


def savings(outcomes: dict, scenario, trace) -> dict:
    """Cost of each policy vs static, and the hybrid vs pure dedicated and pure serverless."""
    static = outcomes["static"].cost if "static" in outcomes else None
    from compoundry.sim.run import prepare

    components, calls, _ = prepare(scenario, trace)
    serverless = float(sum(calls[:, i].sum() * scenario.models[c].serverless_per_call
                           for i, c in enumerate(components)))
    dedicated = outcomes["scheduled"].cost if "scheduled" in outcomes else None
    hybrid = outcomes["hybrid"].cost if "hybrid" in outcomes else None
    return {"vs_static": {p: 1 - o.cost / static for p, o in outcomes.items()} if static else {},
            "pure_serverless": serverless, "pure_dedicated": dedicated, "hybrid": hybrid,
            "hybrid_saving": (1 - hybrid / min(serverless, dedicated)) if hybrid and dedicated else None,
            "study": {"vs_static": (0.30, 0.40), "hybrid_saving": (0.15, 0.20)}}


def evaluate(scenario, trace, outcomes: list) -> dict:
    """Every analysis of the report, for one set of policy outcomes on ``trace``."""
    return {"cascade": cascade(scenario), "tiering": tiering(scenario), "spike": spike_factors(scenario),
            "savings": savings({o.policy: o for o in outcomes}, scenario, trace)}
