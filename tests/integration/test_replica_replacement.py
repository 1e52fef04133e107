"""A dead replica is replaced at the autoscaler's next tick, with no load asking for it (issue 15).

Real `bentoml serve` replicas behind the real gateway and its autoscaler
(``scaling_fixture``): load scales the component to two replicas and stops;
the scale-down window (600 s here) holds two. One replica's process group is
SIGKILLed with nothing in flight: it must leave routing, be recorded failed,
and a new replica must be ready within a few ticks and one start, although
the load alone would now ask for one replica.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from compoundry.store.tables import Replica
from tests.integration.platform_fixture import wait_until
from tests.integration.scaling_fixture import scaling_platform

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

COMPONENTS = """
components:
  sleeper:
    model: compoundry-sleeper
    engine: pyfunc
    scaling: {min_replicas: 0, max_replicas: 2, target_concurrency: 2, idle_window_s: 600}
    timeouts: {request_s: 30, cold_start_s: 90}
"""
PLATFORM = """
route_refresh_s: 0.2
registry: {webhooks: false}
gateway: {auth_required: false, cold_start_hold_s: {interactive: 90}}
autoscaler: {tick_s: 0.5, window_s: 3, down_stabilization_s: 600}
"""


def _load_until_two_replicas(cluster) -> None:
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(base_url=cluster.settings.gateway_url, timeout=120) as client:
            while not stop.is_set():
                client.post("/v1/components/sleeper", json={"inputs": {"data": [{"delay_ms": 1500, "text": "x"}]}})

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client_loop) for _ in range(4)]  # 4 in flight at 2 per replica: 2 replicas
        try:
            cluster.wait_replicas("sleeper", 2, timeout_s=90)
        finally:
            stop.set()
            for f in futures:
                f.result()


def test_a_killed_replica_is_replaced_without_load(tmp_path):
    with scaling_platform(tmp_path, COMPONENTS, "pipelines: {}\n", PLATFORM, {"sleeper": 0.5}) as cluster:
        _load_until_two_replicas(cluster)
        deployment = cluster.deployments["sleeper"]
        time.sleep(4)  # the load window empties: from here on load asks for one replica, the window holds two
        before = {r.id: r for r in cluster.capacity.live_replicas([deployment])[deployment]}
        assert len(before) == 2
        victim = next(iter(before.values()))
        killed_at = time.monotonic()
        os.killpg(victim.pid, signal.SIGKILL)

        def replaced() -> bool:
            rows = cluster.capacity.live_replicas([deployment])[deployment]
            return (len(rows) == 2 and victim.id not in {r.id for r in rows}
                    and all(r.status == "ready" for r in rows) and len(cluster.ready_urls("sleeper")) == 2)

        wait_until(replaced, 60, 0.25, "a replacement replica, ready, with no load")
        print(f"\nreplacement ready {time.monotonic() - killed_at:.1f} s after the kill")
        with cluster.store.session() as s:
            assert s.get(Replica, victim.id).status == "failed"
        shown = cluster.scaling()
        events = [e for e in shown["events"] if e["component"] == "sleeper"]
        assert events[-1]["reason"] == "replace" and (events[-1]["replicas_from"], events[-1]["replicas_to"]) == (1, 2)
        view = shown["deployments"][deployment]
        assert view["down_stabilization_s"] == 600 and view["cold_start_source"] == "measured"
