"""The cost model and latency decomposition against a workload worked out by hand (tests/cost_workload.py)."""

from datetime import timedelta

import pytest

from compoundry.core.costs.cost_model import (
    DIRECT,
    IDLE,
    ReplicaInterval,
    cost_lines,
    dedicated_replicas,
    overlap_s,
    rollup,
    scenarios,
    sum_scenarios,
)
from compoundry.core.costs.latency_shares import decompose, percentile
from tests import cost_workload as w


@pytest.fixture
def lines():
    return cost_lines(w.records(), w.intervals(), w.tariffs(), w.SINCE, w.UNTIL)


def costs(lines, *by):
    return {line.key(by) if len(by) > 1 else line.key(by)[0]: round(line.cost, 6) for line in rollup(lines, by)}


def test_replica_time_is_clipped_to_the_window():
    assert overlap_s(w.SINCE - timedelta(hours=1), None, w.SINCE, w.UNTIL) == 7200
    assert overlap_s(w.at(30), w.at(60), w.SINCE, w.UNTIL) == 1800
    assert overlap_s(w.UNTIL, None, w.SINCE, w.UNTIL) == 0
    assert overlap_s(w.at(90), w.at(80), w.SINCE, w.UNTIL) == 0  # a stop before the start never costs


def test_cost_per_pipeline_component_tenant_and_mode_match_the_hand_computed_figures(lines):
    assert costs(lines, "pipeline") == {"rag": 3.3752, "triage": 2.126, IDLE: 0.5, DIRECT: 0.0}
    assert costs(lines, "component") == {"llm": 5.0, "clf": 1.001, "emb": 0.0002}
    assert costs(lines, "tenant") == {"acme": 3.2511, "beta": 2.2501, IDLE: 0.5}
    assert costs(lines, "mode") == {"dedicated": 5.0, "auto": 1.0, "external": 0.001, "serverless": 0.0002}
    assert costs(lines, "pipeline", "component", "tenant")[("rag", "llm", "beta")] == 2.25
    assert round(sum(line.cost for line in lines), 6) == 6.0012


def test_dedicated_calls_are_billed_by_replica_time_not_per_token(lines):
    llm = rollup([x for x in lines if x.component == "llm"], ("pipeline", "tenant"))
    assert {(x.pipeline, x.tenant): (round(x.replica_cost, 6), x.usage_cost, round(x.replica_s, 3))
            for x in llm} == {("rag", "beta"): (2.25, 0.0, 4050.0), ("triage", "acme"): (1.625, 0.0, 2925.0),
                              ("rag", "acme"): (1.125, 0.0, 2025.0)}


def test_an_unused_replica_is_idle_cost_and_a_serverless_replica_is_not_billed_by_time(lines):
    idle = [x for x in lines if x.pipeline == IDLE]
    assert [(x.component, x.mode, round(x.replica_cost, 6), x.replica_s) for x in idle] == [("clf", "auto", 0.5, 1800)]
    assert all(x.replica_cost == 0 for x in lines if x.component == "emb")


def test_shed_calls_are_counted_but_cost_nothing(lines):
    direct = rollup([x for x in lines if x.pipeline == DIRECT], ("pipeline",))[0]
    assert (direct.calls, direct.cost) == (1, 0.0)


def test_replicas_of_a_deployment_that_served_dedicated_calls_are_billed_even_if_the_config_moved_on(lines):
    tariffs = {**w.tariffs(), "llm": w.tariffs()["emb"]}  # llm is serverless in today's config
    moved = cost_lines(w.records(), w.intervals(), tariffs, w.SINCE, w.UNTIL)
    assert costs(moved, "component")["llm"] == pytest.approx(0.4 * 2.5)


def test_counterfactual_all_dedicated_and_all_serverless(lines):
    items = scenarios(w.records(), lines, {"llm", "clf", "emb"}, w.tariffs(), w.SINCE, w.UNTIL)
    total = sum_scenarios(items, None)[0]
    assert (round(total.actual, 6), round(total.all_dedicated, 6), round(total.all_serverless, 6)) == \
        (6.0012, 6.8, 0.0035)
    per_pipeline = {s.pipeline: (round(s.all_dedicated, 6), round(s.all_serverless, 6))
                    for s in sum_scenarios(items, "pipeline")}
    assert per_pipeline == {"rag": (3.5, 0.001), "triage": (3.3, 0.0025), IDLE: (0.0, 0.0), DIRECT: (0.0, 0.0)}
    per_component = {s.component: round(s.all_dedicated, 6) for s in sum_scenarios(items, "component")}
    assert per_component == {"llm": 4.0, "clf": 2.0, "emb": 0.8}


def test_all_dedicated_sizes_replicas_by_the_busiest_hour():
    tariff = w.tariffs()["llm"]  # target concurrency 4, min 1
    busy = [w.call(w.at(5), "rag", f"r{i}", "answer", "llm", "dedicated", compute_ms=3_600_000) for i in range(9)]
    assert dedicated_replicas(busy, tariff, w.SINCE) == 3  # 9 calls in flight on average over 4 per replica
    assert dedicated_replicas([], tariff, w.SINCE) == 1


def test_latency_shares_of_the_critical_path():
    summary, shares = decompose(w.records(), w.DEPS)
    by = {(x.pipeline, x.component): (x.share, x.path_ms, x.on_path, x.cold_start_ms) for x in shares}
    assert by[("rag", "emb")] == (round(600 / 3300, 4), 600.0, 2, 300.0)
    assert by[("rag", "llm")] == (round(2700 / 3300, 4), 2700.0, 2, 0.0)
    assert by[("triage", "clf")][0] == round(1000 / 2300, 4)
    rag = next(s for s in summary if s.pipeline == "rag")
    assert (rag.requests, rag.mean_path_ms, rag.p50_path_ms, rag.p95_path_ms, rag.bottleneck) == \
        (2, 1650.0, 1650.0, 2235.0, "llm")


def test_a_parallel_step_off_the_critical_path_has_no_share():
    deps = {"fan": {"a": [], "b": [], "c": ["a", "b"]}}
    recs = [w.call(w.at(0), "fan", "f-1", "a", "emb", "serverless", compute_ms=100),
            w.call(w.at(0), "fan", "f-1", "b", "clf", "auto", compute_ms=300),
            w.call(w.at(0, 300), "fan", "f-1", "c", "llm", "dedicated", compute_ms=500),
            w.call(w.at(0), "fan", "f-1", "c", "llm", "dedicated", compute_ms=50, shadow=True),  # ignored
            w.call(w.at(0), "other", "o-1", "x", "llm", "dedicated", compute_ms=50)]  # unregistered: ignored
    summary, shares = decompose(recs, deps)
    assert [(s.pipeline, s.mean_path_ms) for s in summary] == [("fan", 800.0)]
    assert {x.step: (x.on_path, x.share) for x in shares} == {"a": (0, 0.0), "b": (1, 0.375), "c": (1, 0.625)}


def test_percentile_interpolates():
    assert percentile([], 95) == 0.0
    assert percentile([10.0], 95) == 10.0
    assert percentile([0.0, 100.0], 95) == 95.0


def test_rollup_rejects_an_unknown_dimension(lines):
    with pytest.raises(ValueError, match="unknown dimension"):
        rollup(lines, ("region",))
    assert ReplicaInterval("r", "d", "c", w.SINCE).stopped_at is None
