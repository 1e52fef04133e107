"""OpenTelemetry spans: one per pipeline run, one child per step, with status and component."""

import asyncio

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from compoundry.gateway import executor
from tests.fakes import fake_components, pipeline


@pytest.fixture
def spans(monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(executor, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def test_a_pipeline_run_is_one_span_with_a_child_per_step(spans):
    p = pipeline({"a": {"component": "emb"}, "b": {"component": "clf", "optional": True,
                                                   "fallback": {"output": {}}},
                  "c": {"component": "llm", "depends_on": ["a", "b"]}})
    result = asyncio.run(executor.run_pipeline(p, {}, fake_components({"emb": 5, "llm": 5}, fail={"clf"}), name="agent"))
    assert result.ok
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert set(finished) == {"pipeline agent", "step a", "step b", "step c"}
    root = finished["pipeline agent"]
    assert root.attributes["compoundry.critical_path"] == "a,c" and root.attributes["compoundry.ok"] is True
    for step in ("step a", "step b", "step c"):
        assert finished[step].parent.span_id == root.context.span_id
        assert finished[step].context.trace_id == root.context.trace_id
    assert finished["step b"].attributes["compoundry.status"] == "fallback"
    assert finished["step c"].attributes["compoundry.component"] == "llm"


def test_a_failed_required_step_marks_its_span_and_the_pipeline_as_errors(spans):
    p = pipeline({"a": {"component": "emb"}, "b": {"component": "boom", "depends_on": ["a"]}})
    result = asyncio.run(executor.run_pipeline(p, {}, fake_components({}, fail={"boom"}), name="fragile"))
    assert not result.ok
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert finished["step b"].status.status_code == StatusCode.ERROR
    assert finished["pipeline fragile"].status.status_code == StatusCode.ERROR
