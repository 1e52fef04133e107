"""One truth from two doors: the raw ASGI fast path answers every prediction and OpenAI request exactly as the
FastAPI routes do (status, JSON body, the headers a client reads), for a handwritten corpus of edge cases and for
what schemathesis generates from the gateway's own OpenAPI document."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from compoundry.config.loader import load_config
from compoundry.gateway.app import GatewayParts, create_app
from compoundry.gateway.errors import ComponentFailed
from compoundry.store.refresh import RouteTable
from tests.unit.conftest import COMPONENTS, PIPELINES, FakeReplicas, _route

TIMINGS = {"timing_ms", "total_ms", "critical_path_ms", "overhead_ms", "started_ms", "ended_ms", "duration_ms"}
READ_HEADERS = ("content-type", "retry-after", "x-request-id")


class FakeChatReplicas(FakeReplicas):
    """Also answers the llm's OpenAI routes, echoing what it was sent."""

    async def post(self, url, path, body, timeout, component, headers=None):
        self.calls.append((url, body))
        if body.get("messages", [{}])[-1].get("content") == "boom":
            raise ComponentFailed("the model crashed", {"component": component})
        return {"id": "c-1", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": f"é {sorted(body)}"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}


@pytest.fixture
def doors(tmp_path, parts):
    """(fast, plain): the same parts behind the fast path and behind FastAPI alone; ``chat`` is an llm."""
    (tmp_path / "components.yaml").write_text(COMPONENTS + "  chat: {model: m-chat, engine: llm}\n")
    (tmp_path / "pipelines.yaml").write_text(PIPELINES)
    routes = RouteTable(lambda: {"embed": _route("embed"), "classify": _route("classify", replicas=2),
                                 "chat": _route("chat")})
    both = GatewayParts.build(parts.settings, load_config(tmp_path), parts.store, routes=routes,
                              replica_client=FakeChatReplicas())
    with TestClient(create_app(both)) as fast, TestClient(create_app(both, fast_path=False)) as plain:
        yield fast, plain


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _seen(response) -> tuple:
    """What a client reads; the very bytes too where no timing differs between two calls."""
    try:
        parsed = response.json()
        body = _without_timings(parsed)
        raw = response.content if body == parsed else None
    except ValueError:
        body, raw = response.text, None
    return response.status_code, body, raw, {h: response.headers.get(h) for h in READ_HEADERS}


def _same(doors, method: str, path: str, request_id: str, **kwargs) -> tuple:
    fast, plain = doors
    headers = {"x-request-id": request_id, **kwargs.pop("headers", {})}
    answers = [_seen(client.request(method, path, headers=headers, **kwargs)) for client in (fast, plain)]
    assert answers[0] == answers[1], f"{method} {path} {kwargs}"
    return answers[0]


JSON = {"content-type": "application/json"}
CORPUS = [
    ("/v1/components/classify", {"json": {"inputs": {"data": "x"}}}, 200),
    ("/v1/components/embed", {"json": {"inputs": {"texts": ["a"]}, "extra": 1}}, 200),
    ("/v1/components/classify", {"json": {"inputs": {"data": "boom"}}}, 502),
    ("/v1/components/nope", {"json": {"inputs": {}}}, 404),
    ("/v1/components/classify", {"json": {"inputs": []}}, 422),
    ("/v1/components/classify", {"json": {"input": {}}}, 422),
    ("/v1/components/classify", {"json": [1, 2]}, 422),
    ("/v1/components/classify", {"content": b"", "headers": JSON}, 422),
    ("/v1/components/classify", {"content": b"{not json", "headers": JSON}, 422),
    ("/v1/components/classify", {"content": b'{"inputs": {"x": NaN}}', "headers": JSON}, 200),
    ("/v1/components/classify", {"content": b'{"inputs": {"x": 12345678901234567890123}}', "headers": JSON}, 200),
    ("/v1/components/classify", {"content": b'{"inputs": {"x": "\\ud800"}}', "headers": JSON}, 200),
    ("/v1/components/classify", {"content": b'{"inputs": {"data": "x"}}'}, 422),  # no content type: not JSON
    ("/v1/components/classify", {"content": b'{"inputs": {"data": "x"}}', "headers": {"content-type": "text/plain"}},
     422),
    ("/v1/components/classify", {"content": b'{"inputs": {"data": "x"}}',
                                 "headers": {"content-type": "application/json; charset=utf-8"}}, 200),
    ("/v1/components/classify", {"content": b'{"inputs": {"data": "x"}}',
                                 "headers": {"content-type": "application/problem+json"}}, 200),
    ("/v1/components/classify", {"json": {"inputs": {"data": "x"}}, "headers": {"x-latency-class": "urgent"}}, 422),
    ("/v1/components/classify", {"json": {"inputs": {"data": "x"}}, "headers": {"x-latency-class": " Batch "}}, 200),
    ("/v1/components/classify", {"json": {"inputs": {"data": "x"}}, "headers": {"x-pipeline-id": "both"}}, 200),
    ("/v1/components/cl%61ssify", {"json": {"inputs": {"data": "x"}}}, 200),
    ("/v1/pipelines/both", {"json": {"inputs": {"q": "my refund"}}}, 200),
    ("/v1/pipelines/both", {"json": {"inputs": {"q": "boom"}}}, 502),
    ("/v1/pipelines/both", {"json": {"inputs": {}}}, 422),
    ("/v1/pipelines/both", {"json": {"inputs": {"q": 42}}}, 200),  # `both` declares no input types
    ("/v1/pipelines/nope", {"json": {"inputs": {"q": "x"}}}, 404),
    ("/v1/chat/completions", {"json": {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}}, 200),
    ("/v1/chat/completions", {"json": {"model": "chat", "messages": [{"role": "user", "content": "hi"}],
                                       "temperature": 0.5, "user": "u-1", "extra": {"a": [1]}}}, 200),
    ("/v1/chat/completions", {"json": {"model": "chat", "messages": [{"role": "user", "content": "boom"}]}}, 502),
    ("/v1/chat/completions", {"json": {"model": "chat", "messages": []}}, 400),
    ("/v1/chat/completions", {"json": {"model": "chat", "messages": [{"role": "robot", "content": "x"}]}}, 400),
    ("/v1/chat/completions", {"json": {"model": "chat", "messages": [{"role": "user", "content": "x"}], "n": 2}},
     400),
    ("/v1/chat/completions", {"content": b'{"model": "chat", "messages": [{"role": "user"}], "top_p": NaN}',
                              "headers": JSON}, 400),
    ("/v1/chat/completions", {"json": {"model": "embed", "messages": [{"role": "user", "content": "x"}]}}, 400),
    ("/v1/chat/completions", {"json": {"model": "nope", "messages": [{"role": "user", "content": "x"}]}}, 404),
    ("/v1/chat/completions", {"json": {"messages": [{"role": "user", "content": "x"}]}}, 400),
    ("/v1/completions", {"json": {"model": "chat", "prompt": "x", "max_tokens": 0}}, 400),
    ("/v1/embeddings", {"json": {"model": "embed", "input": "hello"}}, 200),
    ("/v1/embeddings", {"json": {"model": "embed", "input": ["a", "b"], "user": "u"}}, 200),
    ("/v1/embeddings", {"json": {"model": "embed", "input": 3}}, 400),
    ("/v1/embeddings", {"json": {"model": "chat", "input": "x"}}, 400),
]


@pytest.mark.parametrize(("path", "request_kwargs", "status"), CORPUS, ids=[f"{i}" for i in range(len(CORPUS))])
def test_both_doors_give_the_same_answer(doors, path, request_kwargs, status):
    seen_status, *_ = _same(doors, "POST", path, "req-1", **dict(request_kwargs))
    assert seen_status == status


def test_the_fast_path_is_the_one_that_answered(parts, monkeypatch):
    """Guard against a comparison of FastAPI with itself: a well-formed call never reaches the routes."""
    import compoundry.gateway.app as app_module

    async def route_called(*args):
        raise AssertionError("the FastAPI route answered")

    monkeypatch.setattr(app_module, "invoke_component", route_called)
    with TestClient(create_app(parts), raise_server_exceptions=False) as client:
        assert client.post("/v1/components/classify", json={"inputs": {"data": "x"}}).status_code == 200
        assert client.post("/v1/components/classify", content=b'{"inputs": {}}').status_code == 422  # no type
    with TestClient(create_app(parts, fast_path=False), raise_server_exceptions=False) as client:
        assert client.post("/v1/components/classify", json={"inputs": {"data": "x"}}).status_code == 500


def test_generated_requests_get_the_same_answer_from_both_doors(doors):
    """schemathesis' cases for the two prediction operations of /openapi.json, names mostly real ones."""
    import schemathesis

    schema = schemathesis.openapi.from_dict(doors[1].get("/openapi.json").json())
    operations = [op.ok() for op in schema.get_all_operations()]
    fast_paths = ("/v1/components/{name}", "/v1/pipelines/{name}", "/v1/chat/completions", "/v1/completions",
                  "/v1/embeddings")
    operations = [op for op in operations if op.path in fast_paths]
    assert len(operations) == len(fast_paths)
    seen: list[int] = []
    for operation in operations:
        @given(case=operation.as_strategy(), name=st.sampled_from(["embed", "classify", "both", "chat", "nope"]))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def same_answer(case, name):
            path = operation.path.replace("{name}", name)
            if isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = name
            body = json.dumps(case.body).encode() if case.body is not None else b""
            seen.append(_same(doors, "POST", path, "gen-1", content=body,
                              headers={"content-type": "application/json"})[0])
        same_answer()
    assert len(seen) >= 5 * len(fast_paths) and 200 in seen, seen
