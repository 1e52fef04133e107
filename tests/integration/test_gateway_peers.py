"""Two gateway processes on one PostgreSQL database: one autoscaler leader, failover when it is killed.

Real gateways, a real `bentoml serve` replica (a sleeper model), real HTTP. The leader is the gateway
started first; a request held on the other one (a follower) makes the leader start the replica, once;
SIGKILL the leader and the follower takes the lease within ``leader_ttl_s`` plus a tick.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from compoundry.store.leases import Leases
from tests.integration.platform_fixture import free_port, wait_until
from tests.integration.scaling_fixture import scaling_platform
from tests.postgres_scratch import scratch_postgres_database

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

COMPONENTS = """
components:
  ranker:
    model: compoundry-sleeper
    engine: pyfunc
    scaling: {min_replicas: 0, max_replicas: 2, idle_window_s: 600}
    timeouts: {request_s: 30, cold_start_s: 120}
"""
TTL_S = 3.0
PLATFORM = (f"route_refresh_s: 0.2\nregistry: {{webhooks: false}}\ngateway: {{auth_required: false}}\n"
            f"autoscaler: {{tick_s: 0.5, leader_ttl_s: {TTL_S}}}\n")
BATCH = {"X-Latency-Class": "batch"}  # held up to 600 s: a cold start on a busy 2-core machine


@pytest.fixture
def postgres_url(monkeypatch):
    with scratch_postgres_database() as url:
        monkeypatch.setenv("COMPOUNDRY_DATABASE_URL", url)
        yield url


def _second_gateway(settings, port: int) -> subprocess.Popen:
    log = open(settings.logs_dir / "gateway-b.log", "ab")
    env = {**settings.child_env(), "COMPOUNDRY_GATEWAY_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "compoundry.platform.gateway_process"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: proc.poll() is not None or _ready(f"http://127.0.0.1:{port}"), 60, 0.3, "gateway B")
    assert proc.poll() is None, (settings.logs_dir / "gateway-b.log").read_text()[-3000:]
    return proc


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_request_held_on_a_follower_scales_through_the_leader_and_a_killed_leader_is_replaced(
        tmp_path, postgres_url):
    with scaling_platform(tmp_path, COMPONENTS, "pipelines: {}\n", PLATFORM, {"ranker": 0.0}) as a:
        leases = Leases(a.store)
        wait_until(lambda: leases.holder("autoscaler"), 30, 0.2, "gateway A to lead")
        leader = leases.holder("autoscaler")
        port = free_port()
        b_proc = _second_gateway(a.settings, port)
        b = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
        try:
            wait_until(lambda: b.get("/v1/scaling").json().get("leader") is False, 30, 0.2, "B to follow")
            assert a.client.get("/v1/scaling").json()["leader"] is True
            answer = b.post("/v1/components/ranker", headers=BATCH,
                            json={"inputs": {"data": [{"delay_ms": 1, "text": "q"}]}})
            assert answer.status_code == 200, answer.text  # held on B until A's replica was ready
            replicas = [r for d in a.store.deployments("ranker") for r in d.replicas]
            assert len(replicas) == 1  # one replica for one demand, not one per gateway

            os.kill(int(leader.split(":")[1]), signal.SIGKILL)
            killed_at = time.monotonic()
            wait_until(lambda: b.get("/v1/scaling").json().get("leader") is True, 30, 0.1, "B to take over")
            took_s = time.monotonic() - killed_at
            print(f"\nfailover after the leader's SIGKILL: {took_s:.1f} s (lease TTL {TTL_S:g} s)")
            assert took_s <= TTL_S + 2.0
            assert b.post("/v1/components/ranker", json={"inputs": {"data": [{"delay_ms": 1, "text": "q"}]}}
                          ).status_code == 200
            time.sleep(1.5)  # a few of B's ticks as the leader: it adopts the running replica, starts no other
            assert len(b.get("/v1/routes").json()["routes"]["ranker"]["replicas"]) == 1
            assert len([r for d in a.store.deployments("ranker") for r in d.replicas]) == 1
        finally:
            b.close()
            b_proc.terminate()
            b_proc.wait(30)
