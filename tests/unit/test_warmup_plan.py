"""Warm-up plans: downstream sets, first-request delay with and without pre-warming, tiers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from compoundry.config.models import Component, Pipeline
from compoundry.core.autoscaling.warmup_plans import (
    downstream_components,
    first_request_delay,
    prewarm_targets,
    recommended,
    warmup_options,
)


def chain(*components: str, prewarm: bool = True) -> Pipeline:
    steps, previous = {}, None
    for name in components:
        steps[name] = {"component": name, "depends_on": [previous] if previous else []}
        previous = name
    return Pipeline(steps=steps, prewarm=prewarm)


def component(replica_hour: float, min_replicas: int = 0) -> Component:
    return Component(model="m", engine="pyfunc", prices={"replica_hour": replica_hour},
                     scaling={"min_replicas": min_replicas, "max_replicas": max(1, min_replicas)})


SUPPORT = Pipeline(steps={
    "embed": {"component": "embedder"},
    "retrieve": {"component": "kb-retriever", "depends_on": ["embed"]},
    "classify": {"component": "intent-classifier"},
    "lookup": {"component": "sql-executor", "depends_on": ["classify"], "optional": True},
    "answer": {"component": "dialogue-llm", "depends_on": ["retrieve", "classify", "lookup"]},
})


def test_downstream_follows_the_dag():
    assert downstream_components(SUPPORT, "embedder") == {"embedder", "kb-retriever", "dialogue-llm"}
    assert downstream_components(SUPPORT, "intent-classifier") == {"intent-classifier", "sql-executor",
                                                                   "dialogue-llm"}
    assert downstream_components(SUPPORT, "dialogue-llm") == {"dialogue-llm"}
    assert downstream_components(SUPPORT, "unknown") == set()


def test_prewarm_targets_skip_pipelines_that_opt_out():
    pipelines = {"a": chain("x", "y", "z"), "b": chain("x", "w", prewarm=False)}
    assert prewarm_targets(pipelines, "x") == {"y", "z"}
    assert prewarm_targets(pipelines, "z") == set()


def test_the_studys_chain_sums_without_prewarming_and_takes_the_max_with_it():
    pipeline = chain("embedder", "llm")
    cold = {"embedder": 30.0, "llm": 150.0}
    assert first_request_delay(pipeline, cold, set(), prewarm=False) == 180.0
    assert first_request_delay(pipeline, cold, set(), prewarm=True) == 150.0
    assert first_request_delay(pipeline, cold, {"llm"}, prewarm=True) == 30.0
    assert first_request_delay(pipeline, cold, {"embedder", "llm"}, prewarm=False) == 0.0


def test_service_time_adds_along_the_path():
    pipeline = chain("a", "b")
    assert first_request_delay(pipeline, {"a": 5, "b": 1}, set(), True, {"a": 2, "b": 3}) == 10.0  # 5 + 2, then 3 (b was ready at 1)


def test_tiers_keep_the_longest_cold_start_warm_first():
    pipeline = chain("embedder", "retriever", "llm")
    components = {"embedder": component(0.4), "retriever": component(0.2), "llm": component(2.5)}
    cold = {"embedder": 30.0, "retriever": 10.0, "llm": 150.0}
    options = warmup_options(pipeline, components, cold)
    by_name = {o.name: o for o in options}
    assert by_name["scale from zero, no pre-warming"].worst_first_request_s == 190.0
    assert by_name["scale from zero + coordinated pre-warming"].worst_first_request_s == 150.0
    assert by_name["keep warm: llm"].worst_first_request_s == 30.0
    assert by_name["keep warm: llm"].standing_cost_per_hour == 2.5
    assert by_name["keep warm: llm, embedder"].worst_first_request_s == 10.0
    assert by_name["everything warm"].worst_first_request_s == 0.0
    assert by_name["everything warm"].standing_cost_per_hour == 3.1
    assert recommended(options, sla_s=60).name == "keep warm: llm"
    assert recommended(options, sla_s=0.5).name == "everything warm"


def test_components_with_min_replicas_are_warm_and_paid_for_in_every_option():
    pipeline = chain("a", "b")
    options = warmup_options(pipeline, {"a": component(1.0), "b": component(3.0, min_replicas=2)}, {"a": 5, "b": 50})
    assert all("b" in o.kept_warm and o.standing_cost_per_hour >= 6.0 for o in options)
    assert options[0].worst_first_request_s == 5.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 300), min_size=1, max_size=6))
def test_prewarming_is_never_slower_and_reaches_the_parallel_bound_on_a_chain(colds):
    names = [f"c{i}" for i in range(len(colds))]
    pipeline, cold = chain(*names), dict(zip(names, colds))
    naive = first_request_delay(pipeline, cold, set(), prewarm=False)
    warmed = first_request_delay(pipeline, cold, set(), prewarm=True)
    assert warmed <= naive + 1e-9
    assert abs(warmed - max(colds)) < 1e-9
    assert abs(naive - sum(colds)) < 1e-6
