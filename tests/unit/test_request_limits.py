"""Bounded work per call: the pure limit check, the abandoned-call accounting, and both in the app."""

from __future__ import annotations

import asyncio
import random

import pytest
from starlette.testclient import TestClient

from compoundry.core.request_limits import limit_violation
from compoundry.core.routing.balancer import Balancer
from compoundry.gateway.abandoned import AbandonedCalls
from compoundry.gateway.app import create_app
from compoundry.gateway.errors import ComponentTimeout

LIMITS = {"max_inputs": 3, "max_chars": 10, "max_tokens": 100}


@pytest.mark.parametrize("inputs, limit, too_large", [
    ({"texts": ["a"] * 4}, "max_inputs", True),
    ({"texts": ["a", "x" * 11]}, "max_chars", True),
    ({"data": {"rows": [{"q": "y" * 11}]}}, "max_chars", True),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**12}, "max_tokens", False),
    ({"max_completion_tokens": 101}, "max_tokens", False),
])
def test_the_first_limit_broken_is_named(inputs, limit, too_large):
    violation = limit_violation(inputs, **LIMITS)
    assert violation is not None and violation.limit == limit and violation.too_large is too_large


def test_calls_within_every_limit_pass():
    assert limit_violation({"texts": ["a", "b", "c"], "max_tokens": 100, "n": True}, **LIMITS) is None
    assert limit_violation("x" * 10, **LIMITS) is None and limit_violation(None, **LIMITS) is None


def test_a_50000_input_call_is_refused_with_413_before_any_replica_sees_it(parts):
    with TestClient(create_app(parts)) as client:
        response = client.post("/v1/components/embed", json={"inputs": {"texts": ["hi"] * 50_000}})
        big_question = client.post("/v1/pipelines/both", json={"inputs": {"q": "x" * 3_000_000}})
    error = response.json()["error"]
    assert response.status_code == 413 and error["code"] == "request_too_large" and error["limit"] == "max_inputs"
    assert big_question.status_code == 400, big_question.text  # the step's limit: the request's own fault
    assert big_question.json()["error"]["code"] == "pipeline_step_rejected"
    assert parts.replica_client.calls == []


class _SlowReplica:
    def __init__(self):
        self.finished = asyncio.Event()

    async def send(self, timeout: float):
        await asyncio.sleep(0.2)
        self.finished.set()
        return {"ok": True}


def test_a_call_the_gateway_gave_up_on_keeps_its_replica_busy_until_the_replica_is_done():
    async def scenario():
        balancer, abandoned, replica = Balancer(random.Random(0)), AbandonedCalls(), _SlowReplica()
        with pytest.raises(ComponentTimeout):
            await abandoned.call(balancer, "r1", replica.send, timeout_s=0.02, busy_s=5, component="embed")
        busy_after_timeout = balancer.outstanding("r1"), abandoned.out
        await replica.finished.wait()
        await asyncio.sleep(0)
        return busy_after_timeout, (balancer.outstanding("r1"), abandoned.out)

    after_timeout, after_replica = asyncio.run(scenario())
    assert after_timeout == (1, 1)  # the caller got its 504; the replica still counts as busy
    assert after_replica == (0, 0)


def test_an_abandoned_call_is_dropped_after_busy_s_and_a_quick_one_frees_its_slot():
    async def scenario():
        balancer, abandoned = Balancer(random.Random(0)), AbandonedCalls()

        async def hangs(timeout: float):
            await asyncio.sleep(timeout)  # the replica client's own timeout: timeout_s + busy_s
            raise ComponentTimeout("hung")

        with pytest.raises(ComponentTimeout):
            await abandoned.call(balancer, "r1", hangs, timeout_s=0.01, busy_s=0.05, component="embed")
        await asyncio.sleep(0.1)
        quick = await abandoned.call(balancer, "r1", lambda t: asyncio.sleep(0, "done"), 1, 5, "embed")
        return quick, balancer.outstanding("r1"), abandoned.out

    assert asyncio.run(scenario()) == ("done", 0, 0)


@pytest.mark.parametrize("body", [
    '{"model": "llm", "messages": [{"role": "root", "content": "hi"}]}',
    '{"model": "llm", "messages": [{"role": "user", "content": "hi"}], "n": 1000}',
    '{"model": "llm", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    '{"model": "llm", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"5": Infinity}}',
    '{"model": "llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}',
    '{"model": "llm", "messages": []}',
    '{"model": "llm", "prompt": "hi", "n": 2}',
])
def test_openai_bodies_that_no_model_could_honour_get_a_400_as_openai_answers(parts, body):
    path = "/v1/completions" if '"prompt"' in body else "/v1/chat/completions"
    with TestClient(create_app(parts)) as client:
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text  # the openai client's BadRequestError
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("invalid_request", "invalid_request_error") and "param" in error


def test_a_deeply_nested_or_message_level_nan_is_a_422_not_a_500(parts):
    deep = '{"model": "llm", "messages": [{"role": "user", "content": "hi"}], "x": ' + "[" * 3000 + "]" * 3000 + "}"
    nan_in_message = '{"model": "llm", "messages": [{"role": "user", "content": "hi", "weight": NaN}]}'
    with TestClient(create_app(parts)) as client:
        for body in (deep, nan_in_message):
            response = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
            assert response.status_code in (400, 422), response.text


def test_calls_past_the_per_replica_cap_wait_in_the_lane_instead_of_being_refused():
    """replica_concurrency 2, one replica, 6 calls at once: all answered, never more than 2 on the replica."""
    from compoundry.config.models import Component
    from compoundry.config.platform_config import GatewaySettings
    from compoundry.core.routing.route_view import ReplicaView, RouteView
    from compoundry.gateway.calls import CallContext
    from compoundry.gateway.dispatch import Dispatcher
    from compoundry.store.refresh import RouteTable

    class Slow:
        def __init__(self):
            self.now = self.peak = 0

        async def invoke(self, url, inputs, timeout, component):
            self.now += 1
            self.peak = max(self.peak, self.now)
            await asyncio.sleep(0.02)
            self.now -= 1
            return {"ok": True}

    async def scenario():
        route = RouteView("emb", "emb-v1", "m", "1", "pyfunc", (ReplicaView("r0", "http://r0"),))
        backend = Slow()
        config = {"emb": Component(model="m", engine="pyfunc", scaling={"target_concurrency": 8})}
        dispatcher = Dispatcher(RouteTable(lambda: {"emb": route}), backend, lambda: config,
                                GatewaySettings(replica_concurrency=2))
        await dispatcher.routes.refresh()
        replies = await asyncio.gather(*(dispatcher.call("emb", {"x": i}, 5, CallContext(f"r{i}"))
                                         for i in range(6)))
        return len(replies), backend.peak

    assert asyncio.run(scenario()) == (6, 2)


def test_a_streamed_completion_is_metered_with_its_usage_and_a_cut_stream_too():
    from contextlib import asynccontextmanager

    from compoundry.config.models import Component
    from compoundry.config.platform_config import GatewaySettings
    from compoundry.core.routing.route_view import ReplicaView, RouteView
    from compoundry.gateway.calls import CallContext
    from compoundry.gateway.dispatch import Dispatcher
    from compoundry.store.refresh import RouteTable

    class Streaming:
        @asynccontextmanager
        async def stream(self, url, path, body, timeout, component):
            async def lines():
                yield 'data: {"choices": [{"delta": {"content": "hi"}}]}'
                yield 'data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}'
                yield "data: [DONE]"
            yield lines()

    async def scenario():
        route = RouteView("llm", "llm-v1", "m", "1", "llm", (ReplicaView("r0", "http://r0"),))
        records = []
        dispatcher = Dispatcher(RouteTable(lambda: {"llm": route}), Streaming(),
                                lambda: {"llm": Component(model="m", engine="llm")}, GatewaySettings(),
                                on_call=records.append)
        await dispatcher.routes.refresh()
        lines = [line async for line in dispatcher.stream("llm", "/v1/chat/completions", {}, 5, CallContext("r1"))]
        cut = dispatcher.stream("llm", "/v1/chat/completions", {}, 5, CallContext("r2"))
        await anext(cut)
        await cut.aclose()  # the client went away after the first chunk
        return lines, records

    lines, records = asyncio.run(scenario())
    assert len(lines) == 3
    assert [(r.outcome, r.prompt_tokens, r.completion_tokens) for r in records] == [("ok", 7, 3),
                                                                                  ("client_closed", 0, 0)]
