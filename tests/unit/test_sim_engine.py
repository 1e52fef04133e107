"""The simulator on traces with hand-computable answers, and determinism under a seed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compoundry.config.models import Pipeline
from compoundry.core.autoscaling.warmup_plans import first_request_delay
from compoundry.sim import analyses
from compoundry.sim.engine import simulate
from compoundry.sim.policies import POLICIES, build_plan, check_policies
from compoundry.sim.run import run_policy
from compoundry.sim.scenario import study_scenario
from compoundry.sim.traffic import Trace, generate, renewal_counts


@pytest.fixture(scope="module")
def study():
    return study_scenario(days=0.25)


def test_a_single_cold_start_chain_adds_up_and_prewarming_overlaps(study):
    # embedder 30 s, LLM 150 s (needs the embedding), classifier 20 s: 180 s naive, 150 s pre-warmed
    tick = study.tick_s
    naive, warm = analyses.first_request_s(study, "per-component"), analyses.first_request_s(study, "prewarm")
    assert naive == pytest.approx(180, abs=tick)
    assert warm == pytest.approx(150, abs=tick)
    assert first_request_delay(analyses.STUDY_CHAIN, analyses.STUDY_COLD_S, set(), prewarm=False) == 180


def _one_component(study, name="dialogue-llm", min_replicas=1):
    pipeline = Pipeline.model_validate({"sla_ms": 8000, "steps": {"answer": {"component": name}}})
    component = study.components[name]
    component = component.model_copy(update={"scaling": component.scaling.model_copy(
        update={"min_replicas": min_replicas})})
    return study.model_copy(update={"components": {name: component}, "models": {name: study.models[name]},
                                    "pipelines": {"agent": pipeline}, "invocation": {}, "schedules": {}})


def _run(scenario, per_tick: np.ndarray, policy="per-component"):
    calls = per_tick.reshape(-1, 1).astype(np.int64)
    comps = list(scenario.components)
    return simulate(scenario, calls, calls[:, 0], build_plan(policy, scenario, calls, comps), comps)


def test_littles_law_at_a_fixed_rate(study):
    # 20 calls/s x 4 s = 80 in service; target 10 per replica -> 8 replicas, no queue once they are up
    scenario = _one_component(study)
    result = _run(scenario, np.full(200, 200))
    assert result.records.replicas[-20:, 0].tolist() == [8] * 20
    assert float(result.records.ahead_s[-20:, 0].max()) == 0.0
    assert result.records.servers[-1, 0] == 8 * scenario.models["dialogue-llm"].slots_per_replica


def test_a_single_spike_scales_to_the_spike_after_one_cold_start(study):
    scenario = _one_component(study)
    per_tick = np.full(120, 100)  # 10 calls/s -> 4 replicas
    per_tick[60:] = 1000  # 10x -> 40 replicas
    result = _run(scenario, per_tick)
    reps, ready = result.records.replicas[:, 0], result.records.ready[:, 0]
    assert reps[59] == 4
    # the spike's own tick scales up at once, on what it can observe: completions at capacity plus the
    # lane's queue (capped at 256 calls): (64 in flight + 256 queued) / 10 = 32. It cannot see more until
    # those 32 are ready, one cold start later; the second round covers the spike (and the backlog).
    cold_ticks = math.ceil(scenario.models["dialogue-llm"].cold_start_s / scenario.tick_s)
    assert reps[60] == 32 and ready[60 + cold_ticks - 1] == 4 and ready[60 + cold_ticks] == 32
    assert reps[61 + cold_ticks] >= 40 and ready[62 + 2 * cold_ticks] >= 40


def test_uniform_scaling_over_provisions_a_conditional_component(study):
    factors = analyses.spike_factors(study)
    sql = factors["components"]["sql-executor"]
    assert sql["uniform"]["spike"] >= 3 * sql["per-component"]["spike"]  # invoked by 20% of requests


def test_renewal_counts_have_the_requested_variance():
    rng = np.random.default_rng(3)
    for cv in (1.0, 2.0):
        counts = renewal_counts(np.full(20_000, 40.0), cv, rng)
        assert counts.mean() == pytest.approx(40, rel=0.02)
        assert counts.var() / counts.mean() == pytest.approx(cv * cv, rel=0.15)


def test_the_same_seed_gives_the_same_run(study):
    a, b = generate(study.traffic, study.tick_s), generate(study.traffic, study.tick_s)
    assert all(np.array_equal(a.counts[p], b.counts[p]) for p in a.counts)
    other = generate(study.traffic.model_copy(update={"seed": 99}), study.tick_s)
    assert not np.array_equal(a.counts["agent"], other.counts["agent"])
    first, second = run_policy(study, a, "hybrid", samples=50), run_policy(study, b, "hybrid", samples=50)
    assert first.cost == second.cost
    assert first.pipelines["agent"].p95_series == second.pipelines["agent"].p95_series


def test_unknown_policy_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: " + ", ".join(POLICIES)):
        check_policies(["static", "magic"])


def test_static_never_scales_and_hybrid_spills_instead_of_holding(study):
    trace = Trace(study.tick_s, {"agent": np.full(120, 300)})
    static, hybrid = run_policy(study, trace, "static", samples=20), run_policy(study, trace, "hybrid", samples=20)
    assert all(c.replica_starts == 0 for c in static.components.values())
    assert sum(c.held_calls for c in hybrid.components.values()) == 0
