"""Autoscaling on real `bentoml serve` replicas behind the real gateway (issue 4).

Every replica here is started and stopped by the gateway's autoscaler: scale
from zero on a held request, up under load, back to zero after the idle
window, a killed replica retried around and replaced, a warm-up floor, and
coordinated pre-warming of a pipeline's downstream component.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest

from compoundry.scaling.targets.local import pid_alive
from tests.integration.platform_fixture import wait_until
from tests.integration.scaling_fixture import scaling_platform

pytestmark = pytest.mark.integration

COMPONENTS = """
components:
  sleeper:
    model: compoundry-sleeper
    engine: pyfunc
    scaling: {min_replicas: 0, max_replicas: 3, target_concurrency: 2, idle_window_s: 4}
    timeouts: {request_s: 30, cold_start_s: 90}
  chain-a:
    model: compoundry-sleeper
    engine: pyfunc
    scaling: {max_replicas: 1, idle_window_s: 600}
    timeouts: {cold_start_s: 90}
  chain-b:
    model: compoundry-sleeper
    engine: pyfunc
    scaling: {max_replicas: 1, idle_window_s: 600}
    timeouts: {cold_start_s: 90}
"""
PIPELINES = """
pipelines:
  chain:
    sla_ms: 120000
    trust: {pre: []}
    steps:
      a: {component: chain-a, inputs: {data: [{delay_ms: 10, text: a}]}}
      b: {component: chain-b, depends_on: [a], inputs: {data: [{delay_ms: 10, text: b}]}}
    output: "${steps.b.predictions}"
"""
PLATFORM = """
route_refresh_s: 0.2
registry: {webhooks: false}
gateway: {auth_required: false, cold_start_hold_s: {interactive: 90}}
autoscaler: {tick_s: 0.5, window_s: 3, down_stabilization_s: 2}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    load = {"sleeper": 1.0, "chain-a": 3.0, "chain-b": 3.0}
    with scaling_platform(tmp_path_factory.mktemp("scaling"), COMPONENTS, PIPELINES, PLATFORM, load) as platform:
        yield platform


def invoke(client: httpx.Client, delay_ms: int, text: str = "x") -> httpx.Response:
    return client.post("/v1/components/sleeper", json={"inputs": {"data": [{"delay_ms": delay_ms, "text": text}]}})


def test_scale_from_zero_up_under_load_and_back_to_zero_without_losing_a_request(cluster):
    assert cluster.replicas("sleeper") == 0
    statuses, peak, stop = Counter(), [0], threading.Event()

    def client_loop(i: int) -> None:
        with httpx.Client(base_url=cluster.settings.gateway_url, timeout=120) as client:
            while not stop.is_set():
                statuses[invoke(client, 300, f"c{i}").status_code] += 1

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], len(cluster.ready_urls("sleeper")))
            time.sleep(0.25)

    with ThreadPoolExecutor(9) as pool:
        futures = [pool.submit(client_loop, i) for i in range(8)] + [pool.submit(watch)]
        wait_until(lambda: peak[0] >= 2, 120, 0.5, "a second replica under load")
        time.sleep(5)
        stop.set()
        for f in futures:
            f.result()
    assert set(statuses) == {200}, statuses
    assert statuses[200] >= 20
    assert peak[0] >= 2

    pids = [r.pid for d in cluster.store.deployments("sleeper") for r in d.replicas if r.pid]
    cluster.wait_replicas("sleeper", 0, timeout_s=60)
    wait_until(lambda: not any(pid_alive(p) for p in pids), 30, 0.5, "the scaled-down replica processes to exit")
    reasons = [e["reason"] for e in cluster.scaling()["events"] if e["component"] == "sleeper"]
    assert reasons[0] == "cold_start" and "load" in reasons and reasons[-1] == "idle", reasons


def test_a_replica_killed_mid_request_is_retried_elsewhere_and_replaced(cluster):
    floor = cluster.capacity.add_floor("sleeper", 2, timedelta(minutes=10), source="test")
    try:
        cluster.wait_replicas("sleeper", 2)
        before = set(cluster.ready_urls("sleeper"))
        victim = next(r for d in cluster.store.deployments("sleeper") for r in d.replicas
                      if r.url in before and r.pid)
        with ThreadPoolExecutor(4) as pool:
            answers = [pool.submit(invoke, cluster.client, 2500, f"k{i}") for i in range(4)]
            time.sleep(0.8)  # all four are in flight, spread over both replicas
            os.killpg(victim.pid, signal.SIGKILL)
            results = [f.result() for f in answers]
        assert [r.status_code for r in results] == [200] * 4, [r.text for r in results]
        assert all(r.json()["outputs"]["predictions"][0]["pid"] != victim.pid for r in results)
        wait_until(lambda: len(set(cluster.ready_urls("sleeper")) - before) == 1
                   and len(cluster.ready_urls("sleeper")) == 2, 90, 0.5, "a replacement replica")
        assert victim.url not in cluster.ready_urls("sleeper")
    finally:
        cluster.capacity.release(floor.id)


def test_first_access_prewarms_the_downstream_component(cluster):
    assert cluster.replicas("chain-a") == 0 and cluster.replicas("chain-b") == 0
    started = time.monotonic()
    response = cluster.client.post("/v1/pipelines/chain", json={"inputs": {}})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    events = {e["component"]: e for e in cluster.scaling()["events"] if e["component"] in ("chain-a", "chain-b")}
    assert events["chain-a"]["reason"] == "cold_start" and events["chain-b"]["reason"] == "prewarm"
    assert abs(events["chain-b"]["at"] - events["chain-a"]["at"]) < 1.0  # started together, not one after the other
    cold_a = cluster.capacity.cold_start_estimates()["chain-a"]
    assert elapsed < cold_a * 1.6, (elapsed, cold_a)  # the sum would be ~2x
