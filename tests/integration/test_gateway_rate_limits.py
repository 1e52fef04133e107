"""Rate limits across gateway worker processes: two uvicorn workers on one port share one Redis bucket.

Each worker alone would let the whole limit through (with Redis the limit is not divided by the workers),
so at most one window's limit passing in all proves they count together. The refused calls get 429 with
``Retry-After`` in the gateway's error shape and are metered with outcome ``rate_limited``.
"""

from __future__ import annotations

import math
import socket
import time
import uuid

import httpx
import pytest
import redis
import sqlalchemy as sa

from compoundry.store.tables import metering_table
from tests.integration.gateway_fixture import (
    REFRESH_S,
    route,
    running_gateway,
    wait_for,
)

pytestmark = [pytest.mark.integration]

REDIS = ("127.0.0.1", 6379)
LIMIT = 20  # requests per minute for the tenant: one more every 3 s
COMPONENTS = "components:\n  embed: {model: m-embed, engine: pyfunc}\n"


def _redis_up() -> bool:
    try:
        socket.create_connection(REDIS, timeout=0.2).close()
        return True
    except OSError:
        return False


def _fresh(gw, method: str, path: str, key: str, **kwargs) -> httpx.Response:
    """On a new connection each time: a kept-alive one stays with the worker that accepted it."""
    return httpx.request(method, gw.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=10, **kwargs)


@pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")
def test_two_workers_share_the_tenant_limit_through_redis(tmp_path, stubs):
    prefix = f"test-rl:{uuid.uuid4().hex}:"  # this test's own buckets
    platform = (f"route_refresh_s: {REFRESH_S}\n"
                f"gateway:\n  rate_limits:\n    redis_url: redis://{REDIS[0]}:{REDIS[1]}/0\n"
                f"    key_prefix: '{prefix}'\n    tenants: {{acme: {{requests_per_minute: {LIMIT}}}}}\n")
    seed = lambda store: route(store, "embed", [stubs["a"].url])  # noqa: E731
    client = redis.Redis(*REDIS)
    try:
        with running_gateway(tmp_path, {"platform": platform, "components": COMPONENTS}, seed,
                             env={"COMPOUNDRY_GATEWAY_WORKERS": "2"}) as gw:
            invoke, admin = gw.keys["invoke"], gw.keys["admin"]
            workers = set()
            started = time.monotonic()
            codes = []
            for _ in range(2 * LIMIT):
                codes.append(_fresh(gw, "POST", "/v1/components/embed", invoke,
                                    json={"inputs": {"delay_ms": 1}}).status_code)
                workers.add(_fresh(gw, "GET", "/v1/scaling", admin).json()["gateway"])  # admin paths: never limited
            elapsed = time.monotonic() - started
            assert len(workers) == 2, workers  # both workers were serving the port meanwhile
            assert set(codes) == {200, 429}
            refill = math.ceil(elapsed * LIMIT / 60)  # what the bucket regained while the test ran
            assert LIMIT <= codes.count(200) <= LIMIT + refill, (codes, elapsed)
            assert codes[:LIMIT] == [200] * LIMIT  # a full bucket takes the whole limit at once

            refused = _fresh(gw, "POST", "/v1/components/embed", invoke, json={"inputs": {"delay_ms": 1}})
            assert refused.status_code == 429
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
            assert refused.headers["X-Request-Id"]
            error = refused.json()["error"]
            assert (error["code"], error["limit"], error["scope"]) == ("rate_limited", "requests_per_minute", "tenant")
            assert 0 < error["retry_after"] <= 60 and "rate limit" in error["message"]
            assert client.exists(f"{prefix}{{acme}}:rpm")

            def limited_rows():
                query = sa.select(metering_table.c.tenant, metering_table.c.component, metering_table.c.cost,
                                  metering_table.c.request_id).where(metering_table.c.outcome == "rate_limited")
                with gw.store.engine.connect() as conn:
                    rows = conn.execute(query).all()
                return rows if len(rows) >= codes.count(429) + 1 else None
            rows = wait_for(limited_rows, timeout_s=15, what="the rate_limited metering records")
            assert {(r.tenant, r.component, r.cost) for r in rows} == {("acme", "embed", 0.0)}
            assert refused.headers["X-Request-Id"] in {r.request_id for r in rows}
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()
