"""Rate limits: the pure GCRA rule, its Lua twin in Redis, and the middleware with a fake backend."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import uuid

import httpx
import pytest
from starlette.testclient import TestClient

from compoundry.config.models import Prices
from compoundry.config.settings import PlatformSettings
from compoundry.core.api_keys import Principal
from compoundry.core.costs.records import RATE_LIMITED, price_call
from compoundry.core.rate_limits import (
    Ask,
    Rule,
    asks_for,
    decide,
    estimate_tokens,
    rules_for,
)
from compoundry.gateway.app import create_app
from compoundry.gateway.rate_limit import RateLimits
from compoundry.gateway.rate_limit_backends import LocalBuckets, RedisBuckets

REDIS_URL = "redis://127.0.0.1:6379/0"


# --- the pure rule ------------------------------------------------------------------
def run(asks, times, tats=None):
    """Decide each request at its time, storing what an allowed one charges; the verdicts."""
    tats = dict(tats or {})
    verdicts = []
    for now in times:
        verdict = decide(asks, [tats.get(a.key) for a in asks], now)
        if verdict.allowed:
            tats.update(zip((a.key for a in asks), verdict.tats))
        verdicts.append(verdict)
    return verdicts


def test_a_full_bucket_takes_the_whole_limit_at_once_then_refills_at_the_rate():
    asks = [Ask("t:rpm", 60, 1)]  # one a second
    verdicts = run(asks, [0.0] * 61)
    assert [v.allowed for v in verdicts] == [True] * 60 + [False]
    assert verdicts[-1].retry_after_s == pytest.approx(1.0)
    assert verdicts[-1].refused_by == "t:rpm"
    assert [v.allowed for v in run(asks, [0.0] * 60 + [0.5, 1.0])][-2:] == [False, True]


def test_over_a_long_run_no_more_than_the_limit_per_window_plus_one_burst():
    asks = [Ask("t:rpm", 30, 1)]
    rng = random.Random(7)
    times = sorted(rng.uniform(0, 600) for _ in range(2000))
    allowed = sum(v.allowed for v in run(asks, times))
    assert 300 <= allowed <= 300 + 30  # 10 windows of 30, plus the first burst at most


def test_a_request_refused_by_one_limit_spends_none_of_the_others():
    rpm, tpm = Ask("t:rpm", 100, 1), Ask("t:tpm", 1000, 600)
    first = decide([rpm, tpm], [None, None], 0.0)
    assert first.allowed
    second = decide([rpm, tpm], list(first.tats), 0.0)
    assert not second.allowed and second.refused_by == "t:tpm"
    assert second.tats == ()  # nothing to store: the requests limit keeps its place
    assert second.retry_after_s == pytest.approx(600 * 60 / 1000 + 600 * 60 / 1000 - 60)  # 12 s


def test_a_cost_over_the_whole_limit_passes_a_full_bucket_and_leaves_it_in_debt():
    ask = Ask("t:tpm", 100, 250)  # 2.5 windows of tokens in one request
    first = decide([ask], [None], 0.0)
    assert first.allowed and first.tats[0] == pytest.approx(150.0)
    refused = decide([ask], [first.tats[0]], 10.0)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(140.0)
    assert decide([ask], [first.tats[0]], 150.0).allowed  # paid back: never refused forever


def test_limits_are_divided_over_workers_and_keys_share_their_tenant_hash_tag():
    asks = asks_for("acme", "k1", Rule(60, 6000), Rule(10, None), tokens=50, divisor=2, prefix="p:")
    assert [(a.key, a.limit, a.cost) for a in asks] == [
        ("p:{acme}:rpm", 30, 1), ("p:{acme}:tpm", 3000, 50), ("p:{acme}:key:k1:rpm", 5, 1)]
    assert [a.key for a in asks_for("acme", None, Rule(None, 10), None, tokens=0)] == []  # nothing to count


def test_rules_tenant_entry_else_default_and_keys_only_when_listed():
    tenants, keys, default = {"acme": Rule(5)}, {"k1": Rule(1)}, Rule(100)
    assert rules_for("acme", "k1", tenants, keys, default) == (Rule(5), Rule(1))
    assert rules_for("beta", "k2", tenants, keys, default) == (Rule(100), None)
    assert rules_for("beta", None, tenants, keys, None) == (None, None)


@pytest.mark.parametrize("body, tokens", [
    ({"model": "llm", "messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 100}, 100 + 12),
    ({"inputs": {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 7}}, 7 + 3),
    ({"model": "embed", "input": ["abcd", "efgh"]}, 4),
    ({"inputs": {"q": "x" * 9}}, 3),
])
def test_tokens_are_the_declared_budget_plus_the_text(body, tokens):
    """Every string value counts, the model name and roles included: a cheap, slightly high estimate."""
    assert estimate_tokens(json.dumps(body).encode()) == tokens


def test_a_body_that_is_not_json_counts_by_size():
    assert estimate_tokens(b"not json at all!") == 4
    assert estimate_tokens(b"") == 0


def test_a_rate_limited_call_costs_nothing():
    assert price_call(Prices(per_call=0.01, per_1k_tokens=2.0), prompt_tokens=10, outcome=RATE_LIMITED) == 0.0


# --- the backends -------------------------------------------------------------------
def test_local_buckets_apply_the_rule_on_their_clock():
    now = [0.0]
    buckets = LocalBuckets(clock=lambda: now[0])
    asks = [Ask("t:rpm", 2, 1)]
    verdicts = [asyncio.run(buckets.check(asks)) for _ in range(3)]
    assert [v.allowed for v in verdicts] == [True, True, False]
    now[0] = 30.0
    assert asyncio.run(buckets.check(asks)).allowed


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")
def test_the_lua_script_decides_exactly_as_the_pure_rule():
    prefix = f"test:{uuid.uuid4().hex}:"
    asks = asks_for("acme", "k1", Rule(20, 500), Rule(7, None), tokens=40, prefix=prefix)
    rng = random.Random(3)
    times = [1_700_000_000.0 + t for t in sorted(rng.uniform(0, 180) for _ in range(300))] + [1_700_000_200.0] * 30
    expected = run(asks, times)
    assert 0 < sum(v.allowed for v in expected) < len(times)

    async def in_redis():
        buckets = RedisBuckets(REDIS_URL, 1.0)
        try:
            return [await buckets.check(asks, now=t) for t in times]
        finally:
            await buckets.client.delete(*(a.key for a in asks))
            await buckets.aclose()
    got = asyncio.run(in_redis())
    assert [v.allowed for v in got] == [v.allowed for v in expected]
    for g, e in zip(got, expected):
        if not e.allowed:
            assert g.refused_by == e.refused_by and g.retry_after_s == pytest.approx(e.retry_after_s, abs=0.002)


def test_an_unreachable_redis_fails_open_and_warns_once_per_interval(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    now = [0.0]
    buckets = RedisBuckets(f"redis://:secret@127.0.0.1:{port}/0", 0.2, retry_s=1.0, warn_every_s=60.0,
                           clock=lambda: now[0])
    asks = [Ask("t:rpm", 1, 1)]

    async def checks():
        answers = []
        for at in (0.0, 0.5, 2.0, 3.5, 61.0):
            now[0] = at
            answers.append(await buckets.check(asks))
        await buckets.aclose()
        return answers
    with caplog.at_level(logging.WARNING, logger="compoundry.gateway.rate_limit_backends"):
        assert asyncio.run(checks()) == [None] * 5
    assert buckets.failures == 4  # the call at 0.5 s skipped Redis: no connect timeout per request while down
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "secret" not in warnings[0]


# --- the middleware -----------------------------------------------------------------
class Sink:
    def __init__(self):
        self.records = []

    def record(self, rec):
        self.records.append(rec)


@pytest.fixture(autouse=True)
def _workers_from_the_config(monkeypatch):
    """The worker count these tests write in platform.yaml, not a COMPOUNDRY_GATEWAY_WORKERS another test's
    platform left in the environment."""
    monkeypatch.delenv("COMPOUNDRY_GATEWAY_WORKERS", raising=False)


def limited_settings(tmp_path, limits: str, workers: int = 1) -> PlatformSettings:
    (tmp_path / "platform.yaml").write_text(f"gateway: {{workers: {workers}, rate_limits: {limits}}}\n")
    return PlatformSettings.load(tmp_path)


async def ok_app(scope, receive, send):
    body = (await receive())["body"]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"seen " + body})


def with_principal(app, principal):
    async def wrapped(scope, receive, send):
        scope.setdefault("state", {}).update(principal=principal, request_id="rid-1")
        return await app(scope, receive, send)
    return wrapped


def post(app, path: str, body: dict, headers=None):
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            return await client.post(path, json=body, headers=headers or {})
    return asyncio.run(go())


def test_over_the_limit_is_429_with_retry_after_and_metered_as_rate_limited(tmp_path):
    settings = limited_settings(tmp_path, "{tenants: {acme: {requests_per_minute: 1}}, default: null}")
    sink = Sink()
    limiter = RateLimits(ok_app, settings, sink=sink, backend=LocalBuckets())
    app = with_principal(limiter, Principal("k1", "acme", frozenset({"invoke"})))
    first = post(app, "/v1/components/embed", {"inputs": {"texts": ["a"]}})
    assert first.status_code == 200 and first.text.startswith("seen {")  # the body reached the app
    refused = post(app, "/v1/components/embed", {"inputs": {"texts": ["a"]}}, {"X-Latency-Class": "batch"})
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and error["limit"] == "requests_per_minute" and error["scope"] == "tenant"
    assert error["retry_after"] > 0
    (record,) = sink.records
    assert (record.outcome, record.tenant, record.component, record.request_id, record.cost, record.latency_class) \
        == (RATE_LIMITED, "acme", "embed", "rid-1", 0.0, "batch")


def test_tokens_limit_per_key_names_the_key_and_the_openai_model(tmp_path):
    settings = limited_settings(tmp_path, "{keys: {k1: {tokens_per_minute: 150}}}")
    sink = Sink()
    limiter = RateLimits(ok_app, settings, sink=sink, backend=LocalBuckets())
    app = with_principal(limiter, Principal("k1", "acme", frozenset({"invoke"})))
    body = {"model": "dialogue-llm", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
    assert post(app, "/v1/chat/completions", body).status_code == 200
    refused = post(app, "/v1/chat/completions", body)
    assert refused.status_code == 429 and refused.json()["error"]["scope"] == "key"
    assert refused.json()["error"]["limit"] == "tokens_per_minute"
    assert sink.records[0].component == "dialogue-llm" and sink.records[0].pipeline_id == ""
    other = with_principal(limiter, Principal("k2", "acme", frozenset({"invoke"})))
    assert post(other, "/v1/chat/completions", body).status_code == 200  # another key of the tenant is not limited


def test_without_redis_each_worker_gets_its_share_and_admin_paths_are_never_limited(tmp_path):
    settings = limited_settings(tmp_path, "{default: {requests_per_minute: 4}}", workers=2)
    limiter = RateLimits(ok_app, settings, sink=Sink())
    assert isinstance(limiter.backend, LocalBuckets) and limiter.divisor == 2
    app = with_principal(limiter, Principal("k1", "beta", frozenset({"invoke", "admin"})))
    codes = [post(app, "/v1/pipelines/both", {"inputs": {"q": "x"}}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert post(app, "/control/anything", {}).status_code == 200


def test_no_limits_configured_passes_everything_without_a_backend(tmp_path):
    settings = limited_settings(tmp_path, "{}")
    limiter = RateLimits(ok_app, settings)
    assert limiter.backend is None
    assert post(limiter, "/v1/components/embed", {"inputs": {}}).status_code == 200


def test_the_gateway_app_limits_its_prediction_routes(parts, tmp_path):
    """The middleware sits in the app's stack: a caller without a key is tenant ``anonymous``."""
    (tmp_path / "platform.yaml").write_text(
        "gateway: {auth_required: false, workers: 1, rate_limits: {default: {requests_per_minute: 2}}}\n"
        "autoscaler: {enabled: false}\n")
    settings = PlatformSettings.load(tmp_path)
    with TestClient(create_app(type(parts)(**{**parts.__dict__, "settings": settings}))) as client:
        codes = [client.post("/v1/components/embed", json={"inputs": {"texts": ["a"]}}).status_code
                 for _ in range(3)]
        metrics = client.get("/metrics").text
    assert codes == [200, 200, 429]
    assert 'compoundry_rate_limited_requests_total{limit="requests_per_minute",scope="tenant"} 1.0' in metrics
