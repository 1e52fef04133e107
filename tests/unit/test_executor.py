"""The pipeline executor with fake components: parallelism, fallbacks, failures, critical path, timeouts."""

import asyncio
import time

import pytest

from compoundry.core.dag import critical_path
from compoundry.gateway.errors import InvalidInput
from compoundry.gateway.executor import run_pipeline
from tests.fakes import fake_components, pipeline

TOL_MS = 60  # scheduling slack on a loaded CI machine


def run(p, inputs=None, call=None, **kw):
    return asyncio.run(run_pipeline(p, inputs or {}, call, **kw))


def test_independent_steps_run_in_parallel():
    p = pipeline({"a": {"component": "slow-a"}, "b": {"component": "slow-b"}})
    started = time.perf_counter()
    result = run(p, call=fake_components({"slow-a": 100, "slow-b": 100}))
    wall_ms = (time.perf_counter() - started) * 1000
    assert result.ok
    assert 100 <= result.total_ms < 100 + TOL_MS and wall_ms < 200 - 20
    assert abs(result.steps["a"].started_ms - result.steps["b"].started_ms) < 10
    assert {s.status for s in result.steps.values()} == {"ok"}
    assert result.steps["a"].deployment == "slow-a-dep"


def test_a_step_waiting_on_two_deps_starts_after_the_slower_and_not_level_by_level():
    # fast -> after_fast should not wait for slow (a level-by-level executor would make it)
    p = pipeline({
        "fast": {"component": "c50"},
        "slow": {"component": "c150"},
        "after_fast": {"component": "c50", "depends_on": ["fast"]},
        "join": {"component": "c10", "depends_on": ["slow", "after_fast"]},
    })
    result = run(p, call=fake_components({"c50": 50, "c150": 150, "c10": 10}))
    s = result.steps
    assert s["after_fast"].started_ms == pytest.approx(s["fast"].ended_ms, abs=25)
    assert s["after_fast"].ended_ms < s["slow"].ended_ms - 20
    assert s["join"].started_ms >= s["slow"].ended_ms
    assert s["join"].started_ms - s["slow"].ended_ms < 25
    assert result.critical_path == ["slow", "join"]
    assert result.critical_path_ms == pytest.approx(s["slow"].duration_ms + s["join"].duration_ms, abs=0.01)
    assert 160 <= result.total_ms < 160 + TOL_MS
    assert result.overhead_ms == pytest.approx(result.total_ms - result.critical_path_ms, abs=0.01)
    assert result.overhead_ms < 25


def test_inputs_are_rendered_from_request_and_upstream_outputs():
    calls = []
    p = pipeline(
        {
            "a": {"component": "ca", "inputs": {"texts": ["${request.q}"]}},
            "b": {"component": "cb", "depends_on": ["a"], "inputs": {"prev": "${steps.a.echo.texts[0]}", "n": "${request.n}"}},
        },
        output={"answer": "${steps.b.echo.prev}!", "n": "${steps.b.echo.n}"},
    )
    result = run(p, {"q": "hi", "n": 2}, fake_components({}, calls=calls))
    assert [c[:2] for c in calls] == [("ca", {"texts": ["hi"]}), ("cb", {"prev": "hi", "n": 2})]
    assert result.output == {"answer": "hi!", "n": 2}


def test_without_an_output_mapping_the_output_is_every_step_output():
    p = pipeline({"a": {"component": "ca"}, "b": {"component": "cb"}})
    result = run(p, call=fake_components({}))
    assert set(result.output) == {"a", "b"} and result.output["a"]["component"] == "ca"


def test_optional_step_with_static_fallback():
    p = pipeline({
        "lookup": {"component": "bad", "optional": True, "fallback": {"output": {"predictions": []}}},
        "answer": {"component": "ok", "depends_on": ["lookup"], "inputs": {"found": "${steps.lookup.predictions}"}},
    })
    result = run(p, call=fake_components({}, fail={"bad"}))
    assert result.ok
    lookup = result.steps["lookup"]
    assert lookup.status == "fallback" and lookup.fallback == "static"
    assert "bad exploded" in lookup.error and lookup.error_code == "component_failed"
    assert result.output["lookup"] == {"predictions": []}
    assert result.output["answer"]["echo"] == {"found": []}
    assert result.steps["answer"].status == "ok"


def test_optional_step_with_fallback_component_gets_the_same_inputs():
    calls = []
    p = pipeline({"s": {"component": "bad", "optional": True, "fallback": {"component": "backup"},
                        "inputs": {"x": "${request.x}"}}})
    result = run(p, {"x": 7}, fake_components({}, fail={"bad"}, calls=calls))
    assert [c[:2] for c in calls] == [("bad", {"x": 7}), ("backup", {"x": 7})]
    s = result.steps["s"]
    assert s.status == "fallback" and s.fallback == "backup" and s.deployment == "backup-dep"
    assert result.output["s"]["component"] == "backup"


def test_optional_step_whose_fallback_component_fails_too_yields_none():
    p = pipeline({"s": {"component": "bad", "optional": True, "fallback": {"component": "worse"}},
                  "after": {"component": "ok", "depends_on": ["s"], "inputs": "got ${steps.s}"}})
    result = run(p, call=fake_components({}, fail={"bad", "worse"}))
    assert result.ok and result.steps["s"].status == "failed"
    assert "fallback worse" in result.steps["s"].error
    assert result.output["after"]["echo"] == "got "


def test_optional_step_without_fallback_yields_none_and_dependents_still_run():
    p = pipeline({
        "opt": {"component": "bad", "optional": True},
        "next": {"component": "ok", "depends_on": ["opt"], "inputs": {"v": "${steps.opt.predictions[0]}"}},
    })
    result = run(p, call=fake_components({}, fail={"bad"}))
    assert result.ok
    assert result.steps["opt"].status == "failed" and result.output["opt"] is None
    assert result.output["next"]["echo"] == {"v": None}


def test_required_failure_cancels_pending_steps_and_returns_a_partial_result():
    p = pipeline({
        "boom": {"component": "bad"},            # fails after 20 ms
        "long": {"component": "c300"},           # still running: cancelled
        "child": {"component": "ok", "depends_on": ["boom"]},
        "grandchild": {"component": "ok", "depends_on": ["child"]},
    })
    started = time.perf_counter()
    result = run(p, call=fake_components({"bad": 20, "c300": 300}, fail={"bad"}))
    assert (time.perf_counter() - started) < 0.2  # did not wait for "long"
    assert not result.ok and result.failed_step == "boom"
    assert "boom" in result.error and "bad exploded" in result.error
    assert result.output is None
    s = result.steps
    assert s["boom"].status == "failed" and s["boom"].duration_ms >= 20
    assert s["long"].status == "skipped" and s["long"].started_ms is not None
    assert s["child"].status == "skipped" and s["child"].started_ms is None
    assert s["grandchild"].status == "skipped"
    assert result.critical_path == ["boom"]


def test_a_template_error_fails_the_step_like_a_call_error():
    p = pipeline({"a": {"component": "ca", "inputs": {"q": "${request.missing}"}}})
    result = run(p, call=fake_components({}))
    assert result.failed_step == "a"
    assert result.steps["a"].error_code == "step_error" and "request.missing" in result.steps["a"].error


def test_invalid_input_from_a_replica_keeps_its_message():
    async def call(component, inputs, timeout):
        raise InvalidInput("texts must be a list of strings")

    result = run(pipeline({"a": {"component": "ca"}}), call=call)
    assert result.steps["a"].error == "texts must be a list of strings"
    assert result.steps["a"].error_code == "invalid_input"


def test_step_timeout_overrides_the_component_timeout():
    calls = []
    p = pipeline({"a": {"component": "slow", "timeout_s": 0.05}, "b": {"component": "other"}})
    result = run(p, call=fake_components({"slow": 500}, calls=calls), timeouts={"slow": 10, "other": 3})
    assert result.failed_step == "a" and result.steps["a"].error_code == "timeout"
    assert 50 <= result.steps["a"].duration_ms < 50 + TOL_MS
    timeouts = {c[0]: c[2] for c in calls}
    assert timeouts["slow"] == pytest.approx(0.05) and timeouts["other"] == pytest.approx(3)


def test_calls_never_run_past_the_pipeline_sla():
    p = pipeline({"a": {"component": "slow"}}, sla_ms=80)
    result = run(p, call=fake_components({"slow": 1000}), timeouts={"slow": 30})
    assert result.steps["a"].status == "failed" and result.steps["a"].error_code == "timeout"
    assert "SLA" in result.steps["a"].error
    assert result.total_ms < 80 + TOL_MS


def test_critical_path_matches_the_dag_function_on_the_support_agent_shape():
    p = pipeline({
        "embed": {"component": "c30"},
        "retrieve": {"component": "c30", "depends_on": ["embed"]},
        "classify": {"component": "c20"},
        "lookup": {"component": "c80", "depends_on": ["classify"], "optional": True},
        "answer": {"component": "c10", "depends_on": ["retrieve", "classify", "lookup"]},
    })
    result = run(p, call=fake_components({"c30": 30, "c20": 20, "c80": 80, "c10": 10}))
    s = result.steps
    deps = {n: st.depends_on for n, st in p.steps.items()}
    expect = critical_path(deps, {n: r.started_ms for n, r in s.items()}, {n: r.ended_ms for n, r in s.items()})
    assert result.critical_path == expect == ["classify", "lookup", "answer"]
    assert abs(s["embed"].started_ms - s["classify"].started_ms) < 10
    for name, step in p.steps.items():
        for dep in step.depends_on:
            assert s[name].started_ms >= s[dep].ended_ms


def test_a_plain_return_value_is_the_output():
    async def call(component, inputs, timeout):
        return {"v": 1}

    result = run(pipeline({"a": {"component": "c"}}), call=call)
    assert result.output == {"a": {"v": 1}} and result.steps["a"].deployment is None


def test_injected_clock_drives_the_timings():
    ticks = iter(range(0, 1000, 1))
    clock = lambda: next(ticks) / 1000  # noqa: E731 — 1 ms per clock read

    async def call(component, inputs, timeout):
        return {}

    result = run(pipeline({"a": {"component": "c"}}), call=call, clock=clock)
    assert result.steps["a"].started_ms >= 1 and result.total_ms >= result.steps["a"].ended_ms
