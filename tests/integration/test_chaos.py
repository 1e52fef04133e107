"""Chaos: faults under load through a real gateway process, over real HTTP, bounded in time, loopback only.

A replica SIGKILLed or hung (SIGSTOP: the kernel still accepts its
connections, nothing answers, as when a Bento's workers die under its
arbiter) mid-traffic is one replica lost, not an outage: its in-flight calls
may fail, the replica is ejected after a few failures, the other one carries
the component, and the component's breaker stays closed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from compoundry.store import PlatformStore
from tests.integration.gateway_fixture import route, running_gateway, wait_for
from tests.integration.stub_backend import free_port

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

COMPONENTS = """
components:
  embed: {model: m-embed, engine: pyfunc, timeouts: {request_s: 0.5}}
  spare: {model: m-spare, engine: pyfunc}
"""
PIPELINES = """
pipelines:
  answer:
    steps:
      embed: {component: embed, inputs: {delay_ms: 2, text: "${request.q}"}}
      enrich:
        component: spare
        optional: true
        fallback: {output: {echo: {text: none}}}
        inputs: {delay_ms: 2}
    output: {text: "${steps.embed.echo.text}", extra: "${steps.enrich.echo.text}"}
"""


@pytest.fixture
def killable(tmp_path):
    """A stub replica in its own process, so a test can SIGKILL it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.stub_backend", str(port), "victim"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(url), timeout_s=20, what="the killable stub replica")
    yield proc, url
    if proc.poll() is None:
        proc.kill()  # a stopped process takes SIGKILL too
    proc.wait(10)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _load(client: httpx.Client, path: str, body: dict, stop: threading.Event, codes: list[int]) -> None:
    with httpx.Client(base_url=client.base_url, headers=client.headers, timeout=10) as own:
        while not stop.is_set():
            codes.append(own.post(path, json=body).status_code)


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_a_replica_lost_under_load_costs_under_one_percent_and_the_pipeline_keeps_answering(
        tmp_path, stubs, killable, fault):
    proc, victim = killable

    def seed(store: PlatformStore) -> None:
        route(store, "embed", [victim, stubs["a"].url])
        route(store, "spare", [f"http://127.0.0.1:{free_port()}"])  # nobody there: the optional step degrades

    with running_gateway(tmp_path, {"components": COMPONENTS, "pipelines": PIPELINES}, seed) as gw:
        stop, codes, pipeline_codes = threading.Event(), [], []
        workers = [threading.Thread(target=_load, args=(gw.client, "/v1/components/embed",
                                                        {"inputs": {"delay_ms": 2}}, stop, codes)) for _ in range(4)]
        workers.append(threading.Thread(target=_load, args=(gw.client, "/v1/pipelines/answer",
                                                            {"inputs": {"q": "hi"}}, stop, pipeline_codes)))
        for worker in workers:
            worker.start()
        try:
            time.sleep(1.5)
            proc.send_signal(fault)
            time.sleep(3)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        metrics = gw.client.get("/metrics").text
    ok = codes.count(200) / len(codes)
    print(f"\n{len(codes)} component calls, {ok:.2%} ok; {len(pipeline_codes)} pipeline calls "
          f"{ {c: pipeline_codes.count(c) for c in set(pipeline_codes)} }")
    assert len(codes) > 200 and ok >= 0.99, {c: codes.count(c) for c in set(codes)}
    assert set(pipeline_codes) <= {200, 502} and pipeline_codes.count(200) / len(pipeline_codes) >= 0.99
    assert 'compoundry_breaker_state{deployment="embed-v1",state="closed"} 1.0' in metrics
